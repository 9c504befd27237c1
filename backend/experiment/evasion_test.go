package experiment

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/detect"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/torch"
)

// TestGame checks the game's bookkeeping: an adversary shown benign inputs
// as B₁ wins about half the time (the interval holds 0.5), one shown
// inputs its detector separates perfectly wins nearly always, and the
// batch threshold keeps its false-positive rate on benign data.
func TestGame(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	benign := make([]float64, 2000)
	for i := range benign {
		benign[i] = rng.NormFloat64()
	}
	shifted := make([]float64, 500)
	for i := range shifted {
		shifted[i] = 10 + rng.NormFloat64()
	}
	held := make([]float64, 2000)
	for i := range held {
		held[i] = rng.NormFloat64()
	}
	held1 := make([]float64, 1000)
	for i := range held1 {
		held1[i] = 1 + rng.NormFloat64()
	}
	// The adversary's own examples for the balanced rule: fresh draws
	// from each positive pool's distribution.
	ownNull, ownShifted, ownOne := make([]float64, 500), make([]float64, 500), make([]float64, 500)
	for i := range 500 {
		ownNull[i], ownShifted[i], ownOne[i] = rng.NormFloat64(), 10+rng.NormFloat64(), 1+rng.NormFloat64()
	}
	for _, tc := range []struct {
		name     string
		pos, own []float64
		batch    int
		lo, hi   float64 // the 5 % rule's win rate must lie here
		bLo, bHi float64 // and the balanced rule's here
		holdHalf bool    // and both intervals must hold 0.5
	}{
		// B₁ drawn from the very pool B₀ is drawn from.
		{"B1 benign, batch 1", held, ownNull, 1, 0.45, 0.55, 0.45, 0.55, true},
		{"B1 benign, batch 10", held, ownNull, 10, 0.45, 0.55, 0.45, 0.55, true},
		{"B1 benign, batch 100", held, ownNull, 100, 0.45, 0.55, 0.45, 0.55, true},
		{"B1 separable, batch 1", shifted, ownShifted, 1, 0.95, 1, 0.99, 1, false},
		{"B1 separable, batch 10", shifted, ownShifted, 10, 0.95, 1, 0.99, 1, false},
		// One SD apart: the 5 % rule wins ½(Φ(1 − 1.645) + 0.95) ≈ 0.60,
		// the best single threshold ½(2Φ(0.5)) ≈ 0.69; at batch 10 both
		// ≈ 0.94.
		{"B1 shifted by one SD, batch 1", held1, ownOne, 1, 0.56, 0.64, 0.64, 0.73, false},
		{"B1 shifted by one SD, batch 10", held1, ownOne, 10, 0.91, 0.98, 0.91, 0.98, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			thr := BatchThreshold(benign, tc.batch, 0.05, 4000, rng)
			bal := BalancedThreshold(tc.own, benign, tc.batch, 2000, rng)
			for _, r := range []struct {
				rule   string
				thr    float64
				lo, hi float64
			}{{"5 % FP", thr, tc.lo, tc.hi}, {"balanced", bal, tc.bLo, tc.bHi}} {
				g := PlayGame(held, tc.pos, tc.batch, 2000, r.thr, rng)
				if w := g.WinRate(); w < r.lo || w > r.hi {
					t.Errorf("%s: win rate %.3f [%.3f, %.3f], want in [%g, %g]", r.rule, w, g.Lo, g.Hi, r.lo, r.hi)
				}
				if tc.holdHalf && (g.Lo > 0.5 || g.Hi < 0.5) {
					t.Errorf("%s: interval [%.3f, %.3f] excludes 0.5", r.rule, g.Lo, g.Hi)
				}
				if r.rule == "5 % FP" && g.FPR > 0.08 {
					t.Errorf("false-positive rate %.3f at a 5 %% threshold", g.FPR)
				}
			}
		})
	}
	auc, lo, hi := BootstrapAUC(shifted, held, 200, rng)
	if auc != 1 || lo != 1 || hi != 1 {
		t.Errorf("separable AUC %g [%g, %g]", auc, lo, hi)
	}
	auc, lo, hi = BootstrapAUC(held[:500], held[500:], 200, rng)
	if math.Abs(auc-0.5) > 0.06 || lo > auc || hi < auc || hi-lo > 0.15 {
		t.Errorf("null AUC %g [%g, %g]", auc, lo, hi)
	}
}

