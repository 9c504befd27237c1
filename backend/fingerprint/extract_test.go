package fingerprint_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// TestMain runs libtorch on one thread: the test models are too small to
// gain from more, and with other work on the machine (go test runs packages
// in parallel) OpenMP's spinning threads made training 4× slower on two
// threads than on one.
func TestMain(m *testing.M) {
	torch.SetNumThreads(1)
	os.Exit(m.Run())
}

// world is the defender's and the adversary's models, trained once per test
// binary on small parts of the real Fashion-MNIST halves.
type world struct {
	defender       *data.Dataset // the part of the defender half the source saw
	source         *nn.Model
	surr, ref      []*nn.Model // training models
	heldSurr       []*nn.Model // surrogates retrained on other data with other seeds
	heldRef        []*nn.Model // references trained on other data with other seeds
	crafted        *fingerprint.Crafted
	fp             *fingerprint.Fingerprint // crafted.Select(1)
	cfg            fingerprint.Config
	events         []shared.Event
	sourceAccuracy float64
}

var (
	worldOnce sync.Once
	theWorld  *world
	worldErr  error
)

const (
	nPart      = 2000 // images per training set
	candidates = 100
	batch      = 32 // four C-BIM batches: 32, 32, 32, 4
	cbimSteps  = 20
	eps        = 0.1
)

func seq(from, to int) []int {
	idx := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		idx = append(idx, i)
	}
	return idx
}

// quick is a two-epoch recipe: Adam, no augmentation (one-epoch models
// separate held-out surrogates from references less reliably).
func quick(seed int64) train.Config {
	return train.Config{Epochs: 2, BatchSize: 64, Optimizer: "adam", LR: 1e-3, Schedule: "constant", Seed: seed}
}

func newModel(arch string, d *data.Dataset, seed uint64) (*nn.Model, error) {
	mean, std := d.Stats()
	return nn.New(nn.Spec{Arch: arch, Dataset: d.Name, Classes: d.Classes, C: int64(d.C), H: int64(d.H), W: int64(d.W), Mean: mean, Std: std}, seed, torch.CPU)
}

func getWorld(t *testing.T) *world {
	t.Helper()
	worldOnce.Do(func() { theWorld, worldErr = buildWorld() })
	if worldErr != nil {
		t.Fatalf("building the models: %v", worldErr)
	}
	return theWorld
}

func buildWorld() (*world, error) {
	ctx := context.Background()
	// Dropout draws from libtorch's global generator, which starts from a
	// random seed: fix it, so that every run trains the same models.
	torch.ManualSeed(1)
	full, err := data.FashionMNIST("", true)
	if err != nil {
		return nil, err
	}
	test, err := data.FashionMNIST("", false)
	if err != nil {
		return nil, err
	}
	def, adv := data.Split(full, 1)
	w := &world{defender: def.Subset(seq(0, nPart))}
	advA := adv.Subset(seq(0, nPart))
	fit := func(arch string, seed int64, d *data.Dataset, teacher *nn.Model) (*nn.Model, error) {
		m, err := newModel(arch, d, uint64(seed))
		if err != nil {
			return nil, err
		}
		if teacher != nil {
			_, err = train.Retrain(ctx, teacher, m, d, quick(seed))
		} else {
			_, err = train.Train(ctx, m, d, quick(seed))
		}
		return m, err
	}
	if w.source, err = fit("mlp", 1, w.defender, nil); err != nil {
		return nil, err
	}
	if w.sourceAccuracy, err = train.Accuracy(ctx, w.source, test.Subset(seq(0, 1000)), nil); err != nil {
		return nil, err
	}
	// Training surrogates and references.
	for i := range 2 {
		s, err := fit("mlp", int64(10+i), advA, w.source)
		if err != nil {
			return nil, err
		}
		r, err := fit("mlp", int64(20+i), advA, nil)
		if err != nil {
			return nil, err
		}
		w.surr, w.ref = append(w.surr, s), append(w.ref, r)
	}
	// Held-out models, on other data with other seeds.
	for i := range 2 {
		d := adv.Subset(seq((i+1)*nPart, (i+2)*nPart))
		s, err := fit("mlp", int64(30+i), d, w.source)
		if err != nil {
			return nil, err
		}
		r, err := fit("mlp", int64(40+i), d, nil)
		if err != nil {
			return nil, err
		}
		w.heldSurr, w.heldRef = append(w.heldSurr, s), append(w.heldRef, r)
	}
	w.cfg = fingerprint.Config{
		CBIM:       attack.CBIMConfig{Eps: eps, Alpha: 0.01, Steps: cbimSteps, Dropout: 0.5, Loss: attack.LossLinear},
		Tau:        1,
		Candidates: candidates,
		Batch:      batch,
		Seed:       7,
		Progress:   func(e shared.Event) { w.events = append(w.events, e) },
	}
	w.crafted, err = fingerprint.Craft(ctx, w.training(), w.defender, w.cfg)
	if err != nil {
		return nil, fmt.Errorf("craft: %w", err)
	}
	w.fp = w.crafted.Select(w.cfg.Tau, 0)
	return w, nil
}

