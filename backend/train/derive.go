package train

// Derivations of a model from a source: every removal attack of the paper's
// §2.4 (distillation and extraction) and §6.3 (fine-tuning, adversarial
// training, the adaptive Ensemble, Noise and True Labels attacks), and, beyond
// the paper, weight pruning and 8-bit weight quantization. Each runs on the
// adversary's data, reports progress through Config.Progress, stops when its
// context is cancelled, and counts the inputs it asks the source to label.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
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
)

// Attacks lists every derivation Derive knows, in the order of the paper's
// Tables 4 and 5, then those beyond the paper.
func Attacks() []string {
	return []string{AttackRetraining, AttackJagielski, AttackKnockoff, AttackPapernot,
		AttackFTLL, AttackFTAL, AttackRTLL, AttackRTAL, AttackFGM, AttackPGD,
		AttackEnsemble, AttackNoise, AttackTrueLabels, AttackPrune, AttackQuantize}
}

// FineTuning reports whether attack continues training a copy of the source
// (fine-tuning and adversarial training).
func FineTuning(attack string) bool {
	switch attack {
	case AttackFTLL, AttackFTAL, AttackRTLL, AttackRTAL, AttackFGM, AttackPGD:
		return true
	}
	return false
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

// Round is one round of Papernot's attack.
type Round struct {
	Round    int     `json:"round"`
	Examples int     `json:"examples"` // substitute training set size in this round
	Queries  int64   `json:"queries"`  // queries made so far
	Lambda   float64 `json:"lambda"`   // the step used to augment after this round (0 after the last)
	Train    *Result `json:"train"`
}

// LayerStats reports what pruning or quantization did to one weight tensor.
type LayerStats struct {
	Name   string  `json:"name"`
	Numel  int64   `json:"numel"`
	Zeroed int64   `json:"zeroed,omitempty"` // pruning: weights set to zero
	Scale  float64 `json:"scale,omitempty"`  // quantization: the step between levels
	Zero   int64   `json:"zero_point,omitempty"`
}

// Derivation reports how a derived model came about.
type Derivation struct {
	Attack string `json:"attack"`
	// Queries is the number of inputs the source was asked to label (0 for
	// the attacks that only transform the source's weights).
	Queries int64 `json:"queries"`
	// Examples is the size of the (final) training set of the derived model.
	Examples int `json:"examples"`
	// Train is the training run (the last one for Papernot).
	Train   *Result      `json:"train,omitempty"`
	Rounds  []Round      `json:"rounds,omitempty"`  // Papernot
	Members []*Result    `json:"members,omitempty"` // Ensemble
	Layers  []LayerStats `json:"layers,omitempty"`  // pruning and quantization
	// TestAccuracy is the derived model's accuracy on Config.Test (0 when
	// there is none).
	TestAccuracy float64 `json:"test_accuracy"`
	Seconds      float64 `json:"seconds"`
}

// Deployed is what a derivation hands the adversary: a single model, or an
// ensemble deployed as one. It classifies, saves, and frees.
type Deployed interface {
	Classifier
	SetTraining(on bool)
	Save(path string, extra map[string]string) error
	Free()
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
	Fraction     float64 // pruning: fraction of each weight tensor set to zero
	Bits         int     // quantization: bits per weight
}

// DefaultOptions returns the parameters Derive uses for attack: Jagielski
// T′ = 2 (the paper gives no value), Papernot's own parameters (150 seeds, 6
// rounds, λ = 0.1), adversarial training as AdvDefaults(attack), an Ensemble
// of n = 3 (Table 4), Noise λ = 0.1 and True Labels ρ = 0.1 (within the
// paper's ranges), pruning half of each weight tensor and 8-bit quantization.
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
	}
}

