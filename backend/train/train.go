// Package train fits models: Train(O, D) on ground-truth labels (the
// paper's oracle O), and the derivations of a surrogate from a source model
// (§2.4), starting with Retraining: training on the source's labels.
package train

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// Config is a training run's hyper-parameters (a Recipe, which Apply puts
// in and Config.Recipe takes out) and what the run needs beside them.
type Config struct {
	Epochs      int
	BatchSize   int
	Optimizer   string  // one of Optimizers(): sgd, sgd+nesterov, adam, adamw
	LR          float64 // peak learning rate
	Momentum    float64
	WeightDecay float64
	Schedule    string // "cosine", "step" (×0.1 at 50% and 75%) or "constant"
	Augment     bool   // random crop (and flip where the dataset allows)
	// Augmentation, when set, names the augmentation (one of
	// Augmentations()) and overrides Augment.
	Augmentation string
	// LabelSmoothing ε trains on (1−ε)·target + ε/K, as PyTorch's
	// cross_entropy(label_smoothing=ε).
	LabelSmoothing float64
	// SoftLabels makes Retrain and Knockoff train on the source's
	// probability vectors (T = 1) instead of its labels.
	SoftLabels bool
	// Share, when in (0,1), trains on that fraction of the data, drawn
	// from Seed; the derivations draw it before querying the source.
	Share float64
	// Dropout, when positive, replaces the rate of the model's dropout
	// layers for the run and in its Spec (nn.Model.SetDropout).
	Dropout float64
	Seed    int64
	// drawn says that Share has been applied to the data already (the
	// derivations draw it before they label).
	drawn bool

	// Labels, when set, replaces the ground truth: entry i is the label of
	// training example i (Retraining: the source model's labels).
	Labels []int64
	// Test, when set, is evaluated after every epoch.
	Test *data.Dataset
	// Checkpoint, when set, is where the model is saved (atomically) after
	// every epoch.
	Checkpoint string
	// Meta is written into checkpoints.
	Meta map[string]string
	// Progress receives step and epoch events.
	Progress shared.Reporter
	// Stage names the run in events.
	Stage string
}

// Defaults returns the recipe used throughout Conferral: SGD with Nesterov
// momentum 0.9, weight decay 5e-4, cosine schedule, batch 128, random crops
// and flips. Measured accuracies per architecture are in the README.
func Defaults(epochs int) Config {
	return Config{
		Epochs: epochs, BatchSize: 128, Optimizer: OptNesterov, LR: 0.05, Momentum: 0.9,
		WeightDecay: 5e-4, Schedule: SchedCosine, Augment: true, Seed: 1,
	}
}

// augmentation names what Augmentation and Augment ask for.
func (c Config) augmentation() string {
	switch {
	case c.Augmentation != "":
		return c.Augmentation
	case c.Augment:
		return AugCropFlip
	}
	return AugNone
}

// batchOpts are the batches of one epoch of training.
func (c Config) batchOpts(epoch, n int) (data.BatchOpts, error) {
	o := data.BatchOpts{Size: c.BatchSize, Shuffle: true, Seed: c.Seed + int64(epoch), DropLast: n >= c.BatchSize}
	switch a := c.augmentation(); a {
	case AugNone:
	case AugCrop:
		o.Augment, o.NoFlip = true, true
	case AugCropFlip:
		o.Augment = true
	case AugNoise:
		o.Noise = NoiseStd
	default:
		return o, fmt.Errorf("augmentation %q: want one of %s", a, strings.Join(Augmentations(), ", "))
	}
	return o, nil
}

// EpochStats are one epoch's metrics.
type EpochStats struct {
	Epoch        int     `json:"epoch"`
	Loss         float64 `json:"loss"`
	TrainAcc     float64 `json:"train_accuracy"`
	TestAcc      float64 `json:"test_accuracy,omitempty"`
	Seconds      float64 `json:"seconds"`
	LearningRate float64 `json:"lr"`
}

// Result summarises a run.
type Result struct {
	Epochs       []EpochStats `json:"epochs"`
	Steps        int          `json:"steps"`
	TestAccuracy float64      `json:"test_accuracy"`
	Seconds      float64      `json:"seconds"`
}

func (c Config) schedule(total int) torch.Schedule {
	switch c.Schedule {
	case "constant":
		return torch.ConstantLR(c.LR)
	case "step":
		return stepAt{base: c.LR, at: []int{total / 2, total * 3 / 4}}
	}
	return torch.CosineLR{Base: c.LR, Total: total}
}

// stepAt multiplies the rate by 0.1 at each listed step.
type stepAt struct {
	base float64
	at   []int
}

func (s stepAt) LR(step int) float64 {
	lr := s.base
	for _, a := range s.at {
		if step >= a {
			lr *= 0.1
		}
	}
	return lr
}

