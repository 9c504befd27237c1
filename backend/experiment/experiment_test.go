package experiment

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

func TestMain(m *testing.M) {
	torch.SetNumThreads(runtime.NumCPU())
	os.Exit(m.Run())
}

// tinyFingerprint builds a fleet of one MLP source in dir (the caller
// frees it) and extracts a toy-scale fingerprint from it.
func tinyFingerprint(t *testing.T, dir string, ds Data) (*Fleet, *fingerprint.Fingerprint) {
	t.Helper()
	f, err := Build(context.Background(), dir, Plan("mlp", []string{"mlp"}, 1, 1), ds, torch.CPU, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fingerprint.DefaultConfig()
	cfg.Candidates, cfg.CBIM.Steps, cfg.Tau = 40, 10, 0.5
	fp, err := f.Extract(context.Background(), ds, Setting{Name: "main", Eps: 0.15, Loss: attack.LossLinear}, cfg)
	if err != nil {
		f.Free()
		t.Fatal(err)
	}
	return f, fp
}

func tinyData(t *testing.T) Data {
	t.Helper()
	full, err := data.FashionMNIST("", true)
	if err != nil {
		t.Fatal(err)
	}
	test, err := data.FashionMNIST("", false)
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, 1200)
	for i := range idx {
		idx[i] = i
	}
	def, adv := data.Split(full.Subset(idx), 1)
	return Data{Defender: def, Adversary: adv, Test: test.Subset(idx[:300]), Tag: "tiny"}
}

