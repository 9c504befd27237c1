package torch_test

import (
	"math"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

func TestSchedules(t *testing.T) {
	tests := []struct {
		name  string
		s     torch.Schedule
		steps []int
		want  []float64
	}{
		{"constant", torch.ConstantLR(0.3), []int{0, 1, 1000}, []float64{0.3, 0.3, 0.3}},
		{"step", torch.StepLR{Base: 0.1, Every: 10, Gamma: 0.5},
			[]int{0, 9, 10, 19, 20, 35}, []float64{0.1, 0.1, 0.05, 0.05, 0.025, 0.0125}},
		{"step without period", torch.StepLR{Base: 0.1, Every: 0, Gamma: 0.5},
			[]int{0, 100}, []float64{0.1, 0.1}},
		// torch CosineAnnealingLR: η_min + (η_max − η_min)(1 + cos(π t/T))/2.
		{"cosine", torch.CosineLR{Base: 0.1, Min: 0.001, Total: 100},
			[]int{0, 25, 50, 75, 100, 150},
			[]float64{0.1, 0.001 + 0.099*(1+math.Sqrt2/2)/2, 0.0505, 0.001 + 0.099*(1-math.Sqrt2/2)/2, 0.001, 0.001}},
		{"cosine warm-up", torch.CosineLR{Base: 0.2, Min: 0, Total: 110, Warmup: 10},
			[]int{0, 4, 9, 10, 60, 110}, []float64{0.02, 0.1, 0.2, 0.2, 0.1, 0}},
		{"cosine no room after warm-up", torch.CosineLR{Base: 0.2, Total: 5, Warmup: 5},
			[]int{0, 4, 5, 50}, []float64{0.04, 0.2, 0.2, 0.2}},
	}
	for _, tc := range tests {
		for i, step := range tc.steps {
			if got := tc.s.LR(step); math.Abs(got-tc.want[i]) > 1e-12 {
				t.Errorf("%s: LR(%d) = %.10g, want %.10g", tc.name, step, got, tc.want[i])
			}
		}
	}
	// Cosine decreases monotonically after the warm-up and never leaves [Min, Base].
	c := torch.CosineLR{Base: 0.1, Min: 0.01, Total: 500, Warmup: 20}
	prev := math.Inf(1)
	for step := 20; step <= 600; step++ {
		lr := c.LR(step)
		if lr > prev+1e-15 || lr < c.Min-1e-15 || lr > c.Base+1e-15 {
			t.Fatalf("cosine LR(%d) = %g after %g", step, lr, prev)
		}
		prev = lr
	}
}

// SetLR changes the step size of the optimizer actually used.
func TestOptimizerSetLR(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	for _, kind := range []string{"sgd", "adam", "adamw"} {
		w := torch.FromSlice(s, []float32{1, 2}, 2).SetRequiresGrad(true)
		var o *torch.Optimizer
		switch kind {
		case "sgd":
			o = torch.NewSGD([]*torch.Tensor{w}, torch.SGDOpts{LR: 0})
		case "adam":
			o = torch.NewAdam([]*torch.Tensor{w}, torch.AdamOpts{LR: 0})
		default:
			o = torch.NewAdamW([]*torch.Tensor{w}, torch.AdamOpts{LR: 0})
		}
		step := func() []float32 {
			o.ZeroGrad()
			w.Sum().Backward() // gradient (1, 1)
			o.Step()
			return w.Detach().Float32s()
		}
		if got := step(); !equalSlices(got, []float32{1, 2}) {
			t.Errorf("%s: lr 0 moved the parameters to %v", kind, got)
		}
		o.SetLR(0.5)
		if o.LR() != 0.5 {
			t.Errorf("%s: LR() = %v", kind, o.LR())
		}
		// SGD moves by lr·g; Adam's first effective step (bias-corrected, g
		// constant) is lr·sign(g), up to eps.
		got := step()
		if math.Abs(float64(got[0])-0.5) > 1e-4 || math.Abs(float64(got[1])-1.5) > 1e-4 {
			t.Errorf("%s: after SetLR(0.5) one step gives %v, want [0.5 1.5]", kind, got)
		}
		o.Free()
	}
}

// AdamOpts' zero Beta1, Beta2 and Eps mean PyTorch's defaults.
func TestAdamDefaults(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	run := func(o torch.AdamOpts) []float32 {
		w := torch.FromSlice(s, []float32{1, -2, 0.5}, 3).SetRequiresGrad(true)
		opt := torch.NewAdam([]*torch.Tensor{w}, o)
		defer opt.Free()
		for range 5 {
			opt.ZeroGrad()
			w.PowScalar(3).Sum().Backward()
			opt.Step()
		}
		return w.Detach().Float32s()
	}
	a := run(torch.AdamOpts{LR: 0.1})
	b := run(torch.AdamOpts{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8})
	if !equalSlices(a, b) {
		t.Errorf("defaults %v, explicit %v", a, b)
	}
	c := run(torch.AdamOpts{LR: 0.1, Beta1: 0.5})
	if equalSlices(a, c) {
		t.Errorf("Beta1 has no effect")
	}
}

// Optimizer.ZeroGrad drops gradients (set to none, as PyTorch's default).
func TestOptimizerZeroGrad(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	w := torch.Ones(s, torch.CPU, 2).SetRequiresGrad(true)
	o := torch.NewSGD([]*torch.Tensor{w}, torch.SGDOpts{LR: 0.1, Momentum: 0.9})
	defer o.Free()
	w.Sum().Backward()
	if w.Grad(s) == nil {
		t.Fatal("no gradient after backward")
	}
	o.ZeroGrad()
	if g := w.Grad(s); g != nil {
		t.Errorf("gradient after ZeroGrad: %v", g.Float32s())
	}
	o.Step() // no gradients: a no-op
	if got := w.Detach().Float32s(); !equalSlices(got, []float32{1, 1}) {
		t.Errorf("step without gradients moved w to %v", got)
	}
}

// AdamW decays the weights apart from the adaptive step (PyTorch's AdamW),
// where Adam adds the decay to the gradient, which the step then rescales:
// both match PyTorch's update rules step by step, and they differ.
func TestAdamWDecoupledDecay(t *testing.T) {
	const lr, wd, b1, b2, eps, steps = 0.1, 0.5, 0.9, 0.999, 1e-8, 4
	// reference runs PyTorch's update on the loss ½Σw² (gradient w).
	reference := func(decoupled bool) []float64 {
		w := []float64{1, -2, 0.5}
		m, v := make([]float64, len(w)), make([]float64, len(w))
		for step := 1; step <= steps; step++ {
			for i := range w {
				g := w[i]
				if decoupled {
					w[i] *= 1 - lr*wd
				} else {
					g += wd * w[i]
				}
				m[i] = b1*m[i] + (1-b1)*g
				v[i] = b2*v[i] + (1-b2)*g*g
				bc1, bc2 := 1-math.Pow(b1, float64(step)), 1-math.Pow(b2, float64(step))
				w[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + eps)
			}
		}
		return w
	}
	s := torch.NewScope()
	defer s.Close()
	run := func(newOpt func([]*torch.Tensor, torch.AdamOpts) *torch.Optimizer) []float32 {
		w := torch.FromSlice(s, []float32{1, -2, 0.5}, 3).SetRequiresGrad(true)
		opt := newOpt([]*torch.Tensor{w}, torch.AdamOpts{LR: lr, WeightDecay: wd})
		defer opt.Free()
		for range steps {
			opt.ZeroGrad()
			w.Square().Sum().MulScalar(0.5).Backward()
			opt.Step()
		}
		return w.Detach().Float32s()
	}
	adam, adamw := run(torch.NewAdam), run(torch.NewAdamW)
	for _, tc := range []struct {
		name string
		got  []float32
		want []float64
	}{{"adam (L2)", adam, reference(false)}, {"adamw (decoupled)", adamw, reference(true)}} {
		for i := range tc.want {
			if math.Abs(float64(tc.got[i])-tc.want[i]) > 1e-5 {
				t.Errorf("%s: w = %v, want %v", tc.name, tc.got, tc.want)
				break
			}
		}
	}
	if equalSlices(adam, adamw) {
		t.Errorf("Adam and AdamW took the same steps %v", adam)
	}
}
