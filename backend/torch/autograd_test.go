package torch_test

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

func TestNoGrad(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Ones(s, torch.CPU, 3).SetRequiresGrad(true)
	if !x.MulScalar(2).RequiresGrad() {
		t.Fatal("grad recording is off outside NoGrad")
	}
	var inside, nested, afterNested *torch.Tensor
	torch.NoGrad(func() {
		inside = x.MulScalar(2)
		torch.NoGrad(func() { nested = x.Exp() })
		afterNested = x.Sigmoid()
	})
	if inside.RequiresGrad() || nested.RequiresGrad() || afterNested.RequiresGrad() {
		t.Errorf("NoGrad recorded: %v %v %v", inside.RequiresGrad(), nested.RequiresGrad(), afterNested.RequiresGrad())
	}
	if !x.MulScalar(2).RequiresGrad() {
		t.Errorf("grad recording not restored after NoGrad")
	}
	// A panic inside NoGrad restores grad mode too.
	_ = torch.Catch(func() { torch.NoGrad(func() { x.Reshape(7) }) })
	if !x.MulScalar(2).RequiresGrad() {
		t.Errorf("grad recording not restored after a panic in NoGrad")
	}
	// Leaves keep requiring grad; a no-grad result cannot be differentiated.
	if !x.RequiresGrad() {
		t.Errorf("leaf lost requires_grad")
	}
	te := mustPanicTorch(t, func() { inside.Sum().Backward() })
	if te.Op != "backward" {
		t.Errorf("backward of a no-grad result: %v", te)
	}
}

// Grad mode is per OS thread in libtorch: NoGrad on some goroutines must
// not switch recording off for others running at the same time.
func TestNoGradIsolatedBetweenGoroutines(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Ones(s, torch.CPU, 8).SetRequiresGrad(true)
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				var rg bool
				want := (g+i)%2 == 0
				if want {
					rg = x.MulScalar(2).RequiresGrad()
				} else {
					torch.NoGrad(func() { rg = x.MulScalar(2).RequiresGrad() })
				}
				if rg != want {
					mu.Lock()
					bad++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if bad > 0 {
		t.Errorf("%d results had the wrong grad mode", bad)
	}
}

func TestBackwardGradZeroGrad(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	w := torch.FromSlice(s, []float32{1, -2, 3}, 3).SetRequiresGrad(true)
	c := torch.FromSlice(s, []float32{4, 5, 6}, 3)
	if g := w.Grad(s); g != nil {
		t.Fatalf("fresh leaf has grad %v", g)
	}
	if c.RequiresGrad() {
		t.Fatal("constant requires grad")
	}
	// d/dw Σ w·c = c, and gradients accumulate over two backward passes.
	w.Mul(c).Sum().Backward()
	w.Mul(c).Sum().Backward()
	if g := w.Grad(s); g == nil || !equalSlices(g.Float32s(), []float32{8, 10, 12}) {
		t.Errorf("accumulated grad = %v", g.Float32s())
	}
	if c.Grad(s) != nil {
		t.Errorf("constant got a gradient")
	}
	w.ZeroGrad()
	if g := w.Grad(s); g != nil {
		t.Errorf("grad after ZeroGrad = %v", g.Float32s())
	}
	// Grads leaves .grad alone and returns nil for an unused input.
	u := torch.Ones(s, torch.CPU, 2).SetRequiresGrad(true)
	gs := torch.Grads([]*torch.Tensor{w.Square().Sum(), w.Sum()}, []*torch.Tensor{w, u})
	if len(gs) != 2 || gs[1] != nil {
		t.Fatalf("Grads = %v", gs)
	}
	if got := gs[0].Float32s(); !equalSlices(got, []float32{3, -3, 7}) { // 2w + 1
		t.Errorf("d(Σw² + Σw)/dw = %v", got)
	}
	if gs[0].Scope() != s {
		t.Errorf("Grads result not in the operands' scope")
	}
	if w.Grad(s) != nil {
		t.Errorf("Grads touched .grad")
	}
	// Detach cuts the graph.
	if w.Detach().RequiresGrad() {
		t.Errorf("Detach still requires grad")
	}
	// SetRequiresGrad(false) on a leaf stops recording.
	w.SetRequiresGrad(false)
	if w.MulScalar(2).RequiresGrad() {
		t.Errorf("recording continues after SetRequiresGrad(false)")
	}
}

// fdNet is a small composite: conv → batch norm (training) → tanh →
// average pool → linear → cross-entropy. Smooth ops only, so central
// differences are accurate.
type fdNet struct {
	x, convW, convB, bnW, bnB, linW, linB, labels *torch.Tensor
}

func newFDNet(s *torch.Scope, r *rand.Rand) *fdNet {
	randn := func(scale float64, shape ...int64) *torch.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * scale)
		}
		return torch.FromSlice(s, v, shape...)
	}
	return &fdNet{
		x:      randn(1, 4, 2, 5, 5),
		convW:  randn(0.4, 3, 2, 3, 3),
		convB:  randn(0.1, 3),
		bnW:    randn(0.3, 3).AddScalar(1),
		bnB:    randn(0.1, 3),
		linW:   randn(0.5, 3, 12),
		linB:   randn(0.1, 3),
		labels: torch.FromSlice(s, []int64{0, 2, 1, 2}, 4),
	}
}