// Derive derives a model from source by the named attack on the adversary's
// data d. The attacks that train a new model build it with Options.Arch (the
// source's architecture by default), initialised from cfg.Seed and normalised
// with the statistics of the data it is trained on; fine-tuning, adversarial
// training, pruning and quantization start from a copy of the source. The
// source itself is never changed. cfg's recipe applies throughout: its
// Share of d is drawn first; its soft labels apply to Retraining and
// Knockoff (Jagielski and Noise train on probabilities anyway, the others
// on labels). The caller frees the result.
func Derive(ctx context.Context, attackName string, source *nn.Model, d *data.Dataset, o Options, cfg Config) (Deployed, *Derivation, error) {
	start := time.Now()
	var (
		out Deployed
		der *Derivation
		err error
	)
	free := func() {
		if out != nil {
			out.Free()
			out = nil
		}
	}
	// The share of the adversary's data is drawn before anything is
	// labelled, so that queries count only what is used.
	d, _, cfg = takeShare(d, cfg)
	switch attackName {
	case AttackRetraining, AttackJagielski, AttackNoise, AttackTrueLabels, AttackPapernot, AttackKnockoff:
		trainOn := d
		if attackName == AttackKnockoff {
			if o.Transfer == nil {
				return nil, nil, errors.New("derive knockoff: no transfer set")
			}
			n := o.TransferSize
			if n <= 0 {
				n = d.Len()
			}
			trainOn = RandomSubset(o.Transfer, n, cfg.Seed)
		}
		var m *nn.Model
		m, err = newSurrogate(source, o.Arch, trainOn, cfg.Seed)
		if err != nil {
			return nil, nil, fmt.Errorf("derive %s: %w", attackName, err)
		}
		out = m
		switch attackName {
		case AttackRetraining:
			var res *Result
			res, err = Retrain(ctx, source, m, d, cfg)
			der = &Derivation{Attack: AttackRetraining, Queries: int64(d.Len()), Examples: d.Len(), Train: res}
		case AttackJagielski:
			der, err = Jagielski(ctx, source, m, d, o.Temperature, cfg)
		case AttackNoise:
			der, err = Noise(ctx, source, m, d, o.Lambda, cfg)
		case AttackTrueLabels:
			der, err = TrueLabels(ctx, source, m, d, o.Rho, cfg)
		case AttackPapernot:
			der, err = Papernot(ctx, source, m, d, o.Papernot, cfg)
		case AttackKnockoff:
			der, err = Knockoff(ctx, source, m, trainOn, trainOn.Len(), cfg)
		}
	case AttackFTLL, AttackFTAL, AttackRTLL, AttackRTAL, AttackFGM, AttackPGD, AttackPrune, AttackQuantize:
		var m *nn.Model
		m, err = source.Clone(source.Device())
		if err != nil {
			return nil, nil, fmt.Errorf("derive %s: copying the source: %w", attackName, err)
		}
		out = m
		switch attackName {
		case AttackFGM, AttackPGD:
			adv := o.Adv
			adv.Attack = attackName
			der, err = AdversarialTraining(ctx, source, m, d, adv, cfg)
		case AttackPrune:
			var st []LayerStats
			st, err = Prune(m, o.Fraction)
			der = &Derivation{Attack: AttackPrune, Layers: st}
		case AttackQuantize:
			var st []LayerStats
			st, err = Quantize(m, o.Bits)
			der = &Derivation{Attack: AttackQuantize, Layers: st}
		default:
			der, err = FineTune(ctx, source, m, d, attackName, cfg)
		}
	case AttackEnsemble:
		spec := source.Spec
		if o.Arch != "" {
			spec.Arch = o.Arch
		}
		spec.Mean, spec.Std = d.Stats()
		var e *Ensemble
		e, der, err = TrainEnsemble(ctx, source, spec, source.Device(), d, o.Members, cfg)
		if e != nil {
			out = e
		}
	default:
		return nil, nil, fmt.Errorf("derive: unknown attack %q (have %s)", attackName, strings.Join(Attacks(), ", "))
	}
	if err != nil {
		free()
		return nil, der, err
	}
	if cfg.Test != nil {
		acc, err := Accuracy(ctx, out, cfg.Test, nil)
		if err != nil {
			free()
			return nil, der, fmt.Errorf("derive %s: %w", attackName, err)
		}
		der.TestAccuracy = acc
	}
	der.Seconds = time.Since(start).Seconds()
	cfg.Progress.Report(shared.Event{Kind: shared.Done, Stage: cmp.Or(cfg.Stage, "derive "+attackName),
		Message: fmt.Sprintf("%d queries, test accuracy %.4f", der.Queries, der.TestAccuracy),
		Metrics: map[string]float64{"queries": float64(der.Queries), "test_acc": der.TestAccuracy}})
	return out, der, nil
}

// newSurrogate builds an untrained model of arch (the source's when empty)
// for the source's task, normalised with d's statistics.
func newSurrogate(source *nn.Model, arch string, d *data.Dataset, seed int64) (*nn.Model, error) {
	spec := source.Spec
	if arch != "" {
		spec.Arch = arch
	}
	spec.Mean, spec.Std = d.Stats()
	return nn.New(spec, uint64(seed), source.Device())
}

// logf reports a line of text.
func logf(cfg Config, stage, format string, args ...any) {
	cfg.Progress.Report(shared.Event{Kind: shared.Log, Stage: stage, Message: fmt.Sprintf(format, args...)})
}

// RandomSubset returns n images of d drawn at random without replacement
// (all of d, shuffled, when n ≥ d.Len()).
func RandomSubset(d *data.Dataset, n int, seed int64) *data.Dataset {
	idx := permutation(d.Len(), seed)
	if n < len(idx) {
		idx = idx[:n]
	}
	return d.Subset(idx)
}

// permutation returns 0..n-1 shuffled by seed.
func permutation(n int, seed int64) []int {
	r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	return r.Perm(n)
}

// Probabilities returns m's softmax at temperature T (T = 1: the prediction
// vectors) for every example of d, row-major N×K, in evaluation mode.
func Probabilities(ctx context.Context, m Classifier, d *data.Dataset, temperature float64) ([]float32, error) {
	if !(temperature > 0) {
		return nil, fmt.Errorf("probabilities: temperature %v is not positive", temperature)
	}
	if t, ok := m.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(false)
	}
	runtime.LockOSThread() // see fit
	defer runtime.UnlockOSThread()
	var out []float32
	for b := range d.Batches(data.BatchOpts{Size: evalBatch}) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("probabilities: %w", err)
		}
		err := torch.Catch(func() {
			torch.NoGrad(func() {
				torch.Scoped(func(s *torch.Scope) {
					x := onDevice(torch.FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W)), m.Device())
					logits := m.Forward(x)
					if temperature != 1 {
						logits = logits.DivScalar(temperature)
					}
					out = append(out, logits.Softmax(1).Float32s()...)
				})
			})
		})
		if err != nil {
			return nil, fmt.Errorf("probabilities: %w", err)
		}
	}
	return out, nil
}

// Jagielski derives m from source with the soft labels of Jagielski et al.
// (§2.4, eq. 4): the source's prediction vectors sharpened or softened by
// the distillation parameter T′, M′(x)ᵢ = M(x)ᵢ^{1/T′} / Σⱼ M(x)ⱼ^{1/T′},
// which is the softmax of the source's logits divided by T′. (Eq. 4 as
// printed puts exp around M(x)ᵢ^{1/T′}; of probabilities in [0,1] that would
// give near-uniform targets, so we read it as this normalised power.) m is
// trained on them with a soft-target cross-entropy. Queries: d.Len().
func Jagielski(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, temperature float64, cfg Config) (*Derivation, error) {
	stage := cmp.Or(cfg.Stage, "jagielski "+m.Spec.Arch)
	logf(cfg, stage, "labelling %d examples with the source's soft labels (T′ = %g)", d.Len(), temperature)
	soft, err := Probabilities(ctx, source, d, temperature)
	if err != nil {
		return nil, fmt.Errorf("jagielski: labelling with the source: %w", err)
	}
	cfg.Stage = stage
	res, err := fit(ctx, m, d, cfg, fitOpts{soft: soft})
	return &Derivation{Attack: AttackJagielski, Queries: int64(d.Len()), Examples: d.Len(), Train: res}, err
}

