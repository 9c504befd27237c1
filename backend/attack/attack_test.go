package attack_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// TestMain runs libtorch on one thread: the test models are too small to
// gain from more, and with other work on the machine (go test runs packages
// in parallel) OpenMP's spinning threads made training 4× slower on two
// threads than on one.
func TestMain(m *testing.M) {
	torch.SetNumThreads(1)
	os.Exit(m.Run())
}

// batchN is the number of test images every attack is run on.
const batchN = 32

// fixture holds small models trained once on real Fashion-MNIST and a batch
// of test images the source classifies correctly.
type fixture struct {
	src, surr, ref *nn.Model
	x              []float32 // batchN images, pixel space, on the 8-bit grid
	y              []int64   // their ground-truth labels (= the source's)
	c, h, w        int
	classes        int
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

func seq(from, to int) []int {
	idx := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		idx = append(idx, i)
	}
	return idx
}

// quick is a one-epoch recipe: Adam, no augmentation.
func quick(seed int64) train.Config {
	return train.Config{Epochs: 1, BatchSize: 64, Optimizer: "adam", LR: 1e-3, Schedule: "constant", Seed: seed}
}

func newMLP(d *data.Dataset, seed uint64) (*nn.Model, error) {
	mean, std := d.Stats()
	return nn.New(nn.Spec{Arch: "mlp", Dataset: d.Name, Classes: d.Classes, C: int64(d.C), H: int64(d.H), W: int64(d.W), Mean: mean, Std: std}, seed, torch.CPU)
}

// models trains, once per test binary, three MLPs on 3,000 Fashion-MNIST
// training images: a source on the first 1,500, a surrogate retrained on the
// source's labels of the other 1,500, and a reference trained on their
// ground truth.
func models(t *testing.T) *fixture {
	t.Helper()
	fixOnce.Do(func() { fix, fixErr = buildFixture() })
	if fixErr != nil {
		t.Fatalf("fixture: %v", fixErr)
	}
	return fix
}

func buildFixture() (*fixture, error) {
	ctx := context.Background()
	// Dropout draws from libtorch's global generator, which starts from a
	// random seed: fix it, so that every run trains the same models.
	torch.ManualSeed(1)
	all, err := data.FashionMNIST("", true)
	if err != nil {
		return nil, err
	}
	test, err := data.FashionMNIST("", false)
	if err != nil {
		return nil, err
	}
	d1, d2 := all.Subset(seq(0, 1500)), all.Subset(seq(1500, 3000))
	f := &fixture{c: all.C, h: all.H, w: all.W, classes: len(all.Classes)}
	if f.src, err = newMLP(d1, 1); err != nil {
		return nil, err
	}
	if _, err = train.Train(ctx, f.src, d1, quick(1)); err != nil {
		return nil, err
	}
	if f.surr, err = newMLP(d2, 2); err != nil {
		return nil, err
	}
	if _, err = train.Retrain(ctx, f.src, f.surr, d2, quick(2)); err != nil {
		return nil, err
	}
	if f.ref, err = newMLP(d2, 3); err != nil {
		return nil, err
	}
	if _, err = train.Train(ctx, f.ref, d2, quick(3)); err != nil {
		return nil, err
	}
	// The first batchN test images the source labels correctly.
	cand := test.Subset(seq(0, 200))
	pred, err := train.Predict(ctx, f.src, cand)
	if err != nil {
		return nil, err
	}
	var idx []int
	for i, p := range pred {
		if p == cand.Labels[i] && len(idx) < batchN {
			idx = append(idx, i)
		}
	}
	if len(idx) < batchN {
		return nil, errors.New("the source labels too few test images correctly")
	}
	f.x = cand.Float32(idx)
	for _, i := range idx {
		f.y = append(f.y, cand.Labels[i])
	}
	return f, nil
}

// run gives f the batch as tensors in a fresh scope, turning a *torch.Error
// panic into a test failure.
func (f *fixture) run(t *testing.T, body func(x, y *torch.Tensor)) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := torch.Catch(func() {
		torch.Scoped(func(s *torch.Scope) {
			x := torch.FromSlice(s, f.x, batchN, int64(f.c), int64(f.h), int64(f.w))
			y := torch.FromSlice(s, f.y, batchN)
			body(x, y)
		})
	}); err != nil {
		t.Fatal(err)
	}
}

