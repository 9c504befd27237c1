package train

// The registry of removal attacks: one row per attack, which Derive runs and
// the CLI (`conferral derive`) and the server read for the attack's name,
// summary, default recipe and examples, and the parameters it records. A new
// attack joins by a name below, a row of attacks, and, if it takes
// parameters, a field of Options with its default in DefaultOptions.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
)

// Attack names, as `conferral derive --attack` takes them.
const (
	AttackRetraining = "retraining"  // §2.4: hard labels of the source, T = 1
	AttackJagielski  = "jagielski"   // §2.4: soft labels at temperature T′ (eq. 4)
	AttackKnockoff   = "knockoff"    // §2.4: a transfer set from another distribution
	AttackPapernot   = "papernot"    // §2.4: Jacobian-based dataset augmentation
	AttackFTLL       = "ftll"        // §6.3: fine-tune the last layer
	AttackFTAL       = "ftal"        // §6.3: fine-tune all layers
	AttackRTLL       = "rtll"        // §6.3: re-initialise and train the last layer
	AttackRTAL       = "rtal"        // §6.3: re-initialise the last layer, train all
	AttackFGM        = "fgm"         // §6.3: adversarial training with FGM
	AttackPGD        = "pgd"         // §6.3: adversarial training with PGD
	AttackEnsemble   = "ensemble"    // §6.3: n surrogates on disjoint data, average voting
	AttackNoise      = "noise"       // §6.3: uniform noise mixed into the prediction vectors
	AttackTrueLabels = "true-labels" // §6.3: a fraction ρ of ground-truth labels
	AttackPrune      = "prune"       // beyond the paper: magnitude weight pruning
	AttackQuantize   = "quantize"    // beyond the paper: 8-bit weight quantization
	AttackFinePrune  = "fineprune"   // beyond the paper: Liu et al. 2018, prune the least active channels, then fine-tune
	AttackPGDAT      = "pgd-at"      // beyond the paper: Madry et al. 2018, PGD adversarial training from scratch
	AttackTRADES     = "trades"      // beyond the paper: Zhang et al. 2019, TRADES from scratch
	AttackCombined   = "combined"    // beyond the paper: several attacks in a row (Options.Steps)
)

// An Attack is one removal attack as Derive runs it: a row of the registry.
type Attack struct {
	Name string
	// Summary says in a line what the attack does, naming the `conferral
	// derive` flags of its parameters.
	Summary string
	// FineTunes says that it continues training a copy of the source
	// (fine-tuning and adversarial training): by AttackConfig's fine-tuning
	// recipe, on DefaultExamples of the adversary's data.
	FineTunes bool
	// Trains says that it trains a model, and so takes a recipe: every
	// attack but those that only transform the source's weights.
	Trains bool
	// params are the values of o the attack uses, by the names the model
	// file and the report give them (Params adds the recipe's).
	params func(o Options) map[string]string
	// derive makes the derived model from j.source on the adversary's data
	// j.d. On error it returns what it built, if anything, for Derive to
	// free.
	derive func(ctx context.Context, j derivation) (Deployed, *Derivation, error)
}

// derivation is what an attack's derive function works from.
type derivation struct {
	name   string
	source *nn.Model
	d      *data.Dataset // the adversary's data, cfg's share drawn
	o      Options
	cfg    Config
}

