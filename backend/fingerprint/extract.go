package fingerprint

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// Model is a white-box classifier: a zoo model or an imported one. C-BIM
// needs its gradients.
type Model interface {
	attack.Model
	Device() torch.Device
}

// Config configures Extract.
type Config struct {
	CBIM attack.CBIMConfig
	// Tau is the minimal conferrability on the training models (τ).
	Tau float64
	// TauSurr (τ_S) is the minimal Transfer (eq. 9) to the training
	// surrogates an example must also reach; 0 leaves Confer ≥ τ as the only
	// filter. Confer = Surr·(1 − Ref) lets a high 1 − Ref make up for
	// surrogates the example missed, and those are mostly the surrogates of
	// architectures other than the source's: τ_S = 1 keeps only examples
	// every training surrogate carries (docs/results/fingerprint-4x2-taus).
	TauSurr float64
	// Natural makes the candidates natural inputs the source misclassifies,
	// unperturbed, instead of C-BIM's examples: the keys are the source's
	// own mistakes, which a surrogate learns from its labels and an
	// independent model does not share (SAC-w, Guan et al. 2022). They are
	// scored on the training models and selected by τ and τ_S as C-BIM's
	// are; nothing about them looks crafted.
	Natural bool
	// Candidates is the number of start points attacked.
	Candidates int
	Batch      int
	Seed       int64
	Progress   shared.Reporter
}

// DefaultConfig is §5.2's setting at CPU scale: C-BIM with its defaults,
// τ = 1, 500 start points.
func DefaultConfig() Config {
	return Config{CBIM: attack.DefaultCBIM(), Tau: 1, Candidates: 500, Batch: 100, Seed: 1}
}

// Training are the defender's models: the source M and the training
// surrogates S and references R, with names for the report.
type Training struct {
	Source                     Model
	Surrogates, References     []Model
	SurrogateIDs, ReferenceIDs []string
	// Twins are optional references of the source's own architecture and
	// training recipe, other seeds: the innocent models most like it. A key
	// must be rare among them as among the references (ConferGroups), and
	// C-BIM's ensemble counts them with the references.
	Twins                []Model
	TwinIDs              []string
	SourceID, SourceArch string
}