func (w *world) training() fingerprint.Training {
	tm := fingerprint.Training{Source: w.source, SourceID: "source-sha", SourceArch: "mlp"}
	for i := range w.surr {
		tm.Surrogates = append(tm.Surrogates, w.surr[i])
		tm.SurrogateIDs = append(tm.SurrogateIDs, fmt.Sprintf("surrogate %d", i))
		tm.References = append(tm.References, w.ref[i])
		tm.ReferenceIDs = append(tm.ReferenceIDs, fmt.Sprintf("reference %d", i))
	}
	return tm
}

func local(m *nn.Model, name string) *suspect.Local { return &suspect.Local{Model: m, Name: name} }

// TestExtract checks Algorithm 2's output on real small models: at least
// one fingerprint, keys equal to the source's labels of the fingerprint
// images and different from the ground truth, conferrability τ = 1 on the
// training models, perturbations inside the 8-bit ε-ball, originals from
// the data with their labels, and complete metadata.
func TestExtract(t *testing.T) {
	w := getWorld(t)
	fp := w.fp
	t.Logf("source test accuracy %.3f; %d fingerprints from %d start points (ε = %g, %d steps), reference rate %.3f",
		w.sourceAccuracy, fp.N, fp.Meta.Candidates, eps, cbimSteps, fp.Meta.ReferenceRate)
	if fp.N < 1 {
		t.Fatalf("no fingerprint from %d candidates", fp.Meta.Candidates)
	}
	if fp.N > candidates || fp.Meta.Candidates != candidates {
		t.Errorf("%d fingerprints from %d candidates, want ≤ %d from %d", fp.N, fp.Meta.Candidates, candidates, candidates)
	}
	if fp.C != 1 || fp.H != 28 || fp.W != 28 || len(fp.Images) != fp.N*784 || len(fp.Originals) != fp.N*784 ||
		len(fp.Keys) != fp.N || len(fp.Labels) != fp.N || len(fp.Confer) != fp.N {
		t.Fatalf("inconsistent fingerprint: %dx%dx%dx%d, %d/%d bytes, %d keys, %d labels, %d scores",
			fp.N, fp.C, fp.H, fp.W, len(fp.Images), len(fp.Originals), len(fp.Keys), len(fp.Labels), len(fp.Confer))
	}
	// vk = M(F).
	got, err := local(w.source, "source").Classify(context.Background(), suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, fp.Keys) {
		t.Errorf("keys %v, the source labels the fingerprints %v", fp.Keys, got)
	}
	// Originals are images of the defender's data, with their labels.
	label := map[string]int64{}
	for i := range w.defender.Len() {
		label[string(w.defender.Image(i))] = w.defender.Labels[i]
	}
	lim := int(math.Floor(255*eps + 1e-9))
	per := fp.ImageSize()
	for i := range fp.N {
		orig, img := fp.Originals[i*per:(i+1)*per], fp.Images[i*per:(i+1)*per]
		y, ok := label[string(orig)]
		if !ok {
			t.Errorf("fingerprint %d: its original is not in the defender's data", i)
		} else if y != fp.Labels[i] {
			t.Errorf("fingerprint %d: label %d, the original's is %d", i, fp.Labels[i], y)
		}
		if fp.Keys[i] == fp.Labels[i] {
			t.Errorf("fingerprint %d: key %d equals the ground truth", i, fp.Keys[i])
		}
		if fp.Confer[i] < 1 {
			t.Errorf("fingerprint %d: conferrability %v < τ = 1", i, fp.Confer[i])
		}
		changed := false
		for j := range orig {
			d := int(img[j]) - int(orig[j])
			if d > lim || d < -lim {
				t.Fatalf("fingerprint %d, pixel %d: %d → %d, beyond ε = %d/255", i, j, orig[j], img[j], lim)
			}
			changed = changed || d != 0
		}
		if !changed {
			t.Errorf("fingerprint %d equals its original", i)
		}
	}
	m := fp.Meta
	if m.Dataset != "fashion-mnist" || len(m.Classes) != 10 || m.Attack != "cbim" || m.Loss != "linear" || m.Eps != eps ||
		m.Steps != cbimSteps || m.Tau != 1 || m.Seed != 7 || m.SourceSHA256 != "source-sha" || m.SourceArch != "mlp" ||
		len(m.Surrogates) != 2 || len(m.References) != 2 || m.Created.IsZero() || len(m.Mean) != 1 || len(m.Std) != 1 {
		t.Errorf("metadata %+v", m)
	}
	if !(m.ReferenceRate >= 0.1 && m.ReferenceRate <= 1) {
		t.Errorf("reference rate %v outside [1/classes, 1]", m.ReferenceRate)
	}
	// Progress: C-BIM steps up to the total, and log lines.
	var last shared.Event
	logs := 0
	for _, e := range w.events {
		switch e.Kind {
		case shared.Progress:
			if e.Step < last.Step || e.Total != candidates*cbimSteps {
				t.Fatalf("progress %d/%d after %d", e.Step, e.Total, last.Step)
			}
			last = e
		case shared.Log:
			logs++
		}
	}
	if wantLogs := (candidates + batch - 1) / batch; last.Step != candidates*cbimSteps || logs != wantLogs {
		t.Errorf("progress ended at %d of %d with %d log lines, want %d and %d", last.Step, last.Total, logs, candidates*cbimSteps, wantLogs)
	}
	// The fingerprint survives its file.
	path := filepath.Join(t.TempDir(), "fp.safetensors")
	if err := fp.Save(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := fingerprint.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded.Images, fp.Images) || !reflect.DeepEqual(loaded.Keys, fp.Keys) || loaded.Meta.Eps != fp.Meta.Eps {
		t.Error("the saved fingerprint loads differently")
	}
	if err := fingerprint.WriteSheet(filepath.Join(t.TempDir(), "sheet.png"), fp, 8); err != nil {
		t.Error(err)
	}
}

