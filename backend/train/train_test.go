package train_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

func TestMain(m *testing.M) {
	torch.SetNumThreads(runtime.NumCPU())
	os.Exit(m.Run())
}

const (
	nTrain = 2000
	nTest  = 500
)

var (
	fmnistOnce          sync.Once
	fmnistTrain, fmnist *data.Dataset
	fmnistErr           error
)

// fashion returns the first nTrain images of the real Fashion-MNIST
// training set and the first nTest of its test set, loaded once.
func fashion(t *testing.T) (trainSet, testSet *data.Dataset) {
	t.Helper()
	fmnistOnce.Do(func() {
		tr, err := data.FashionMNIST("", true)
		if err != nil {
			fmnistErr = err
			return
		}
		te, err := data.FashionMNIST("", false)
		if err != nil {
			fmnistErr = err
			return
		}
		fmnistTrain, fmnist = tr.Subset(seq(nTrain)), te.Subset(seq(nTest))
	})
	if fmnistErr != nil {
		t.Fatalf("loading Fashion-MNIST: %v", fmnistErr)
	}
	return fmnistTrain, fmnist
}

func seq(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// newModel builds an untrained model of arch for d's images.
func newModel(t *testing.T, arch string, d *data.Dataset, seed uint64) *nn.Model {
	t.Helper()
	mean, std := d.Stats()
	spec := nn.Spec{Arch: arch, Dataset: d.Name, Classes: d.Classes, C: int64(d.C), H: int64(d.H), W: int64(d.W), Mean: mean, Std: std}
	m, err := nn.New(spec, seed, torch.CPU)
	if err != nil {
		t.Fatalf("nn.New(%s): %v", arch, err)
	}
	t.Cleanup(m.Free)
	return m
}

// fast is a quick recipe for tests: Adam, no augmentation.
func fast(epochs int) train.Config {
	return train.Config{Epochs: epochs, BatchSize: 64, Optimizer: "adam", LR: 1e-3, Schedule: "constant", Seed: 1}
}

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []shared.Event
}

func (r *recorder) report(e shared.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) of(kind shared.EventKind) []shared.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []shared.Event
	for _, e := range r.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// TestTrainLearns trains small models for two epochs on 1,000–2,000 real
// Fashion-MNIST images and checks that they learn and report progress.
func TestTrainLearns(t *testing.T) {
	trainSet, testSet := fashion(t)
	cases := []struct {
		arch string
		n    int // training images
		cfg  train.Config
	}{
		{"mlp", 2000, train.Config{Epochs: 2, BatchSize: 64, Optimizer: train.OptNesterov, LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4, Schedule: "cosine", Augment: true, Seed: 1}},
		{"cnn", 1000, fast(2)},
	}
	for _, tc := range cases {
		t.Run(tc.arch, func(t *testing.T) {
			trainSet := trainSet.Subset(seq(tc.n))
			m := newModel(t, tc.arch, trainSet, 1)
			var rec recorder
			cfg := tc.cfg
			cfg.Test, cfg.Progress = testSet, rec.report
			res, err := train.Train(context.Background(), m, trainSet, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Epochs) != cfg.Epochs {
				t.Fatalf("%d epoch stats, want %d", len(res.Epochs), cfg.Epochs)
			}
			first, last := res.Epochs[0], res.Epochs[len(res.Epochs)-1]
			t.Logf("%s: loss %.4f -> %.4f, test accuracy %.3f (%.1f s)", tc.arch, first.Loss, last.Loss, res.TestAccuracy, res.Seconds)
			if !(last.Loss < first.Loss) {
				t.Errorf("loss did not decrease: epoch 1 %.4f, epoch %d %.4f", first.Loss, last.Epoch, last.Loss)
			}
			if res.TestAccuracy < 0.6 {
				t.Errorf("test accuracy %.3f after %d epochs on %d images, want > 0.6 (chance 0.1)", res.TestAccuracy, cfg.Epochs, trainSet.Len())
			}
			if res.TestAccuracy != last.TestAcc {
				t.Errorf("Result.TestAccuracy %v, last epoch's %v", res.TestAccuracy, last.TestAcc)
			}
			for i, st := range res.Epochs {
				if st.Epoch != i+1 || math.IsNaN(st.Loss) || st.TrainAcc <= 0 || st.TrainAcc > 1 || st.Seconds <= 0 || st.LearningRate <= 0 {
					t.Errorf("epoch stats %d: %+v", i, st)
				}
			}
			if m.Training() {
				t.Error("model left in training mode")
			}
			// The reported test accuracy is the model's, as Accuracy measures it.
			acc, err := train.Accuracy(context.Background(), m, testSet, nil)
			if err != nil {
				t.Fatal(err)
			}
			if acc != res.TestAccuracy {
				t.Errorf("Accuracy after training %v, Train reported %v", acc, res.TestAccuracy)
			}

			steps := trainSet.Len() / cfg.BatchSize * cfg.Epochs
			if res.Steps != steps {
				t.Errorf("%d steps, want %d", res.Steps, steps)
			}
			prog := rec.of(shared.Progress)
			if len(prog) != steps {
				t.Fatalf("%d progress events, want one per step (%d)", len(prog), steps)
			}
			stage := "train " + tc.arch
			for i, e := range prog {
				if e.Step != int64(i+1) || e.Total != int64(steps) || e.Stage != stage || e.Time.IsZero() {
					t.Fatalf("progress event %d: step %d of %d, stage %q, time %v; want step %d of %d, stage %q",
						i, e.Step, e.Total, e.Stage, e.Time, i+1, steps, stage)
				}
				if _, ok := e.Metrics["loss"]; !ok {
					t.Fatalf("progress event %d has no loss: %v", i, e.Metrics)
				}
				if want := i/(steps/cfg.Epochs) + 1; e.Epoch != want {
					t.Fatalf("progress event %d in epoch %d, want %d", i, e.Epoch, want)
				}
			}
			ep := rec.of(shared.Epoch)
			if len(ep) != cfg.Epochs {
				t.Fatalf("%d epoch events, want %d", len(ep), cfg.Epochs)
			}
			for i, e := range ep {
				if e.Epoch != i+1 || e.Step != int64((i+1)*steps/cfg.Epochs) || e.Stage != stage {
					t.Errorf("epoch event %d: %+v", i, e)
				}
				for _, k := range []string{"loss", "train_acc", "test_acc"} {
					if _, ok := e.Metrics[k]; !ok {
						t.Errorf("epoch event %d lacks %s: %v", i, k, e.Metrics)
					}
				}
				if e.Metrics["test_acc"] != res.Epochs[i].TestAcc || e.Metrics["loss"] != res.Epochs[i].Loss {
					t.Errorf("epoch event %d metrics %v disagree with stats %+v", i, e.Metrics, res.Epochs[i])
				}
			}
			// The epoch event follows the last step of its epoch.
			if rec.events[len(rec.events)-1].Kind != shared.Epoch {
				t.Errorf("last event is %s, want epoch", rec.events[len(rec.events)-1].Kind)
			}
		})
	}
}

