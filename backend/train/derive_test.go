package train_test

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// The derivation tests are kept small: an MLP, 1,000 Fashion-MNIST training
// images, one epoch, one libtorch thread.

// oneThread pins the test to its OS thread and runs libtorch on one thread
// there (the machine's other cores are busy).
func oneThread(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	prev := torch.NumThreads()
	torch.SetNumThreads(1)
	t.Cleanup(func() {
		torch.SetNumThreads(prev)
		runtime.UnlockOSThread()
	})
}

var (
	sourceOnce sync.Once
	sourceM    *nn.Model
	sourceErr  error
)

// deriveData returns n adversary images (the last n of the 2,000 loaded, so
// disjoint from the source's first 1,000) and the test set.
func deriveData(t *testing.T, n int) (adv, test *data.Dataset) {
	t.Helper()
	tr, te := fashion(t)
	return tr.Subset(seqFrom(tr.Len()-n, tr.Len())), te
}

func seqFrom(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// derivedSource is an MLP trained for one epoch on the first 1,000 images,
// shared by the tests (never modified by them).
func derivedSource(t *testing.T) *nn.Model {
	t.Helper()
	oneThread(t)
	tr, _ := fashion(t)
	sourceOnce.Do(func() {
		d := tr.Subset(seq(1000))
		mean, std := d.Stats()
		spec := nn.Spec{Arch: "mlp", Dataset: d.Name, Classes: d.Classes, C: int64(d.C), H: int64(d.H), W: int64(d.W), Mean: mean, Std: std}
		sourceM, sourceErr = nn.New(spec, 7, torch.CPU)
		if sourceErr != nil {
			return
		}
		_, sourceErr = train.Train(context.Background(), sourceM, d, fast(1))
	})
	if sourceErr != nil {
		t.Fatalf("training the source: %v", sourceErr)
	}
	return sourceM
}

// snapshot copies every variable's values by name.
func snapshot(t *testing.T, m *nn.Model) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	if err := torch.Catch(func() {
		for _, v := range m.Variables() {
			out[v.Name] = v.T.Float32s()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func clone(t *testing.T, m *nn.Model) *nn.Model {
	t.Helper()
	c, err := m.Clone(torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Free)
	return c
}

// changed lists the variables whose values differ between a and b.
func changed(a, b map[string][]float32) []string {
	var out []string
	for name, va := range a {
		if !slices.Equal(va, b[name]) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func lastLayerNames(t *testing.T, m *nn.Model) []string {
	t.Helper()
	layer, err := train.LastLayer(m)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range layer {
		names = append(names, v.Name)
	}
	slices.Sort(names)
	return names
}

func trainableNames(m *nn.Model) []string {
	var out []string
	for _, v := range m.Variables() {
		if v.Trainable {
			out = append(out, v.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestDeriveFineTuning checks that FTLL and RTLL change only the last layer
// (every other variable bit-identical), that RTLL re-initialises it before
// training, and that FTAL and RTAL change every layer.
func TestDeriveFineTuning(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 600)
	before := snapshot(t, src)
	last := lastLayerNames(t, src)
	if !slices.Equal(last, []string{"fc3.bias", "fc3.weight"}) {
		t.Fatalf("last layer of the MLP = %v, want fc3.weight and fc3.bias", last)
	}
	cfg := fast(1)
	cfg.LR = 0.01

	// RTLL's re-initialisation alone.
	re := clone(t, src)
	if err := train.ReinitLastLayer(re, 3); err != nil {
		t.Fatal(err)
	}
	if got := changed(before, snapshot(t, re)); !slices.Equal(got, last) {
		t.Errorf("ReinitLastLayer changed %v, want exactly %v", got, last)
	}

	for _, tc := range []struct {
		attack string
		want   []string
	}{
		{train.AttackFTLL, last},
		{train.AttackRTLL, last},
		{train.AttackFTAL, trainableNames(src)},
		{train.AttackRTAL, trainableNames(src)},
	} {
		m := clone(t, src)
		der, err := train.FineTune(context.Background(), src, m, d, tc.attack, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.attack, err)
		}
		if got := changed(before, snapshot(t, m)); !slices.Equal(got, tc.want) {
			t.Errorf("%s changed %v, want exactly %v", tc.attack, got, tc.want)
		}
		if der.Queries != int64(d.Len()) || der.Train == nil || len(der.Train.Epochs) != 1 {
			t.Errorf("%s: derivation %+v", tc.attack, der)
		}
		// Trainable flags are restored after a frozen run.
		for _, v := range m.Variables() {
			if v.Trainable != v.T.RequiresGrad() {
				t.Errorf("%s: %s requires grad %v after training", tc.attack, v.Name, v.T.RequiresGrad())
			}
		}
	}
	if got := changed(before, snapshot(t, src)); len(got) > 0 {
		t.Errorf("fine-tuning changed the source: %v", got)
	}
}

// TestDeriveSoftTargets checks Noise with λ = 0 (exactly the source's
// prediction vectors, whose argmax are Retraining's labels), noisy targets
// (still distributions), and Jagielski's temperature.
func TestDeriveSoftTargets(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 300)
	ctx := context.Background()
	p, err := train.Probabilities(ctx, src, d, 1)
	if err != nil {
		t.Fatal(err)
	}
	k := len(src.Spec.Classes)
	n0, err := train.NoiseTargets(ctx, src, d, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n0, p) {
		t.Fatal("noise λ=0: targets are not the source's prediction vectors")
	}
	labels, err := train.Predict(ctx, src, d)
	if err != nil {
		t.Fatal(err)
	}
	for i := range d.Len() {
		if got := argmax(n0[i*k : (i+1)*k]); got != labels[i] {
			t.Fatalf("noise λ=0: example %d argmax %d, Retraining label %d", i, got, labels[i])
		}
	}
	n3, err := train.NoiseTargets(ctx, src, d, 0.3, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range d.Len() {
		row := n3[i*k : (i+1)*k]
		var sum float64
		for j, v := range row {
			sum += float64(v)
			if lo := 0.7 * float64(p[i*k+j]); float64(v) < lo-1e-6 {
				t.Fatalf("noise λ=0.3: target %v below (1−λ)·p = %v", v, lo)
			}
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("noise λ=0.3: row %d sums to %v", i, sum)
		}
	}
	if slices.Equal(n3, p) {
		t.Error("noise λ=0.3 left the targets unchanged")
	}
	// Jagielski: higher temperature, softer targets, same argmax.
	soft, err := train.Probabilities(ctx, src, d, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i := range d.Len() {
		a, b := p[i*k:(i+1)*k], soft[i*k:(i+1)*k]
		if argmax(a) != argmax(b) || slices.Max(b) > slices.Max(a)+1e-6 {
			t.Fatalf("T′=4: example %d: max %v (argmax %d) vs T=1 max %v (argmax %d)", i, slices.Max(b), argmax(b), slices.Max(a), argmax(a))
		}
	}
}

func argmax(v []float32) int64 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int64(best)
}

// TestDeriveTrueLabels checks the label mix of the True Labels attack and
// its query count.
func TestDeriveTrueLabels(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 400)
	ctx := context.Background()
	pred, err := train.Predict(ctx, src, d)
	if err != nil {
		t.Fatal(err)
	}
	all, q, err := train.MixTrueLabels(ctx, src, d, 1, 1)
	if err != nil || q != 0 || !slices.Equal(all, d.Labels) {
		t.Errorf("ρ=1: %d queries, ground truth %v, err %v", q, slices.Equal(all, d.Labels), err)
	}
	none, q, err := train.MixTrueLabels(ctx, src, d, 0, 1)
	if err != nil || q != int64(d.Len()) || !slices.Equal(none, pred) {
		t.Errorf("ρ=0: %d queries, source labels %v, err %v", q, slices.Equal(none, pred), err)
	}
	mix, q, err := train.MixTrueLabels(ctx, src, d, 0.25, 1)
	if err != nil || q != 300 {
		t.Fatalf("ρ=0.25: %d queries (want 300), err %v", q, err)
	}
	agreeTruth, agreeSource := 0, 0
	for i, y := range mix {
		if y == d.Labels[i] {
			agreeTruth++
		}
		if y == pred[i] {
			agreeSource++
		}
		if y != d.Labels[i] && y != pred[i] {
			t.Fatalf("ρ=0.25: label %d of example %d is neither truth %d nor source %d", y, i, d.Labels[i], pred[i])
		}
	}
	if agreeSource < 300 || agreeTruth < 100 {
		t.Errorf("ρ=0.25: %d labels agree with the source (≥300), %d with the truth (≥100)", agreeSource, agreeTruth)
	}
}

// constant is a hand-built classifier that gives every image the same
// logits.
type constant []float32

func (c constant) Forward(x *torch.Tensor) *torch.Tensor {
	n := x.Size(0)
	rows := make([]float32, 0, int(n)*len(c))
	for range n {
		rows = append(rows, c...)
	}
	return x.Scope().Add(torch.FromSlice(nil, rows, n, int64(len(c))))
}

func (c constant) Device() torch.Device { return torch.CPU }

// TestDeriveEnsembleVotes checks that the ensemble's prediction vector is
// the mean of its members' softmax, that its vote is the majority for a
// hand-built case, and that a trained ensemble of surrogates on disjoint
// data saves and loads as one model.
func TestDeriveEnsembleVotes(t *testing.T) {
	oneThread(t)
	// Two members vote class 2, one votes class 5.
	members := []constant{
		{0, 0, 3, 0, 0, 1, 0, 0, 0, 0},
		{0, 1, 2, 0, 0, 0, 0, 0, 0, 0},
		{0, 0, 0, 0, 0, 2.5, 0, 0, 0, 0},
	}
	e := &train.Ensemble{}
	for _, m := range members {
		e.Members = append(e.Members, m)
	}
	err := torch.Catch(func() {
		torch.Scoped(func(s *torch.Scope) {
			x := torch.Zeros(s, torch.CPU, 4, 1, 28, 28)
			got := e.Probs(x).Float32s()
			logits := e.Forward(x)
			if v := logits.Softmax(1).Float32s(); !close32(v, got, 1e-6) {
				t.Errorf("softmax of Forward %v differs from Probs %v", v[:10], got[:10])
			}
			mean := make([]float32, 10)
			for _, m := range members {
				p := torch.FromSlice(s, m, 1, 10).Softmax(1).Float32s()
				for j := range mean {
					mean[j] += p[j] / 3
				}
			}
			for i := range 4 {
				if !close32(got[i*10:(i+1)*10], mean, 1e-6) {
					t.Fatalf("row %d: ensemble %v, mean of softmax %v", i, got[i*10:(i+1)*10], mean)
				}
			}
			if votes := logits.Argmax(1, false).Int64s(); !slices.Equal(votes, []int64{2, 2, 2, 2}) {
				t.Errorf("votes %v, want the majority class 2", votes)
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	// A trained ensemble: two surrogates on disjoint halves.
	src := derivedSource(t)
	d, test := deriveData(t, 600)
	cfg := fast(1)
	cfg.Test = test
	spec := src.Spec
	trained, der, err := train.TrainEnsemble(context.Background(), src, spec, torch.CPU, d, 2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer trained.Free()
	if len(trained.Members) != 2 || len(der.Members) != 2 || der.Queries != 600 {
		t.Fatalf("ensemble: %d members, %d runs, %d queries", len(trained.Members), len(der.Members), der.Queries)
	}
	acc, err := train.Accuracy(context.Background(), trained, test, nil)
	if err != nil || acc < 0.3 {
		t.Errorf("ensemble test accuracy %.3f, err %v", acc, err)
	}
	path := filepath.Join(t.TempDir(), "ensemble.safetensors")
	if err := trained.Save(path, map[string]string{"note": "test"}); err != nil {
		t.Fatal(err)
	}
	loaded, meta, err := train.LoadDeployed(path, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Free()
	if meta["note"] != "test" {
		t.Errorf("metadata %v", meta)
	}
	a, err := train.Probabilities(context.Background(), trained, test, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := train.Probabilities(context.Background(), loaded, test, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Error("the loaded ensemble predicts differently")
	}
}

func close32(a, b []float32, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > tol {
			return false
		}
	}
	return true
}

// TestDerivePruneQuantize checks that pruning zeroes the requested fraction
// of each weight tensor and that quantization moves each weight by at most
// one step onto at most 256 levels, both leaving biases alone.
func TestDerivePruneQuantize(t *testing.T) {
	src := derivedSource(t)
	before := snapshot(t, src)

	p := clone(t, src)
	stats, err := train.Prune(p, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, p)
	if len(stats) != 3 {
		t.Fatalf("pruned %d tensors, want the MLP's 3 weights", len(stats))
	}
	for _, st := range stats {
		zeros := 0
		for _, v := range after[st.Name] {
			if v == 0 {
				zeros++
			}
		}
		want := int(math.Round(0.3 * float64(st.Numel)))
		if zeros != want || st.Zeroed != int64(want) {
			t.Errorf("%s: %d zeros (reported %d), want %d of %d", st.Name, zeros, st.Zeroed, want, st.Numel)
		}
		// The kept weights are the largest and unchanged.
		var maxPruned, minKept float64 = 0, math.Inf(1)
		for i, v := range before[st.Name] {
			if after[st.Name][i] == 0 {
				maxPruned = math.Max(maxPruned, math.Abs(float64(v)))
			} else {
				minKept = math.Min(minKept, math.Abs(float64(v)))
				if after[st.Name][i] != v {
					t.Fatalf("%s: a kept weight changed", st.Name)
				}
			}
		}
		if maxPruned > minKept {
			t.Errorf("%s: pruned |w| up to %v but kept one of %v", st.Name, maxPruned, minKept)
		}
	}
	for _, name := range []string{"fc1.bias", "fc2.bias", "fc3.bias"} {
		if !slices.Equal(before[name], after[name]) {
			t.Errorf("pruning changed %s", name)
		}
	}

	q := clone(t, src)
	qstats, err := train.Quantize(q, 8)
	if err != nil {
		t.Fatal(err)
	}
	after = snapshot(t, q)
	for _, st := range qstats {
		levels := map[float32]bool{}
		for i, v := range after[st.Name] {
			levels[v] = true
			if d := math.Abs(float64(v - before[st.Name][i])); d > st.Scale {
				t.Fatalf("%s: weight moved by %v, more than one step %v", st.Name, d, st.Scale)
			}
		}
		if len(levels) > 256 || st.Scale <= 0 {
			t.Errorf("%s: %d distinct values, scale %v", st.Name, len(levels), st.Scale)
		}
	}
	for _, name := range []string{"fc1.bias", "fc2.bias", "fc3.bias"} {
		if !slices.Equal(before[name], after[name]) {
			t.Errorf("quantization changed %s", name)
		}
	}
}

// TestDerivePapernot checks that Papernot's attack doubles its substitute
// set each round and counts every query.
func TestDerivePapernot(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 500)
	m := newModel(t, "mlp", d, 11)
	der, err := train.Papernot(context.Background(), src, m, d, train.PapernotOpts{Seeds: 20, Rounds: 3, Lambda: 0.1}, fast(1))
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	var queries []int64
	for _, r := range der.Rounds {
		sizes = append(sizes, r.Examples)
		queries = append(queries, r.Queries)
	}
	if !slices.Equal(sizes, []int{20, 40, 80}) || !slices.Equal(queries, []int64{20, 40, 80}) {
		t.Errorf("rounds: sizes %v, queries %v; want 20, 40, 80 each", sizes, queries)
	}
	if der.Queries != 80 || der.Examples != 80 {
		t.Errorf("derivation: %d queries, %d examples; want 80", der.Queries, der.Examples)
	}
}

// TestDeriveCancel checks that cancelling the context stops a derivation
// early, both in the fine-tuning loop and between Papernot's rounds.
func TestDeriveCancel(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 1000)
	for _, name := range []string{train.AttackFTAL, train.AttackPapernot, train.AttackJagielski} {
		ctx, cancel := context.WithCancel(context.Background())
		var rec recorder
		cfg := fast(3)
		cfg.Progress = func(e shared.Event) {
			rec.report(e)
			if e.Kind == shared.Progress {
				cancel()
			}
		}
		o := train.DefaultOptions(name)
		o.Papernot = train.PapernotOpts{Seeds: 200, Rounds: 3, Lambda: 0.1}
		m, _, err := train.Derive(ctx, name, src, d, o, cfg)
		cancel()
		if !errors.Is(err, context.Canceled) || m != nil {
			t.Errorf("%s: err %v, model %v; want cancellation and no model", name, err, m)
		}
		if n := len(rec.of(shared.Progress)); n != 1 {
			t.Errorf("%s: %d progress events after cancelling, want 1", name, n)
		}
	}
}

// TestDeriveAll runs every attack through Derive on small data and checks
// that each produces a working model, counts its queries as it claims and
// leaves the source alone.
func TestDeriveAll(t *testing.T) {
	src := derivedSource(t)
	d, test := deriveData(t, 300)
	test = test.Subset(seq(200))
	before := snapshot(t, src)
	mnist, err := data.MNIST("", true)
	if err != nil {
		t.Logf("MNIST unavailable (%v): Knockoff uses Fashion-MNIST images as its transfer set", err)
		mnist = d
	}
	for _, name := range train.Attacks() {
		cfg := fast(1)
		cfg.Test = test
		var rec recorder
		cfg.Progress = rec.report
		o := train.DefaultOptions(name)
		o.Papernot = train.PapernotOpts{Seeds: 50, Rounds: 2, Lambda: 0.1}
		o.Adv.Steps = 3
		o.Transfer, o.TransferSize = mnist, 200
		o.Members = 2
		o.Robust.Steps = 2
		m, der, err := train.Derive(context.Background(), name, src, d, o, cfg)
		if name == train.AttackFinePrune { // the MLP has no convolution to prune (TestFinePrune)
			if err == nil || !strings.Contains(err.Error(), "no convolutional layer") {
				t.Errorf("%s of an MLP: %v", name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var wantQ int64
		switch name {
		case train.AttackCombined:
			wantQ = 600 // distillation and fine-tuning each label the data
		case train.AttackPrune, train.AttackQuantize:
		case train.AttackPapernot:
			wantQ = 100
		case train.AttackKnockoff:
			wantQ = 200
		case train.AttackTrueLabels:
			wantQ = 270
		default:
			wantQ = 300
		}
		if der.Queries != wantQ {
			t.Errorf("%s: %d queries, want %d", name, der.Queries, wantQ)
		}
		acc, err := train.Accuracy(context.Background(), m, test, nil)
		if err != nil || acc != der.TestAccuracy {
			t.Errorf("%s: accuracy %v (reported %v), err %v", name, acc, der.TestAccuracy, err)
		}
		// One epoch on 300 images: better than chance is all that can be
		// asked (Knockoff's transfer set is another distribution).
		if floor := 0.12; name != train.AttackKnockoff && acc < floor {
			t.Errorf("%s: test accuracy %.3f below %.2f", name, acc, floor)
		}
		if done := rec.of(shared.Done); len(done) != 1 || done[0].Metrics["queries"] != float64(wantQ) {
			t.Errorf("%s: done events %+v", name, done)
		}
		t.Logf("%-12s queries %4d  test accuracy %.3f  %.2f s", name, der.Queries, der.TestAccuracy, der.Seconds)
		m.Free()
	}
	if got := changed(before, snapshot(t, src)); len(got) > 0 {
		t.Errorf("derivations changed the source: %v", got)
	}
}

// TestDeriveLabelsOnly checks that the labels-only suspect's prediction
// vectors are the one-hot vectors of the model's labels.
func TestDeriveLabelsOnly(t *testing.T) {
	src := derivedSource(t)
	d, _ := deriveData(t, 100)
	ctx := context.Background()
	p, err := train.Probabilities(ctx, train.LabelsOnly{Model: src}, d, 1)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := train.Predict(ctx, src, d)
	if err != nil {
		t.Fatal(err)
	}
	k := len(src.Spec.Classes)
	for i, y := range labels {
		for j, v := range p[i*k : (i+1)*k] {
			want := float32(0)
			if int64(j) == y {
				want = 1
			}
			if v != want {
				t.Fatalf("example %d: prediction vector %v, want one-hot of %d", i, p[i*k:(i+1)*k], y)
			}
		}
	}
}