// TestVerify checks Algorithm 1 on the training models, where τ = 1
// decides the answer, and on held-out models, where the surrogate must agree
// with the keys more often than the reference.
func TestVerify(t *testing.T) {
	w := getWorld(t)
	fp := w.fp
	if fp.N == 0 {
		t.Fatal("no fingerprint")
	}
	ctx := context.Background()
	verify := func(m *nn.Model, name string) *fingerprint.Verdict {
		t.Helper()
		v, err := fingerprint.Verify(ctx, local(m, name), fp, fingerprint.Rule{})
		if err != nil {
			t.Fatalf("Verify(%s): %v", name, err)
		}
		// The verdict's evidence is consistent with itself.
		agree := 0
		for i, l := range v.Labels {
			if v.Matches[i] != (l == fp.Keys[i]) {
				t.Errorf("%s: match %d is %v for label %d and key %d", name, i, v.Matches[i], l, fp.Keys[i])
			}
			if v.Matches[i] {
				agree++
			}
		}
		if v.Suspect != name || v.Fingerprints != fp.N || len(v.Labels) != fp.N || v.Agree != agree ||
			v.Accuracy != float64(agree)/float64(fp.N) || v.Threshold != fingerprint.DefaultThreshold ||
			v.Surrogate != (v.Interval[0] >= fingerprint.DefaultThreshold) || v.PValue != nil || v.Calibrated ||
			!(v.Interval[0] <= v.Accuracy && v.Accuracy <= v.Interval[1]) || v.Explain() == "" {
			t.Errorf("%s: inconsistent verdict %+v", name, v)
		}
		return v
	}
	for i, m := range append([]*nn.Model{w.source}, w.surr...) {
		v := verify(m, fmt.Sprintf("training surrogate %d", i))
		if v.Outcome == fingerprint.Independent || v.Accuracy != 1 {
			t.Errorf("%s: %s, accuracy %.3f; want accuracy 1 and never independent", v.Suspect, v.Outcome, v.Accuracy)
		}
	}
	for i, m := range w.ref {
		v := verify(m, fmt.Sprintf("training reference %d", i))
		if v.Surrogate || v.Accuracy != 0 {
			t.Errorf("%s: %s, accuracy %.3f; want not derived, 0", v.Suspect, v.Outcome, v.Accuracy)
		}
	}
	// Held-out models: surrogates agree with the keys more often than
	// references. One pair of one-epoch models tied once in 15 trials, and a
	// pair of two-epoch models once in about ten unseeded runs, so the test
	// compares the means of two of each.
	var surrAcc, refAcc float64
	for i := range w.heldSurr {
		hs, hr := verify(w.heldSurr[i], fmt.Sprintf("held-out surrogate %d", i)), verify(w.heldRef[i], fmt.Sprintf("held-out reference %d", i))
		t.Logf("held-out surrogate %d: accuracy %.3f (%d/%d, %s); held-out reference %d: accuracy %.3f (%d/%d, %s)",
			i, hs.Accuracy, hs.Agree, hs.Fingerprints, hs.Outcome, i, hr.Accuracy, hr.Agree, hr.Fingerprints, hr.Outcome)
		surrAcc += hs.Accuracy / float64(len(w.heldSurr))
		refAcc += hr.Accuracy / float64(len(w.heldRef))
	}
	if surrAcc <= refAcc {
		t.Errorf("held-out surrogates' mean fingerprint accuracy %.3f is not above the held-out references' %.3f", surrAcc, refAcc)
	}
	// Calibrated by the held-out references, a verdict carries both
	// p-values and names its null.
	var held []fingerprint.IndependentModel
	for i, m := range w.heldRef {
		held = append(held, fingerprint.IndependentModel{Suspect: local(m, fmt.Sprintf("held-out reference %d", i)), Arch: "cnn"})
	}
	cal, err := fingerprint.Calibrate(ctx, fp, held, fingerprint.DefaultFPR)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fingerprint.Verify(ctx, local(w.heldSurr[0], "s"), fp, fingerprint.Rule{Calibration: cal})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Calibrated || v.PValue == nil || *v.PValue != cal.Fit.Tail(v.Agree, fp.N) || v.Null == nil || v.Null.Models != len(held) ||
		*v.EmpiricalP != cal.Empirical(v.Agree, nil) || len(v.Null.Warnings) == 0 {
		t.Errorf("calibrated verdict %+v (null %+v)", v, v.Null)
	}
}