// Train fits m on d (Train(O, D) of the paper when cfg.Labels is nil) and
// returns per-epoch statistics. It stops early, returning ctx's error, when
// ctx is cancelled; the model then holds the weights of the last step.
func Train(ctx context.Context, m *nn.Model, d *data.Dataset, cfg Config) (*Result, error) {
	return fit(ctx, m, d, cfg, fitOpts{})
}

// fitOpts extend Train for the derivations.
type fitOpts struct {
	params     []*torch.Tensor // train only these (nil: all of m's parameters)
	frozenEval bool            // keep m in evaluation mode (frozen layers)
	soft       []float32       // N×K probability targets instead of labels
	adv        *AdvOpts        // add adversarial examples to each batch
	// robust trains on PGD adversarial examples alone (Madry et al.) or
	// by TRADES' loss (Zhang et al.) instead of the clean cross-entropy.
	robust *robustFit
	// masks keep entries of parameters at zero through training (pruning
	// followed by fine-tuning): after every step each parameter is
	// multiplied by its 0/1 mask.
	masks []paramMask
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
	gen := torch.NewGenerator(uint64(cfg.Seed)) // dropout draws from this job's own generator
	defer gen.Free()
	defer torch.SetGenerator(gen)() // on the thread locked above
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
					var logits, l *torch.Tensor
					if o.robust != nil {
						logits, l = o.robust.loss(m, x, target, hard, training, cfg.LabelSmoothing)
					} else {
						logits = m.Forward(x)
						l = SmoothedCrossEntropy(logits, target, cfg.LabelSmoothing)
					}
					opt.ZeroGrad()
					l.Backward()
					opt.Step()
					applyMasks(s, o.masks)
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

// SpecFor describes a model of arch for dataset d, normalised with d's
// per-channel statistics.
func SpecFor(arch string, d *data.Dataset) nn.Spec {
	mean, std := d.Stats()
	return nn.Spec{Arch: arch, Dataset: d.Name, Classes: d.Classes, C: int64(d.C), H: int64(d.H), W: int64(d.W), Mean: mean, Std: std}
}

// onDevice moves a CPU tensor to d (no copy when d is the CPU).
func onDevice(t *torch.Tensor, d torch.Device) *torch.Tensor {
	if d == torch.CPU {
		return t
	}
	return t.ToDevice(d)
}

// Classifier is a teacher or a model to score: a zoo model or an imported
// one.
type Classifier = nn.Classifier

// evalBatch is the batch size for inference.
const evalBatch = 500

// Predict returns the argmax label m gives each example of d, in evaluation
// mode and without recording gradients.
func Predict(ctx context.Context, m Classifier, d *data.Dataset) ([]int64, error) {
	if t, ok := m.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(false)
	}
	out := make([]int64, 0, d.Len())
	err := torch.Infer(ctx, m.Device(), evalBatches(d), func(x *torch.Tensor) {
		out = append(out, m.Forward(x).Argmax(1, false).ToDevice(torch.CPU).Int64s()...)
	})
	if err != nil {
		return nil, fmt.Errorf("predict: %w", err)
	}
	return out, nil
}

// evalBatches are d's images in order, evalBatch at a time, for inference.
func evalBatches(d *data.Dataset) iter.Seq[torch.Images] {
	return func(yield func(torch.Images) bool) {
		for b := range d.Batches(data.BatchOpts{Size: evalBatch}) {
			if !yield(torch.Images{X: b.X, N: b.N, C: b.C, H: b.H, W: b.W}) {
				return
			}
		}
	}
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
	var out []float32
	err := torch.Infer(ctx, m.Device(), evalBatches(d), func(x *torch.Tensor) {
		logits := m.Forward(x)
		if temperature != 1 {
			logits = logits.DivScalar(temperature)
		}
		out = append(out, logits.Softmax(1).Float32s()...)
	})
	if err != nil {
		return nil, fmt.Errorf("probabilities: %w", err)
	}
	return out, nil
}

// Accuracy is the fraction of d that m labels as labels says (d's own labels
// when labels is nil).
func Accuracy(ctx context.Context, m Classifier, d *data.Dataset, labels []int64) (float64, error) {
	if d.Len() == 0 {
		return 0, errors.New("accuracy: empty dataset")
	}
	pred, err := Predict(ctx, m, d)
	if err != nil {
		return 0, err
	}
	if labels == nil {
		labels = d.Labels
	}
	if len(labels) != d.Len() {
		return 0, fmt.Errorf("accuracy: %d labels for %d examples", len(labels), d.Len())
	}
	hits := 0
	for i, p := range pred {
		if p == labels[i] {
			hits++
		}
	}
	return float64(hits) / float64(len(pred)), nil
}