// Knockoff derives m from source by Knockoff Nets with random selection
// (§2.4): n images drawn at random from a transfer set of another
// distribution (MNIST for Fashion-MNIST), labelled by the source, and m
// trained on them. n ≤ 0 means the whole transfer set. The transfer set's
// own labels are ignored. Queries: the number of images drawn.
func Knockoff(ctx context.Context, source Classifier, m *nn.Model, transfer *data.Dataset, n int, cfg Config) (*Derivation, error) {
	if transfer.C != int(m.Spec.C) || transfer.H != int(m.Spec.H) || transfer.W != int(m.Spec.W) {
		return nil, fmt.Errorf("knockoff: transfer images are %dx%dx%d, the model takes %dx%dx%d", transfer.C, transfer.H, transfer.W, m.Spec.C, m.Spec.H, m.Spec.W)
	}
	if n <= 0 {
		n = transfer.Len()
	}
	set := transfer
	if n < transfer.Len() {
		set = RandomSubset(transfer, n, cfg.Seed)
	}
	stage := cmp.Or(cfg.Stage, "knockoff "+m.Spec.Arch)
	logf(cfg, stage, "labelling %d transfer images (%s) with the source", set.Len(), transfer.Name)
	cfg.Stage = stage
	var res *Result
	if cfg.SoftLabels {
		soft, err := Probabilities(ctx, source, set, 1)
		if err != nil {
			return nil, fmt.Errorf("knockoff: labelling with the source: %w", err)
		}
		res, err = fit(ctx, m, set, cfg, fitOpts{soft: soft})
		return &Derivation{Attack: AttackKnockoff, Queries: int64(set.Len()), Examples: set.Len(), Train: res}, err
	}
	labels, err := Predict(ctx, source, set)
	if err != nil {
		return nil, fmt.Errorf("knockoff: labelling with the source: %w", err)
	}
	cfg.Labels = labels
	res, err = Train(ctx, m, set, cfg)
	return &Derivation{Attack: AttackKnockoff, Queries: int64(set.Len()), Examples: set.Len(), Train: res}, err
}

// PapernotOpts are the parameters of Papernot et al.'s substitute training.
type PapernotOpts struct {
	Seeds  int     // initial substitute set: this many random examples of the adversary's data
	Rounds int     // substitute training rounds ρ; the set doubles between rounds
	Lambda float64 // augmentation step λ
	// Tau, when positive, flips the step's sign every Tau rounds (the
	// periodic step size of Papernot et al.); 0 keeps λ constant.
	Tau int
}

// PapernotDefaults are the parameters of Papernot et al. (2017) on MNIST:
// 150 seed examples, 6 substitute rounds, λ = 0.1.
func PapernotDefaults() PapernotOpts { return PapernotOpts{Seeds: 150, Rounds: 6, Lambda: 0.1} }

// Papernot derives m from source by Jacobian-based dataset augmentation
// (Papernot et al., §2.4): start from o.Seeds random examples of d, labelled
// by the source; in each of o.Rounds rounds train m for cfg.Epochs epochs on
// the substitute set, then (except after the last round) add, for every
// example x with the source's label y, the point x + λ·sign(∂F_y(x)/∂x)
// computed on m (F_y: m's logit of y), clipped to [0,1] and stored as 8-bit
// pixels, and ask the source to label the new points. The set doubles each
// round; Queries counts every labelled point.
func Papernot(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, o PapernotOpts, cfg Config) (*Derivation, error) {
	if o.Seeds <= 0 || o.Rounds <= 0 {
		return nil, fmt.Errorf("papernot: seeds (%d) and rounds (%d) must be positive", o.Seeds, o.Rounds)
	}
	base := cmp.Or(cfg.Stage, "papernot "+m.Spec.Arch)
	set := RandomSubset(d, o.Seeds, cfg.Seed)
	set.Part = "papernot"
	labels, err := Predict(ctx, source, set)
	if err != nil {
		return nil, fmt.Errorf("papernot: labelling with the source: %w", err)
	}
	set.Labels = labels
	der := &Derivation{Attack: AttackPapernot, Queries: int64(set.Len())}
	for r := 0; r < o.Rounds; r++ {
		c := cfg
		c.Labels, c.Stage = nil, fmt.Sprintf("%s round %d/%d", base, r+1, o.Rounds)
		c.Seed = cfg.Seed + int64(r)
		res, err := Train(ctx, m, set, c)
		der.Train, der.Examples = res, set.Len()
		round := Round{Round: r + 1, Examples: set.Len(), Queries: der.Queries, Train: res}
		if err != nil {
			der.Rounds = append(der.Rounds, round)
			return der, fmt.Errorf("papernot round %d: %w", r+1, err)
		}
		if r < o.Rounds-1 {
			lambda := o.Lambda
			if o.Tau > 0 && (r/o.Tau)%2 == 1 {
				lambda = -lambda
			}
			round.Lambda = lambda
			grown, err := jacobianAugment(ctx, m, set, lambda)
			if err != nil {
				der.Rounds = append(der.Rounds, round)
				return der, fmt.Errorf("papernot round %d: %w", r+1, err)
			}
			fresh := grown.Subset(seqInts(set.Len(), grown.Len()))
			newLabels, err := Predict(ctx, source, fresh)
			if err != nil {
				der.Rounds = append(der.Rounds, round)
				return der, fmt.Errorf("papernot round %d: labelling with the source: %w", r+1, err)
			}
			copy(grown.Labels[set.Len():], newLabels)
			der.Queries += int64(fresh.Len())
			logf(cfg, c.Stage, "substitute set %d → %d examples, %d queries so far", set.Len(), grown.Len(), der.Queries)
			set = grown
		}
		der.Rounds = append(der.Rounds, round)
	}
	return der, nil
}

