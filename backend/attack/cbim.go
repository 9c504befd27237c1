package attack

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/conferral/conferral/backend/torch"
)

// Ensemble is Compose(M, S, R) of §4.4: the source model, its surrogates
// and independently trained references, sharing one input.
type Ensemble struct {
	Source     Model
	Surrogates []Model
	References []Model
}

// Loss selects C-BIM's objective.
type Loss string

const (
	// LossLinear is the paper's L_E = −M_E(x′)·t (eq. 14).
	LossLinear Loss = "linear"
	// LossCE is the later published version's objective: minimise
	// α·H(1, M_E(x′)_t) − β·H(M(x), M(x′)) + γ·H(M(x′), Surr(x′)).
	LossCE Loss = "ce"
	// LossGeometric maximises the geometric means of Surr and 1 − Ref for
	// the target instead of their arithmetic means (eq. 11–12):
	// −(1/|S|)·Σ log S_i(x′)_t − (1/|R|)·Σ log(1 − R_j(x′)_t). The mean of
	// probabilities is content once most surrogates follow; the mean of
	// logarithms keeps pulling the ones that do not, which are the
	// surrogates of other architectures.
	LossGeometric Loss = "geometric"
)

// Losses returns C-BIM's objectives, the paper's first.
func Losses() []Loss { return []Loss{LossLinear, LossCE, LossGeometric} }

// ParseLoss reads a C-BIM objective's name; "" is LossLinear.
func ParseLoss(s string) (Loss, error) {
	if s == "" {
		return LossLinear, nil
	}
	if slices.Contains(Losses(), Loss(s)) {
		return Loss(s), nil
	}
	return "", fmt.Errorf("loss %q: want one of %v", s, Losses())
}

// CBIMConfig configures C-BIM.
type CBIMConfig struct {
	Eps, Alpha float64
	Steps      int
	// Dropout drops each ensemble member's vote per example and step with
	// this probability (§6.2: 0.5), so the example cannot overfit the
	// particular training models.
	Dropout float64
	Loss    Loss
	// Best returns, per example, the first iterate at which the whole
	// ensemble's score M_E(x′)_t was highest, instead of the last one: the
	// smallest perturbation that is as conferrable on the training models,
	// rather than one pushed on to the edge of the ε-ball. Iterates are
	// ranked by M_E (eq. 13) whatever the Loss, so that every objective
	// is judged by the paper's score.
	Best bool
	// Weights α, β, γ of LossCE (1, 1, 1 when all are zero).
	Weights [3]float64
	// Shift and Noise make each step's gradient an expectation over input
	// transformations (input diversity, Xie et al. 2019; EOT, Athalye et
	// al. 2018): every step attacks the ensemble on x′ moved by up to
	// Shift pixels in each direction (zero border) plus Gaussian noise of
	// standard deviation Noise, so the example cannot rely on
	// pixel-exact features of the training models. The target and the
	// best iterate are still chosen on x′ itself. Zero turns each off.
	Shift int
	Noise float64
	// OnStep, when set, is called after each step.
	OnStep func(step int)
}

// DefaultCBIM is §6.2's setting: ε = 0.15 (L∞), 100 steps of 0.01, dropout
// 0.5, the linear loss.
func DefaultCBIM() CBIMConfig {
	return CBIMConfig{Eps: 0.15, Alpha: 0.01, Steps: 100, Dropout: 0.5, Loss: LossLinear}
}

// votes stacks softmax outputs of models on x: (len(models), N, K).
func votes(models []Model, x *torch.Tensor) *torch.Tensor {
	return logVotes(models, x).Exp()
}

// logVotes stacks log-softmax outputs of models on x: (len(models), N, K).
func logVotes(models []Model, x *torch.Tensor) *torch.Tensor {
	ps := make([]*torch.Tensor, len(models))
	for i, m := range models {
		p := m.Forward(x).LogSoftmax(1)
		s := p.Shape()
		ps[i] = p.Reshape(1, s[0], s[1])
	}
	return torch.Cat(ps, 0)
}

// meanVote averages the stacked votes over members, dropping each member's
// vote per example with probability p (eq. 11–12 with dropout).
func meanVote(v *torch.Tensor, p float64, d torch.Device) *torch.Tensor {
	if p <= 0 {
		return v.MeanDims([]int64{0}, false)
	}
	s := v.Shape()
	keep := torch.Rand(v.Scope(), d, s[0], s[1], 1).GeScalar(p).To(torch.Float32, d)
	return v.Mul(keep).SumDims([]int64{0}, false).Div(keep.SumDims([]int64{0}, false).ClampMin(1))
}

// Conferrability returns M_E(x) = (1 − Ref(x)) ⊙ Surr(x) (eq. 13) with the
// source counted among the surrogates (S_M), without dropout.
func (e Ensemble) Conferrability(x *torch.Tensor) *torch.Tensor {
	surr := votes(append([]Model{e.Source}, e.Surrogates...), x).MeanDims([]int64{0}, false)
	ref := votes(e.References, x).MeanDims([]int64{0}, false)
	return ref.RSubScalar(1).Mul(surr)
}