// shifted returns the target labels (y + k) mod classes in s.
func (f *fixture) shifted(s *torch.Scope, k int64) *torch.Tensor {
	t := make([]int64, len(f.y))
	for i, y := range f.y {
		t[i] = (y + k) % int64(f.classes)
	}
	return torch.FromSlice(s, t, int64(len(t)))
}

func (f *fixture) ensemble() attack.Ensemble {
	return attack.Ensemble{Source: f.src, Surrogates: []attack.Model{f.surr}, References: []attack.Model{f.ref}}
}

// checkBall fails unless every example of adv lies in the ε-ball around x
// (n) and in [0,1]. It returns the largest perturbation measured.
func checkBall(t *testing.T, adv, x []float32, per int, eps float64, n attack.Norm) float64 {
	t.Helper()
	if len(adv) != len(x) {
		t.Fatalf("%d values, want %d", len(adv), len(x))
	}
	for i, v := range adv {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("pixel %d is %v, outside [0,1]", i, v)
		}
	}
	var worst float64
	for e := 0; e < len(x)/per; e++ {
		var l2, linf float64
		for i := e * per; i < (e+1)*per; i++ {
			d := float64(adv[i]) - float64(x[i])
			l2 += d * d
			linf = math.Max(linf, math.Abs(d))
		}
		l2 = math.Sqrt(l2)
		if n == attack.L2 {
			worst = math.Max(worst, l2)
			if l2 > eps+1e-5 {
				t.Errorf("example %d: ‖δ‖₂ = %.7f > ε = %g", e, l2, eps)
			}
		} else {
			worst = math.Max(worst, linf)
			if linf > eps+1e-6 {
				t.Errorf("example %d: ‖δ‖∞ = %.7f > ε = %g", e, linf, eps)
			}
		}
	}
	return worst
}

func labelsOf(m attack.Model, x *torch.Tensor) []int64 {
	return attack.Labels(m, x).Int64s()
}

// TestAttacksStayInBall runs every attack on a trained model and checks
// that its examples stay inside the ε-ball and [0,1], and that the attack
// actually moved them.
func TestAttacksStayInBall(t *testing.T) {
	f := models(t)
	per := f.c * f.h * f.w
	target := func(y *torch.Tensor) *torch.Tensor { return f.shifted(y.Scope(), 1) }
	cbim := func(loss attack.Loss) func(x, y *torch.Tensor) *torch.Tensor {
		return func(x, y *torch.Tensor) *torch.Tensor {
			return must(attack.CBIM(f.ensemble(), x, y, attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 15, Dropout: 0.5, Loss: loss}))
		}
	}
	cases := []struct {
		name   string
		eps    float64
		norm   attack.Norm
		attack func(x, y *torch.Tensor) *torch.Tensor
	}{
		{"FGSM Linf", 0.1, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.FGSM(f.src, x, y, attack.Config{Eps: 0.1, Norm: attack.LInf})
		}},
		{"FGSM L2", 1.5, attack.L2, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.FGSM(f.src, x, y, attack.Config{Eps: 1.5, Norm: attack.L2})
		}},
		{"BIM Linf", 0.05, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.BIM(f.src, x, y, attack.Config{Eps: 0.05, Alpha: 0.01, Steps: 10, Norm: attack.LInf})
		}},
		{"BIM L2", 1, attack.L2, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.BIM(f.src, x, y, attack.Config{Eps: 1, Alpha: 0.3, Steps: 10, Norm: attack.L2})
		}},
		{"BIM Linf targeted", 0.08, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.BIM(f.src, x, target(y), attack.Config{Eps: 0.08, Alpha: 0.01, Steps: 10, Norm: attack.LInf, Targeted: true})
		}},
		{"PGD Linf", 0.1, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.PGD(f.src, x, y, attack.Config{Eps: 0.1, Alpha: 0.01, Steps: 10, Norm: attack.LInf})
		}},
		{"PGD L2", 1, attack.L2, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.PGD(f.src, x, y, attack.Config{Eps: 1, Alpha: 0.2, Steps: 10, Norm: attack.L2})
		}},
		{"DeepFool L2 eps", 0.5, attack.L2, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.DeepFool(f.src, x, attack.DeepFoolConfig{Steps: 8, Overshoot: 0.02, Eps: 0.5, Norm: attack.L2})
		}},
		{"DeepFool Linf eps", 0.02, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.DeepFool(f.src, x, attack.DeepFoolConfig{Steps: 8, Overshoot: 0.02, Eps: 0.02, Norm: attack.LInf})
		}},
		{"CWL2 eps", 0.03, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return attack.CWL2(f.src, x, y, attack.CWConfig{Steps: 20, Kappa: 0, LR: 0.05, InitialConst: 1, SearchSteps: 2, Eps: 0.03})
		}},
		{"CBIM linear", 0.1, attack.LInf, cbim(attack.LossLinear)},
		{"CBIM ce", 0.1, attack.LInf, cbim(attack.LossCE)},
		{"CBIM geometric", 0.1, attack.LInf, cbim(attack.LossGeometric)},
		{"CBIM best iterate", 0.1, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return must(attack.CBIM(f.ensemble(), x, y, attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 15, Dropout: 0.5, Loss: attack.LossLinear, Best: true}))
		}},
		{"CBIM input diversity", 0.1, attack.LInf, func(x, y *torch.Tensor) *torch.Tensor {
			return must(attack.CBIM(f.ensemble(), x, y, attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 15, Dropout: 0.5, Loss: attack.LossGeometric, Best: true, Shift: 2, Noise: 0.05}))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			torch.ManualSeed(1)
			var adv []float32
			f.run(t, func(x, y *torch.Tensor) {
				a := tc.attack(x, y)
				if got := a.Shape(); len(got) != 4 || got[0] != batchN || got[1] != int64(f.c) || got[2] != int64(f.h) || got[3] != int64(f.w) {
					t.Fatalf("shape %v, want the input's", got)
				}
				adv = a.Float32s()
			})
			worst := checkBall(t, adv, f.x, per, tc.eps, tc.norm)
			if worst == 0 {
				t.Errorf("the attack left every example unchanged")
			}
		})
	}
}