// attacks is the registry, in the order of the paper's Tables 4 and 5, then
// the attacks beyond the paper.
var attacks = []Attack{
	{Name: AttackRetraining, Trains: true,
		Summary: "train a new model on the source's labels (T = 1)",
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			res, err := Retrain(ctx, j.source, m, j.d, j.cfg)
			return &Derivation{Attack: AttackRetraining, Queries: int64(j.d.Len()), Examples: j.d.Len(), Train: res}, err
		})},
	{Name: AttackJagielski, Trains: true,
		Summary: "train on the source's soft labels at temperature --temperature",
		params:  func(o Options) map[string]string { return map[string]string{"temperature": fmtFloat(o.Temperature)} },
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return Jagielski(ctx, j.source, m, j.d, j.o.Temperature, j.cfg)
		})},
	{Name: AttackKnockoff, Trains: true,
		Summary: "train on a transfer set of another distribution (--transfer) labelled by the source",
		params: func(o Options) map[string]string {
			if o.Transfer == nil {
				return nil
			}
			return map[string]string{"transfer": o.Transfer.Name}
		},
		derive: deriveKnockoff},
	{Name: AttackPapernot, Trains: true,
		Summary: "Jacobian-based dataset augmentation from --seeds examples in --rounds rounds",
		params: func(o Options) map[string]string {
			p := map[string]string{"seeds": fmt.Sprint(o.Papernot.Seeds), "rounds": fmt.Sprint(o.Papernot.Rounds), "lambda": fmtFloat(o.Papernot.Lambda)}
			if o.Papernot.Tau > 0 {
				p["tau"] = fmt.Sprint(o.Papernot.Tau)
			}
			return p
		},
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return Papernot(ctx, j.source, m, j.d, j.o.Papernot, j.cfg)
		})},
	{Name: AttackFTLL, FineTunes: true, Trains: true,
		Summary: "fine-tune the source's last layer",
		derive:  onCopy(fineTune)},
	{Name: AttackFTAL, FineTunes: true, Trains: true,
		Summary: "fine-tune all of the source's layers",
		derive:  onCopy(fineTune)},
	{Name: AttackRTLL, FineTunes: true, Trains: true,
		Summary: "re-initialise the source's last layer and train it alone",
		derive:  onCopy(fineTune)},
	{Name: AttackRTAL, FineTunes: true, Trains: true,
		Summary: "re-initialise the source's last layer and train all layers",
		derive:  onCopy(fineTune)},
	{Name: AttackFGM, FineTunes: true, Trains: true,
		Summary: "fine-tune the source with FGM adversarial examples",
		params:  advParams(AttackFGM),
		derive:  onCopy(adversarialTraining)},
	{Name: AttackPGD, FineTunes: true, Trains: true,
		Summary: "fine-tune the source with PGD adversarial examples",
		params:  advParams(AttackPGD),
		derive:  onCopy(adversarialTraining)},
	{Name: AttackEnsemble, Trains: true,
		Summary: "--members surrogates on disjoint parts of the data, deployed with average voting",
		params:  func(o Options) map[string]string { return map[string]string{"members": fmt.Sprint(o.Members)} },
		derive:  deriveEnsemble},
	{Name: AttackNoise, Trains: true,
		Summary: "train on the source's prediction vectors mixed with uniform noise of weight --lambda",
		params:  func(o Options) map[string]string { return map[string]string{"lambda": fmtFloat(o.Lambda)} },
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return Noise(ctx, j.source, m, j.d, j.o.Lambda, j.cfg)
		})},
	{Name: AttackTrueLabels, Trains: true,
		Summary: "train on the source's labels with a fraction --rho of ground-truth labels",
		params:  func(o Options) map[string]string { return map[string]string{"rho": fmtFloat(o.Rho)} },
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return TrueLabels(ctx, j.source, m, j.d, j.o.Rho, j.cfg)
		})},
	{Name: AttackPrune,
		Summary: "set the --fraction smallest weights of each layer of the source to zero",
		params:  func(o Options) map[string]string { return map[string]string{"fraction": fmtFloat(o.Fraction)} },
		derive: onCopy(func(_ context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			st, err := Prune(m, j.o.Fraction)
			return &Derivation{Attack: AttackPrune, Layers: st}, err
		})},
	{Name: AttackQuantize,
		Summary: "round the source's weights through --bits-bit affine quantization",
		params:  func(o Options) map[string]string { return map[string]string{"bits": fmt.Sprint(o.Bits)} },
		derive: onCopy(func(_ context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			st, err := Quantize(m, j.o.Bits)
			return &Derivation{Attack: AttackQuantize, Layers: st}, err
		})},
	{Name: AttackFinePrune, FineTunes: true, Trains: true,
		Summary: "prune the --fraction least active channels of the source's last convolution on clean data, then fine-tune (Liu et al. 2018)",
		params:  func(o Options) map[string]string { return map[string]string{"fraction": fmtFloat(o.Fraction)} },
		derive: onCopy(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return FinePrune(ctx, j.source, m, j.d, j.o.Fraction, j.cfg)
		})},
	{Name: AttackPGDAT, Trains: true,
		Summary: "train a new model by PGD adversarial training on the source's labels (Madry et al. 2018; L∞ ε, α, steps)",
		params:  robustParams(false),
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return PGDAT(ctx, j.source, m, j.d, j.o.Robust, j.cfg)
		})},
	{Name: AttackTRADES, Trains: true,
		Summary: "train a new model by TRADES on the source's labels (Zhang et al. 2019; L∞ ε, α, steps, β)",
		params:  robustParams(true),
		derive: onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
			return TRADES(ctx, j.source, m, j.d, j.o.Robust, j.cfg)
		})},
	{Name: AttackCombined, Trains: true,
		Summary: "chain steps (Options.Steps, default " + DefaultSteps + ") of " + strings.Join(CombinedSteps(), ", "),
		params: func(o Options) map[string]string {
			return map[string]string{"steps": o.Steps, "fraction": fmtFloat(o.Fraction), "bits": fmt.Sprint(o.Bits), "temperature": fmtFloat(o.Temperature)}
		},
		derive: deriveCombined},
}