// TestTrainCancel checks that Train stops promptly on a cancelled context.
func TestTrainCancel(t *testing.T) {
	trainSet, testSet := fashion(t)

	t.Run("before", func(t *testing.T) {
		m := newModel(t, "mlp", trainSet, 1)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var rec recorder
		cfg := fast(5)
		cfg.Progress = rec.report
		_, err := train.Train(ctx, m, trainSet, cfg)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := len(rec.events); n != 0 {
			t.Errorf("%d events after cancelling before the start", n)
		}
	})

	t.Run("during", func(t *testing.T) {
		m := newModel(t, "mlp", trainSet, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const stopAt = 3
		var rec recorder
		cfg := fast(1000) // would take minutes
		cfg.Test = testSet
		cfg.Checkpoint = filepath.Join(t.TempDir(), "never.safetensors")
		cfg.Progress = func(e shared.Event) {
			rec.report(e)
			if e.Kind == shared.Progress && e.Step == stopAt {
				cancel()
			}
		}
		start := time.Now()
		res, err := train.Train(ctx, m, trainSet, cfg)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("Train took %v to stop", d)
		}
		if n := len(rec.of(shared.Progress)); n != stopAt {
			t.Errorf("%d steps ran, want %d (stop at the next step)", n, stopAt)
		}
		if res == nil || len(res.Epochs) != 0 {
			t.Errorf("result %+v, want no finished epoch", res)
		}
		if m.Training() {
			t.Error("model left in training mode")
		}
		if _, err := os.Stat(cfg.Checkpoint); !os.IsNotExist(err) {
			t.Errorf("checkpoint written for an unfinished epoch: %v", err)
		}
	})

	t.Run("predict", func(t *testing.T) {
		m := newModel(t, "mlp", trainSet, 1)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := train.Predict(ctx, m, testSet); !errors.Is(err, context.Canceled) {
			t.Errorf("Predict: err = %v, want context.Canceled", err)
		}
		if _, err := train.Accuracy(ctx, m, testSet, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Accuracy: err = %v, want context.Canceled", err)
		}
		if _, err := train.Retrain(ctx, m, newModel(t, "mlp", trainSet, 2), trainSet, fast(1)); !errors.Is(err, context.Canceled) {
			t.Errorf("Retrain: err = %v, want context.Canceled", err)
		}
	})
}

