package train

// Fine-tuning (FTLL, FTAL, RTLL, RTAL) and adversarial training (FGM, PGD)
// of §6.3: a copy of the source trained further on the adversary's data.

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// LastLayer returns the variables of m's final dense layer (weight, then
// bias): the layer that was created last, as every model of the zoo ends in
// one (fc, fc2 or fc3).
func LastLayer(m *nn.Model) ([]*nn.Variable, error) {
	vars := m.Variables()
	var last *nn.Variable
	for i := len(vars) - 1; i >= 0; i-- {
		if vars[i].Trainable {
			last = vars[i]
			break
		}
	}
	if last == nil {
		return nil, fmt.Errorf("%s has no trainable variables", m.Spec.Arch)
	}
	dot := strings.LastIndex(last.Name, ".")
	if dot < 0 {
		return nil, fmt.Errorf("%s: cannot tell the layer of variable %q", m.Spec.Arch, last.Name)
	}
	prefix := last.Name[:dot+1]
	w, ok := m.Context().Variable(prefix + "weight")
	if !ok || !w.Trainable || w.T.Dim() != 2 {
		return nil, fmt.Errorf("%s: the last layer %q is not a dense layer", m.Spec.Arch, strings.TrimSuffix(prefix, "."))
	}
	out := []*nn.Variable{w}
	if b, ok := m.Context().Variable(prefix + "bias"); ok && b.Trainable {
		out = append(out, b)
	}
	return out, nil
}

// ReinitLastLayer draws m's final dense layer afresh from seed, with the
// initialisation of nn.Dense: U(−1/√fan_in, 1/√fan_in).
func ReinitLastLayer(m *nn.Model, seed uint64) error {
	layer, err := LastLayer(m)
	if err != nil {
		return err
	}
	bound := 1 / math.Sqrt(float64(layer[0].T.Size(1)))
	rng := rand.New(rand.NewPCG(seed, seed^0xda3e39cb94b95bdb))
	return torch.Catch(func() {
		for _, v := range layer {
			setValues(v.T, nn.Uniform(bound)(rng, v.T.Shape()))
		}
	})
}

// FineTune continues training m, a copy of the source (nn.Model.Clone), on
// d labelled by source (§6.3), as attack says:
//   - FTLL trains only the last layer;
//   - FTAL trains every layer;
//   - RTLL re-initialises the last layer (ReinitLastLayer from cfg.Seed)
//     and trains only it;
//   - RTAL re-initialises the last layer and trains every layer.
//
// With the last layer alone trained (FTLL, RTLL), the frozen layers run in
// evaluation mode: batch norm uses and keeps its running statistics and
// dropout is off, so no other variable changes. Queries: d.Len().
func FineTune(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, attackName string, cfg Config) (*Derivation, error) {
	var lastOnly, reinit bool
	switch attackName {
	case AttackFTLL:
		lastOnly = true
	case AttackFTAL:
	case AttackRTLL:
		lastOnly, reinit = true, true
	case AttackRTAL:
		reinit = true
	default:
		return nil, fmt.Errorf("fine-tune: unknown kind %q (want ftll, ftal, rtll or rtal)", attackName)
	}
	var o fitOpts
	if lastOnly || reinit {
		layer, err := LastLayer(m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", attackName, err)
		}
		if reinit {
			if err := ReinitLastLayer(m, uint64(cfg.Seed)); err != nil {
				return nil, fmt.Errorf("%s: %w", attackName, err)
			}
		}
		if lastOnly {
			for _, v := range layer {
				o.params = append(o.params, v.T)
			}
			o.frozenEval = true
		}
	}
	return fitOnSource(ctx, source, m, d, attackName, cmp.Or(cfg.Stage, attackName+" "+m.Spec.Arch), cfg, o)
}

// AdvOpts are the parameters of adversarial training.
type AdvOpts struct {
	Attack string // "fgm" or "pgd"
	Eps    float64
	Alpha  float64 // PGD step
	Steps  int     // PGD steps
	Norm   attack.Norm
	// Fraction of each batch that is also added as adversarial examples
	// (the paper: 1,000 adversarial examples for 10,000 inputs, 0.1).
	Fraction float64
}

// AdvDefaults are the adversarial training parameters: FGM with ε = 0.15
// (L∞, the paper's study radius), and PGD with the parameters of Table 6
// (100 steps of 0.01, L2) in an L2 ball of radius 1, the farthest those
// steps can reach (the paper gives no ε); adversarial examples for a tenth
// of each batch.
func AdvDefaults(name string) AdvOpts {
	if name == AttackPGD {
		return AdvOpts{Attack: AttackPGD, Eps: 1, Alpha: 0.01, Steps: 100, Norm: attack.L2, Fraction: 0.1}
	}
	return AdvOpts{Attack: AttackFGM, Eps: 0.15, Norm: attack.LInf, Fraction: 0.1}
}

// AdversarialTraining fine-tunes every layer of m, a copy of the source, on
// d labelled by the source, each batch extended by adversarial examples of
// its first ⌈Fraction·N⌉ images crafted with FGM or PGD against the current m
// (in evaluation mode) and labelled with the source's label of the clean
// image (§6.3). Queries: d.Len().
func AdversarialTraining(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, o AdvOpts, cfg Config) (*Derivation, error) {
	if o.Attack != AttackFGM && o.Attack != AttackPGD {
		return nil, fmt.Errorf("adversarial training: unknown attack %q (want fgm or pgd)", o.Attack)
	}
	if !(o.Eps > 0) || o.Fraction < 0 || o.Fraction > 1 || (o.Attack == AttackPGD && (o.Steps <= 0 || !(o.Alpha > 0))) {
		return nil, fmt.Errorf("adversarial training: bad parameters %+v", o)
	}
	return fitOnSource(ctx, source, m, d, o.Attack, cmp.Or(cfg.Stage, o.Attack+" "+m.Spec.Arch), cfg, fitOpts{adv: &o})
}

// fitOnSource labels d with the source and trains m on those labels by cfg
// and o, in the named stage: the body of every attack that learns the
// source's hard labels on the adversary's data as it is (fine-tuning,
// adversarial training, PGD-AT and TRADES, fine-pruning, the combined
// attack's fine-tuning). A labelling error is prefixed with name.
// Queries: d.Len().
func fitOnSource(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, name, stage string, cfg Config, o fitOpts) (*Derivation, error) {
	logf(cfg, stage, "labelling %d examples with the source", d.Len())
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, fmt.Errorf("%s: labelling with the source: %w", name, err)
	}
	cfg.Labels, cfg.Stage = labels, stage
	res, err := fit(ctx, m, d, cfg, o)
	return &Derivation{Attack: name, Queries: int64(d.Len()), Examples: d.Len(), Train: res}, err
}

// craft returns adversarial examples of x (labels y) against m.
func craft(m *nn.Model, x, y *torch.Tensor, o AdvOpts) *torch.Tensor {
	c := attack.Config{Eps: o.Eps, Alpha: o.Alpha, Steps: o.Steps, Norm: o.Norm}
	if o.Attack == AttackPGD {
		return attack.PGD(m, x, y, c)
	}
	return attack.FGSM(m, x, y, c)
}
