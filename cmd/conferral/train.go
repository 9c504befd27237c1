package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// dataFlags selects a dataset and a split of its training set.
type dataFlags struct {
	name, dir, split string
	splitSeed        int64
	limit            int
}

func (f *dataFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "data", "fashion-mnist", "dataset: fashion-mnist, mnist, cifar10, cinic10, imagenet32")
	fs.StringVar(&f.dir, "data-dir", "", "dataset folder (default: where the Debian package or module puts it)")
	fs.StringVar(&f.split, "split", "defender", "training split: defender, adversary (disjoint halves, paper §6.1) or all")
	fs.Int64Var(&f.splitSeed, "split-seed", 1, "seed of the defender/adversary split (keep it fixed across commands)")
	fs.IntVar(&f.limit, "limit", 0, "use only the first N training and test examples (0: all)")
}

// load returns the chosen training split and the test set.
func (f *dataFlags) load() (trainSet, testSet *data.Dataset, err error) {
	full, err := data.Load(f.name, f.dir, true)
	if err != nil {
		return nil, nil, err
	}
	testSet, err = data.Load(f.name, f.dir, false)
	if err != nil {
		return nil, nil, err
	}
	switch f.split {
	case "all":
		trainSet = full
	case "defender", "adversary":
		def, adv := data.Split(full, f.splitSeed)
		trainSet = def
		if f.split == "adversary" {
			trainSet = adv
		}
	default:
		return nil, nil, usagef("--split %q: want defender, adversary or all", f.split)
	}
	return trainSet.First(f.limit), testSet.First(f.limit), nil
}

// trainingFlags are a training run's recipe: --recipe, and the flags of
// single hyper-parameters, which override the recipe where they are given.
// Only the flags the command line set reach the request (train or
// derive), where request.Train and request.Derive apply them over the
// command's default recipe.
type trainingFlags struct {
	fs                        *flag.FlagSet
	recipe, optimizer, sched  string
	epochs, batch             int
	lr, momentum, weightDecay float64
	noAugment                 bool
	seed                      int64
}

func (t *trainingFlags) register(fs *flag.FlagSet) {
	t.fs = fs
	def := train.DefaultRecipe()
	fs.Func("recipe", "training recipe, e.g. adamw,lr=0.001,sched=constant,aug=none,ls=0.1,bs=64,epochs=3,share=0.5\n"+
		"(optimizer "+strings.Join(train.Optimizers(), "|")+"; keys lr mom sched bs epochs wd aug ls labels share dropout;\n"+
		"aug "+strings.Join(train.Augmentations(), "|")+"; labels hard|soft; the flags below override it)", func(v string) error {
		var r train.Recipe
		if err := r.Set(v); err != nil {
			return err
		}
		t.recipe = v
		return nil
	})
	fs.IntVar(&t.epochs, "epochs", def.Epochs, "training epochs")
	fs.IntVar(&t.batch, "batch", def.BatchSize, "batch size")
	fs.StringVar(&t.optimizer, "optimizer", def.Optimizer, "optimizer: "+strings.Join(train.Optimizers(), ", "))
	fs.Float64Var(&t.lr, "lr", def.LR, "peak learning rate")
	fs.Float64Var(&t.momentum, "momentum", def.Momentum, "SGD momentum")
	fs.Float64Var(&t.weightDecay, "weight-decay", def.WeightDecay, "weight decay")
	fs.StringVar(&t.sched, "schedule", def.Schedule, "learning-rate schedule: "+strings.Join(train.Schedules(), ", "))
	fs.BoolVar(&t.noAugment, "no-augment", false, "turn off augmentation (the recipe's aug=none)")
	fs.Int64Var(&t.seed, "seed", 1, "seed of initialisation, shuffling and the recipe's share (0 reads as the default)")
}