func seqInts(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// jacobianAugment returns set followed by one new point per example:
// x + λ·sign(∂m(x)_y/∂x), clipped to [0,1] and rounded to 8-bit pixels. The
// new points' labels are placeholders (their originals) for the caller to
// replace.
func jacobianAugment(ctx context.Context, m *nn.Model, set *data.Dataset, lambda float64) (*data.Dataset, error) {
	m.SetTraining(false)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fresh := set.Subset(seqInts(0, set.Len()))
	per := set.ImageSize()
	dev := m.Device()
	for b := range set.Batches(data.BatchOpts{Size: evalBatch}) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("jacobian augmentation: %w", err)
		}
		var moved []float32
		err := torch.Catch(func() {
			torch.Scoped(func(s *torch.Scope) {
				x := onDevice(torch.FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W)), dev)
				y := onDevice(torch.FromSlice(s, b.Y, int64(b.N), 1), dev)
				xi := x.Detach().SetRequiresGrad(true)
				f := m.Forward(xi).Gather(1, y).Sum()
				g := torch.Grads([]*torch.Tensor{f}, []*torch.Tensor{xi})[0]
				moved = x.Add(g.Sign().MulScalar(lambda)).Clamp(0, 1).Float32s()
			})
		})
		if err != nil {
			return nil, fmt.Errorf("jacobian augmentation: %w", err)
		}
		for j, i := range b.Index {
			dst := fresh.Image(i)
			for k, v := range moved[j*per : (j+1)*per] {
				dst[k] = uint8(math.Round(float64(v) * 255))
			}
		}
	}
	return data.Concat(set, fresh)
}

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

// setValues copies vals into t in place (on t's device).
func setValues(t *torch.Tensor, vals []float32) {
	src := torch.FromSlice(nil, vals, t.Shape()...)
	defer src.Free()
	t.CopyFrom(src)
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
	stage := cmp.Or(cfg.Stage, attackName+" "+m.Spec.Arch)
	logf(cfg, stage, "labelling %d examples with the source", d.Len())
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, fmt.Errorf("%s: labelling with the source: %w", attackName, err)
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
	cfg.Labels, cfg.Stage = labels, stage
	res, err := fit(ctx, m, d, cfg, o)
	return &Derivation{Attack: attackName, Queries: int64(d.Len()), Examples: d.Len(), Train: res}, err
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
	stage := cmp.Or(cfg.Stage, o.Attack+" "+m.Spec.Arch)
	logf(cfg, stage, "labelling %d examples with the source", d.Len())
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, fmt.Errorf("%s: labelling with the source: %w", o.Attack, err)
	}
	cfg.Labels, cfg.Stage = labels, stage
	res, err := fit(ctx, m, d, cfg, fitOpts{adv: &o})
	return &Derivation{Attack: o.Attack, Queries: int64(d.Len()), Examples: d.Len(), Train: res}, err
}

// NoiseTargets labels d with the source's prediction vectors p mixed with
// uniform noise (§6.3): (1−λ)·p + λ·u, where u has entries drawn from U(0,1)
// and normalised to sum to one, drawn from seed. With λ = 0 the targets are
// exactly the source's prediction vectors, whose argmax are the labels of
// Retraining. Row-major N×K.
func NoiseTargets(ctx context.Context, source Classifier, d *data.Dataset, lambda float64, seed int64) ([]float32, error) {
	if !(lambda >= 0 && lambda <= 1) {
		return nil, fmt.Errorf("noise: λ = %v is not in [0,1]", lambda)
	}
	p, err := Probabilities(ctx, source, d, 1)
	if err != nil {
		return nil, err
	}
	if lambda == 0 {
		return p, nil
	}
	k := len(p) / max(d.Len(), 1)
	r := rand.New(rand.NewPCG(uint64(seed), 0x40153))
	u := make([]float64, k)
	for i := 0; i < len(p); i += k {
		var sum float64
		for j := range u {
			u[j] = r.Float64()
			sum += u[j]
		}
		for j := range u {
			p[i+j] = float32((1-lambda)*float64(p[i+j]) + lambda*u[j]/sum)
		}
	}
	return p, nil
}

// Noise derives m from source by the Noise attack (§6.3): m is trained with
// a soft-target cross-entropy on NoiseTargets(λ). Queries: d.Len().
func Noise(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, lambda float64, cfg Config) (*Derivation, error) {
	stage := cmp.Or(cfg.Stage, fmt.Sprintf("noise λ=%g %s", lambda, m.Spec.Arch))
	logf(cfg, stage, "labelling %d examples with the source, noise λ = %g", d.Len(), lambda)
	soft, err := NoiseTargets(ctx, source, d, lambda, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("noise: %w", err)
	}
	cfg.Stage = stage
	res, err := fit(ctx, m, d, cfg, fitOpts{soft: soft})
	return &Derivation{Attack: AttackNoise, Queries: int64(d.Len()), Examples: d.Len(), Train: res}, err
}

// MixTrueLabels labels d as the True Labels adversary does (§6.3): a
// fraction ρ of the examples, drawn from seed, keep their ground-truth label
// and the rest get the source's label. Only the rest are queried; it returns
// the labels and the number of queries.
func MixTrueLabels(ctx context.Context, source Classifier, d *data.Dataset, rho float64, seed int64) ([]int64, int64, error) {
	if !(rho >= 0 && rho <= 1) {
		return nil, 0, fmt.Errorf("true labels: ρ = %v is not in [0,1]", rho)
	}
	k := int(math.Round(rho * float64(d.Len())))
	perm := permutation(d.Len(), seed)
	queried := perm[k:]
	slices.Sort(queried)
	labels := slices.Clone(d.Labels)
	if len(queried) == 0 {
		return labels, 0, nil
	}
	pred, err := Predict(ctx, source, d.Subset(queried))
	if err != nil {
		return nil, 0, err
	}
	for j, i := range queried {
		labels[i] = pred[j]
	}
	return labels, int64(len(queried)), nil
}