func (n *fdNet) loss() *torch.Tensor {
	h := torch.Conv2d(n.x, n.convW, n.convB, torch.ConvOpts{Padding: torch.P(1)})
	h = torch.BatchNorm(h, n.bnW, n.bnB, nil, nil, true, 0.1, 1e-5).Tanh()
	h = torch.AvgPool2d(h, torch.PoolOpts{Kernel: torch.P(2)}).Flatten()
	return torch.CrossEntropy(torch.Linear(h, n.linW, n.linB), n.labels, torch.ReduceMean)
}

// TestFiniteDifferences checks autograd against float32 central differences
// of the composite w.r.t. its input and two weights.
func TestFiniteDifferences(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	n := newFDNet(s, rand.New(rand.NewPCG(1, 2)))
	params := []struct {
		name string
		p    *torch.Tensor
	}{{"input", n.x}, {"conv weight", n.convW}, {"linear weight", n.linW}, {"bn weight", n.bnW}}
	wrt := make([]*torch.Tensor, len(params))
	for i, p := range params {
		wrt[i] = p.p.SetRequiresGrad(true)
	}
	analytic := torch.Grads([]*torch.Tensor{n.loss()}, wrt)

	const eps = 1e-2
	for i, p := range params {
		t.Run(p.name, func(t *testing.T) {
			an := analytic[i].Float32s()
			base := p.p.Detach().Float32s()
			shape := p.p.Shape()
			fd := make([]float64, len(base))
			torch.NoGrad(func() {
				eval := func(j int, v float32) float64 {
					xs := append([]float32(nil), base...)
					xs[j] = v
					p.p.CopyFrom(torch.FromSlice(s, xs, shape...))
					return n.loss().Item()
				}
				for j := range base {
					fd[j] = (eval(j, base[j]+eps) - eval(j, base[j]-eps)) / (2 * eps)
				}
				p.p.CopyFrom(torch.FromSlice(s, base, shape...))
			})
			var num, den, worst float64
			for j := range fd {
				d := fd[j] - float64(an[j])
				num += d * d
				den += fd[j] * fd[j]
				worst = math.Max(worst, math.Abs(d))
				if math.Abs(d) > 2e-4+1e-2*math.Abs(fd[j]) {
					t.Errorf("element %d: autograd %.6g, finite difference %.6g", j, an[j], fd[j])
				}
			}
			rel := math.Sqrt(num / den)
			t.Logf("%d elements, ‖fd−autograd‖/‖fd‖ = %.2g, worst |Δ| = %.2g", len(fd), rel, worst)
			if den == 0 || rel > 2e-3 {
				t.Errorf("relative error %.3g (norm of fd %.3g)", rel, math.Sqrt(den))
			}
		})
	}
}