// Check says why C-BIM cannot run on e with c, or nil: an ensemble
// without a source or references, an unknown loss, or a setting out of
// range. Callers that take a configuration from outside check it before
// any work (fingerprint.Craft does).
func (c CBIMConfig) Check(e Ensemble) error {
	switch {
	case e.Source == nil:
		return errors.New("the ensemble needs a source model")
	case len(e.References) == 0:
		return errors.New("the ensemble needs at least one reference model")
	case c.Steps < 0:
		return fmt.Errorf("steps %d: want 0 or more", c.Steps)
	case !(c.Eps >= 0) || math.IsInf(c.Eps, 1):
		return fmt.Errorf("eps %g: want a radius of 0 or more", c.Eps)
	case !(c.Alpha >= 0) || math.IsInf(c.Alpha, 1):
		return fmt.Errorf("alpha %g: want a step size of 0 or more", c.Alpha)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return fmt.Errorf("dropout %g: want a probability in [0,1)", c.Dropout)
	}
	if _, err := ParseLoss(string(c.Loss)); err != nil {
		return err
	}
	return CheckDiversity(c.Shift, c.Noise)
}

// CBIM is Conferrable BIM (§4.4): BIM steps on the composed ensemble's
// conferrability score for a target class, kept in the L∞ ε-ball and in
// [0,1]. The target of each example is, at every step, the class other than
// its label y with the highest conferrability score, so the attack follows
// the most conferrable direction. It returns the adversarial examples,
// owned by x's scope.
//
// It returns an error, a *torch.Error of op "cbim", before any work for a
// configuration that c.Check refuses, and the *torch.Error of a libtorch
// failure (a model's panic with one included) during the attack; the
// tensors it made are freed then. Panics of any other kind pass through.
func CBIM(e Ensemble, x, y *torch.Tensor, c CBIMConfig) (adv *torch.Tensor, err error) {
	if err := c.Check(e); err != nil {
		return nil, &torch.Error{Op: "cbim", Msg: err.Error()}
	}
	err = torch.Catch(func() { adv = cbim(e, x, y, c) })
	return adv, err
}

