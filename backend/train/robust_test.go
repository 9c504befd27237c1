package train_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

var (
	lenetOnce sync.Once
	lenetM    *nn.Model
	lenetErr  error
)

// lenetSource is a LeNet-5 trained for one epoch on the first 1,000
// images: a source with convolutions, for fine-pruning. Never modified.
func lenetSource(t *testing.T) *nn.Model {
	t.Helper()
	oneThread(t)
	tr, _ := fashion(t)
	lenetOnce.Do(func() {
		d := tr.Subset(seq(1000))
		lenetM, lenetErr = nn.New(train.SpecFor("lenet", d), 5, torch.CPU)
		if lenetErr == nil {
			_, lenetErr = train.Train(context.Background(), lenetM, d, fast(1))
		}
	})
	if lenetErr != nil {
		t.Fatalf("training the LeNet source: %v", lenetErr)
	}
	return lenetM
}

// TestFinePrune checks fine-pruning (Liu et al. 2018): the channels of the
// last convolution it removes are exactly the least active on the clean
// data, their filters and biases are zero after fine-tuning too, the rest
// of the network trained, and the model still classifies.
func TestFinePrune(t *testing.T) {
	src := lenetSource(t)
	d, test := deriveData(t, 400)
	test = test.Subset(seq(300))
	m := clone(t, src)
	act, w, err := train.ChannelActivity(context.Background(), m, d)
	if err != nil {
		t.Fatal(err)
	}
	if w.Name != "conv2.weight" || len(act) != 16 {
		t.Fatalf("last convolution %s with %d channels, want LeNet's conv2 with 16", w.Name, len(act))
	}
	// The activity is a mean of ReLU outputs: non-negative, not all zero.
	if slices.Min(act) < 0 || slices.Max(act) <= 0 {
		t.Fatalf("channel activity %v", act)
	}
	before := snapshot(t, m)
	der, err := train.FinePrune(context.Background(), src, m, d, 0.25, fast(1))
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, m)
	if len(der.Pruned) != 4 || der.Queries != 400 {
		t.Fatalf("pruned %v with %d queries; want 4 channels and 400", der.Pruned, der.Queries)
	}
	maxPruned, minKept := math.Inf(-1), math.Inf(1)
	for c, a := range act {
		if slices.Contains(der.Pruned, c) {
			maxPruned = math.Max(maxPruned, a)
		} else {
			minKept = math.Min(minKept, a)
		}
	}
	if maxPruned > minKept {
		t.Errorf("pruned a channel of activity %v but kept one of %v", maxPruned, minKept)
	}
	per := len(after["conv2.weight"]) / 16
	for _, c := range der.Pruned {
		if slices.ContainsFunc(after["conv2.weight"][c*per:(c+1)*per], func(v float32) bool { return v != 0 }) || after["conv2.bias"][c] != 0 {
			t.Errorf("channel %d is not zero after fine-tuning", c)
		}
	}
	for _, name := range []string{"conv1.weight", "fc1.weight", "fc3.weight"} {
		if slices.Equal(before[name], after[name]) {
			t.Errorf("fine-tuning left %s alone", name)
		}
	}
	acc, err := train.Accuracy(context.Background(), m, test, nil)
	if err != nil || acc < 0.3 {
		t.Errorf("fine-pruned accuracy %.3f, %v; want above 0.3", acc, err)
	}
	// An architecture without convolutions cannot be fine-pruned.
	if _, _, err := train.Derive(context.Background(), train.AttackFinePrune, derivedSource(t), d, train.DefaultOptions(train.AttackFinePrune), fast(1)); err == nil || !strings.Contains(err.Error(), "no convolutional layer") {
		t.Errorf("fine-pruning an MLP: %v", err)
	}
}