// TrueLabels derives m from source by the True Labels attack (§6.3): m is
// trained on MixTrueLabels(ρ). Queries: the examples without ground truth.
func TrueLabels(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, rho float64, cfg Config) (*Derivation, error) {
	stage := cmp.Or(cfg.Stage, fmt.Sprintf("true labels ρ=%g %s", rho, m.Spec.Arch))
	labels, queries, err := MixTrueLabels(ctx, source, d, rho, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("true labels: %w", err)
	}
	logf(cfg, stage, "%d ground-truth labels, %d labelled by the source", d.Len()-int(queries), queries)
	cfg.Labels, cfg.Stage = labels, stage
	res, err := Train(ctx, m, d, cfg)
	return &Derivation{Attack: AttackTrueLabels, Queries: queries, Examples: d.Len(), Train: res}, err
}

// Ensemble is several models deployed as one with average voting: its
// prediction vector is the mean of the members' softmax outputs (§6.3).
type Ensemble struct {
	Members []Classifier
}

// Probs returns the mean of the members' softmax outputs, (N, K).
func (e *Ensemble) Probs(x *torch.Tensor) *torch.Tensor { return e.Forward(x).Exp() }

// Forward returns the logarithm of the mean of the members' softmax outputs:
// logits whose softmax (and exp) is the ensemble's prediction vector, and
// whose argmax is the average vote. Computed as a log-sum-exp of the
// members' log-softmax, so that it stays finite and differentiable.
func (e *Ensemble) Forward(x *torch.Tensor) *torch.Tensor {
	if len(e.Members) == 0 {
		panic(&torch.Error{Op: "ensemble", Msg: "no members"})
	}
	parts := make([]*torch.Tensor, len(e.Members))
	for i, m := range e.Members {
		lp := m.Forward(x).LogSoftmax(1)
		parts[i] = lp.Reshape(append([]int64{1}, lp.Shape()...)...)
	}
	return torch.Cat(parts, 0).LogSumExp([]int64{0}, false).SubScalar(math.Log(float64(len(e.Members))))
}

// Device is where the first member lives.
func (e *Ensemble) Device() torch.Device {
	if len(e.Members) == 0 {
		return torch.CPU
	}
	return e.Members[0].Device()
}

// SetTraining switches every member's mode.
func (e *Ensemble) SetTraining(on bool) {
	for _, m := range e.Members {
		if t, ok := m.(interface{ SetTraining(bool) }); ok {
			t.SetTraining(on)
		}
	}
}

// Free releases the members that can be freed.
func (e *Ensemble) Free() {
	for _, m := range e.Members {
		if f, ok := m.(interface{ Free() }); ok {
			f.Free()
		}
	}
}

// Metadata of an ensemble file.
const (
	metaFormat     = "conferral.format"
	ensembleFormat = "conferral-ensemble/1"
)

// Save writes the ensemble as one safetensors file: member i's variables
// under "member<i>." and its model metadata under "member<i>/", with extra
// in the file's own metadata. Every member must be a zoo model. Atomic.
func (e *Ensemble) Save(path string, extra map[string]string) error {
	f := &safetensors.File{Metadata: map[string]string{}}
	for k, v := range extra {
		f.Metadata[k] = v
	}
	for i, c := range e.Members {
		m, ok := c.(*nn.Model)
		if !ok {
			return fmt.Errorf("ensemble: member %d is a %T, only zoo models can be saved", i, c)
		}
		mf, err := m.File(nil)
		if err != nil {
			return fmt.Errorf("ensemble: member %d: %w", i, err)
		}
		for k, v := range mf.Metadata {
			f.Metadata[fmt.Sprintf("member%d/%s", i, k)] = v
		}
		for _, t := range mf.Tensors {
			t.Name = fmt.Sprintf("member%d.%s", i, t.Name)
			f.Tensors = append(f.Tensors, t)
		}
	}
	f.Metadata[metaFormat] = ensembleFormat
	f.Metadata["members"] = strconv.Itoa(len(e.Members))
	return safetensors.WriteFile(path, f)
}

// LoadDeployed reads a model file written by nn.Model.Save or an ensemble
// file written by Ensemble.Save onto device d.
func LoadDeployed(path string, d torch.Device) (Deployed, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading %s: %w", path, err)
	}
	if f.Metadata[metaFormat] != ensembleFormat {
		m, err := nn.FromFile(f, d)
		if err != nil {
			return nil, nil, fmt.Errorf("loading model %s: %w", path, err)
		}
		return m, f.Metadata, nil
	}
	n, err := strconv.Atoi(f.Metadata["members"])
	if err != nil || n <= 0 {
		return nil, nil, fmt.Errorf("loading ensemble %s: bad member count %q", path, f.Metadata["members"])
	}
	e := &Ensemble{}
	for i := range n {
		mf := &safetensors.File{Metadata: map[string]string{}}
		mp, tp := fmt.Sprintf("member%d/", i), fmt.Sprintf("member%d.", i)
		for k, v := range f.Metadata {
			if rest, ok := strings.CutPrefix(k, mp); ok {
				mf.Metadata[rest] = v
			}
		}
		for _, t := range f.Tensors {
			if rest, ok := strings.CutPrefix(t.Name, tp); ok {
				t.Name = rest
				mf.Tensors = append(mf.Tensors, t)
			}
		}
		m, err := nn.FromFile(mf, d)
		if err != nil {
			e.Free()
			return nil, nil, fmt.Errorf("loading ensemble %s: member %d: %w", path, i, err)
		}
		e.Members = append(e.Members, m)
	}
	meta := map[string]string{}
	for k, v := range f.Metadata {
		if !strings.HasPrefix(k, "member") || k == "members" {
			meta[k] = v
		}
	}
	return e, meta, nil
}