// fraction returns the share of i for which pred(i) holds.
func fraction(n int, pred func(i int) bool) float64 {
	k := 0
	for i := range n {
		if pred(i) {
			k++
		}
	}
	return float64(k) / float64(n)
}

// TestUntargetedFlips checks that BIM and PGD (L∞) change the trained
// source's label of most correctly classified examples. The one-epoch test
// models are smoother than fully trained ones: at ε = 0.1 BIM flips about
// 0.6 of their labels (a fully trained CNN: 0.95), at ε = 0.2 over 0.9.
func TestUntargetedFlips(t *testing.T) {
	f := models(t)
	for _, tc := range []struct {
		name string
		fn   func(attack.Model, *torch.Tensor, *torch.Tensor, attack.Config) *torch.Tensor
		eps  float64
		want float64
	}{
		{"BIM eps 0.1", attack.BIM, 0.1, 0.5},
		{"PGD eps 0.1", attack.PGD, 0.1, 0.5},
		{"BIM eps 0.2", attack.BIM, 0.2, 0.8},
		{"PGD eps 0.2", attack.PGD, 0.2, 0.8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			torch.ManualSeed(2)
			f.run(t, func(x, y *torch.Tensor) {
				got := labelsOf(f.src, tc.fn(f.src, x, y, attack.Config{Eps: tc.eps, Alpha: tc.eps / 8, Steps: 20, Norm: attack.LInf}))
				rate := fraction(batchN, func(i int) bool { return got[i] != f.y[i] })
				t.Logf("%s flips %.2f of the labels", tc.name, rate)
				if rate <= tc.want {
					t.Errorf("%s flips %.2f of the labels, want > %.2f", tc.name, rate, tc.want)
				}
			})
		})
	}
}

// runnerUp returns, per example, the class m ranks second.
func runnerUp(m attack.Model, x *torch.Tensor) []int64 {
	var logits []float32
	var k int
	torch.NoGrad(func() {
		l := m.Forward(x)
		k = int(l.Size(1))
		logits = l.Float32s()
	})
	out := make([]int64, len(logits)/k)
	for i := range out {
		first, second := -1, -1
		for j := range k {
			v := logits[i*k+j]
			switch {
			case first < 0 || v > logits[i*k+first]:
				first, second = j, first
			case second < 0 || v > logits[i*k+second]:
				second = j
			}
		}
		out[i] = int64(second)
	}
	return out
}

