package attack

import (
	"math"

	"github.com/conferral/conferral/backend/torch"
)

// DeepFoolConfig configures DeepFool; Table 6: 100 iterations, the 10
// classes' gradients evaluated in parallel.
type DeepFoolConfig struct {
	Steps     int
	Overshoot float64 // 0.02 in Moosavi-Dezfooli et al.
	Eps       float64 // final projection radius; 0 for none
	Norm      Norm    // L2 (the original) or L∞ linearisation
}

// eye returns the k×k identity on device d in scope s.
func eye(s *torch.Scope, k int64, d torch.Device) *torch.Tensor {
	v := make([]float32, k*k)
	for i := range k {
		v[i*k+i] = 1
	}
	return torch.FromSlice(s, v, k, k).ToDevice(d)
}

// DeepFool (Moosavi-Dezfooli et al.) linearises the classifier around the
// current point and steps to the nearest linearised decision boundary until
// the label changes. All classes' gradients come from one backward pass over
// the batch replicated once per class.
func DeepFool(m Model, x *torch.Tensor, c DeepFoolConfig) *torch.Tensor {
	shape := x.Shape()
	n := shape[0]
	dim := x.Numel() / n
	y0 := Labels(m, x)
	var k int64
	torch.NoGrad(func() { k = m.Forward(x.Narrow(0, 0, 1)).Size(1) })
	id := eye(x.Scope(), k, x.Device())
	rTotal := torch.Zeros(x.Scope(), x.Device(), shape...)
	xa := x
	// Inside an ε-ball some labels never change: stop once ten steps in a
	// row changed no further label.
	lastActive, stalled := math.Inf(1), 0
	for range c.Steps {
		var nextR, nextX *torch.Tensor
		torch.Scoped(func(s *torch.Scope) {
			cur := s.Add(xa.Detach())
			y := s.Add(y0.Reshape(n, 1))
			active := Labels(m, cur).Reshape(n, 1).Eq(y).To(torch.Float32, x.Device())
			left := active.Sum().Item()
			if left < lastActive {
				lastActive, stalled = left, 0
			} else {
				stalled++
			}
			if left == 0 || stalled >= 10 {
				return
			}
			rep := cur.Reshape(append([]int64{n, 1}, shape[1:]...)...).Expand(append([]int64{n, k}, shape[1:]...)...).Reshape(append([]int64{n * k}, shape[1:]...)...)
			xi := rep.Detach().SetRequiresGrad(true)
			logits := m.Forward(xi).Reshape(n, k, k)
			// Row j of example i holds the gradient of logit j.
			g := torch.Grads([]*torch.Tensor{logits.Mul(id).Sum()}, []*torch.Tensor{xi})[0].Reshape(n, k, dim)
			z := logits.Detach().Narrow(1, 0, 1).Reshape(n, k)
			f := z.Sub(z.Gather(1, y))                                    // f_j − f_y
			w := g.Sub(g.Gather(1, y.Reshape(n, 1, 1).Expand(n, 1, dim))) // ∇f_j − ∇f_y
			var wn *torch.Tensor
			if c.Norm == LInf {
				wn = w.Abs().SumDims([]int64{2}, false) // dual norm of L∞ is L1
			} else {
				wn = w.Square().SumDims([]int64{2}, false).Sqrt()
			}
			wn = wn.AddScalar(1e-8)
			dist := f.Abs().Div(wn).Add(y.Reshape(n).OneHot(k).To(torch.Float32, x.Device()).MulScalar(math.MaxFloat32 / 2))
			j := dist.Argmin(1, true) // nearest boundary
			fj := f.Gather(1, j).Abs().AddScalar(1e-4)
			wj := w.Gather(1, j.Reshape(n, 1, 1).Expand(n, 1, dim)).Reshape(n, dim)
			wnj := wn.Gather(1, j)
			var r *torch.Tensor
			if c.Norm == LInf {
				r = wj.Sign().Mul(fj.Div(wnj))
			} else {
				r = wj.Mul(fj.Div(wnj.Square()))
			}
			nr := r.Reshape(shape...).Mul(active.Reshape(n, 1, 1, 1)).Add(rTotal)
			nx := nr.MulScalar(1+c.Overshoot).Add(x).Clamp(0, 1)
			if c.Eps > 0 {
				nx = Project(nx, x, c.Eps, c.Norm)
				// Keep the total perturbation where the projection put it, so
				// that later steps need not unwind what was clipped.
				nr = nx.Sub(x).DivScalar(1 + c.Overshoot)
			}
			torch.Keep(nr, nx)
			nextR, nextX = nr, nx
		})
		if nextX == nil {
			break // every label changed, or no more will
		}
		rTotal.Free()
		if xa != x {
			xa.Free()
		}
		rTotal, xa = nextR, nextX
	}
	if sc := x.Scope(); sc != nil {
		sc.Add(rTotal)
		if xa != x {
			sc.Add(xa)
		}
	}
	return xa.Detach()
}