// TrainEnsemble derives the Ensemble attack's model (§6.3): d is labelled by
// the source, split at random into n disjoint parts of (nearly) equal size,
// and member i, a new model of spec initialised from cfg.Seed+i, is trained
// on part i by Retraining. Queries: d.Len(). On error the members built so
// far are freed.
func TrainEnsemble(ctx context.Context, source Classifier, spec nn.Spec, dev torch.Device, d *data.Dataset, n int, cfg Config) (*Ensemble, *Derivation, error) {
	if n <= 0 || n > d.Len() {
		return nil, nil, fmt.Errorf("ensemble: %d members for %d examples", n, d.Len())
	}
	base := cmp.Or(cfg.Stage, fmt.Sprintf("ensemble n=%d %s", n, spec.Arch))
	logf(cfg, base, "labelling %d examples with the source", d.Len())
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, nil, fmt.Errorf("ensemble: labelling with the source: %w", err)
	}
	perm := permutation(d.Len(), cfg.Seed)
	e := &Ensemble{}
	der := &Derivation{Attack: AttackEnsemble, Queries: int64(d.Len()), Examples: d.Len()}
	for i := range n {
		part := perm[i*len(perm)/n : (i+1)*len(perm)/n]
		sort.Ints(part)
		sub := d.Subset(part)
		for j, k := range part {
			sub.Labels[j] = labels[k]
		}
		m, err := nn.New(spec, uint64(cfg.Seed+int64(i)), dev)
		if err != nil {
			e.Free()
			return nil, der, fmt.Errorf("ensemble member %d: %w", i+1, err)
		}
		e.Members = append(e.Members, m)
		c := cfg
		c.Labels, c.Seed, c.Stage = nil, cfg.Seed+int64(i), fmt.Sprintf("%s member %d/%d", base, i+1, n)
		res, err := Train(ctx, m, sub, c)
		der.Members = append(der.Members, res)
		der.Train = res
		if err != nil {
			e.Free()
			return nil, der, fmt.Errorf("ensemble member %d: %w", i+1, err)
		}
	}
	return e, der, nil
}

// weights returns m's trainable tensors of two or more dimensions: the
// weights of its dense and convolutional layers.
func weights(m *nn.Model) []*nn.Variable {
	var out []*nn.Variable
	for _, v := range m.Variables() {
		if v.Trainable && v.T.Dim() >= 2 {
			out = append(out, v)
		}
	}
	return out
}