// labelsOn returns each model's labels of the fingerprint's images.
func labelsOn(t *testing.T, fp *fingerprint.Fingerprint, ms []*nn.Model) [][]int64 {
	t.Helper()
	var out [][]int64
	for i, m := range ms {
		l, err := local(m, fmt.Sprint(i)).Classify(context.Background(), suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// TestCraftSelect checks that Craft keeps every crafted example with its
// conferrability on the training models, and that Select(τ, τ_S) keeps
// exactly those with a key other than the label, conferrability ≥ τ and
// Transfer to the training surrogates ≥ τ_S, with the highest training
// reference agreement (at least chance) as the reference rate.
func TestCraftSelect(t *testing.T) {
	w := getWorld(t)
	all := w.crafted.All
	if all.N != candidates || all.Meta.Candidates != candidates {
		t.Fatalf("crafted %d examples from %d start points, want %d", all.N, all.Meta.Candidates, candidates)
	}
	// The scores are eq. 10 on the training models with the keys as targets.
	keys := labelsOn(t, all, []*nn.Model{w.source})[0]
	if !reflect.DeepEqual(keys, all.Keys) {
		t.Fatalf("crafted keys %v, the source says %v", all.Keys, keys)
	}
	refLabels := labelsOn(t, all, w.ref)
	want := fingerprint.Confer(labelsOn(t, all, w.surr), refLabels, keys)
	for i := range want {
		if math.Abs(want[i]-all.Confer[i]) > 1e-6 {
			t.Fatalf("example %d: conferrability %v, eq. 10 gives %v", i, all.Confer[i], want[i])
		}
	}
	surr := fingerprint.Transfer(labelsOn(t, all, w.surr), keys)
	var prev, atTau1 int
	atTau0 := map[float64]int{} // τ_S → examples at τ = 0
	for _, f := range []struct{ tau, tauSurr float64 }{
		{0, 0}, {0.25, 0}, {0.5, 0}, {0.75, 0}, {1, 0},
		{0, 0.5}, {0.25, 0.5}, {0.5, 0.5},
		{0, 1}, {0.25, 1}, {0.5, 1}, {0.75, 1}, {1, 1},
	} {
		tau := f.tau
		fp := w.crafted.Select(tau, f.tauSurr)
		var idx []int
		for i := range all.N {
			if all.Keys[i] != all.Labels[i] && all.Confer[i] >= tau-1e-9 && surr[i] >= f.tauSurr-1e-9 {
				idx = append(idx, i)
			}
		}
		t.Logf("τ = %.2f, τ_S = %.2f: %d of %d crafted examples, reference rate %.3f", tau, f.tauSurr, fp.N, all.N, fp.Meta.ReferenceRate)
		if tau == 0 {
			prev = all.N + 1
		}
		if fp.N != len(idx) || fp.Meta.Tau != tau || fp.Meta.TauSurr != f.tauSurr || fp.N > prev {
			t.Fatalf("τ = %v, τ_S = %v: %d examples (τ %v, τ_S %v), want %d, at most %d", tau, f.tauSurr, fp.N, fp.Meta.Tau, fp.Meta.TauSurr, len(idx), prev)
		}
		prev = fp.N
		if tau == 0 {
			atTau0[f.tauSurr] = fp.N
		}
		if tau == 1 && f.tauSurr == 0 {
			atTau1 = fp.N
		}
		per := all.ImageSize()
		rate := 0.1
		for r := range refLabels {
			agree := 0
			for k, i := range idx {
				if !reflect.DeepEqual(fp.Images[k*per:(k+1)*per], all.Images[i*per:(i+1)*per]) || fp.Keys[k] != all.Keys[i] ||
					fp.Labels[k] != all.Labels[i] || fp.Confer[k] != all.Confer[i] {
					t.Fatalf("τ = %v: selected example %d is not crafted example %d", tau, k, i)
				}
				if refLabels[r][i] == all.Keys[i] {
					agree++
				}
			}
			if len(idx) > 0 {
				rate = math.Max(rate, float64(agree)/float64(len(idx)))
			}
		}
		if math.Abs(fp.Meta.ReferenceRate-rate) > 1e-12 {
			t.Errorf("τ = %v: reference rate %v, want %v", tau, fp.Meta.ReferenceRate, rate)
		}
	}
	if atTau1 == 0 {
		t.Error("no example reaches τ = 1")
	}
	if atTau0[1] >= atTau0[0] {
		t.Errorf("τ_S = 1 kept %d of the %d examples with a new key: it should drop those some training surrogate misses", atTau0[1], atTau0[0])
	}
	// Extract is Craft then Select: the same examples for the same seed.
	cfg := w.cfg
	cfg.Candidates, cfg.Batch, cfg.Progress = 12, 8, nil
	cfg.Tau, cfg.TauSurr = 0.25, 1
	ext, err := fingerprint.Extract(context.Background(), w.training(), w.defender, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fingerprint.Craft(context.Background(), w.training(), w.defender, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sel := c.Select(cfg.Tau, cfg.TauSurr)
	sel.Meta.Created = ext.Meta.Created
	if !reflect.DeepEqual(ext, sel) {
		t.Errorf("Extract and Craft+Select differ:\n%+v\n%+v", ext, sel)
	}
}

// fakeSuspect answers with fixed labels or an error.
type fakeSuspect struct {
	labels []int64
	err    error
}

func (f fakeSuspect) Classify(ctx context.Context, b suspect.Images) ([]int64, error) {
	return f.labels, f.err
}
func (f fakeSuspect) String() string { return "fake" }

// TestVerifyFakeSuspects checks Verify's arithmetic, outcomes and errors
// with suspects that answer what they are told.
func TestVerifyFakeSuspects(t *testing.T) {
	ctx := context.Background()
	fp := synthetic(40)                    // keys (i+3) mod 10
	answering := func(agree int) []int64 { // the first agree answers match
		out := append([]int64{}, fp.Keys...)
		for i := agree; i < fp.N; i++ {
			out[i] = (out[i] + 1) % 10
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		agree   int
		outcome string
	}{
		{"all keys", 40, fingerprint.Derived},          // 95 % interval [0.91, 1]
		{"exactly at θ", 28, fingerprint.Inconclusive}, // [0.53, 0.83] straddles 0.7
		{"just under θ", 27, fingerprint.Inconclusive},
		{"well below θ", 15, fingerprint.Independent}, // [0.23, 0.54]
		{"ground truth", 0, fingerprint.Independent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := fingerprint.Verify(ctx, fakeSuspect{labels: answering(tc.agree)}, fp, fingerprint.Rule{})
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := stats.ClopperPearson(tc.agree, 40, 0.95)
			if v.Agree != tc.agree || v.Outcome != tc.outcome || v.Surrogate != (tc.outcome == fingerprint.Derived) ||
				v.Accuracy != float64(tc.agree)/40 || v.Interval != [2]float64{lo, hi} || v.Calibrated || v.PValue != nil || v.EmpiricalP != nil {
				t.Errorf("verdict %+v, want %d agreements, %s", v, tc.agree, tc.outcome)
			}
			// Uncalibrated: no p-value in the words either, and what to run.
			if e := v.Explain(); strings.Contains(e, "p =") || strings.Contains(e, "probability") || !strings.Contains(e, "uncalibrated") || !strings.Contains(e, "conferral calibrate") {
				t.Errorf("uncalibrated explanation: %s", e)
			}
		})
	}
	boom := errors.New("endpoint down")
	if _, err := fingerprint.Verify(ctx, fakeSuspect{err: boom}, fp, fingerprint.Rule{}); !errors.Is(err, boom) {
		t.Errorf("suspect error: got %v, want it wrapped", err)
	}
	if _, err := fingerprint.Verify(ctx, fakeSuspect{labels: fp.Keys[:9]}, fp, fingerprint.Rule{}); err == nil {
		t.Error("9 answers to 40 queries accepted")
	}
	if _, err := fingerprint.Verify(ctx, fakeSuspect{}, synthetic(0), fingerprint.Rule{}); err == nil {
		t.Error("an empty fingerprint verified")
	}
	for _, bad := range []fingerprint.Rule{{Theta: 1.5}, {FPR: 0.7}, {Confidence: 1}, {Sequential: &fingerprint.Sequential{}}} {
		if _, err := fingerprint.Verify(ctx, fakeSuspect{labels: fp.Keys}, fp, bad); err == nil {
			t.Errorf("rule %+v accepted", bad)
		}
	}
}

// TestExtractStops checks that Extract refuses a cancelled context, stops
// when the context is cancelled during the attack, and refuses training
// sets without surrogates or references.
func TestExtractStops(t *testing.T) {
	w := getWorld(t)
	t.Run("cancelled before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		fp, err := fingerprint.Extract(ctx, w.training(), w.defender, w.cfg)
		if !errors.Is(err, context.Canceled) || fp != nil {
			t.Fatalf("Extract = %v, %v; want context.Canceled", fp, err)
		}
	})
	t.Run("cancelled during C-BIM", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg := w.cfg
		cfg.Batch = 8
		var maxStep, total int64
		cfg.Progress = func(e shared.Event) {
			if e.Kind == shared.Progress {
				cancel()
				maxStep, total = max(maxStep, e.Step), e.Total
			}
		}
		fp, err := fingerprint.Extract(ctx, w.training(), w.defender, cfg)
		if !errors.Is(err, context.Canceled) || fp != nil {
			t.Fatalf("Extract = %v, %v; want context.Canceled", fp, err)
		}
		if maxStep >= total || maxStep > 8*cbimSteps {
			t.Errorf("Extract went on to step %d of %d after the cancellation in the first batch", maxStep, total)
		}
	})
	t.Run("nothing reaches τ", func(t *testing.T) {
		cfg := w.cfg
		cfg.CBIM.Eps, cfg.Candidates, cfg.Batch = 1.0/255, 8, 8 // one grey level changes no label
		fp, err := fingerprint.Extract(context.Background(), w.training(), w.defender, cfg)
		if !errors.Is(err, fingerprint.ErrNoFingerprint) || fp != nil || !strings.Contains(err.Error(), "none of 8 start points") {
			t.Fatalf("Extract = %v, %v; want ErrNoFingerprint naming the 8 start points", fp, err)
		}
	})
	t.Run("no references", func(t *testing.T) {
		tm := w.training()
		tm.References = nil
		if _, err := fingerprint.Extract(context.Background(), tm, w.defender, w.cfg); err == nil {
			t.Error("Extract without references succeeded")
		}
	})
	t.Run("no surrogates", func(t *testing.T) {
		tm := w.training()
		tm.Surrogates = nil
		if _, err := fingerprint.Extract(context.Background(), tm, w.defender, w.cfg); err == nil {
			t.Error("Extract without surrogates succeeded")
		}
	})
	t.Run("input diversity out of range", func(t *testing.T) {
		for _, d := range [][2]float64{{-1, 0}, {attack.MaxShift + 1, 0}, {0, -0.5}, {0, 2}} {
			cfg := w.cfg
			cfg.CBIM.Shift, cfg.CBIM.Noise = int(d[0]), d[1]
			if _, err := fingerprint.Extract(context.Background(), w.training(), w.defender, cfg); err == nil || !strings.Contains(err.Error(), "want") {
				t.Errorf("shift %d, noise %g: Extract returned %v, want a range error", cfg.CBIM.Shift, cfg.CBIM.Noise, err)
			}
		}
	})
}

// TestCalibrate checks that a calibration records each independent
// model's agreement, fits the null to them, survives its file and is
// refused by any other fingerprint.
func TestCalibrate(t *testing.T) {
	w := getWorld(t)
	if w.fp.N == 0 {
		t.Fatal("no fingerprint")
	}
	ctx := context.Background()
	var held []fingerprint.IndependentModel
	var counts []int
	for i, ls := range labelsOn(t, w.fp, w.heldRef) {
		held = append(held, fingerprint.IndependentModel{Suspect: local(w.heldRef[i], fmt.Sprintf("reference %d", i)), Arch: "cnn", SHA256: fmt.Sprint(i)})
		agree := 0
		for j, l := range ls {
			if l == w.fp.Keys[j] {
				agree++
			}
		}
		counts = append(counts, agree)
	}
	cal, err := fingerprint.Calibrate(ctx, w.fp, held, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	fit, err := stats.FitBetaBinomial(counts, w.fp.N)
	if err != nil {
		t.Fatal(err)
	}
	com, _ := w.fp.Commitment()
	if cal.Fingerprint != com || cal.Fingerprints != w.fp.N || len(cal.Models) != len(held) || cal.Fit != fit ||
		cal.Summary.Agree != fit.Critical(w.fp.N, 0.05) || cal.FPR != 0.05 {
		t.Errorf("calibration %+v, want counts %v and fit %+v", cal, counts, fit)
	}
	for i, m := range cal.Models {
		if m.Agree != counts[i] || len(m.Matches) != w.fp.N || strings.Count(m.Matches, "1") != counts[i] {
			t.Errorf("model %d: %+v, want %d agreements", i, m, counts[i])
		}
	}
	path := filepath.Join(t.TempDir(), "fp.calibration.json")
	if err := cal.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := fingerprint.LoadCalibration(path, w.fp)
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != cal.Digest() || back.Fit != cal.Fit {
		t.Errorf("the file changed the calibration: %+v, was %+v", back, cal)
	}
	// Another fingerprint refuses it.
	other := *w.fp
	other.Keys = append([]int64{(w.fp.Keys[0] + 1) % 10}, w.fp.Keys[1:]...)
	if _, err := fingerprint.LoadCalibration(path, &other); !errors.Is(err, fingerprint.ErrOtherFingerprint) {
		t.Errorf("another fingerprint's calibration: %v, want ErrOtherFingerprint", err)
	}
	// The same model twice is one model, not two.
	if _, err := fingerprint.Calibrate(ctx, w.fp, []fingerprint.IndependentModel{held[0], held[0]}, 0.01); err == nil {
		t.Error("a model counted twice was accepted")
	}
	if _, err := fingerprint.Calibrate(ctx, w.fp, held[:1], 0.01); err == nil {
		t.Error("a calibration of one model was accepted")
	}
}

// TestExtractNatural checks natural fingerprints (SAC-w): every one is an
// input of the start set, unperturbed, that the source misclassifies, with
// the source's wrong label as its key; the conferrability recorded is the
// training models' (Surr·(1 − Ref), eq. 9–10);
// τ filters as for C-BIM; and the metadata says natural, with no C-BIM
// settings.
func TestExtractNatural(t *testing.T) {
	w := getWorld(t)
	cfg := w.cfg
	cfg.Natural, cfg.Tau, cfg.Candidates, cfg.Progress = true, 0, 60, nil
	fp, err := fingerprint.Extract(context.Background(), w.training(), w.defender, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fp.N == 0 || fp.Meta.Candidates != fp.N {
		t.Fatalf("%d fingerprints from %d candidates; want every misclassified candidate kept at τ = 0", fp.N, fp.Meta.Candidates)
	}
	if fp.Meta.Attack != fingerprint.AttackNatural || fp.Meta.Eps != 0 || fp.Meta.Steps != 0 || fp.Meta.Loss != "" {
		t.Errorf("meta attack %q, ε %g, steps %d, loss %q; want natural with no C-BIM settings", fp.Meta.Attack, fp.Meta.Eps, fp.Meta.Steps, fp.Meta.Loss)
	}
	if !slices.Equal(fp.Images, fp.Originals) {
		t.Error("natural fingerprints differ from their originals")
	}
	src := labelsOn(t, fp, []*nn.Model{w.source})[0]
	surr, ref := labelsOn(t, fp, w.surr), labelsOn(t, fp, w.ref)
	per := fp.ImageSize()
	for i := range fp.N {
		if src[i] != fp.Keys[i] || fp.Keys[i] == fp.Labels[i] {
			t.Fatalf("fingerprint %d: key %d, source says %d, label %d; want the source's wrong label", i, fp.Keys[i], src[i], fp.Labels[i])
		}
		if !slices.ContainsFunc(seq(0, w.defender.N), func(j int) bool {
			return slices.Equal(w.defender.Images[j*per:(j+1)*per], fp.Originals[i*per:(i+1)*per]) && w.defender.Labels[j] == fp.Labels[i]
		}) {
			t.Fatalf("fingerprint %d is not an input of the start set with its label", i)
		}
		s, r := 0.0, 0.0
		for m := range surr {
			if surr[m][i] == fp.Keys[i] {
				s++
			}
			if ref[m][i] == fp.Keys[i] {
				r++
			}
		}
		want := s / float64(len(surr)) * (1 - r/float64(len(ref)))
		if math.Abs(fp.Confer[i]-want) > 1e-6 {
			t.Errorf("fingerprint %d: conferrability %.4f, want %.4f from the training models' labels", i, fp.Confer[i], want)
		}
	}
	cfg.Tau = 0.5
	strict, err := fingerprint.Extract(context.Background(), w.training(), w.defender, cfg)
	if err != nil && !errors.Is(err, fingerprint.ErrNoFingerprint) {
		t.Fatal(err)
	}
	want := 0
	for _, c := range fp.Confer {
		if c >= 0.5-1e-9 {
			want++
		}
	}
	if got := 0; strict != nil {
		got = strict.N
		if got != want {
			t.Errorf("τ = 0.5 kept %d, want the %d with conferrability ≥ 0.5", got, want)
		}
	} else if want != 0 {
		t.Errorf("τ = 0.5 kept none, want %d", want)
	}
}

// TestExtractTwins checks twins (Training.Twins): a key must be rare among
// them as among the references, Confer = Surr·(1 − max(Ref, Twin)); the
// file names them; and the reference rate counts them.
func TestExtractTwins(t *testing.T) {
	w := getWorld(t)
	cfg := w.cfg
	cfg.Natural, cfg.Tau, cfg.Candidates, cfg.Progress = true, 0, 60, nil
	tm := w.training()
	tm.References, tm.ReferenceIDs = tm.References[:1], tm.ReferenceIDs[:1]
	tm.Twins, tm.TwinIDs = []fingerprint.Model{w.ref[1]}, []string{"twin-a"}
	fp, err := fingerprint.Extract(context.Background(), tm, w.defender, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fp.Meta.Twins, []string{"twin-a"}) {
		t.Errorf("meta twins %q, want [twin-a]", fp.Meta.Twins)
	}
	surr, ref, twin := labelsOn(t, fp, w.surr), labelsOn(t, fp, w.ref[:1]), labelsOn(t, fp, w.ref[1:2])
	want := fingerprint.ConferGroups(surr, [][][]int64{ref, twin}, fp.Keys)
	if !floatsNear(fp.Confer, want, 1e-6) {
		t.Errorf("conferrability %v, want Surr·(1 − max(Ref, Twin)) %v", fp.Confer, want)
	}
	rate := 1 / float64(len(fp.Meta.Classes))
	for _, l := range append(ref, twin...) {
		rate = math.Max(rate, fingerprint.Agreement(l, fp.Keys))
	}
	if math.Abs(fp.Meta.ReferenceRate-rate) > 1e-12 {
		t.Errorf("reference rate %g, want %g (the most agreeing reference or twin)", fp.Meta.ReferenceRate, rate)
	}
	plain := w.training()
	plain.References, plain.ReferenceIDs = tm.References, tm.ReferenceIDs
	without, err := fingerprint.Extract(context.Background(), plain, w.defender, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if without.Meta.Twins != nil {
		t.Errorf("meta twins %q without twins", without.Meta.Twins)
	}
	if without.N != fp.N || !slices.Equal(without.Keys, fp.Keys) {
		t.Fatalf("τ = 0 kept %d examples with the twin and %d without; want the same candidates", fp.N, without.N)
	}
	lower := 0
	for i := range fp.N {
		if fp.Confer[i] > without.Confer[i]+1e-12 {
			t.Errorf("example %d: conferrability %g with the twin, %g without; a twin can only lower it", i, fp.Confer[i], without.Confer[i])
		}
		if fp.Confer[i] < without.Confer[i]-1e-12 {
			lower++
		}
	}
	if lower == 0 {
		t.Error("the twin lowered no example's conferrability")
	}
}
