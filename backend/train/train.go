// Package train fits models: Train(O, D) on ground-truth labels (the
// paper's oracle O), and the derivations of a surrogate from a source model
// (§2.4), starting with Retraining: training on the source's labels.
package train

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// Config is a training run's hyper-parameters.
type Config struct {
	Epochs      int
	BatchSize   int
	Optimizer   string  // "sgd" (momentum, Nesterov) or "adam"
	LR          float64 // peak learning rate
	Momentum    float64
	WeightDecay float64
	Schedule    string // "cosine", "step" (×0.1 at 50% and 75%) or "constant"
	Augment     bool   // random crop (and flip where the dataset allows)
	Seed        int64

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
// momentum 0.9, weight decay 5e-4, cosine schedule, batch 128, augmentation.
// Measured accuracies per architecture are in the README.
func Defaults(epochs int) Config {
	return Config{
		Epochs: epochs, BatchSize: 128, Optimizer: "sgd", LR: 0.05, Momentum: 0.9,
		WeightDecay: 5e-4, Schedule: "cosine", Augment: true, Seed: 1,
	}
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

func (c Config) optimizer(m *nn.Model) (*torch.Optimizer, error) {
	var o *torch.Optimizer
	err := torch.Catch(func() {
		switch c.Optimizer {
		case "adam":
			o = torch.NewAdam(m.Params(), torch.AdamOpts{LR: c.LR, WeightDecay: c.WeightDecay})
		case "sgd", "":
			o = torch.NewSGD(m.Params(), torch.SGDOpts{LR: c.LR, Momentum: c.Momentum, WeightDecay: c.WeightDecay, Nesterov: c.Momentum > 0})
		default:
			panic(&torch.Error{Op: "optimizer", Msg: fmt.Sprintf("unknown optimizer %q (want sgd or adam)", c.Optimizer)})
		}
	})
	return o, err
}

// Train fits m on d (Train(O, D) of the paper when cfg.Labels is nil) and
// returns per-epoch statistics. It stops early, returning ctx's error, when
// ctx is cancelled; the model then holds the weights of the last step.
func Train(ctx context.Context, m *nn.Model, d *data.Dataset, cfg Config) (*Result, error) {
	if cfg.Epochs <= 0 || cfg.BatchSize <= 0 {
		return nil, fmt.Errorf("train: epochs (%d) and batch size (%d) must be positive", cfg.Epochs, cfg.BatchSize)
	}
	if d.Len() == 0 {
		return nil, errors.New("train: empty dataset")
	}
	if cfg.Labels != nil && len(cfg.Labels) != d.Len() {
		return nil, fmt.Errorf("train: %d labels for %d examples", len(cfg.Labels), d.Len())
	}
	if d.C != int(m.Spec.C) || d.H != int(m.Spec.H) || d.W != int(m.Spec.W) {
		return nil, fmt.Errorf("train: data is %dx%dx%d, model %s takes %dx%dx%d", d.C, d.H, d.W, m.Spec.Arch, m.Spec.C, m.Spec.H, m.Spec.W)
	}
	// libtorch's OpenMP thread pool belongs to the calling OS thread; moving
	// between threads would start new pools that compete for the cores.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	torch.ManualSeed(uint64(cfg.Seed)) // dropout draws from libtorch's generator
	opt, err := cfg.optimizer(m)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	defer opt.Free()
	stepsPerEpoch := d.Len() / cfg.BatchSize
	if stepsPerEpoch == 0 {
		stepsPerEpoch = 1
	}
	total := stepsPerEpoch * cfg.Epochs
	sched := cfg.schedule(total)
	stage := cfg.Stage
	if stage == "" {
		stage = "train " + m.Spec.Arch
	}
	res := &Result{}
	start := time.Now()
	dev := m.Device()
	step := 0
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		epochStart := time.Now()
		m.SetTraining(true)
		var lossSum float64
		var correct, seen int
		batches := d.Batches(data.BatchOpts{Size: cfg.BatchSize, Shuffle: true, Seed: cfg.Seed + int64(epoch), Augment: cfg.Augment, DropLast: d.Len() >= cfg.BatchSize})
		for b := range batches {
			if err := ctx.Err(); err != nil {
				m.SetTraining(false)
				return res, fmt.Errorf("train %s: %w", m.Spec.Arch, err)
			}
			y := b.Y
			if cfg.Labels != nil {
				y = make([]int64, b.N)
				for i, j := range b.Index {
					y[i] = cfg.Labels[j]
				}
			}
			lr := sched.LR(step)
			var loss float64
			var hits int
			err := torch.Catch(func() {
				torch.Scoped(func(s *torch.Scope) {
					opt.SetLR(lr)
					x := onDevice(torch.FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W)), dev)
					target := onDevice(torch.FromSlice(s, y, int64(b.N)), dev)
					logits := m.Forward(x)
					l := torch.CrossEntropy(logits, target, torch.ReduceMean)
					opt.ZeroGrad()
					l.Backward()
					opt.Step()
					loss = l.Item()
					hits = int(logits.Argmax(1, false).Eq(target).To(torch.Float32, dev).Sum().Item())
				})
			})
			if err != nil {
				m.SetTraining(false)
				return res, fmt.Errorf("train %s, step %d: %w", m.Spec.Arch, step, err)
			}
			step++
			lossSum += loss * float64(b.N)
			correct += hits
			seen += b.N
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
			meta := map[string]string{"train.epoch": fmt.Sprint(epoch)}
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
	runtime.LockOSThread() // see Train
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
// source model's predictions (temperature 1, hard labels) and trains m on
// them. The number of queries made to the source is d.Len().
func Retrain(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, cfg Config) (*Result, error) {
	labels, err := Predict(ctx, source, d)
	if err != nil {
		return nil, fmt.Errorf("retrain: labelling with the source: %w", err)
	}
	cfg.Labels = labels
	if cfg.Stage == "" {
		cfg.Stage = "retrain " + m.Spec.Arch
	}
	return Train(ctx, m, d, cfg)
}