// TestEvasionStudy plays the game on a tiny fleet with real libtorch: the
// defender's C-BIM and natural fingerprints from its own training models,
// the adversary's from its own half, every detector scored, a report
// written.
func TestEvasionStudy(t *testing.T) {
	ctx := context.Background()
	ds := tinyData(t)
	f, err := Build(ctx, t.TempDir(), Plan("mlp", []string{"mlp"}, 1, 1), ds, torch.CPU, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Free()
	src := f.Source()
	training := func(adversary bool) fingerprint.Training {
		s, r := f.Select(Surrogate, adversary), f.Select(Reference, adversary)
		return fingerprint.Training{Source: src.Model, Surrogates: models(s), References: models(r), SurrogateIDs: names(s), ReferenceIDs: names(r), SourceArch: "mlp"}
	}
	cfg := fingerprint.Config{CBIM: attack.DefaultCBIM(), Candidates: 40, Batch: 20, Seed: 1}
	cfg.CBIM.Eps, cfg.CBIM.Steps = 0.1, 8
	cb, err := fingerprint.Extract(ctx, training(false), ds.Test, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nat := cfg
	nat.Natural = true
	nf, err := fingerprint.Extract(ctx, training(false), ds.Test, nat)
	if err != nil {
		t.Fatal(err)
	}
	dir := report.Dir(t.TempDir())
	st := &EvasionStudy{Adversary: training(true), Scorer: src.Model, ScorerName: "source", Test: ds.Test,
		Groups: []EvasionGroup{{Name: "cbim", FPs: []*fingerprint.Fingerprint{cb}}, {Name: "natural", FPs: []*fingerprint.Fingerprint{nf}}},
		Craft:  cfg, CNNEpochs: 1, Batches: []int{1, 10}, Trials: 200, FPR: 0.05, Boot: 50, Seed: 3, Command: "test",
		SaveDetectors: filepath.Join(t.TempDir(), "detectors")}
	res, err := st.Run(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2*4 {
		t.Fatalf("%d rows, want 2 groups × 4 detectors", len(res.Rows))
	}
	if res.AdvBenign+res.HeldBenign > ds.Test.Len()-1 || res.HeldBenign == 0 || res.Own["cbim ε 0.1"] == 0 || res.Own["natural"] == 0 {
		t.Errorf("benign %d + %d of %d test inputs; own %v", res.AdvBenign, res.HeldBenign, ds.Test.Len(), res.Own)
	}
	for _, r := range res.Rows {
		if !(r.AUC >= 0 && r.AUC <= 1 && r.AUCLo <= r.AUC+1e-9 && r.AUCHi >= r.AUC-1e-9) || len(r.Games) != 2 || len(r.Balanced) != 2 {
			t.Errorf("%s / %s: AUC %g [%g, %g], %d games", r.Group, r.Detector, r.AUC, r.AUCLo, r.AUCHi, len(r.Games))
		}
		for _, g := range append(r.Games, r.Balanced...) {
			if g.Trials != 200 || g.Lo > g.WinRate() || g.Hi < g.WinRate() {
				t.Errorf("%s / %s: game %+v", r.Group, r.Detector, g)
			}
		}
	}
	md, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Verdict", DetSqueeze, DetCNN, "natural", "batch 10", "balanced", "adversary's pick"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Every detector was saved once per kind, loads, and says what it
	// was set against; the CNN carries its network.
	if len(res.Saved) != 2*4 {
		t.Fatalf("saved %v, want 2 kinds × 4 detectors", res.Saved)
	}
	var dets []*detect.Detector
	for _, p := range res.Saved {
		d, err := detect.Load(p, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Free()
		if (d.Kind == detect.CNN) != (d.Net != nil) || (d.Against != "natural" && d.Against != "cbim ε 0.1") || d.N() == 0 {
			t.Errorf("%s: %s against %q, %d benign inputs, network %v", p, d.Kind, d.Against, d.N(), d.Net != nil)
		}
		dets = append(dets, d)
	}
	// The detect-and-evade study over them: the adversary's surrogate
	// (derived) and reference (independent) served on 127.0.0.1 behind
	// the pick, uncalibrated (no subset mitigation then).
	var sus []DESuspect
	for _, m := range f.Select(Surrogate, true) {
		sus = append(sus, DESuspect{Path: m.Name, Derived: true, Model: m.Model})
	}
	for _, m := range f.Select(Reference, true) {
		sus = append(sus, DESuspect{Path: m.Name, Model: m.Model})
	}
	var fps []DEFingerprint
	for _, fp := range []*fingerprint.Fingerprint{cb, nf} {
		i := PickDetector(dets, fp)
		if i < 0 {
			t.Fatalf("no detector against %s", kindOf(fp))
		}
		fps = append(fps, DEFingerprint{Name: kindOf(fp), FP: fp, Rule: fingerprint.Rule{Theta: 0.7}, Detector: dets[i], DetectorPath: res.Saved[i]})
	}
	de := &DetectEvadeStudy{Suspects: sus, Fingerprints: fps, FPRs: []float64{0.05, 0.5}, Evasions: []detect.Evasion{detect.Random, detect.Second},
		Test: ds.Test, Mix: 2, Batch: 16, Sequential: &fingerprint.Sequential{Batch: 5, Seed: 1}, Seed: 1, Command: "test"}
	der, err := de.Run(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * len(sus) * 5; len(der.Rows) != want {
		t.Fatalf("%d rows, want %d", len(der.Rows), want)
	}
	for _, r := range der.Rows {
		// The detector is per query: mixing changes no answer.
		if r.Mixed == nil || r.Mixed.Agree != r.Verdict.Agree || r.Seq != nil || r.Benign == 0 || (r.FPR == 0 && (r.Flagged != 0 || r.Lost != 0)) {
			t.Errorf("%s / %s / %s: %+v", r.Fingerprint, r.Suspect, r.Setting, r)
		}
		if r.FPR == 0.5 && r.Flagged == 0 {
			t.Errorf("%s / %s / %s: nothing flagged at 50 %%", r.Fingerprint, r.Suspect, r.Setting)
		}
	}
	// Mixed kinds in one group are refused before any work.
	bad := *st
	bad.Groups = []EvasionGroup{{Name: "mixed", FPs: []*fingerprint.Fingerprint{cb, nf}}}
	if _, err := bad.Run(ctx, dir, nil); err == nil || !strings.Contains(err.Error(), "mixes") {
		t.Errorf("mixed group: %v", err)
	}
}