// robustAccuracy is m's accuracy on d under L∞ PGD (ε = 0.1, 10 steps).
func robustAccuracy(t *testing.T, m *nn.Model, d *data.Dataset) float64 {
	t.Helper()
	m.SetTraining(false)
	g := torch.NewGenerator(1) // PGD's random start, the same for every model
	defer g.Free()
	defer torch.SetGenerator(g)()
	hits := 0
	err := torch.Catch(func() {
		torch.Scoped(func(s *torch.Scope) {
			x := torch.FromSlice(s, d.Float32(seq(d.Len())), int64(d.Len()), int64(d.C), int64(d.H), int64(d.W))
			y := torch.FromSlice(s, d.Labels, int64(d.Len()))
			xa := attack.PGD(m, x, y, attack.Config{Eps: 0.1, Alpha: 0.02, Steps: 10, Norm: attack.LInf})
			torch.NoGrad(func() {
				hits = int(m.Forward(xa).Argmax(1, false).Eq(y).To(torch.Float32, torch.CPU).Sum().Item())
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return float64(hits) / float64(d.Len())
}

// TestRobustTraining checks PGD adversarial training and TRADES from
// scratch: TRADES with β = 0 is plain training on the source's labels
// (Retraining, weight for weight: LeNet has no dropout to draw), while
// PGD-AT and TRADES with β = 6 make models that resist PGD better than that
// one. (At this scale, 600 images for 3 epochs, every model is weak: the
// margin asked is small but the draw is fixed.)
func TestRobustTraining(t *testing.T) {
	src := lenetSource(t)
	d, test := deriveData(t, 600)
	test = test.Subset(seq(200))
	ctx := context.Background()
	cfg := fast(3)
	cfg.LR = 3e-3
	plain := newModel(t, "lenet", d, 3)
	if _, err := train.Retrain(ctx, src, plain, d, cfg); err != nil {
		t.Fatal(err)
	}
	o := train.RobustDefaults()
	o.Steps, o.Alpha = 4, 0.04
	zero := newModel(t, "lenet", d, 3)
	o.Beta = 0
	if _, err := train.TRADES(ctx, src, zero, d, o, cfg); err != nil {
		t.Fatal(err)
	}
	if got := changed(snapshot(t, plain), snapshot(t, zero)); len(got) > 0 {
		t.Errorf("TRADES with β = 0 differs from retraining in %v", got)
	}
	o.Beta = 6
	trades := newModel(t, "lenet", d, 3)
	der, err := train.TRADES(ctx, src, trades, d, o, cfg)
	if err != nil || der.Queries != 600 || der.Attack != train.AttackTRADES {
		t.Fatalf("TRADES: %+v, %v", der, err)
	}
	pgd := newModel(t, "lenet", d, 3)
	if der, err = train.PGDAT(ctx, src, pgd, d, o, cfg); err != nil || der.Queries != 600 {
		t.Fatalf("PGD-AT: %+v, %v", der, err)
	}
	base := robustAccuracy(t, plain, test)
	pc, _ := train.Accuracy(ctx, plain, test, nil)
	t.Logf("plain: robust accuracy %.3f, clean %.3f", base, pc)
	for name, m := range map[string]*nn.Model{"pgd-at": pgd, "trades": trades} {
		r := robustAccuracy(t, m, test)
		clean, _ := train.Accuracy(ctx, m, test, nil)
		t.Logf("%s: robust accuracy %.3f (plain %.3f), clean %.3f", name, r, base, clean)
		if r < base+0.02 {
			t.Errorf("%s: robust accuracy %.3f, plain training's %.3f", name, r, base)
		}
	}
	o.Steps = 0
	if _, err := train.PGDAT(ctx, src, newModel(t, "lenet", d, 3), d, o, cfg); err == nil {
		t.Error("PGD-AT with 0 steps ran")
	}
}

// TestCombined checks the combined attack: a spec naming an unknown step
// (or putting a step that trains a new model anywhere but first) is refused
// before anything is labelled or trained; prune then fine-tune keeps the
// pruned weights at zero; distill, fine-tune, prune, quantize runs its
// four steps in order, counts both labelling steps' queries and leaves
// pruned, quantized weights.
func TestCombined(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 300)
	for _, bad := range []string{"distill,melt", "", "finetune,,prune", "prune,distill", "Distill"} {
		var rec recorder
		cfg := fast(1)
		cfg.Progress = rec.report
		o := train.DefaultOptions(train.AttackCombined)
		o.Steps = bad
		m, der, err := train.Derive(context.Background(), train.AttackCombined, src, d, o, cfg)
		if err == nil || m != nil || der != nil || len(rec.events) != 0 {
			t.Errorf("steps %q: %v, %v, %d events; want an error before any work", bad, m, err, len(rec.events))
		}
		if _, perr := train.ParseSteps(bad); perr == nil || !strings.Contains(err.Error(), "combined attack") {
			t.Errorf("steps %q: ParseSteps %v, Derive %v", bad, perr, err)
		}
	}
	if steps, err := train.ParseSteps(" distill, finetune,prune ,quantize"); err != nil || !slices.Equal(steps, []string{"distill", "finetune", "prune", "quantize"}) {
		t.Errorf("ParseSteps: %v, %v", steps, err)
	}

	o := train.DefaultOptions(train.AttackCombined)
	o.Steps, o.Fraction = "prune,finetune", 0.4
	m, der, err := train.Derive(context.Background(), train.AttackCombined, src, d, o, fast(1))
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, m.(*nn.Model))
	m.Free()
	if der.Queries != 300 || len(der.Steps) != 2 || der.Steps[0].Attack != train.AttackPrune || der.Steps[1].Attack != train.AttackFTAL {
		t.Errorf("prune,finetune: %d queries, steps %+v", der.Queries, der.Steps)
	}
	for _, st := range der.Steps[0].Layers {
		zeros := 0
		for _, v := range after[st.Name] {
			if v == 0 {
				zeros++
			}
		}
		if int64(zeros) < st.Zeroed {
			t.Errorf("%s: %d zeros after fine-tuning, pruning made %d", st.Name, zeros, st.Zeroed)
		}
	}
	if slices.Equal(after["fc1.bias"], snapshot(t, src)["fc1.bias"]) {
		t.Error("fine-tuning after pruning changed nothing")
	}

	o = train.DefaultOptions(train.AttackCombined)
	var rec recorder
	cfg := fast(1)
	cfg.Progress = rec.report
	m, der, err = train.Derive(context.Background(), train.AttackCombined, src, d, o, cfg)
	if err != nil {
		t.Fatal(err)
	}
	final := snapshot(t, m.(*nn.Model))
	m.Free()
	var kinds []string
	for _, s := range der.Steps {
		kinds = append(kinds, s.Attack)
	}
	if !slices.Equal(kinds, []string{train.AttackJagielski, train.AttackFTAL, train.AttackPrune, train.AttackQuantize}) || der.Queries != 600 {
		t.Errorf("default combined: steps %v, %d queries; want jagielski, ftal, prune, quantize and 600", kinds, der.Queries)
	}
	for _, name := range []string{"fc1.weight", "fc2.weight", "fc3.weight"} {
		levels, zeros := map[float32]bool{}, 0
		for _, v := range final[name] {
			levels[v] = true
			if v == 0 {
				zeros++
			}
		}
		if len(levels) > 256 || float64(zeros) < 0.5*float64(len(final[name]))-1 {
			t.Errorf("%s: %d levels, %d of %d zero", name, len(levels), zeros, len(final[name]))
		}
	}
	stages := map[string]bool{}
	for _, e := range rec.of(shared.Epoch) {
		stages[e.Stage] = true
	}
	if len(stages) != 2 {
		t.Errorf("training stages %v, want distillation's and fine-tuning's", stages)
	}
}

// TestAugmentedTransfer checks Knockoff's augmented transfer set: d's
// shape, no labels, every image changed, reproducible from its seed and
// different for another seed.
func TestAugmentedTransfer(t *testing.T) {
	d, _ := deriveData(t, 200)
	labels := slices.Clone(d.Labels)
	a := train.AugmentedTransfer(d, 1)
	if a.Len() != d.Len() || a.C != d.C || a.H != d.H || a.W != d.W || len(a.Images) != len(d.Images) || !strings.HasSuffix(a.Name, "-augmented") {
		t.Fatalf("transfer %s: %d images of %dx%dx%d", a.Name, a.Len(), a.C, a.H, a.W)
	}
	if slices.ContainsFunc(a.Labels, func(y int64) bool { return y != 0 }) {
		t.Error("the transfer set kept labels")
	}
	same := 0
	for i := range d.Len() {
		if slices.Equal(a.Image(i), d.Image(i)) {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d images unchanged", same)
	}
	if !slices.Equal(train.AugmentedTransfer(d, 1).Images, a.Images) || slices.Equal(train.AugmentedTransfer(d, 2).Images, a.Images) {
		t.Error("the augmentation is not a function of its seed")
	}
	if !slices.Equal(d.Labels, labels) {
		t.Error("AugmentedTransfer touched d's labels")
	}
}