// TestTargetedBIM checks that a targeted BIM reaches its target class for
// most examples: the class the model ranks second, and a fixed shift of the
// label.
func TestTargetedBIM(t *testing.T) {
	f := models(t)
	for _, tc := range []struct {
		name   string
		target func(x *torch.Tensor) *torch.Tensor
		want   float64
	}{
		{"runner-up", func(x *torch.Tensor) *torch.Tensor {
			return torch.FromSlice(x.Scope(), runnerUp(f.src, x), batchN)
		}, 0.8},
		{"label+3", func(x *torch.Tensor) *torch.Tensor { return f.shifted(x.Scope(), 3) }, 0.35},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.run(t, func(x, y *torch.Tensor) {
				tgt := tc.target(x)
				want := tgt.Int64s()
				for i, w := range want {
					if w == f.y[i] {
						t.Fatalf("target %d equals the label", i)
					}
				}
				got := labelsOf(f.src, attack.BIM(f.src, x, tgt, attack.Config{Eps: 0.2, Alpha: 0.02, Steps: 20, Norm: attack.LInf, Targeted: true}))
				rate := fraction(batchN, func(i int) bool { return got[i] == want[i] })
				t.Logf("targeted BIM (%s) reaches its target on %.2f", tc.name, rate)
				if rate <= tc.want {
					t.Errorf("targeted BIM (%s) reaches its target on %.2f of the examples, want > %.2f", tc.name, rate, tc.want)
				}
			})
		})
	}
}

// TestDeepFoolFlips checks that DeepFool without a projection changes the
// label of most examples, under either linearisation.
func TestDeepFoolFlips(t *testing.T) {
	f := models(t)
	for _, n := range []attack.Norm{attack.L2, attack.LInf} {
		t.Run(n.String(), func(t *testing.T) {
			f.run(t, func(x, y *torch.Tensor) {
				adv := attack.DeepFool(f.src, x, attack.DeepFoolConfig{Steps: 50, Overshoot: 0.02, Norm: n})
				got := labelsOf(f.src, adv)
				rate := fraction(batchN, func(i int) bool { return got[i] != f.y[i] })
				t.Logf("DeepFool %s flips %.2f", n, rate)
				if rate <= 0.8 {
					t.Errorf("DeepFool %s flips %.2f of the labels, want > 0.8", n, rate)
				}
				checkBall(t, adv.Float32s(), f.x, f.c*f.h*f.w, 1e9, attack.LInf) // pixels in [0,1]
			})
		})
	}
}

// TestProject checks that Project lands in the ball and [0,1], leaves
// points already there alone, and is idempotent.
func TestProject(t *testing.T) {
	const n, c, h, w = 8, 1, 6, 6
	per := c * h * w
	for _, tc := range []struct {
		eps  float64
		norm attack.Norm
	}{{0.05, attack.LInf}, {0.3, attack.LInf}, {0.5, attack.L2}, {2, attack.L2}} {
		t.Run(fmt.Sprintf("%s eps %g", tc.norm, tc.eps), func(t *testing.T) {
			torch.ManualSeed(3)
			torch.Scoped(func(s *torch.Scope) {
				x := torch.Rand(s, torch.CPU, n, c, h, w)
				far := x.Add(torch.RandN(s, torch.CPU, n, c, h, w)) // mostly outside the ball and [0,1]
				p1 := attack.Project(far, x, tc.eps, tc.norm)
				p2 := attack.Project(p1, x, tc.eps, tc.norm)
				a, b, xs := p1.Float32s(), p2.Float32s(), x.Float32s()
				checkBall(t, a, xs, per, tc.eps, tc.norm)
				for i := range a {
					if math.Abs(float64(a[i]-b[i])) > 1e-6 {
						t.Fatalf("Project is not idempotent at %d: %v then %v", i, a[i], b[i])
					}
				}
				// A point well inside the ball and [0,1] stays where it is.
				near := x.MulScalar(0.5).AddScalar(0.25)
				in := near.Add(torch.Rand(s, torch.CPU, n, c, h, w).SubScalar(0.5).MulScalar(tc.eps / 10 / float64(per)))
				got, want := attack.Project(in, near, tc.eps, tc.norm).Float32s(), in.Float32s()
				for i := range got {
					if math.Abs(float64(got[i]-want[i])) > 1e-6 {
						t.Fatalf("Project moved an inside point at %d: %v → %v", i, want[i], got[i])
					}
				}
			})
		})
	}
}