// CWConfig configures the Carlini–Wagner L2 attack; Table 6: 100
// iterations, confidence κ = 50, learning rate 0.01.
type CWConfig struct {
	Steps        int
	Kappa        float64
	LR           float64
	InitialConst float64 // c of the first binary-search step
	SearchSteps  int     // binary-search steps over c
	Eps          float64 // final L∞ projection for comparisons at equal ε; 0 for none
	Targeted     bool
}

// CWL2 is the Carlini–Wagner L2 attack: in tanh space, minimise
// ‖x′ − x‖² + c·max(Z_y − max_{i≠y} Z_i, −κ) (untargeted; for targeted
// attacks the roles of y and the others swap) with Adam, and binary-search c
// per example. Success means a margin of at least κ. It returns the closest
// successful example found, or the last iterate where none succeeded.
func CWL2(m Model, x, y *torch.Tensor, c CWConfig) *torch.Tensor {
	s := x.Scope()
	d := x.Device()
	shape := x.Shape()
	n := shape[0]
	var k int64
	torch.NoGrad(func() { k = m.Forward(x.Narrow(0, 0, 1)).Size(1) })
	onehot := y.OneHot(k).To(torch.Float32, d)
	notY := onehot.MulScalar(1e9) // masks the label out of the max over the others
	// w = atanh(2x − 1), kept away from ±1.
	xc := x.Clamp(1e-6, 1-1e-6).MulScalar(2).SubScalar(1)
	w0 := xc.Add(torch.Ones(s, d, 1)).Div(xc.RSubScalar(1)).Log().MulScalar(0.5)
	consts := make([]float64, n)
	lower, upper := make([]float64, n), make([]float64, n)
	bestDist := make([]float64, n)
	for i := range consts {
		consts[i], upper[i], bestDist[i] = c.InitialConst, 1e10, math.Inf(1)
	}
	best := x
	var last *torch.Tensor // the latest iterate, for examples that never succeed
	for range max(c.SearchSteps, 1) {
		cs := make([]float32, n)
		for i, v := range consts {
			cs[i] = float32(v)
		}
		ct := torch.FromSlice(s, cs, n).ToDevice(d)
		w := w0.Detach().Clone().SetRequiresGrad(true)
		torch.Keep(w)
		opt := torch.NewAdam([]*torch.Tensor{w}, torch.AdamOpts{LR: c.LR})
		succeeded := make([]bool, n)
		for range c.Steps {
			torch.Scoped(func(inner *torch.Scope) {
				xa := inner.Add(w.MulScalar(2)).Sigmoid() // (tanh(w)+1)/2 = σ(2w)
				z := m.Forward(xa)
				zy := z.Mul(onehot).SumDims([]int64{1}, false)
				zo := z.Sub(notY).Amax([]int64{1}, false)
				f := zy.Sub(zo)
				if c.Targeted {
					f = zo.Sub(zy)
				}
				f = f.ClampMin(-c.Kappa)
				dist := xa.Sub(x).Reshape(n, -1).Square().SumDims([]int64{1}, false)
				loss := dist.Add(f.Mul(ct)).Sum()
				opt.ZeroGrad()
				loss.Backward()
				opt.Step()
				// f ≤ 0: the example is adversarial; keep the closest one.
				fs, ds := f.Detach().ToDevice(torch.CPU).Float32s(), dist.Detach().ToDevice(torch.CPU).Float32s()
				better := make([]float32, n)
				improved := false
				for i := range fs {
					// Success with confidence κ: the margin reached κ (Carlini–Wagner).
					if float64(fs[i]) <= -c.Kappa+1e-6 {
						succeeded[i] = true
						if float64(ds[i]) < bestDist[i] {
							bestDist[i] = float64(ds[i])
							better[i] = 1
							improved = true
						}
					}
				}
				if last != nil {
					last.Free()
				}
				last = xa.Detach()
				torch.Keep(last)
				s.Add(last)
				if improved {
					mask := torch.FromSlice(inner, better, n, 1, 1, 1).ToDevice(d).GtScalar(0)
					next := torch.Where(mask, xa.Detach(), best)
					torch.Keep(next)
					s.Add(next)
					if best != x {
						best.Free()
					}
					best = next
				}
			})
		}
		opt.Free()
		w.Free()
		for i := range consts {
			if succeeded[i] {
				upper[i] = math.Min(upper[i], consts[i])
				consts[i] = (lower[i] + upper[i]) / 2
			} else {
				lower[i] = math.Max(lower[i], consts[i])
				if upper[i] < 1e9 {
					consts[i] = (lower[i] + upper[i]) / 2
				} else {
					consts[i] *= 10
				}
			}
		}
	}
	if last != nil {
		never := make([]float32, n)
		for i, d := range bestDist {
			if math.IsInf(d, 1) {
				never[i] = 1
			}
		}
		best = torch.Where(torch.FromSlice(s, never, n, 1, 1, 1).ToDevice(d).GtScalar(0), last, best)
	}
	if c.Eps > 0 {
		best = Project(best, x, c.Eps, LInf)
	}
	return best
}
