package train

// Full adversarial training from scratch, beyond the paper's §6.3 (which
// only adversarially fine-tunes the source): Madry et al.'s PGD adversarial
// training and Zhang et al.'s TRADES, each training a new model on the
// source's labels. An adversary hoping that a robust model no longer shares
// the source's adversarial vulnerabilities would try these first.

import (
	"cmp"
	"context"
	"fmt"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// RobustOpts are the parameters of PGD adversarial training and TRADES:
// the L∞ radius ε of the inner maximisation, its step α and number of
// steps, and TRADES' β (the weight of the robustness term).
type RobustOpts struct {
	Eps   float64
	Alpha float64
	Steps int
	Beta  float64
}

// RobustDefaults are ε = 0.1 (L∞), the radius of the Fashion-MNIST
// robustness literature, 7 steps of 0.03 (about Madry et al.'s α = 2.5ε/k,
// few steps to keep CPU cost at ~8× a clean epoch), and TRADES' β = 6
// (Zhang et al.'s value for CIFAR-10 and MNIST).
func RobustDefaults() RobustOpts { return RobustOpts{Eps: 0.1, Alpha: 0.03, Steps: 7, Beta: 6} }

// check refuses parameters the inner maximisation cannot use.
func (o RobustOpts) check(trades bool) error {
	if !(o.Eps > 0 && o.Eps <= 1) || !(o.Alpha > 0) || o.Steps <= 0 || (trades && !(o.Beta >= 0)) {
		return fmt.Errorf("bad parameters ε = %g, α = %g, %d steps, β = %g", o.Eps, o.Alpha, o.Steps, o.Beta)
	}
	return nil
}

// robustFit is how fit trains robustly.
type robustFit struct {
	o      RobustOpts
	trades bool
}

// loss returns the batch's logits (on adversarial inputs for PGD-AT, on
// clean ones for TRADES) and the loss to minimise. The inner maximisation
// runs with m in evaluation mode, as the defenders' code does with batch
// norm, and m is back in training mode (training) for the outer step.
//
// PGD-AT (Madry et al. 2018, eq. 2.1): min E[max_{‖δ‖∞≤ε} L(θ, x+δ, y)],
// the inner max by PGD from a random start, the outer on the adversarial
// examples alone.
//
// TRADES (Zhang et al. 2019, eq. 5): min E[L(f(x), y) + β·KL(f(x) ‖
// f(x′))], x′ = argmax_{‖x′−x‖∞≤ε} KL(f(x) ‖ f(x′)), found by PGD on the KL
// from x + 0.001·N(0, I), as their reference code does.
func (r *robustFit) loss(m *nn.Model, x, target, hard *torch.Tensor, training bool, smoothing float64) (logits, loss *torch.Tensor) {
	m.SetTraining(false)
	if !r.trades {
		xa := attack.PGD(m, x, hard, attack.Config{Eps: r.o.Eps, Alpha: r.o.Alpha, Steps: r.o.Steps, Norm: attack.LInf}).Detach()
		m.SetTraining(training)
		logits = m.Forward(xa)
		return logits, SmoothedCrossEntropy(logits, target, smoothing)
	}
	var logP *torch.Tensor
	torch.NoGrad(func() { logP = m.Forward(x).LogSoftmax(1) })
	p := logP.Exp()
	start := x.Add(torch.RandN(x.Scope(), x.Device(), x.Shape()...).MulScalar(0.001)).Clamp(0, 1)
	// Each step in a scope of its own (attack.Loop), as PGD-AT's are: the
	// steps' forward graphs do not pile up until the batch ends.
	xa := attack.Loop(x, start, r.o.Steps, func(cur *torch.Tensor) *torch.Tensor {
		xi := cur.Detach().SetRequiresGrad(true)
		kl := p.Mul(logP.Sub(m.Forward(xi).LogSoftmax(1))).Sum()
		g := torch.Grads([]*torch.Tensor{kl}, []*torch.Tensor{xi})[0]
		return attack.Project(cur.Add(g.Sign().MulScalar(r.o.Alpha)), x, r.o.Eps, attack.LInf)
	}).Detach()
	m.SetTraining(training)
	logits = m.Forward(x)
	lp := logits.LogSoftmax(1)
	kl := lp.Exp().Mul(lp.Sub(m.Forward(xa).LogSoftmax(1))).Sum().DivScalar(float64(x.Size(0)))
	return logits, SmoothedCrossEntropy(logits, target, smoothing).Add(kl.MulScalar(r.o.Beta))
}

// PGDAT derives m, a new model, from source by PGD adversarial training
// (Madry et al. 2018) on d labelled by the source: every batch is replaced
// by its PGD adversarial examples (L∞ ε, α, steps) against the current m,
// for cfg.Epochs epochs from m's initialisation. Queries: d.Len().
func PGDAT(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, o RobustOpts, cfg Config) (*Derivation, error) {
	return robustTrain(ctx, source, m, d, AttackPGDAT, &robustFit{o: o}, cfg)
}

// TRADES derives m, a new model, from source by TRADES (Zhang et al. 2019)
// on d labelled by the source, with β = o.Beta. Queries: d.Len().
func TRADES(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, o RobustOpts, cfg Config) (*Derivation, error) {
	return robustTrain(ctx, source, m, d, AttackTRADES, &robustFit{o: o, trades: true}, cfg)
}

func robustTrain(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, name string, r *robustFit, cfg Config) (*Derivation, error) {
	if err := r.o.check(r.trades); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return fitOnSource(ctx, source, m, d, name, cmp.Or(cfg.Stage, name+" "+m.Spec.Arch), cfg, fitOpts{robust: r})
}

// paramMask is a 0/1 mask of a parameter's entries.
type paramMask struct {
	p, mask *torch.Tensor
}

// applyMasks multiplies each masked parameter by its mask in place,
// without recording gradients; the product lives in s.
func applyMasks(s *torch.Scope, masks []paramMask) {
	if len(masks) == 0 {
		return
	}
	torch.NoGrad(func() {
		for _, pm := range masks {
			pm.p.CopyFrom(s.Add(pm.p.Mul(pm.mask)))
		}
	})
}

// zeroMasks returns, for every listed parameter of m, the mask of its
// entries that are not zero now (after pruning), as tensors on m's device
// that the caller frees with freeMasks.
func zeroMasks(vars []*nn.Variable) ([]paramMask, error) {
	var out []paramMask
	err := torch.Catch(func() {
		for _, v := range vars {
			vals := v.T.Float32s()
			mask := make([]float32, len(vals))
			for i, w := range vals {
				if w != 0 {
					mask[i] = 1
				}
			}
			t := torch.FromSlice(nil, mask, v.T.Shape()...)
			if dev := v.T.Device(); dev != torch.CPU {
				moved := t.ToDevice(dev)
				t.Free()
				t = moved
			}
			out = append(out, paramMask{p: v.T, mask: t})
		}
	})
	if err != nil {
		freeMasks(out)
		return nil, err
	}
	return out, nil
}

func freeMasks(masks []paramMask) {
	for _, pm := range masks {
		pm.mask.Free()
	}
}
