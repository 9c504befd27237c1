// Package train fits models: Train(O, D) on ground-truth labels (the
// paper's oracle O), and the derivations of a surrogate from a source model
// (§2.4), starting with Retraining: training on the source's labels.
package train

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

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

// Classifier is anything that maps a batch of pixel-space images to logits:
// a zoo model, and later an imported ONNX model.
type Classifier interface {
	Forward(x *torch.Tensor) *torch.Tensor
	Device() torch.Device
}

// evalBatch is the batch size for inference.
const evalBatch = 500

// Predict returns the argmax label m gives each example of d, in evaluation
// mode and without recording gradients.
func Predict(ctx context.Context, m Classifier, d *data.Dataset) ([]int64, error) {
	if t, ok := m.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(false)
	}
	runtime.LockOSThread() // see fit
	defer runtime.UnlockOSThread()
	out := make([]int64, 0, d.Len())
	for b := range d.Batches(data.BatchOpts{Size: evalBatch}) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("predict: %w", err)
		}
		err := torch.Catch(func() {
			torch.NoGrad(func() {
				torch.Scoped(func(s *torch.Scope) {
					x := onDevice(torch.FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W)), m.Device())
					out = append(out, m.Forward(x).Argmax(1, false).ToDevice(torch.CPU).Int64s()...)
				})
			})
		})
		if err != nil {
			return nil, fmt.Errorf("predict: %w", err)
		}
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
