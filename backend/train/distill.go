package train

// Distillation and extraction (§2.4: Retraining, Jagielski et al.'s soft
// labels, Knockoff Nets, Papernot et al.'s substitute training) and the
// adaptive Noise and True Labels attacks (§6.3): a new model trained on what
// the source answers.

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// Retrain derives a surrogate by Retraining (§2.4): it labels d with the
// source model's predictions (temperature 1; hard labels, or its
// probability vectors when cfg.SoftLabels) and trains m on them. With
// cfg.Share it labels only that share of d. The number of queries made to
// the source is the number of examples labelled.
func Retrain(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, cfg Config) (*Result, error) {
	d, _, cfg = takeShare(d, cfg)
	if cfg.Stage == "" {
		cfg.Stage = "retrain " + m.Spec.Arch
	}
	if cfg.SoftLabels {
		soft, err := Probabilities(ctx, source, d, 1)
		if err != nil {
			return nil, fmt.Errorf("retrain: labelling with the source: %w", err)
		}
		return fit(ctx, m, d, cfg, fitOpts{soft: soft})
	}
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, fmt.Errorf("retrain: labelling with the source: %w", err)
	}
	cfg.Labels = labels
	return Train(ctx, m, d, cfg)
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

// Round is one round of Papernot's attack.
type Round struct {
	Round    int     `json:"round"`
	Examples int     `json:"examples"` // substitute training set size in this round
	Queries  int64   `json:"queries"`  // queries made so far
	Lambda   float64 `json:"lambda"`   // the step used to augment after this round (0 after the last)
	Train    *Result `json:"train"`
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