// TestFleetCache checks that a fleet is trained once and reused, and that
// models trained on other data are not.
func TestFleetCache(t *testing.T) {
	ds := tinyData(t)
	dir := t.TempDir()
	build := func(ds Data) *Fleet {
		f, err := Build(context.Background(), dir, Plan("mlp", []string{"mlp"}, 1, 1), ds, torch.CPU, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := build(ds)
	if len(f.Members) != 5 || f.Source() == nil || len(f.Select(Surrogate, true)) != 1 || len(f.Select(Reference, false)) != 1 {
		t.Fatalf("fleet has %d members", len(f.Members))
	}
	for _, m := range f.Members {
		if m.FromDisk {
			t.Errorf("%s loaded from an empty folder", m.Name)
		}
	}
	f.Free()
	f = build(ds)
	for _, m := range f.Members {
		if !m.FromDisk {
			t.Errorf("%s retrained although it was on disk", m.Name)
		}
	}
	f.Free()
	// Surrogates distilled from prediction vectors are other models than
	// those retrained on labels; nothing else is retrained.
	soft := Plan("mlp", []string{"mlp"}, 1, 1)
	for _, m := range soft {
		if m.Role == Surrogate {
			m.Labels = SoftLabels
		}
	}
	f, err := Build(context.Background(), dir, soft, ds, torch.CPU, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range f.Members {
		if m.FromDisk == (m.Role == Surrogate) {
			t.Errorf("%s (%s, %q labels): loaded from disk = %v", m.Name, m.Role, m.Labels, m.FromDisk)
		}
	}
	f.Free()
	ds.Tag = "other data"
	f = build(ds)
	defer f.Free()
	for _, m := range f.Members {
		if m.FromDisk {
			t.Errorf("%s reused although the data changed", m.Name)
		}
	}
}

// TestStudiesWriteReports runs both studies at toy scale and checks their
// reports: every table and plot is there.
func TestStudiesWriteReports(t *testing.T) {
	ds := tinyData(t)
	f, err := Build(context.Background(), t.TempDir(), Plan("mlp", []string{"mlp"}, 1, 1), ds, torch.CPU, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Free()
	cfg := fingerprint.DefaultConfig()
	cfg.Candidates, cfg.CBIM.Steps, cfg.CBIM.Eps, cfg.Tau = 40, 10, 0.15, 0.5
	fs := &FingerprintStudy{Main: Setting{Name: "main", Eps: 0.15, Loss: attack.LossLinear}, Eps: []float64{0.1, 0.15}, Taus: []float64{0.5, 1}, TauSurrs: []float64{0, 1},
		Losses: []attack.Loss{attack.LossLinear, attack.LossCE}, Extract: cfg, Theta: 0.7, Command: "test"}
	dir := report.Dir(t.TempDir())
	outs, err := fs.Run(context.Background(), f, ds, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// main at τ 0.5 and 1 crossed with τ_S 0 and 1; ε = 0.1; the ce loss.
	if len(outs) != 6 {
		t.Errorf("%d outcomes, want 6", len(outs))
	}
	n := map[[2]float64]int{}
	for _, o := range outs {
		if o.Setting == "main" {
			n[[2]float64{o.Tau, o.TauSurr}] = o.Fingerprints
		}
	}
	if len(n) != 4 || n[[2]float64{0.5, 1}] > n[[2]float64{0.5, 0}] {
		t.Errorf("main setting's filters (τ, τ_S) → fingerprints %v: want four, τ_S = 1 keeping no more than τ_S = 0", n)
	}
	for _, o := range outs {
		if o.Fingerprints > 0 && (o.AUC < 0 || o.AUC > 1 || o.Of != 2) {
			t.Errorf("%s τ=%g: AUC %v over %d models", o.Setting, o.Tau, o.AUC, o.Of)
		}
	}
	md, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Reproduce with", "| model |", "test-surrogate-mlp-0", "AUC", "roc.png", "| τ_S |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, png := range []string{"roc.png", "fingerprint_accuracy.png", "auc_vs_eps.png", "auc_vs_tau.png"} {
		if _, err := os.Stat(dir.Path(png)); err != nil {
			t.Error(err)
		}
	}

	cs := &ConferrabilityStudy{Eps: []float64{0.15}, Focus: 0.15, Points: 16, Batch: 16, CBIM: attack.CBIMConfig{Alpha: 0.01, Steps: 5, Dropout: 0.5}, Command: "test"}
	cdir := report.Dir(t.TempDir())
	scores, err := cs.Run(context.Background(), f, ds.Test, cdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 7 {
		t.Errorf("%d scores, want one per attack (C-BIM twice)", len(scores))
	}
	for _, s := range scores {
		if s.Success < 0 || s.Success > 1 || s.Confer < 0 || s.Confer > 1 || s.Transfer < 0 || s.Transfer > 1 {
			t.Errorf("%+v out of range", s)
		}
	}
	md, err = os.ReadFile(cdir.Path("README.md"))
	if err != nil || !strings.Contains(string(md), "Table 1") || !strings.Contains(string(md), "C-BIM") {
		t.Errorf("conferrability report: %v", err)
	}
}

// TestRobustness runs the robustness study at toy scale: each derived model
// is judged by the fingerprint, its model is cached, the labels-only suspect
// gets exactly the verdict of the model it wraps, and the report shows it all.
func TestRobustness(t *testing.T) {
	ds := tinyData(t)
	fleetDir := t.TempDir()
	f, fp := tinyFingerprint(t, fleetDir, ds)
	defer f.Free()
	if fp.N == 0 {
		t.Fatal("no fingerprint at toy scale")
	}
	row := func(name, param string, labelsOnly bool) Attack {
		c := train.AttackConfig(name)
		c.Epochs = 1
		return Attack{Group: "g", Name: name, Param: param, Options: train.DefaultOptions(name), Config: c, LabelsOnly: labelsOnly}
	}
	st := &RobustnessStudy{Attacks: []Attack{row(train.AttackRetraining, "T = 1", false), row(train.AttackQuantize, "8 bits", false), row(train.AttackRetraining, "T = 1", true)},
		Theta: 0.7, Margin: 0.05, Command: "test"}
	modelsDir, dir := t.TempDir(), report.Dir(t.TempDir())
	res, err := st.Run(context.Background(), f, fp, ds, modelsDir, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Derived) != 3 || len(res.References) != 1 || len(res.RefV) != 1 || len(res.Surrogates) != 1 {
		t.Fatalf("%d derived, %d references", len(res.Derived), len(res.References))
	}
	retrain, quant, labels := res.Derived[0], res.Derived[1], res.Derived[2]
	if retrain.Queries != int64(ds.Adversary.Len()) || quant.Queries != 0 {
		t.Errorf("queries: retraining %d (want %d), quantization %d (want 0)", retrain.Queries, ds.Adversary.Len(), quant.Queries)
	}
	if !labels.FromDisk || labels.TestAcc != retrain.TestAcc || labels.Verdict.Agree != retrain.Verdict.Agree {
		t.Errorf("labels-only suspect: from disk %v, accuracy %v vs %v, agreement %d vs %d", labels.FromDisk, labels.TestAcc, retrain.TestAcc, labels.Verdict.Agree, retrain.Verdict.Agree)
	}
	// Uncalibrated: no p-value anywhere, in the results or the report.
	for _, v := range append(append([]*fingerprint.Verdict{}, res.RefV...), res.Derived[0].Verdict) {
		if v.PValue != nil || v.Calibrated {
			t.Errorf("%s: uncalibrated study gave a p-value (%v, calibrated %v)", v.Suspect, v.PValue, v.Calibrated)
		}
	}
	// The labels-only row is the retraining row's model: counted once.
	useful, retained := 0, 0
	for _, d := range res.Derived {
		if d.Verdict.Fingerprints != fp.N {
			t.Errorf("%s: judged on %d fingerprints, want %d", d.Name, d.Verdict.Fingerprints, fp.N)
		}
		if d.Within(res.SourceAcc, 0.05) && !d.LabelsOnly {
			useful++
			if d.Verdict.Accuracy >= 0.7 {
				retained++
			}
		}
	}
	if useful != res.Useful || retained != res.Retained {
		t.Errorf("retention %d/%d, rows say %d/%d", res.Retained, res.Useful, retained, useful)
	}
	// A second run loads every derived model and reaches the same verdicts.
	again, err := st.Run(context.Background(), f, fp, ds, modelsDir, report.Dir(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range again.Derived {
		if !d.FromDisk || d.Verdict.Agree != res.Derived[i].Verdict.Agree {
			t.Errorf("%s: second run from disk %v, agreement %d vs %d", d.Name, d.FromDisk, d.Verdict.Agree, res.Derived[i].Verdict.Agree)
		}
	}
	md, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Reproduce with", "Retention:", "retraining (labels only)", "quantize", "test-reference-mlp-0", "robustness.png"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, err := os.Stat(dir.Path("robustness.png")); err != nil {
		t.Error(err)
	}
}

// TestTauSeries checks that the τ plot takes the main setting's outcomes at
// its τ_S only, in the order of τ, whatever order the filters ran in.
func TestTauSeries(t *testing.T) {
	mainO := &Outcome{Setting: "main", Tau: 1, TauSurr: 1, AUC: 0.8}
	all := []*Outcome{mainO,
		{Setting: "main", Tau: 0.5, TauSurr: 1, AUC: 1, Gap: 0.1},
		{Setting: "main", Tau: 0.5, TauSurr: 0, AUC: 0.6},
		{Setting: "main", Tau: 0.75, TauSurr: 1, AUC: 0.9},
		{Setting: "eps=0.1", Tau: 1, TauSurr: 1, AUC: 0.7},
	}
	s := tauSeries(all, mainO)
	if len(s) != 2 || fmt.Sprint(s[0].X) != "[0.5 0.75 1]" || fmt.Sprint(s[0].Y) != "[1 0.9 0.8]" || fmt.Sprint(s[1].Y) != "[0.1 0 0]" {
		t.Errorf("series %+v, want AUC 1, 0.9, 0.8 and gap 0.1, 0, 0 at τ 0.5, 0.75, 1", s)
	}
}