// TestQuantize checks that Quantize lands on the k/255 grid, inside the
// ε-ball shrunk to the grid (⌊255ε⌋/255) and inside [0,1], and that it
// leaves grid points inside the ball alone.
func TestQuantize(t *testing.T) {
	f := models(t)
	per := f.c * f.h * f.w
	for _, eps := range []float64{0.031, 0.05, 10.0 / 255, 0.15} {
		t.Run(fmt.Sprintf("eps %.4f", eps), func(t *testing.T) {
			lim := math.Floor(255*eps+1e-9) / 255
			torch.ManualSeed(4)
			f.run(t, func(x, y *torch.Tensor) {
				// Off-grid points, some beyond the ball and [0,1].
				adv := x.Add(torch.Rand(x.Scope(), torch.CPU, x.Shape()...).SubScalar(0.5).MulScalar(3 * eps))
				q := attack.Quantize(adv, x, eps).Float32s()
				for i, v := range q {
					k := float64(v) * 255
					if math.Abs(k-math.Round(k)) > 1e-3 {
						t.Fatalf("value %d is %v = %.5f/255, not on the 8-bit grid", i, v, k)
					}
				}
				checkBall(t, q, f.x, per, lim, attack.LInf)
				// Grid points inside the ball are fixed points.
				onGrid := attack.Quantize(adv, x, eps)
				again := attack.Quantize(onGrid, x, eps).Float32s()
				for i := range again {
					if again[i] != q[i] {
						t.Fatalf("Quantize moved grid point %d: %v → %v", i, q[i], again[i])
					}
				}
			})
		})
	}
}

// bestOther returns, per example, the highest conferrability score over the
// classes other than y.
func bestOther(scores []float32, y []int64, k int) []float64 {
	out := make([]float64, len(y))
	for i := range y {
		best := math.Inf(-1)
		for j := range k {
			if int64(j) != y[i] {
				best = math.Max(best, float64(scores[i*k+j]))
			}
		}
		out[i] = best
	}
	return out
}

// TestCBIMRaisesConferrability checks that C-BIM raises the ensemble's
// conferrability score M_E for the target class it chooses (the best class
// other than the label), on average and for most examples, with every
// loss.
func TestCBIMRaisesConferrability(t *testing.T) {
	f := models(t)
	for _, loss := range attack.Losses() {
		t.Run(string(loss), func(t *testing.T) {
			torch.ManualSeed(5)
			f.run(t, func(x, y *torch.Tensor) {
				e := f.ensemble()
				adv := must(attack.CBIM(e, x, y, attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 20, Dropout: 0.5, Loss: loss}))
				var before, after []float32
				torch.NoGrad(func() {
					before = e.Conferrability(x).Float32s()
					after = e.Conferrability(adv).Float32s()
				})
				b, a := bestOther(before, f.y, f.classes), bestOther(after, f.y, f.classes)
				var mb, ma float64
				for i := range a {
					mb += b[i] / batchN
					ma += a[i] / batchN
				}
				rate := fraction(batchN, func(i int) bool { return a[i] > b[i] })
				t.Logf("%s: mean M_E of the target %.3f → %.3f, raised for %.2f of the examples", loss, mb, ma, rate)
				if ma <= mb || rate < 0.75 {
					t.Errorf("%s: mean M_E %.3f → %.3f, raised for %.2f of the examples; want higher for ≥ 0.75", loss, mb, ma, rate)
				}
			})
		})
	}
}