// shifted is a source whose label is its model's label minus one (mod
// classes): a teacher whose labels disagree with the ground truth.
type shifted struct{ *nn.Model }

func (s shifted) Forward(x *torch.Tensor) *torch.Tensor {
	logits := s.Model.Forward(x)
	k := int64(len(s.Spec.Classes))
	perm := make([]int64, k)
	for j := range perm {
		perm[j] = (int64(j) + 1) % k
	}
	// Column j of the result is column j+1 of the model's logits.
	return logits.IndexSelect(1, torch.FromSlice(x.Scope(), perm, k).ToDevice(x.Device()))
}

// TestRetrain trains surrogates on a teacher's labels (Retraining, §2.4)
// and checks that they learn the teacher, not the ground truth.
func TestRetrain(t *testing.T) {
	trainSet, testSet := fashion(t)
	trainSet = trainSet.Subset(seq(1000))
	ctx := context.Background()
	teacher := newModel(t, "mlp", trainSet, 7)
	if _, err := train.Train(ctx, teacher, trainSet, fast(2)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		source train.Classifier
		// the surrogate's accuracy on the ground truth is above min and below max
		minTruth, maxTruth float64
	}{
		{"teacher", teacher, 0.6, 1},
		{"shifted teacher", shifted{teacher}, 0, 0.3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := train.Predict(ctx, tc.source, testSet)
			if err != nil {
				t.Fatal(err)
			}
			s := newModel(t, "mlp", trainSet, 3)
			var rec recorder
			cfg := fast(2)
			cfg.Progress = rec.report
			cfg.Labels = []int64{1, 2, 3} // replaced by the source's labels
			if _, err := train.Retrain(ctx, tc.source, s, trainSet, cfg); err != nil {
				t.Fatal(err)
			}
			agree, err := train.Accuracy(ctx, s, testSet, want)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("agreement with the source %.3f", agree)
			if agree < 0.6 {
				t.Errorf("surrogate agrees with its source on %.3f of the test set, want > 0.6", agree)
			}
			truth, err := train.Accuracy(ctx, s, testSet, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("accuracy on the ground truth %.3f", truth)
			if truth < tc.minTruth || truth > tc.maxTruth {
				t.Errorf("surrogate's accuracy on the ground truth %.3f, want in [%v, %v]", truth, tc.minTruth, tc.maxTruth)
			}
			if ev := rec.of(shared.Epoch); len(ev) == 0 || ev[0].Stage != "retrain mlp" {
				t.Errorf("epoch events %+v, want stage %q", ev, "retrain mlp")
			}
		})
	}
}

