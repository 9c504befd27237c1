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
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

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
	// Pruned lists the channels fine-pruning removed.
	Pruned []int `json:"pruned_channels,omitempty"`
	// Steps are the combined attack's steps, in order.
	Steps []*Derivation `json:"steps,omitempty"`
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

// Derive derives a model from source by the named attack (its row of the
// registry, attacks.go) on the adversary's data d. The attacks that train a new model build it with Options.Arch (the
// source's architecture by default), initialised from cfg.Seed and normalised
// with the statistics of the data it is trained on; fine-tuning, adversarial
// training, pruning and quantization start from a copy of the source. The
// source itself is never changed. cfg's recipe applies throughout: its
// Share of d is drawn first; its soft labels apply to Retraining and
// Knockoff (Jagielski and Noise train on probabilities anyway, the others
// on labels). The caller frees the result.
func Derive(ctx context.Context, attackName string, source *nn.Model, d *data.Dataset, o Options, cfg Config) (Deployed, *Derivation, error) {
	start := time.Now()
	a, err := ParseAttack(attackName)
	if err != nil {
		return nil, nil, fmt.Errorf("derive: %w", err)
	}
	// The share of the adversary's data is drawn before anything is
	// labelled, so that queries count only what is used.
	d, _, cfg = takeShare(d, cfg)
	out, der, err := a.derive(ctx, derivation{name: a.Name, source: source, d: d, o: o, cfg: cfg})
	free := func() {
		if out != nil {
			out.Free()
		}
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

// setValues copies vals into t in place (on t's device).
func setValues(t *torch.Tensor, vals []float32) {
	src := torch.FromSlice(nil, vals, t.Shape()...)
	defer src.Free()
	t.CopyFrom(src)
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