// TestCBIMBestIterate checks that C-BIM with Best returns, for every
// example, an iterate at least as conferrable on the whole ensemble as the
// last one of the same trajectory (same seed), and for some a smaller
// perturbation (L1).
func TestCBIMBestIterate(t *testing.T) {
	f := models(t)
	f.run(t, func(x, y *torch.Tensor) {
		e := f.ensemble()
		c := attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 20, Dropout: 0.5, Loss: attack.LossLinear}
		torch.ManualSeed(9)
		last := must(attack.CBIM(e, x, y, c))
		c.Best = true
		torch.ManualSeed(9)
		best := must(attack.CBIM(e, x, y, c))
		var sl, sb []float32
		torch.NoGrad(func() {
			sl = e.Conferrability(last).Float32s()
			sb = e.Conferrability(best).Float32s()
		})
		l, b := bestOther(sl, f.y, f.classes), bestOther(sb, f.y, f.classes)
		dl := last.Sub(x).Abs().Float32s()
		db := best.Sub(x).Abs().Float32s()
		per := len(dl) / batchN
		smaller := 0
		for i := range b {
			if b[i] < l[i]-1e-5 {
				t.Errorf("example %d: best iterate scores %.4f, the last one %.4f", i, b[i], l[i])
			}
			if sum32(db[i*per:(i+1)*per]) < sum32(dl[i*per:(i+1)*per])-1e-4 {
				smaller++
			}
		}
		t.Logf("%d of %d examples end on a smaller perturbation", smaller, batchN)
		if smaller == 0 {
			t.Error("no example stopped before the last step")
		}
	})
}

func sum32(v []float32) float64 {
	s := 0.0
	for _, x := range v {
		s += float64(x)
	}
	return s
}

// TestCBIMInputDiversity checks C-BIM with Shift and Noise: it still raises
// the ensemble's conferrability of the target on x′ itself, and its
// examples keep a larger share of it when the input is moved by a pixel or
// two than examples crafted without (the same seed and steps): that
// invariance is what the expectation over shifts is for. (On x′ itself the
// plain attack scores higher; it optimises exactly that.)
func TestCBIMInputDiversity(t *testing.T) {
	f := models(t)
	f.run(t, func(x, y *torch.Tensor) {
		e := f.ensemble()
		c := attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 20, Dropout: 0.5, Loss: attack.LossGeometric}
		torch.ManualSeed(3)
		plain := must(attack.CBIM(e, x, y, c))
		c.Shift, c.Noise = 2, 0.02
		torch.ManualSeed(3)
		diverse := must(attack.CBIM(e, x, y, c))
		// shiftedScore is the mean over the eight one- and two-pixel moves
		// of the target's M_E, the target chosen on the unmoved example.
		shiftedScore := func(adv *torch.Tensor) (float64, float64) {
			var at, moved float64
			torch.NoGrad(func() {
				torch.Scoped(func(*torch.Scope) {
					mine := e.Conferrability(adv).Float32s()
					for _, v := range bestOther(mine, f.y, f.classes) {
						at += v / batchN
					}
					moves := [][2]int64{{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {2, 0}, {-2, 0}, {0, 2}, {0, -2}}
					for _, m := range moves {
						p := torch.Pad(adv, []int64{2, 2, 2, 2}, torch.PadConstant, 0).Narrow(2, 2+m[0], int64(f.h)).Narrow(3, 2+m[1], int64(f.w))
						sc := e.Conferrability(p).Float32s()
						for i := range batchN {
							k := argmaxOther(mine[i*f.classes:(i+1)*f.classes], int(f.y[i]))
							moved += float64(sc[i*f.classes+k]) / batchN / float64(len(moves))
						}
					}
				})
			})
			return at, moved
		}
		pa, pm := shiftedScore(plain)
		da, dm := shiftedScore(diverse)
		t.Logf("M_E of the target on x′: plain %.3f, diverse %.3f; under 1-2 pixel moves: plain %.3f, diverse %.3f", pa, da, pm, dm)
		var before float64
		torch.NoGrad(func() {
			for _, v := range bestOther(e.Conferrability(x).Float32s(), f.y, f.classes) {
				before += v / batchN
			}
		})
		if da <= before {
			t.Errorf("with input diversity the target's M_E went %.3f → %.3f; want it raised", before, da)
		}
		if dm/da <= pm/pa {
			t.Errorf("under small moves the diverse examples keep %.2f of their score, the plain ones %.2f; want the diverse ones to keep more", dm/da, pm/pa)
		}
	})
}

