package experiment

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
)

// TestFalseClaim crafts a false claimant's set on tiny public models: its
// keys are what every public model says, it stays in the ε-ball, it
// round-trips through Save and Load, and the study judges victims by θ and
// by the calibrated rule with consistent counts.
func TestFalseClaim(t *testing.T) {
	ds := tinyData(t)
	f, err := Build(context.Background(), t.TempDir(), Plan("mlp", []string{"mlp"}, 2, 1), ds, torch.CPU, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Free()
	pub := f.Select(Reference, true)
	if _, err := CraftFalseClaim(context.Background(), nil, nil, ds.Test, FalseClaimConfig{Eps: 0.05, Alpha: 0.01, Steps: 5, Candidates: 10}); err == nil {
		t.Error("no public models: want an error")
	}
	cfg := FalseClaimConfig{Eps: 0.1, Alpha: 0.01, Steps: 20, Candidates: 60, Batch: 25, Seed: 3}
	fp, err := CraftFalseClaim(context.Background(), models(pub), names(pub), ds.Test, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fp.N == 0 || fp.Meta.Attack != AttackFalseClaim || fp.Meta.SourceSHA256 != "" || !slices.Equal(fp.Meta.Surrogates, names(pub)) || fp.Meta.Candidates > 60 {
		t.Fatalf("set of %d keys, meta %+v", fp.N, fp.Meta)
	}
	labels, err := fingerprint.Labels(context.Background(), models(pub), suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W})
	if err != nil {
		t.Fatal(err)
	}
	for m, l := range labels {
		if !slices.Equal(l, fp.Keys) {
			t.Errorf("public model %d labels the set %v, keys %v", m, l, fp.Keys)
		}
	}
	lim := int(cfg.Eps*255 + 1e-9)
	for i, v := range fp.Images {
		if d := int(v) - int(fp.Originals[i]); d > lim || d < -lim {
			t.Fatalf("pixel %d moved by %d > %d", i, d, lim)
		}
	}
	for i := range fp.N {
		if fp.Keys[i] == fp.Labels[i] {
			t.Errorf("key %d is the true label", i)
		}
	}
	path := filepath.Join(t.TempDir(), "claim.safetensors")
	if err := fp.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := fingerprint.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := fp.Commitment()
	c2, _ := back.Commitment()
	if c1 != c2 || !slices.Equal(back.Keys, fp.Keys) || !slices.Equal(back.Images, fp.Images) || back.Meta.Attack != AttackFalseClaim {
		t.Errorf("the set does not round-trip: commitment %s → %s", c1, c2)
	}

	local := func(m *Member) *suspect.Local { return &suspect.Local{Model: m.Model, Name: m.Name} }
	st := &FalseClaimStudy{Claim: back, ClaimPath: path, Theta: 0.7, FPR: 0.01, Command: "go test", Describe: "toy",
		Calibrated: filepath.Join(t.TempDir(), "claim.calibration.json")}
	for _, m := range f.Select(Reference, false) {
		st.Calibration = append(st.Calibration, fingerprint.IndependentModel{Suspect: local(m), Arch: m.Arch})
	}
	st.Owner = &BenchSuspect{Suspect: local(f.Source()), Arch: "mlp", Recipe: "the owner's source"}
	for _, m := range f.Select(Surrogate, true) {
		st.Victims = append(st.Victims, BenchSuspect{Suspect: local(m), Arch: m.Arch, Recipe: string(m.Role), Via: "local"})
	}
	for _, m := range pub {
		st.Public = append(st.Public, BenchSuspect{Suspect: local(m), Arch: m.Arch})
	}
	st.Real, st.RealPath, st.RealRule = back, path, fingerprint.Rule{Theta: 0.7} // any committed set will do here
	dir := report.Dir(t.TempDir())
	r, err := st.Run(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) != 3 || len(r.Public) != len(pub) || r.Owner == nil || r.Rows[2].Name != f.Source().Name {
		t.Fatalf("%d rows, %d public verdicts", len(r.Rows), len(r.Public))
	}
	pass, cal := 0, 0
	for _, row := range r.Rows {
		if row.Plain.Accuracy >= 0.7 {
			pass++
		}
		if row.Calibrated.Outcome == fingerprint.Derived {
			cal++
		}
		if row.Plain.Calibrated || !row.Calibrated.Calibrated {
			t.Errorf("%s: plain verdict calibrated %v, calibrated one %v", row.Name, row.Plain.Calibrated, row.Calibrated.Calibrated)
		}
	}
	if pass != r.PassTheta || cal != r.PassCalibrated {
		t.Errorf("counts %d/%d, rows say %d/%d", r.PassTheta, r.PassCalibrated, pass, cal)
	}
	if r.Owner.Fingerprints != back.N || r.Rows[2].Plain.Agree != r.Owner.Agree { // here the owner's fingerprint is the claim itself
		t.Errorf("the owner's source: %d/%d by the owner's set, %d by the claim", r.Owner.Agree, r.Owner.Fingerprints, r.Rows[2].Plain.Agree)
	}
	for _, v := range r.Public { // the keys are every public model's labels
		if v.Agree != back.N {
			t.Errorf("a public model agrees %d/%d with its own set", v.Agree, back.N)
		}
	}
	if _, err := fingerprint.LoadCalibration(st.Calibrated, back); err != nil {
		t.Errorf("calibration: %v", err)
	}
	md, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"go test", "| victim |", "pass Algorithm 1 at θ = 0.7", "Calibrated on independent models", "The owner's keys", "the owner's source", f.Source().Name} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