// Prune sets, in every weight tensor of m (dense and convolutional layers;
// biases and batch-norm parameters are kept), the round(fraction·n) weights
// of smallest magnitude to zero, in place: layer-wise magnitude pruning.
func Prune(m *nn.Model, fraction float64) ([]LayerStats, error) {
	if !(fraction >= 0 && fraction <= 1) {
		return nil, fmt.Errorf("prune: fraction %v is not in [0,1]", fraction)
	}
	var out []LayerStats
	err := torch.Catch(func() {
		for _, v := range weights(m) {
			vals := v.T.Float32s()
			k := int(math.Round(fraction * float64(len(vals))))
			idx := make([]int, len(vals))
			for i := range idx {
				idx[i] = i
			}
			slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(math.Abs(float64(vals[a])), math.Abs(float64(vals[b]))) })
			for _, i := range idx[:k] {
				vals[i] = 0
			}
			setValues(v.T, vals)
			out = append(out, LayerStats{Name: v.Name, Numel: int64(len(vals)), Zeroed: int64(k)})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	return out, nil
}

// Quantize rounds every weight tensor of m (as Prune chooses them) through
// bits-bit per-tensor affine quantization and back, in place, as PyTorch's
// quint8 does: scale = (max(w,0) − min(w,0)) / (2^bits − 1), zero point
// z = round(−min(w,0)/scale), q = clamp(round(w/scale) + z, 0, 2^bits − 1),
// w′ = (q − z)·scale. Zero stays exactly zero and every weight moves by at
// most half a step (scale/2).
func Quantize(m *nn.Model, bits int) ([]LayerStats, error) {
	if bits < 2 || bits > 16 {
		return nil, fmt.Errorf("quantize: %d bits (want 2 to 16)", bits)
	}
	levels := float64(int64(1)<<bits - 1)
	var out []LayerStats
	err := torch.Catch(func() {
		for _, v := range weights(m) {
			vals := v.T.Float32s()
			lo, hi := 0.0, 0.0
			for _, w := range vals {
				lo, hi = math.Min(lo, float64(w)), math.Max(hi, float64(w))
			}
			st := LayerStats{Name: v.Name, Numel: int64(len(vals))}
			if hi > lo {
				scale := (hi - lo) / levels
				zero := math.Min(levels, math.Max(0, math.Round(-lo/scale)))
				for i, w := range vals {
					q := math.Min(levels, math.Max(0, math.Round(float64(w)/scale)+zero))
					vals[i] = float32((q - zero) * scale)
				}
				setValues(v.T, vals)
				st.Scale, st.Zero = scale, int64(zero)
			}
			out = append(out, st)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	return out, nil
}

// LabelsOnly is a suspect that answers with labels only: its logits are 0
// for the label Model gives and −10⁴ elsewhere, so that its softmax is the
// one-hot vector of the label (in float32) and any attack that asks it for
// probabilities gets hard labels. Verification (Algorithm 1) only ever uses
// labels, so it is unaffected.
type LabelsOnly struct {
	Model Classifier
}

// Forward returns the one-hot logits of Model's labels.
func (l LabelsOnly) Forward(x *torch.Tensor) *torch.Tensor {
	var out *torch.Tensor
	torch.NoGrad(func() {
		logits := l.Model.Forward(x)
		k := logits.Size(1)
		out = logits.Argmax(1, false).OneHot(k).To(torch.Float32, logits.Device()).SubScalar(1).MulScalar(1e4)
	})
	return out
}

// Device is the model's device.
func (l LabelsOnly) Device() torch.Device { return l.Model.Device() }

// SetTraining passes the mode on to the model.
func (l LabelsOnly) SetTraining(on bool) {
	if t, ok := l.Model.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(on)
	}
}

// fitOpts extend Train for the derivations.
type fitOpts struct {
	params     []*torch.Tensor // train only these (nil: all of m's parameters)
	frozenEval bool            // keep m in evaluation mode (frozen layers)
	soft       []float32       // N×K probability targets instead of labels
	adv        *AdvOpts        // add adversarial examples to each batch
}

func optimizerOver(c Config, params []*torch.Tensor) (*torch.Optimizer, error) {
	var o *torch.Optimizer
	err := torch.Catch(func() {
		switch c.Optimizer {
		case OptAdam:
			o = torch.NewAdam(params, torch.AdamOpts{LR: c.LR, WeightDecay: c.WeightDecay})
		case OptAdamW:
			o = torch.NewAdamW(params, torch.AdamOpts{LR: c.LR, WeightDecay: c.WeightDecay})
		case OptSGD, OptNesterov, "":
			o = torch.NewSGD(params, torch.SGDOpts{LR: c.LR, Momentum: c.Momentum, WeightDecay: c.WeightDecay,
				Nesterov: c.Optimizer != OptSGD && c.Momentum > 0})
		default:
			panic(&torch.Error{Op: "optimizer", Msg: fmt.Sprintf("unknown optimizer %q (want %s)", c.Optimizer, strings.Join(Optimizers(), ", "))})
		}
	})
	return o, err
}

// SmoothedCrossEntropy is the mean cross-entropy of logits (N,K) against
// class targets (N, int64) or probability targets (N,K) smoothed by ε:
// the target becomes (1−ε)·target + ε/K, as PyTorch's
// cross_entropy(label_smoothing=ε). ε = 0 is the plain cross-entropy.
func SmoothedCrossEntropy(logits, target *torch.Tensor, eps float64) *torch.Tensor {
	if eps == 0 {
		return torch.CrossEntropy(logits, target, torch.ReduceMean)
	}
	k := logits.Size(1)
	if len(target.Shape()) == 1 {
		target = target.OneHot(k).To(torch.Float32, logits.Device())
	}
	return torch.CrossEntropy(logits, target.MulScalar(1-eps).AddScalar(eps/float64(k)), torch.ReduceMean)
}

// shareIndices draws round(share·n) of 0..n-1 (at least one) from seed, in
// index order.
func shareIndices(n int, share float64, seed int64) []int {
	idx := permutation(n, seed^0x5a4e)[:max(1, min(n, int(math.Round(share*float64(n)))))]
	slices.Sort(idx)
	return idx
}

// takeShare returns the share of d that cfg trains on, drawn from
// cfg.Seed, and cfg marked so that it is not drawn again; d itself when
// cfg uses all of it.
func takeShare(d *data.Dataset, cfg Config) (*data.Dataset, []int, Config) {
	if cfg.drawn || !(cfg.Share > 0 && cfg.Share < 1) || d.Len() == 0 {
		return d, nil, cfg
	}
	idx := shareIndices(d.Len(), cfg.Share, cfg.Seed)
	cfg.drawn = true
	return d.Subset(idx), idx, cfg
}

// TrainedRecipe is the recipe m was trained by with cfg: cfg's, with the
// dropout m actually has (0 for an architecture without dropout).
func TrainedRecipe(cfg Config, m *nn.Model) Recipe {
	r := cfg.Recipe()
	r.Dropout = m.Spec.Dropout
	return r
}

// fit is the training loop behind Train and every derivation: optionally a
// subset of the parameters, soft targets, and adversarial examples.
func fit(ctx context.Context, m *nn.Model, d *data.Dataset, cfg Config, o fitOpts) (*Result, error) {
	if cfg.Epochs <= 0 || cfg.BatchSize <= 0 {
		return nil, fmt.Errorf("train: epochs (%d) and batch size (%d) must be positive", cfg.Epochs, cfg.BatchSize)
	}
	if d.Len() == 0 {
		return nil, errors.New("train: empty dataset")
	}
	if err := cfg.Recipe().Validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	k := len(m.Spec.Classes)
	if o.soft != nil {
		if len(o.soft) != d.Len()*k {
			return nil, fmt.Errorf("train: %d soft targets for %d examples of %d classes", len(o.soft), d.Len(), k)
		}
	} else if cfg.Labels != nil && len(cfg.Labels) != d.Len() {
		return nil, fmt.Errorf("train: %d labels for %d examples", len(cfg.Labels), d.Len())
	}
	if d.C != int(m.Spec.C) || d.H != int(m.Spec.H) || d.W != int(m.Spec.W) {
		return nil, fmt.Errorf("train: data is %dx%dx%d, model %s takes %dx%dx%d", d.C, d.H, d.W, m.Spec.Arch, m.Spec.C, m.Spec.H, m.Spec.W)
	}
	if d2, idx, c2 := takeShare(d, cfg); idx != nil {
		d, cfg = d2, c2
		if cfg.Labels != nil {
			labels := make([]int64, len(idx))
			for i, j := range idx {
				labels[i] = cfg.Labels[j]
			}
			cfg.Labels = labels
		}
		if o.soft != nil {
			soft := make([]float32, 0, len(idx)*k)
			for _, j := range idx {
				soft = append(soft, o.soft[j*k:(j+1)*k]...)
			}
			o.soft = soft
		}
	}
	if cfg.Dropout > 0 && m.HasDropout() {
		if err := m.SetDropout(cfg.Dropout); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	// libtorch's OpenMP thread pool belongs to the calling OS thread; moving
	// between threads would start new pools that compete for the cores.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	torch.ManualSeed(uint64(cfg.Seed)) // dropout draws from libtorch's generator
	params := o.params
	if params == nil {
		params = m.Params()
	} else {
		// Frozen parameters record no gradient while the subset trains.
		train := map[*torch.Tensor]bool{}
		for _, p := range params {
			train[p] = true
		}
		var frozen []*torch.Tensor
		for _, p := range m.Params() {
			if !train[p] {
				frozen = append(frozen, p)
			}
		}
		if err := torch.Catch(func() {
			for _, p := range frozen {
				p.SetRequiresGrad(false)
			}
		}); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		defer func() {
			_ = torch.Catch(func() {
				for _, p := range frozen {
					p.SetRequiresGrad(true)
				}
			})
		}()
	}
	opt, err := optimizerOver(cfg, params)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	defer opt.Free()
	stepsPerEpoch := max(d.Len()/cfg.BatchSize, 1)
	total := stepsPerEpoch * cfg.Epochs
	sched := cfg.schedule(total)
	stage := cmp.Or(cfg.Stage, "train "+m.Spec.Arch)
	training := !o.frozenEval
	res := &Result{}
	start := time.Now()
	dev := m.Device()
	step := 0
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		epochStart := time.Now()
		m.SetTraining(training)
		var lossSum float64
		var correct, seen int
		bo, err := cfg.batchOpts(epoch, d.Len())
		if err != nil {
			return res, fmt.Errorf("train %s: %w", m.Spec.Arch, err)
		}
		batches := d.Batches(bo)
		for b := range batches {
			if err := ctx.Err(); err != nil {
				m.SetTraining(false)
				return res, fmt.Errorf("train %s: %w", m.Spec.Arch, err)
			}
			lr := sched.LR(step)
			var loss float64
			var hits, n int
			err := torch.Catch(func() {
				torch.Scoped(func(s *torch.Scope) {
					opt.SetLR(lr)
					x := onDevice(torch.FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W)), dev)
					var target, hard *torch.Tensor
					if o.soft != nil {
						rows := make([]float32, 0, b.N*k)
						for _, j := range b.Index {
							rows = append(rows, o.soft[j*k:(j+1)*k]...)
						}
						target = onDevice(torch.FromSlice(s, rows, int64(b.N), int64(k)), dev)
						hard = target.Argmax(1, false)
					} else {
						y := b.Y
						if cfg.Labels != nil {
							y = make([]int64, b.N)
							for i, j := range b.Index {
								y[i] = cfg.Labels[j]
							}
						}
						target = onDevice(torch.FromSlice(s, y, int64(b.N)), dev)
						hard = target
					}
					if o.adv != nil {
						if na := int64(math.Ceil(o.adv.Fraction * float64(b.N))); na > 0 {
							m.SetTraining(false)
							xa := craft(m, x.Narrow(0, 0, na), hard.Narrow(0, 0, na), *o.adv).Detach()
							m.SetTraining(training)
							x = torch.Cat([]*torch.Tensor{x, xa}, 0)
							target = torch.Cat([]*torch.Tensor{target, target.Narrow(0, 0, na)}, 0)
							hard = torch.Cat([]*torch.Tensor{hard, hard.Narrow(0, 0, na)}, 0)
						}
					}
					logits := m.Forward(x)
					l := SmoothedCrossEntropy(logits, target, cfg.LabelSmoothing)
					opt.ZeroGrad()
					l.Backward()
					opt.Step()
					loss = l.Item()
					n = int(x.Size(0))
					hits = int(logits.Argmax(1, false).Eq(hard).To(torch.Float32, dev).Sum().Item())
				})
			})
			if err != nil {
				m.SetTraining(false)
				return res, fmt.Errorf("train %s, step %d: %w", m.Spec.Arch, step, err)
			}
			step++
			lossSum += loss * float64(n)
			correct += hits
			seen += n
			cfg.Progress.Report(shared.Event{Kind: shared.Progress, Stage: stage, Step: int64(step), Total: int64(total), Epoch: epoch,
				Metrics: map[string]float64{"loss": loss, "lr": lr}})
		}
		m.SetTraining(false)
		st := EpochStats{Epoch: epoch, Loss: lossSum / float64(max(seen, 1)), TrainAcc: float64(correct) / float64(max(seen, 1)), LearningRate: sched.LR(step - 1)}
		if cfg.Test != nil {
			acc, err := Accuracy(ctx, m, cfg.Test, nil)
			if err != nil {
				return res, err
			}
			st.TestAcc = acc
			res.TestAccuracy = acc
		}
		st.Seconds = time.Since(epochStart).Seconds()
		res.Epochs = append(res.Epochs, st)
		res.Steps = step
		metrics := map[string]float64{"loss": st.Loss, "train_acc": st.TrainAcc}
		if cfg.Test != nil {
			metrics["test_acc"] = st.TestAcc
		}
		cfg.Progress.Report(shared.Event{Kind: shared.Epoch, Stage: stage, Step: int64(step), Total: int64(total), Epoch: epoch, Metrics: metrics})
		if cfg.Checkpoint != "" {
			meta := map[string]string{"train.epoch": fmt.Sprint(epoch), MetaRecipe: TrainedRecipe(cfg, m).String()}
			for k, v := range cfg.Meta {
				meta[k] = v
			}
			if err := m.Save(cfg.Checkpoint, meta); err != nil {
				return res, fmt.Errorf("train %s: checkpoint: %w", m.Spec.Arch, err)
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// craft returns adversarial examples of x (labels y) against m.
func craft(m *nn.Model, x, y *torch.Tensor, o AdvOpts) *torch.Tensor {
	c := attack.Config{Eps: o.Eps, Alpha: o.Alpha, Steps: o.Steps, Norm: o.Norm}
	if o.Attack == AttackPGD {
		return attack.PGD(m, x, y, c)
	}
	return attack.FGSM(m, x, y, c)
}