// argmaxOther is the index of the largest of p other than y.
func argmaxOther(p []float32, y int) int {
	k := -1
	for j, v := range p {
		if j != y && (k < 0 || v > p[k]) {
			k = j
		}
	}
	return k
}

func TestCheckDiversity(t *testing.T) {
	for _, tc := range []struct {
		shift int
		noise float64
		ok    bool
	}{
		{0, 0, true}, {2, 0.05, true}, {attack.MaxShift, 1, true},
		{-1, 0, false}, {attack.MaxShift + 1, 0, false}, {0, -0.1, false}, {0, 1.5, false}, {0, math.NaN(), false},
	} {
		if err := attack.CheckDiversity(tc.shift, tc.noise); (err == nil) != tc.ok {
			t.Errorf("CheckDiversity(%d, %g) = %v, want ok %v", tc.shift, tc.noise, err, tc.ok)
		}
	}
}

// untouched is a model that counts its forward passes: a configuration
// C-BIM refuses must be refused before any.
type untouched struct{ calls *int }

func (u untouched) Forward(x *torch.Tensor) *torch.Tensor {
	*u.calls++
	return x.Reshape(x.Size(0), -1)
}

// badCBIM are configurations C-BIM cannot run, each with what its error
// must name.
func badCBIM(m attack.Model) []struct {
	name string
	e    attack.Ensemble
	c    attack.CBIMConfig
	says string
} {
	ok := attack.Ensemble{Source: m, Surrogates: []attack.Model{m}, References: []attack.Model{m}}
	def := attack.DefaultCBIM()
	with := func(f func(c *attack.CBIMConfig)) attack.CBIMConfig {
		c := def
		f(&c)
		return c
	}
	return []struct {
		name string
		e    attack.Ensemble
		c    attack.CBIMConfig
		says string
	}{
		{"no source", attack.Ensemble{Surrogates: []attack.Model{m}, References: []attack.Model{m}}, def, "source model"},
		{"no references", attack.Ensemble{Source: m, Surrogates: []attack.Model{m}}, def, "reference model"},
		{"unknown loss", ok, with(func(c *attack.CBIMConfig) { c.Loss = "hinge" }), `loss "hinge"`},
		{"negative steps", ok, with(func(c *attack.CBIMConfig) { c.Steps = -1 }), "steps -1"},
		{"negative eps", ok, with(func(c *attack.CBIMConfig) { c.Eps = -0.1 }), "eps -0.1"},
		{"eps not a number", ok, with(func(c *attack.CBIMConfig) { c.Eps = math.NaN() }), "eps NaN"},
		{"infinite alpha", ok, with(func(c *attack.CBIMConfig) { c.Alpha = math.Inf(1) }), "alpha +Inf"},
		{"dropout of every vote", ok, with(func(c *attack.CBIMConfig) { c.Dropout = 1 }), "dropout 1"},
		{"negative dropout", ok, with(func(c *attack.CBIMConfig) { c.Dropout = -0.5 }), "dropout -0.5"},
		{"shift too far", ok, with(func(c *attack.CBIMConfig) { c.Shift = attack.MaxShift + 1 }), "shift"},
		{"noise not a number", ok, with(func(c *attack.CBIMConfig) { c.Noise = math.NaN() }), "noise NaN"},
	}
}

// TestCBIMCheck checks that CBIMConfig.Check refuses each bad
// configuration, naming what is wrong, and passes the good ones.
func TestCBIMCheck(t *testing.T) {
	calls := 0
	m := untouched{&calls}
	for _, tc := range badCBIM(m) {
		if err := tc.c.Check(tc.e); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Check = %v, want an error naming %q", tc.name, err, tc.says)
		}
	}
	e := attack.Ensemble{Source: m, References: []attack.Model{m}} // surrogates besides the source are optional
	goods := map[string]attack.CBIMConfig{"default": attack.DefaultCBIM(), "zero (the linear loss, no steps)": {},
		"no dropout, input diversity": {Eps: 0.1, Alpha: 0.01, Steps: 3, Shift: attack.MaxShift, Noise: 1}}
	for _, l := range attack.Losses() {
		c := attack.DefaultCBIM()
		c.Loss = l
		goods["loss "+string(l)] = c
	}
	for name, c := range goods {
		if err := c.Check(e); err != nil {
			t.Errorf("%s: Check = %v, want nil", name, err)
		}
	}
	if calls != 0 {
		t.Errorf("Check ran %d forward passes, want none", calls)
	}
}