// robustParams are the parameters of PGD-AT (and, with β, TRADES).
func robustParams(trades bool) func(o Options) map[string]string {
	return func(o Options) map[string]string {
		p := map[string]string{"eps": fmtFloat(o.Robust.Eps), "alpha": fmtFloat(o.Robust.Alpha), "steps": fmt.Sprint(o.Robust.Steps), "norm": "linf"}
		if trades {
			p["beta"] = fmtFloat(o.Robust.Beta)
		}
		return p
	}
}

// Attacks lists every derivation Derive knows, in the order of the paper's
// Tables 4 and 5, then those beyond the paper.
func Attacks() []string {
	names := make([]string, len(attacks))
	for i, a := range attacks {
		names[i] = a.Name
	}
	return names
}

// Registry returns the rows of every attack, in the order of Attacks.
func Registry() []Attack { return slices.Clone(attacks) }

// ParseAttack returns the row of the attack named name, or an error that
// lists the names there are.
func ParseAttack(name string) (Attack, error) {
	for _, a := range attacks {
		if a.Name == name {
			return a, nil
		}
	}
	return Attack{}, fmt.Errorf("attack %q: want one of %s", name, strings.Join(Attacks(), ", "))
}

// Params names the parameters the attack used, for the model file and the
// report: its own from o and, when it trains, cfg's epochs, learning rate
// and optimizer.
func (a Attack) Params(o Options, cfg Config) map[string]string {
	p := map[string]string{}
	if a.params != nil {
		for k, v := range a.params(o) {
			p[k] = v
		}
	}
	if a.Trains {
		p["epochs"], p["lr"], p["optimizer"] = fmt.Sprint(cfg.Epochs), fmtFloat(cfg.LR), cfg.Optimizer
	}
	return p
}

// fmtFloat writes v in the fewest digits that read back as v.
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// onSurrogate derives by f from a new model of j.o.Arch (the source's by
// default) for the source's task, initialised from j.cfg.Seed and
// normalised with the statistics of j.d.
func onSurrogate(f func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error)) func(context.Context, derivation) (Deployed, *Derivation, error) {
	return func(ctx context.Context, j derivation) (Deployed, *Derivation, error) {
		m, err := newSurrogate(j.source, j.o.Arch, j.d, j.cfg.Seed)
		if err != nil {
			return nil, nil, fmt.Errorf("derive %s: %w", j.name, err)
		}
		der, err := f(ctx, j, m)
		return m, der, err
	}
}

// onCopy derives by f from a copy of the source.
func onCopy(f func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error)) func(context.Context, derivation) (Deployed, *Derivation, error) {
	return func(ctx context.Context, j derivation) (Deployed, *Derivation, error) {
		m, err := j.source.Clone(j.source.Device())
		if err != nil {
			return nil, nil, fmt.Errorf("derive %s: copying the source: %w", j.name, err)
		}
		der, err := f(ctx, j, m)
		return m, der, err
	}
}

// deriveKnockoff trains a new model on Options.TransferSize images of the
// transfer set (as many as the adversary's data by default), normalised with
// their statistics.
func deriveKnockoff(ctx context.Context, j derivation) (Deployed, *Derivation, error) {
	if j.o.Transfer == nil {
		return nil, nil, errors.New("derive knockoff: no transfer set")
	}
	n := j.o.TransferSize
	if n <= 0 {
		n = j.d.Len()
	}
	j.d = RandomSubset(j.o.Transfer, n, j.cfg.Seed)
	return onSurrogate(func(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
		return Knockoff(ctx, j.source, m, j.d, j.d.Len(), j.cfg)
	})(ctx, j)
}

// fineTune and adversarialTraining derive by the attack named j.name.
func fineTune(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
	return FineTune(ctx, j.source, m, j.d, j.name, j.cfg)
}