// set says which of the flags the command line set.
func (t *trainingFlags) set() map[string]bool {
	set := map[string]bool{}
	t.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// check refuses a zero or negative --epochs, --batch or --lr (positive).
func (t *trainingFlags) check() error {
	return positive(t.set(), flagValue{"epochs", float64(t.epochs)}, flagValue{"batch", float64(t.batch)}, flagValue{"lr", t.lr})
}

// flagValue is a numeric flag's name and value.
type flagValue struct {
	name string
	v    float64
}

// positive refuses a zero or negative value of a flag the command line
// set: a request reads zero as the default, and the command line says
// what it means.
func positive(set map[string]bool, flags ...flagValue) error {
	for _, f := range flags {
		if set[f.name] && !(f.v > 0) {
			return usagef("--%s %g: want more than 0", f.name, f.v)
		}
	}
	return nil
}

// intoTrain puts the flags the command line set into a train request.
func (t *trainingFlags) intoTrain(a *shared.TrainArgs) {
	set := t.set()
	a.Recipe, a.Optimizer, a.Schedule, a.NoAugment = t.recipe, t.optimizer, t.sched, t.noAugment
	if !set["optimizer"] {
		a.Optimizer = ""
	}
	if !set["schedule"] {
		a.Schedule = ""
	}
	a.Epochs, a.BatchSize, a.LR, a.Seed = pick(set, "epochs", t.epochs), pick(set, "batch", t.batch), pick(set, "lr", t.lr), pick(set, "seed", t.seed)
	a.Momentum, a.WeightDecay = given(set, "momentum", t.momentum), given(set, "weight-decay", t.weightDecay)
}

// intoDerive puts the flags the command line set into a derive request.
func (t *trainingFlags) intoDerive(a *shared.DeriveArgs) {
	var tr shared.TrainArgs
	t.intoTrain(&tr)
	a.Recipe, a.Optimizer, a.Schedule, a.NoAugment = tr.Recipe, tr.Optimizer, tr.Schedule, tr.NoAugment
	a.Epochs, a.BatchSize, a.LR, a.Seed, a.Momentum, a.WeightDecay = tr.Epochs, tr.BatchSize, tr.LR, tr.Seed, tr.Momentum, tr.WeightDecay
}

// pick is v when the command line set flag name, and zero (the request's
// "default") when it did not.
func pick[T any](set map[string]bool, name string, v T) T {
	if set[name] {
		return v
	}
	var zero T
	return zero
}

// given is a pointer to v when the command line set flag name, and nil
// when it did not: for a request's fields whose zero means something.
func given[T any](set map[string]bool, name string, v T) *T {
	if set[name] {
		return &v
	}
	return nil
}

type trainResult struct {
	Model        string             `json:"model"`
	SHA256       string             `json:"sha256"`
	Arch         string             `json:"arch"`
	Dataset      string             `json:"dataset"`
	Split        string             `json:"split"`
	Teacher      string             `json:"teacher,omitempty"`
	Recipe       train.Recipe       `json:"recipe"`
	Params       int64              `json:"params"`
	TestAccuracy float64            `json:"test_accuracy"`
	Seconds      float64            `json:"seconds"`
	Epochs       []train.EpochStats `json:"epochs"`
}

func runTrain(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	arch := fs.String("arch", "cnn", "architecture: "+strings.Join(nn.Architectures(), ", "))
	out := fs.String("out", "", "model file to write (safetensors); required")
	teacher := fs.String("teacher", "", "source model: train a surrogate on its labels (Retraining, §2.4; its probabilities with the recipe's labels=soft)")
	like := fs.String("like", "", "model file: train as it was trained (its architecture, dataset, split and recipe, where no flag says otherwise) with another --seed: a twin of the source for extract --twins")
	var tf trainingFlags
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if *like != "" {
		if *teacher != "" { // a twin is independent of the source: one that learns its labels is a surrogate
			return usagef("--like and --teacher: a twin is trained on ground truth; drop --teacher")
		}
		if err := trainLike(*like, arch, &df, &tf); err != nil {
			return err
		}
	}
	if err := tf.check(); err != nil {
		return err
	}
	req := shared.TrainArgs{Arch: *arch, Teacher: *teacher} // the teacher a file here, a model ID there: request.Train asks only whether there is one
	tf.intoTrain(&req)
	cfg, err := request.Train(req)
	if err != nil {
		return usageError{err}
	}
	if !slices.Contains(nn.Architectures(), *arch) {
		return usagef("--arch %q: want one of %s", *arch, strings.Join(nn.Architectures(), ", "))
	}
	if err := apply(); err != nil {
		return err
	}
	trainSet, testSet, err := df.load()
	if err != nil {
		return err
	}
	torch.ManualSeed(uint64(cfg.Seed))
	m, err := nn.New(train.SpecFor(*arch, trainSet), uint64(cfg.Seed), e.device)
	if err != nil {
		return err
	}
	defer m.Free()
	meta := map[string]string{
		"train.split": df.split, "train.split_seed": fmt.Sprint(df.splitSeed), "train.epochs": fmt.Sprint(cfg.Epochs),
		"train.seed": fmt.Sprint(cfg.Seed), "train.optimizer": cfg.Optimizer, "train.created": time.Now().UTC().Format(time.RFC3339),
		train.MetaRecipe: train.TrainedRecipe(cfg, m).String(),
	}
	cfg.Test, cfg.Checkpoint, cfg.Meta, cfg.Progress = testSet, *out, meta, e.progress.Report
	var res *train.Result
	if *teacher != "" {
		src, _, err := nn.Load(*teacher, e.device)
		if err != nil {
			return err
		}
		defer src.Free()
		sum, err := fileSHA256(*teacher)
		if err != nil {
			return err
		}
		meta["train.teacher_sha256"] = sum
		meta["train.derivation"] = "retraining"
		res, err = train.Retrain(ctx, src, m, trainSet, cfg)
		if err != nil {
			return err
		}
	} else {
		res, err = train.Train(ctx, m, trainSet, cfg)
		if err != nil {
			return err
		}
	}
	meta["test_accuracy"] = fmt.Sprintf("%.4f", res.TestAccuracy)
	meta["train.epoch"] = fmt.Sprint(len(res.Epochs))
	rec := train.TrainedRecipe(cfg, m)
	meta[train.MetaRecipe] = rec.String()
	if err := m.Save(*out, meta); err != nil {
		return err
	}
	sum, err := fileSHA256(*out)
	if err != nil {
		return err
	}
	r := trainResult{Model: *out, SHA256: sum, Arch: *arch, Dataset: trainSet.Name, Split: df.split, Teacher: *teacher,
		Recipe: rec, Params: m.NumParams(), TestAccuracy: res.TestAccuracy, Seconds: res.Seconds, Epochs: res.Epochs}
	return e.emit(r, fmt.Sprintf("%s: %s on %s/%s, %d parameters, test accuracy %.4f after %d epochs (%.0f s)\n  recipe %s\n",
		*out, *arch, trainSet.Name, df.split, r.Params, r.TestAccuracy, len(res.Epochs), res.Seconds, rec))
}

// trainLike takes what the flags leave unset from how the model at path
// was trained (its metadata): architecture, dataset, split and recipe. The
// seed must be set, and differ from the model's: a twin trained from the
// same seed would be the model itself.
func trainLike(path string, arch *string, df *dataFlags, tf *trainingFlags) error {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return usagef("--like: %v", err)
	}
	meta := f.Metadata
	rec, ok, err := train.RecipeOf(meta)
	if err != nil || !ok || meta["arch"] == "" {
		return usagef("--like %s: not a model file that records its architecture and training recipe", path)
	}
	set := tf.set()
	if !set["seed"] {
		return usagef("--like: set --seed (the model was trained with seed %s; a twin needs another)", cmp.Or(meta["train.seed"], "unknown"))
	}
	if s := meta["train.seed"]; s == fmt.Sprint(cmp.Or(tf.seed, 1)) { // 0 reads as the default, 1
		return usagef("--like: --seed %d is the model's own seed; a twin needs another", tf.seed)
	}
	if !set["arch"] {
		*arch = meta["arch"]
	}
	if !set["recipe"] {
		tf.recipe = rec.String()
	}
	if v := meta["dataset"]; v != "" && !set["data"] {
		df.name = v
	}
	if v := meta["train.split"]; v != "" && !set["split"] {
		df.split = v
	}
	if v := meta["train.split_seed"]; v != "" && !set["split-seed"] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return usagef("--like %s: split seed %q: %v", path, v, err)
		}
		df.splitSeed = n
	}
	return nil
}