// must is the adversarial examples of an attack that returns an error,
// the error panicking for the torch.Catch of fixture.run to report.
func must(adv *torch.Tensor, err error) *torch.Tensor {
	if err != nil {
		panic(err)
	}
	return adv
}

// TestCBIMRefusesBadInput checks that C-BIM, called with a configuration
// Check refuses, returns an error before any forward pass, without
// panicking: a *torch.Error of op cbim that says why.
func TestCBIMRefusesBadInput(t *testing.T) {
	calls := 0
	for _, tc := range badCBIM(untouched{&calls}) {
		t.Run(tc.name, func(t *testing.T) {
			calls = 0
			var adv *torch.Tensor
			var err error
			panicked := torch.Catch(func() {
				torch.Scoped(func(s *torch.Scope) {
					x := torch.Rand(s, torch.CPU, 2, 1, 4, 4)
					y := torch.FromSlice(s, []int64{0, 1}, 2)
					adv, err = attack.CBIM(tc.e, x, y, tc.c)
				})
			})
			if panicked != nil {
				t.Fatalf("CBIM panicked with %v, want it to return the error", panicked)
			}
			var te *torch.Error
			if !errors.As(err, &te) || te.Op != "cbim" || !strings.Contains(te.Msg, tc.says) {
				t.Fatalf("CBIM failed with %v (%T), want a *torch.Error of cbim naming %q", err, err, tc.says)
			}
			if adv != nil {
				t.Errorf("CBIM returned examples %v with its error", adv)
			}
			if calls != 0 {
				t.Errorf("%d forward passes before the configuration was refused, want none", calls)
			}
		})
	}
}

// TestCBIMReturnsTorchErrors checks that a libtorch failure during C-BIM
// (a label beyond the models' classes, a model that fails on its input)
// comes back as CBIM's error, not as a panic.
func TestCBIMReturnsTorchErrors(t *testing.T) {
	calls := 0
	m := untouched{&calls} // (N, 16) scores: 16 classes
	bad := badModel{}
	for _, tc := range []struct {
		name   string
		e      attack.Ensemble
		labels []int64
		says   string
	}{
		{"label beyond the classes", attack.Ensemble{Source: m, Surrogates: []attack.Model{m}, References: []attack.Model{m}}, []int64{0, 16}, "one_hot"},
		{"a reference fails", attack.Ensemble{Source: m, References: []attack.Model{bad}}, []int64{0, 1}, "matmul"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			x := torch.Rand(s, torch.CPU, 2, 1, 4, 4)
			y := torch.FromSlice(s, tc.labels, 2)
			var adv *torch.Tensor
			var err error
			c := attack.DefaultCBIM()
			c.Steps, c.Best = 3, true
			if p := torch.Catch(func() { adv, err = attack.CBIM(tc.e, x, y, c) }); p != nil {
				t.Fatalf("CBIM panicked with %v, want it to return the error", p)
			}
			var te *torch.Error
			if !errors.As(err, &te) || !strings.Contains(te.Error(), tc.says) {
				t.Fatalf("CBIM = %v, %v; want a *torch.Error of %s", adv, err, tc.says)
			}
			if adv != nil {
				t.Errorf("CBIM returned examples %v with its error", adv)
			}
		})
	}
}

// badModel fails in libtorch on every input.
type badModel struct{}

func (badModel) Forward(x *torch.Tensor) *torch.Tensor {
	return x.Reshape(x.Size(0), -1).MatMul(x.Reshape(x.Size(0), -1))
}

func TestParseNorm(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want attack.Norm
		ok   bool
	}{{"inf", attack.LInf, true}, {"linf", attack.LInf, true}, {"L2", attack.L2, true}, {"2", attack.L2, true}, {"l1", attack.LInf, false}, {"", attack.LInf, false}} {
		got, err := attack.ParseNorm(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseNorm(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if attack.L2.String() != "L2" || attack.LInf.String() != "Linf" {
		t.Errorf("String: %s, %s", attack.L2, attack.LInf)
	}
}