func adversarialTraining(ctx context.Context, j derivation, m *nn.Model) (*Derivation, error) {
	adv := j.o.Adv
	adv.Attack = j.name
	return AdversarialTraining(ctx, j.source, m, j.d, adv, j.cfg)
}

// advParams are the parameters of adversarial training with attack (FGM
// or PGD).
func advParams(attack string) func(o Options) map[string]string {
	return func(o Options) map[string]string {
		p := map[string]string{"eps": fmtFloat(o.Adv.Eps), "norm": o.Adv.Norm.String(), "adv_fraction": fmtFloat(o.Adv.Fraction)}
		if attack == AttackPGD {
			p["alpha"], p["steps"] = fmtFloat(o.Adv.Alpha), fmt.Sprint(o.Adv.Steps)
		}
		return p
	}
}

// deriveEnsemble trains Options.Members new models of Options.Arch (the
// source's by default), normalised with the statistics of the adversary's
// data, and deploys them as one.
func deriveEnsemble(ctx context.Context, j derivation) (Deployed, *Derivation, error) {
	spec := j.source.Spec
	if j.o.Arch != "" {
		spec.Arch = j.o.Arch
	}
	spec.Mean, spec.Std = j.d.Stats()
	e, der, err := TrainEnsemble(ctx, j.source, spec, j.source.Device(), j.d, j.o.Members, j.cfg)
	if e == nil { // no typed nil in the interface: TrainEnsemble freed the members
		return nil, der, err
	}
	return e, der, err
}

// FineTuning reports whether attack continues training a copy of the source
// (fine-tuning and adversarial training).
func FineTuning(attack string) bool {
	a, err := ParseAttack(attack)
	return err == nil && a.FineTunes
}

// DefaultExamples is how many of the adversary's examples attack uses by
// default: 10,000 for those that fine-tune the source (§6.3: 10,000 inputs
// labelled by the source), 0 (all) for the others.
func DefaultExamples(attack string) int {
	if FineTuning(attack) {
		return 10000
	}
	return 0
}

// AttackConfig is the training recipe a derivation uses by default: the
// project's recipe (Defaults) for 10 epochs for the attacks that train a new
// model (10 epochs per round for Papernot), and 5 epochs at a tenth of the
// learning rate for those that continue training the source (fine-tuning and
// adversarial training). The paper states neither.
func AttackConfig(attack string) Config {
	if FineTuning(attack) {
		c := Defaults(5)
		c.LR = 0.01
		return c
	}
	return Defaults(10)
}

// Options are the attack parameters of Derive. DefaultOptions gives the
// paper's values where it states them.
type Options struct {
	// Arch is the surrogate's architecture for the attacks that train a new
	// model ("" means the source's).
	Arch string
	// Temperature is Jagielski's T′.
	Temperature float64
	// Transfer is Knockoff's transfer set (required for Knockoff), and
	// TransferSize how many of its images, drawn at random, the adversary
	// labels (0: as many as the adversary's own data holds, so that both
	// have the same budget; at most the whole transfer set).
	Transfer     *data.Dataset
	TransferSize int
	Papernot     PapernotOpts
	Adv          AdvOpts
	Members      int     // Ensemble: n
	Lambda       float64 // Noise: weight of the uniform noise
	Rho          float64 // True Labels: fraction of ground-truth labels
	Fraction     float64 // pruning: fraction of each weight tensor set to zero; fine-pruning: of the last convolution's channels
	Bits         int     // quantization: bits per weight
	Robust       RobustOpts
	// Steps is the combined attack's comma-separated steps (ParseSteps).
	Steps string
}

// DefaultOptions returns the parameters Derive uses for attack: Jagielski
// T′ = 2 (the paper gives no value), Papernot's own parameters (150 seeds, 6
// rounds, λ = 0.1), adversarial training as AdvDefaults(attack), an Ensemble
// of n = 3 (Table 4), Noise λ = 0.1 and True Labels ρ = 0.1 (within the
// paper's ranges), pruning half of each weight tensor (fine-pruning: half
// of the last convolution's channels) and 8-bit quantization, PGD-AT and
// TRADES as RobustDefaults, and the combined attack's DefaultSteps.
func DefaultOptions(attackName string) Options {
	return Options{
		Temperature: 2,
		Papernot:    PapernotDefaults(),
		Adv:         AdvDefaults(attackName),
		Members:     3,
		Lambda:      0.1,
		Rho:         0.1,
		Fraction:    0.5,
		Bits:        8,
		Robust:      RobustDefaults(),
		Steps:       DefaultSteps,
	}
}