// cbim is CBIM on a configuration that Check accepts; it panics with a
// *torch.Error on a libtorch failure, having freed what it kept.
func cbim(e Ensemble, x, y *torch.Tensor, c CBIMConfig) *torch.Tensor {
	d := x.Device()
	members := append([]Model{e.Source}, e.Surrogates...)
	k := int64(0)
	torch.NoGrad(func() { k = e.Source.Forward(x.Narrow(0, 0, 1)).Size(1) })
	notY := y.OneHot(k).To(torch.Float32, d).MulScalar(-1e9) // masks the true class out of the target choice
	w := c.Weights
	if w == ([3]float64{}) {
		w = [3]float64{1, 1, 1}
	}
	var clean *torch.Tensor // M(x), for LossCE
	if c.Loss == LossCE {
		torch.NoGrad(func() { clean = e.Source.Forward(x).Softmax(1) })
	}
	var best, bestScore *torch.Tensor // c.Best: each example's best iterate so far and its score
	// keepBest records xi when its score beats the best so far (full is
	// M_E(xi) of the whole ensemble, t the targets).
	keepBest := func(xi, full, t *torch.Tensor) {
		score := full.Gather(1, t).Reshape(-1)
		nb, ns := xi.Detach(), score
		if best != nil {
			better := score.Gt(bestScore.AddScalar(1e-6))
			nb = torch.Where(better.Reshape(-1, 1, 1, 1), nb, best)
			ns = torch.Where(better, score, bestScore)
			best.Free()
			bestScore.Free()
		}
		torch.Keep(nb, ns)
		best, bestScore = nb, ns
	}
	xa := x
	ok := false
	defer func() { // on a failure, free what outlives the step scopes
		if !ok {
			if xa != x && xa != best {
				xa.Free()
			}
			best.Free()
			bestScore.Free()
		}
	}()
	for i := range c.Steps {
		next := x
		torch.Scoped(func(s *torch.Scope) {
			xi := s.Add(xa.Detach()).SetRequiresGrad(true)
			xt := c.transform(xi)
			lsv, lrv := logVotes(members, xt), logVotes(e.References, xt)
			sv, rv := lsv.Exp(), lrv.Exp()
			surr := meanVote(sv, c.Dropout, d) // eq. 11
			ref := meanVote(rv, c.Dropout, d)  // eq. 12
			me := ref.RSubScalar(1).Mul(surr)  // eq. 13
			// The target is the most conferrable class other than y, chosen
			// on the whole ensemble (no dropout) so that it does not flicker.
			var full *torch.Tensor
			if xt == xi {
				full = rv.Detach().MeanDims([]int64{0}, false).RSubScalar(1).Mul(sv.Detach().MeanDims([]int64{0}, false))
			} else {
				torch.NoGrad(func() { full = e.Conferrability(xi.Detach()) })
			}
			t := full.Add(notY).Argmax(1, true)
			if c.Best && i > 0 {
				keepBest(xi, full, t)
			}
			conf := me.Gather(1, t) // M_E(x′)_t
			var loss *torch.Tensor
			switch c.Loss {
			case LossCE:
				src := sv.Narrow(0, 0, 1).Reshape(sv.Size(1), sv.Size(2)) // M(x′)
				h1 := conf.AddScalar(1e-12).Log().Neg().Sum()
				h2 := src.AddScalar(1e-12).Log().Mul(clean).Sum().Neg()
				h3 := src.Mul(surr.AddScalar(1e-12).Log()).Sum().Neg()
				loss = h1.MulScalar(w[0]).Sub(h2.MulScalar(w[1])).Add(h3.MulScalar(w[2]))
			case LossGeometric:
				// Both logarithms come from log-softmax, so that no model
				// drops out of the gradient however sure it is: log S_i(x′)_t
				// directly, log(1 − R_j(x′)_t) as the log-sum-exp of R_j's
				// other classes.
				ls := lsv.Gather(2, t.Reshape(1, -1, 1).Expand(lsv.Size(0), -1, -1))
				notT := t.Reshape(-1).OneHot(k).To(torch.Float32, d).MulScalar(-1e9).Reshape(1, -1, k)
				lr := lrv.Add(notT).LogSumExp([]int64{2}, true)
				loss = meanVote(ls, c.Dropout, d).Sum().Add(meanVote(lr, c.Dropout, d).Sum()).Neg()
			case LossLinear, "":
				loss = conf.Sum().Neg() // eq. 14, summed over the batch
			default: // not reached: Check refused it
				panic(&torch.Error{Op: "cbim", Msg: fmt.Sprintf("unknown loss %q", c.Loss)})
			}
			g := torch.Grads([]*torch.Tensor{loss}, []*torch.Tensor{xi})[0]
			next = Project(xi.Detach().Sub(g.Sign().MulScalar(c.Alpha)), x, c.Eps, LInf)
			torch.Keep(next)
		})
		if xa != x {
			xa.Free()
		}
		xa = next
		if c.OnStep != nil {
			c.OnStep(i + 1)
		}
	}
	if c.Best && xa != x {
		torch.NoGrad(func() {
			torch.Scoped(func(s *torch.Scope) {
				xf := s.Add(xa.Detach())
				full := e.Conferrability(xf)
				keepBest(xf, full, full.Add(notY).Argmax(1, true))
			})
		})
		xa.Free()
		bestScore.Free()
		xa = best
	}
	if xa != x {
		x.Scope().Add(xa)
	}
	ok = true
	return xa
}

// MaxShift bounds CBIMConfig.Shift: a larger move is no longer a small
// transformation of a 28- or 32-pixel image.
const MaxShift = 8

// CheckDiversity says why Shift or Noise is out of range, or nil.
func CheckDiversity(shift int, noise float64) error {
	if shift < 0 || shift > MaxShift {
		return fmt.Errorf("shift %d: want 0 to %d pixels", shift, MaxShift)
	}
	if !(noise >= 0 && noise <= 1) {
		return fmt.Errorf("noise %g: want a standard deviation in [0,1]", noise)
	}
	return nil
}

// transform is one draw of the step's input transformation (Shift, Noise)
// applied to x, differentiably; x itself when both are off.
func (c CBIMConfig) transform(x *torch.Tensor) *torch.Tensor {
	if c.Shift > 0 {
		p := int64(c.Shift)
		r := torch.Rand(x.Scope(), torch.CPU, 2).Float32s() // the shift (dy, dx), from libtorch's seeded generator
		dy, dx := int64(r[0]*float32(2*p+1)), int64(r[1]*float32(2*p+1))
		h, w := x.Size(2), x.Size(3)
		x = torch.Pad(x, []int64{p, p, p, p}, torch.PadConstant, 0).Narrow(2, min(dy, 2*p), h).Narrow(3, min(dx, 2*p), w)
	}
	if c.Noise > 0 {
		x = x.Add(torch.RandN(x.Scope(), x.Device(), x.Shape()...).MulScalar(c.Noise))
	}
	return x
}

// Quantize rounds x′ to 8-bit pixel values inside the L∞ ε-ball around x
// (x itself holds 8-bit values), so a fingerprint survives being sent as a
// PNG: δ is rounded to k/255 with |k| ≤ ⌊255ε⌋.
func Quantize(xAdv, x *torch.Tensor, eps float64) *torch.Tensor {
	lim := math.Floor(eps*255 + 1e-9)
	k := xAdv.Sub(x).MulScalar(255).Round().Clamp(-lim, lim)
	return x.Add(k.DivScalar(255)).MulScalar(255).Round().DivScalar(255).Clamp(0, 1)
}