// Labels returns each model's argmax labels of b (labels[m][i]).
func Labels(ctx context.Context, models []Model, b suspect.Images) ([][]int64, error) {
	out := make([][]int64, len(models))
	for i, m := range models {
		l, err := (&suspect.Local{Model: m, Name: fmt.Sprintf("model %d", i)}).Classify(ctx, b)
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

// Extract is Algorithm 2: it keeps the inputs of d that the source labels
// correctly (D_C), attacks the composed ensemble with C-BIM from up to
// cfg.Candidates of them, rounds the results to 8 bits, and keeps those the
// source labels differently from the original with conferrability ≥ τ on
// the training models. The keys are the source's labels (vk = M(F)).
//
// d should hold inputs none of the models was trained on (a held-out or
// test split): on their own training data the training surrogates and
// references answer from memory, and examples selected there transfer
// worse to unseen suspects (docs/results/fingerprint measures it).
//
// An extraction that keeps no example fails with ErrNoFingerprint.
func Extract(ctx context.Context, tm Training, d *data.Dataset, cfg Config) (*Fingerprint, error) {
	c, err := Craft(ctx, tm, d, cfg)
	if err != nil {
		return nil, err
	}
	fp := c.Select(cfg.Tau, cfg.TauSurr)
	if fp.N == 0 {
		return nil, fmt.Errorf("extract: %w: none of %d start points reached conferrability τ = %g with τ_S = %g; try more start points, a larger ε, or a lower τ or τ_S",
			ErrNoFingerprint, fp.Meta.Candidates, cfg.Tau, cfg.TauSurr)
	}
	return fp, nil
}

// What Meta.Attack records: C-BIM's conferrable adversarial examples, or
// natural inputs the source misclassifies (Config.Natural).
const (
	AttackCBIM    = "cbim"
	AttackNatural = "natural"
)

// ErrNoFingerprint is Extract's error when no crafted example passes the
// filters.
var ErrNoFingerprint = errors.New("no fingerprint")

// Where C-BIM starts (Extract's d): StartTest, the dataset's test split,
// which no model was trained on (the default), or StartTrain, the training
// split, as Algorithm 2 prints it.
const (
	StartTest  = "test"
	StartTrain = "train"
)

// StartPoints returns the inputs C-BIM starts from: test for StartTest or
// "", train for StartTrain, and an error for anything else.
func StartPoints(start string, train, test *data.Dataset) (*data.Dataset, error) {
	switch start {
	case "", StartTest:
		return test, nil
	case StartTrain:
		return train, nil
	}
	return nil, fmt.Errorf("start %q: want %s or %s", start, StartTest, StartTrain)
}

// Crafted holds every example C-BIM crafted (Algorithm 2, line 7), scored
// on the training models but not yet filtered, so that one attack serves
// several thresholds τ.
type Crafted struct {
	All       *Fingerprint
	refLabels [][]int64 // per example, the training references' labels
	surr      []float64 // per example, Transfer to the training surrogates (eq. 9)
}

// keep says whether example i passes Algorithm 2's line 8: the source's
// label changed, Confer ≥ τ and Transfer to the surrogates ≥ τ_S.
func (c *Crafted) keep(i int, tau, tauSurr float64) bool {
	a := c.All
	return a.Keys[i] != a.Labels[i] && a.Confer[i] >= tau-1e-9 && c.surr[i] >= tauSurr-1e-9
}

// Select is Algorithm 2, line 8: the examples the source labels differently
// from their original with conferrability ≥ τ, and with Transfer to the
// training surrogates ≥ τ_S (0: no such filter). The fingerprint's
// reference rate, the null hypothesis of Verify, is the highest agreement
// of a training reference with the keys, never below chance.
func (c *Crafted) Select(tau, tauSurr float64) *Fingerprint {
	a := c.All
	fp := &Fingerprint{C: a.C, H: a.H, W: a.W, Meta: a.Meta}
	fp.Meta.Tau, fp.Meta.TauSurr = tau, tauSurr
	per := a.ImageSize()
	var refs [][]int64
	for i := range a.N {
		if !c.keep(i, tau, tauSurr) {
			continue
		}
		fp.Images = append(fp.Images, a.Images[i*per:(i+1)*per]...)
		fp.Originals = append(fp.Originals, a.Originals[i*per:(i+1)*per]...)
		fp.Keys = append(fp.Keys, a.Keys[i])
		fp.Labels = append(fp.Labels, a.Labels[i])
		fp.Confer = append(fp.Confer, a.Confer[i])
		refs = append(refs, c.refLabels[i])
	}
	fp.N = len(fp.Keys)
	rate := 1 / float64(len(a.Meta.Classes))
	if fp.N > 0 {
		for r := range len(refs[0]) {
			agree := 0
			for i, row := range refs {
				if row[r] == fp.Keys[i] {
					agree++
				}
			}
			rate = math.Max(rate, float64(agree)/float64(fp.N))
		}
	}
	fp.Meta.ReferenceRate = rate
	return fp
}

// Craft runs Algorithm 2 up to line 7: it attacks the composed ensemble
// from up to cfg.Candidates correctly classified inputs of d and scores
// every result's conferrability on the training models.
func Craft(ctx context.Context, tm Training, d *data.Dataset, cfg Config) (*Crafted, error) {
	if len(tm.Surrogates) == 0 || len(tm.References) == 0 {
		return nil, errors.New("extract: needs at least one training surrogate and one training reference")
	}
	refs := append(slices.Clone(tm.References), tm.Twins...)
	ens := attack.Ensemble{Source: tm.Source, Surrogates: asAttack(tm.Surrogates), References: asAttack(refs)}
	if err := cfg.CBIM.Check(ens); err != nil { // before any work: C-BIM would refuse it on the first batch
		return nil, fmt.Errorf("extract: C-BIM: %w", err)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	runtime.LockOSThread() // libtorch's thread pool belongs to the OS thread
	defer runtime.UnlockOSThread()
	all := append(append([]Model{tm.Source}, tm.Surrogates...), refs...)
	for _, m := range all {
		if t, ok := m.(interface{ SetTraining(bool) }); ok {
			t.SetTraining(false)
		}
	}
	// Line 5: D_C, the inputs the source classifies correctly (with
	// Natural: those it misclassifies), in a random order fixed by the seed.
	order := rand.New(rand.NewPCG(uint64(cfg.Seed), 7)).Perm(d.Len())
	src := &suspect.Local{Model: tm.Source, Name: "source"}
	var start []int
	for i := 0; i < len(order) && len(start) < cfg.Candidates; i += cfg.Batch {
		idx := order[i:min(i+cfg.Batch, len(order))]
		pred, err := src.Classify(ctx, suspect.Images{X: d.Float32(idx), N: len(idx), C: d.C, H: d.H, W: d.W})
		if err != nil {
			return nil, fmt.Errorf("extract: filtering start points: %w", err)
		}
		for j, p := range pred {
			if (p == d.Labels[idx[j]]) != cfg.Natural && len(start) < cfg.Candidates {
				start = append(start, idx[j])
			}
		}
	}
	if len(start) == 0 {
		if cfg.Natural {
			return nil, errors.New("extract: the source misclassifies no input")
		}
		return nil, errors.New("extract: the source classifies no input correctly")
	}
	mean, std := d.Stats()
	fp := &Fingerprint{C: d.C, H: d.H, W: d.W, Meta: Meta{
		Dataset: d.Name, Classes: d.Classes, Mean: mean, Std: std, SourceSHA256: tm.SourceID, SourceArch: tm.SourceArch,
		Created: time.Now().UTC(), Attack: AttackCBIM, Loss: string(cfg.CBIM.Loss), Eps: cfg.CBIM.Eps, Alpha: cfg.CBIM.Alpha,
		Steps: cfg.CBIM.Steps, Dropout: cfg.CBIM.Dropout, BestIterate: cfg.CBIM.Best, Shift: cfg.CBIM.Shift, Noise: cfg.CBIM.Noise, Tau: cfg.Tau, TauSurr: cfg.TauSurr, Surrogates: tm.SurrogateIDs, References: tm.ReferenceIDs, Twins: tm.TwinIDs,
		Candidates: len(start), Seed: cfg.Seed,
	}}
	if fp.Meta.Loss == "" {
		fp.Meta.Loss = string(attack.LossLinear)
	}
	if cfg.Natural {
		fp.Meta.Attack, fp.Meta.Loss, fp.Meta.Eps, fp.Meta.Alpha, fp.Meta.Steps, fp.Meta.Dropout, fp.Meta.BestIterate, fp.Meta.Shift, fp.Meta.Noise = AttackNatural, "", 0, 0, 0, 0, false, 0, 0
	}
	per := d.C * d.H * d.W
	totalSteps := int64(len(start) * cfg.CBIM.Steps)
	var done int64
	gen := torch.NewGenerator(uint64(cfg.Seed)) // this job's own: C-BIM's dropout and input diversity draw from it alone
	defer gen.Free()
	defer torch.SetGenerator(gen)() // on the thread locked above
	out := &Crafted{All: fp}
	for b := 0; b < len(start); b += cfg.Batch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("extract: %w", err)
		}
		idx := start[b:min(b+cfg.Batch, len(start))]
		n := len(idx)
		x := d.Float32(idx)
		y := make([]int64, n)
		for i, j := range idx {
			y[i] = d.Labels[j]
		}
		adv := x // Natural: the inputs as they are
		c := cfg.CBIM
		c.OnStep = func(step int) {
			cfg.Progress.Report(shared.Event{Kind: shared.Progress, Stage: "extract: C-BIM", Step: done + int64(step*n), Total: totalSteps})
		}
		var cerr error // C-BIM's own
		err := torch.Catch(func() {
			if cfg.Natural {
				return
			}
			torch.Scoped(func(s *torch.Scope) {
				dev := tm.Source.Device()
				xt := torch.FromSlice(s, x, int64(n), int64(d.C), int64(d.H), int64(d.W)).ToDevice(dev)
				yt := torch.FromSlice(s, y, int64(n)).ToDevice(dev)
				xa, err := attack.CBIM(ens, xt, yt, c)
				if err != nil {
					cerr = err
					return
				}
				adv = attack.Quantize(xa, xt, c.Eps).ToDevice(torch.CPU).Float32s() // line 7, rounded to 8 bits
			})
		})
		if err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("extract: C-BIM: %w", err)
		}
		done += int64(n * cfg.CBIM.Steps)
		// Line 8: filter by conferrability on the training models, with the
		// source's label as the target.
		imgs := suspect.Images{X: adv, N: n, C: d.C, H: d.H, W: d.W}
		keys, err := src.Classify(ctx, imgs)
		if err != nil {
			return nil, fmt.Errorf("extract: %w", err)
		}
		sl, err := Labels(ctx, tm.Surrogates, imgs)
		if err != nil {
			return nil, fmt.Errorf("extract: %w", err)
		}
		rl, err := Labels(ctx, tm.References, imgs)
		if err != nil {
			return nil, fmt.Errorf("extract: %w", err)
		}
		tl, err := Labels(ctx, tm.Twins, imgs)
		if err != nil {
			return nil, fmt.Errorf("extract: %w", err)
		}
		conf, surr := ConferGroups(sl, [][][]int64{rl, tl}, keys), Transfer(sl, keys)
		rl = append(rl, tl...) // the reference rate counts the twins too
		out.surr = append(out.surr, surr...)
		for i := range n {
			fp.Append(adv[i*per:(i+1)*per], x[i*per:(i+1)*per], keys[i], y[i], conf[i])
			row := make([]int64, len(rl))
			for r := range rl {
				row[r] = rl[r][i]
			}
			out.refLabels = append(out.refLabels, row)
		}
		kept := 0
		for i := range fp.N {
			if out.keep(i, cfg.Tau, cfg.TauSurr) {
				kept++
			}
		}
		cfg.Progress.Report(shared.Event{Kind: shared.Log, Stage: "extract", Message: fmt.Sprintf("%d of %d start points reach τ = %g, τ_S = %g so far", kept, b+n, cfg.Tau, cfg.TauSurr)})
	}
	return out, nil
}

func asAttack(ms []Model) []attack.Model {
	out := make([]attack.Model, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}