type evalResult struct {
	Model     string             `json:"model"`
	Recipe    *train.Recipe      `json:"recipe,omitempty"` // how the model was trained, where its file says
	Dataset   string             `json:"dataset"`
	Examples  int                `json:"examples"`
	Accuracy  float64            `json:"accuracy"`
	PerClass  map[string]float64 `json:"per_class"`
	Confusion [][]int            `json:"confusion"` // [true][predicted]
}

func runEval(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	apply := common(fs, e)
	model := fs.String("model", "", "model file; required")
	name := fs.String("data", "", "dataset (default: the model's own)")
	dir := fs.String("data-dir", "", "dataset folder")
	lim := fs.Int("limit", 0, "evaluate only the first N test examples")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return usagef("--model is required")
	}
	if err := apply(); err != nil {
		return err
	}
	m, meta, err := nn.Load(*model, e.device)
	if err != nil {
		return err
	}
	defer m.Free()
	rec, hasRecipe, err := train.RecipeOf(meta)
	if err != nil {
		return fmt.Errorf("%s: %w", *model, err)
	}
	if *name == "" {
		*name = m.Spec.Dataset
	}
	test, err := data.Load(*name, *dir, false)
	if err != nil {
		return err
	}
	test = test.First(*lim)
	pred, err := train.Predict(ctx, m, test)
	if err != nil {
		return err
	}
	k := len(m.Spec.Classes)
	conf := make([][]int, k)
	for i := range conf {
		conf[i] = make([]int, k)
	}
	hits := 0
	for i, p := range pred {
		y := test.Labels[i]
		if int(y) < k && int(p) < k {
			conf[y][p]++
		}
		if p == y {
			hits++
		}
	}
	r := evalResult{Model: *model, Dataset: test.Name, Examples: test.Len(), Accuracy: float64(hits) / float64(len(pred)), PerClass: map[string]float64{}, Confusion: conf}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s on %s test (%d examples): accuracy %.4f\n", *model, test.Name, test.Len(), r.Accuracy)
	if hasRecipe {
		r.Recipe = &rec
		fmt.Fprintf(&sb, "  trained by %s\n", rec)
	}
	for c := range k {
		n := 0
		for _, v := range conf[c] {
			n += v
		}
		if n > 0 {
			r.PerClass[m.Spec.Classes[c]] = float64(conf[c][c]) / float64(n)
			fmt.Fprintf(&sb, "  %-14s %.4f\n", m.Spec.Classes[c], r.PerClass[m.Spec.Classes[c]])
		}
	}
	return e.emit(r, sb.String())
}

func runInfo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	apply := common(fs, e)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	info := map[string]any{"device": e.device.String(), "cuda_devices": torch.CUDADeviceCount(), "threads": torch.NumThreads(), "architectures": nn.Architectures()}
	return e.emit(info, fmt.Sprintf("device %v (CUDA devices: %d), %d threads\narchitectures: %s\n",
		e.device, torch.CUDADeviceCount(), torch.NumThreads(), strings.Join(nn.Architectures(), ", ")))
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