// TestTrainErrors checks that bad input is refused before any training.
func TestTrainErrors(t *testing.T) {
	trainSet, _ := fashion(t)
	small := trainSet.Subset(seq(10))
	color := &data.Dataset{Name: "rgb", Images: make([]uint8, 10*3*32*32), Labels: make([]int64, 10), N: 10, C: 3, H: 32, W: 32, Classes: trainSet.Classes}
	mod := func(f func(*train.Config)) train.Config {
		c := fast(1)
		f(&c)
		return c
	}
	cases := []struct {
		name    string
		data    *data.Dataset
		cfg     train.Config
		wantErr string
	}{
		{"zero epochs", small, mod(func(c *train.Config) { c.Epochs = 0 }), "epochs"},
		{"negative epochs", small, mod(func(c *train.Config) { c.Epochs = -1 }), "epochs"},
		{"zero batch", small, mod(func(c *train.Config) { c.BatchSize = 0 }), "batch size"},
		{"unknown optimizer", small, mod(func(c *train.Config) { c.Optimizer = "lbfgs" }), "lbfgs"},
		{"too few labels", small, mod(func(c *train.Config) { c.Labels = make([]int64, 9) }), "9 labels for 10 examples"},
		{"too many labels", small, mod(func(c *train.Config) { c.Labels = make([]int64, 11) }), "11 labels for 10 examples"},
		{"shape mismatch", color, fast(1), "3x32x32"},
		{"label out of range", small, mod(func(c *train.Config) { c.Labels = slices.Repeat([]int64{10}, 10) }), "step 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, "mlp", trainSet, 1)
			var rec recorder
			tc.cfg.Progress = rec.report
			_, err := train.Train(context.Background(), m, tc.data, tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if n := len(rec.of(shared.Progress)); n != 0 {
				t.Errorf("%d steps ran", n)
			}
		})
	}

	t.Run("retrain shape mismatch", func(t *testing.T) {
		// A source for 28×28 grey images cannot label 32×32 colour ones.
		src := newModel(t, "mlp", trainSet, 1)
		mean, std := []float64{.5, .5, .5}, []float64{.25, .25, .25}
		s, err := nn.New(nn.Spec{Arch: "mlp", Dataset: "rgb", Classes: trainSet.Classes, C: 3, H: 32, W: 32, Mean: mean, Std: std}, 1, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Free()
		_, err = train.Retrain(context.Background(), src, s, color, fast(1))
		if err == nil || !strings.Contains(err.Error(), "labelling with the source") {
			t.Errorf("err = %v, want a labelling error", err)
		}
	})

	t.Run("empty accuracy", func(t *testing.T) {
		m := newModel(t, "mlp", trainSet, 1)
		if _, err := train.Accuracy(context.Background(), m, trainSet.Subset(nil), nil); err == nil {
			t.Error("accuracy of an empty dataset: no error")
		}
	})
}

// TestCheckpoint checks that a checkpoint is written after training and
// loads to a model that predicts exactly as the trained one.
func TestCheckpoint(t *testing.T) {
	trainSet, testSet := fashion(t)
	ctx := context.Background()
	for _, arch := range []string{"mlp", "cnn"} {
		t.Run(arch, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "model.safetensors")
			m := newModel(t, arch, trainSet.Subset(seq(500)), 1)
			cfg := fast(2)
			cfg.Checkpoint = path
			cfg.Meta = map[string]string{"owner": "test"}
			if _, err := train.Train(ctx, m, trainSet.Subset(seq(500)), cfg); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != "model.safetensors" {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("checkpoint folder holds %v, want only model.safetensors", names)
			}
			loaded, meta, err := nn.Load(path, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer loaded.Free()
			if meta["owner"] != "test" || meta["train.epoch"] != "2" {
				t.Errorf("metadata %v: want cfg.Meta and train.epoch 2", meta)
			}
			if loaded.Spec.Arch != arch || loaded.Spec.H != 28 || len(loaded.Spec.Classes) != 10 {
				t.Errorf("loaded spec %+v", loaded.Spec)
			}
			want, err := train.Predict(ctx, m, testSet)
			if err != nil {
				t.Fatal(err)
			}
			got, err := train.Predict(ctx, loaded, testSet)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				diff := 0
				for i := range got {
					if got[i] != want[i] {
						diff++
					}
				}
				t.Errorf("loaded checkpoint predicts differently on %d of %d images", diff, len(want))
			}
		})
	}
}

// TestPredictAccuracy checks that Predict and Accuracy agree with each
// other, are deterministic, and handle a partial last batch.
func TestPredictAccuracy(t *testing.T) {
	trainSet, testSet := fashion(t)
	ctx := context.Background()
	m := newModel(t, "mlp", trainSet, 5)
	if _, err := train.Train(ctx, m, trainSet.Subset(seq(1000)), fast(1)); err != nil {
		t.Fatal(err)
	}
	m.SetTraining(true) // Predict must switch to evaluation mode itself (dropout off)
	// 777 images: one full evaluation batch of 500 and a partial one.
	d := trainSet.Subset(seq(777))
	pred, err := train.Predict(ctx, m, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(pred) != d.Len() {
		t.Fatalf("%d predictions for %d images", len(pred), d.Len())
	}
	if m.Training() {
		t.Error("Predict left the model in training mode")
	}
	again, err := train.Predict(ctx, m, d)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pred, again) {
		t.Error("Predict is not deterministic")
	}
	// Predicting one image at a time gives the same labels.
	for _, i := range []int{0, 499, 500, 776} {
		one, err := train.Predict(ctx, m, d.Subset([]int{i}))
		if err != nil {
			t.Fatal(err)
		}
		if len(one) != 1 || one[0] != pred[i] {
			t.Errorf("image %d alone: %v, in a batch: %d", i, one, pred[i])
		}
	}
	hits := 0
	for i, p := range pred {
		if p < 0 || p >= int64(d.NumClasses()) {
			t.Fatalf("prediction %d is class %d", i, p)
		}
		if p == d.Labels[i] {
			hits++
		}
	}
	cases := []struct {
		name   string
		labels []int64
		want   float64
	}{
		{"ground truth", nil, float64(hits) / float64(d.Len())},
		{"own predictions", pred, 1},
		{"explicit ground truth", d.Labels, float64(hits) / float64(d.Len())},
	}
	for _, tc := range cases {
		acc, err := train.Accuracy(ctx, m, d, tc.labels)
		if err != nil {
			t.Fatal(err)
		}
		if acc != tc.want {
			t.Errorf("%s: accuracy %v, want %v", tc.name, acc, tc.want)
		}
	}
	if acc, _ := train.Accuracy(ctx, m, testSet, nil); acc < 0.5 {
		t.Errorf("test accuracy %.3f after one epoch on 1,000 images", acc)
	}
}
