package train_test

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// A recipe's compact form reads what it says, fills the rest from its
// optimizer's customary values, and round-trips through String and JSON.
func TestRecipeParse(t *testing.T) {
	def := train.DefaultRecipe()
	adamw := train.RecipeFor(train.OptAdamW)
	tests := []struct {
		in   string
		want train.Recipe
	}{
		{"", def},
		{"sgd+nesterov", def},
		{"adamw", adamw},
		{"adamw,lr=0.001,sched=constant,aug=none,ls=0.1,bs=64,epochs=3,share=0.5",
			train.Recipe{Optimizer: "adamw", LR: 0.001, Schedule: "constant", BatchSize: 64, Epochs: 3, WeightDecay: 0.01,
				Augment: "none", LabelSmoothing: 0.1, Labels: "hard", Share: 0.5}},
		{"opt=sgd, mom=0, lr=0.1, aug=crop, labels=soft, dropout=0.3, wd=0",
			train.Recipe{Optimizer: "sgd", LR: 0.1, Schedule: "cosine", BatchSize: 128, Epochs: 10,
				Augment: "crop", Labels: "soft", Share: 1, Dropout: 0.3}},
		{"adam,aug=noise,sched=step", train.Recipe{Optimizer: "adam", LR: 0.001, Schedule: "step", BatchSize: 128, Epochs: 10,
			Augment: "noise", Labels: "hard", Share: 1}},
	}
	for _, tc := range tests {
		got, err := train.ParseRecipe(tc.in)
		if err != nil {
			t.Errorf("ParseRecipe(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseRecipe(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		back, err := train.ParseRecipe(got.String())
		if err != nil || back != got {
			t.Errorf("%q → %q → %+v, %v; want the same recipe", tc.in, got.String(), back, err)
		}
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON train.Recipe
		if err := json.Unmarshal(b, &fromJSON); err != nil || fromJSON != got {
			t.Errorf("%s → %+v, %v; want %+v", b, fromJSON, err, got)
		}
	}
	if def != train.Defaults(10).Recipe() || def.String() != "sgd+nesterov,lr=0.05,mom=0.9,sched=cosine,bs=128,epochs=10,wd=0.0005,aug=crop+flip,labels=hard,share=1" {
		t.Errorf("the default recipe is %s", def)
	}
	// JSON: a string, or an object whose missing fields come from its optimizer.
	var r train.Recipe
	if err := json.Unmarshal([]byte(`"adam,epochs=2"`), &r); err != nil || r.Optimizer != "adam" || r.Epochs != 2 || r.LR != 0.001 {
		t.Errorf(`JSON string: %+v, %v`, r, err)
	}
	if err := json.Unmarshal([]byte(`{"optimizer":"adamw","epochs":4}`), &r); err != nil || r.WeightDecay != 0.01 || r.Epochs != 4 || r.Augment != "crop+flip" {
		t.Errorf(`JSON object: %+v, %v`, r, err)
	}
	// A *Recipe is a flag.Value.
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fr := train.DefaultRecipe()
	fs.Var(&fr, "recipe", "")
	if err := fs.Parse([]string{"--recipe", "adam,bs=32"}); err != nil || fr.BatchSize != 32 || fr.Optimizer != "adam" {
		t.Errorf("flag: %+v, %v", fr, err)
	}
}

func TestRecipeParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"rmsprop":                     "optimizer",
		"adam,lr=-1":                  "lr",
		"adam,lr=fast":                "not a number",
		"sgd,sched=linear":            "schedule",
		"sgd,bs=0":                    "batch size",
		"sgd,epochs=0":                "epochs",
		"sgd,aug=mixup":               "augmentation",
		"sgd,ls=1":                    "label smoothing",
		"sgd,labels=fuzzy":            "labels",
		"sgd,share=0":                 "share",
		"sgd,share=1.5":               "share",
		"sgd,dropout=1":               "dropout",
		"sgd,mom=1":                   "momentum",
		"adam,mom=0.9":                "momentum",
		"sgd,wd=-0.1":                 "weight decay",
		"sgd,lr=0.1,lr=0.2":           "twice",
		"sgd,adam":                    "key=value",
		"sgd,speed=3":                 "unknown key",
		"sgd,lr=NaN":                  "lr",
		"adamw,sched=constant,bs=1.5": "not a number",
	} {
		_, err := train.ParseRecipe(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRecipe(%q) = %v, want an error about %s", in, err, want)
		}
	}
	var r train.Recipe
	if err := json.Unmarshal([]byte(`{"optimizer":"adam","share":2}`), &r); err == nil {
		t.Error("JSON with share 2 accepted")
	}
}

// Apply and Config.Recipe are inverses on the recipe's fields, and leave
// the rest of a Config alone.
func TestRecipeApply(t *testing.T) {
	for _, r := range train.SampleRecipes(12, 5) {
		c := r.Apply(train.Config{Seed: 42, Stage: "x"})
		if c.Seed != 42 || c.Stage != "x" {
			t.Errorf("Apply changed the seed or stage: %+v", c)
		}
		if got := c.Recipe(); got != r {
			t.Errorf("Apply(%s).Recipe() = %s", r, got)
		}
	}
	// A Config of the old kind: Augment alone means crops and flips, Adam's
	// momentum counts for nothing.
	old := train.Defaults(3)
	old.Optimizer = "adam"
	if got := old.Recipe(); got.Augment != train.AugCropFlip || got.Momentum != 0 || got.Validate() != nil {
		t.Errorf("Defaults with adam reads as %s (%v)", got, got.Validate())
	}
}

// SampleRecipes is reproducible, valid, and diverse: each optimizer,
// schedule and augmentation appears as evenly as n allows, and other
// fields vary too.
func TestSampleRecipes(t *testing.T) {
	a, b := train.SampleRecipes(12, 7), train.SampleRecipes(12, 7)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed drew different recipes")
	}
	if reflect.DeepEqual(a, train.SampleRecipes(12, 8)) {
		t.Error("another seed drew the same recipes")
	}
	count := func(field func(train.Recipe) string) map[string]int {
		c := map[string]int{}
		for _, r := range a {
			c[field(r)]++
		}
		return c
	}
	for name, tc := range map[string]struct {
		field  func(train.Recipe) string
		values []string
	}{
		"optimizer":    {func(r train.Recipe) string { return r.Optimizer }, train.Optimizers()},
		"schedule":     {func(r train.Recipe) string { return r.Schedule }, train.Schedules()},
		"augmentation": {func(r train.Recipe) string { return r.Augment }, train.Augmentations()},
	} {
		c := count(tc.field)
		for _, v := range tc.values {
			if c[v] != 12/len(tc.values) {
				t.Errorf("%s %s drawn %d times in 12, want %d: %v", name, v, c[v], 12/len(tc.values), c)
			}
		}
	}
	distinct := map[string]bool{}
	lrs, batches, labels, shares := map[float64]bool{}, map[int]bool{}, map[string]bool{}, map[float64]bool{}
	for _, r := range a {
		if err := r.Validate(); err != nil {
			t.Errorf("sampled an invalid recipe %s: %v", r, err)
		}
		if p, err := train.ParseRecipe(r.String()); err != nil || p != r {
			t.Errorf("sampled recipe %s does not round-trip: %+v, %v", r, p, err)
		}
		distinct[r.String()] = true
		lrs[r.LR], batches[r.BatchSize], labels[r.Labels], shares[r.Share] = true, true, true, true
	}
	if len(distinct) != 12 || len(lrs) < 8 || len(batches) < 3 || len(labels) < 2 || len(shares) < 2 {
		t.Errorf("12 recipes: %d distinct, %d rates, %d batch sizes, %d label kinds, %d shares", len(distinct), len(lrs), len(batches), len(labels), len(shares))
	}
	if got := train.SampleRecipes(3, 1); len(got) != 3 || got[0].Optimizer == got[1].Optimizer || got[1].Optimizer == got[2].Optimizer || got[0].Optimizer == got[2].Optimizer {
		t.Errorf("3 recipes should have 3 optimizers: %v", got)
	}
}

// Label smoothing changes the loss as PyTorch's formula says:
// (1−ε)·CE(y) + ε·mean_k(−log p_k), for class and probability targets.
func TestSmoothedCrossEntropy(t *testing.T) {
	logits := []float32{2, 0.5, -1, 0, 0, 3, 1, 1, 1}
	labels := []int64{0, 1, 2}
	const k = 3
	logp := func(i, j int) float64 {
		var z float64
		for c := range k {
			z += math.Exp(float64(logits[i*k+c]))
		}
		return float64(logits[i*k+j]) - math.Log(z)
	}
	want := func(eps float64) float64 {
		var sum float64
		for i, y := range labels {
			var uniform float64
			for c := range k {
				uniform -= logp(i, c) / k
			}
			sum += (1-eps)*-logp(i, int(y)) + eps*uniform
		}
		return sum / float64(len(labels))
	}
	for _, eps := range []float64{0, 0.1, 0.5} {
		torch.Scoped(func(s *torch.Scope) {
			x := torch.FromSlice(s, logits, 3, k)
			hard := train.SmoothedCrossEntropy(x, torch.FromSlice(s, labels, 3), eps).Item()
			soft := train.SmoothedCrossEntropy(x, torch.FromSlice(s, labels, 3).OneHot(k).To(torch.Float32, torch.CPU), eps).Item()
			if math.Abs(hard-want(eps)) > 1e-5 || math.Abs(soft-want(eps)) > 1e-5 {
				t.Errorf("ε = %v: loss %.6f (classes), %.6f (one-hot), want %.6f", eps, hard, soft, want(eps))
			}
		})
	}
	if want(0.1) == want(0) {
		t.Fatal("the formula does not depend on ε")
	}
}

// A recipe drives training: its share sets the number of steps, its
// augmentation, smoothing and optimizer change what is learned, its
// dropout lands in the model, and the checkpoint records it.
func TestTrainByRecipe(t *testing.T) {
	trainSet, testSet := fashion(t)
	small, test := trainSet.Subset(seq(512)), testSet.Subset(seq(200))
	run := func(arch, recipe string) (*train.Result, *nn.Model, map[string]string) {
		t.Helper()
		r, err := train.ParseRecipe(recipe)
		if err != nil {
			t.Fatal(err)
		}
		m := newModel(t, arch, small, 3)
		cfg := r.Apply(train.Config{Seed: 3, Test: test, Checkpoint: filepath.Join(t.TempDir(), "m.safetensors")})
		res, err := train.Train(context.Background(), m, small, cfg)
		if err != nil {
			t.Fatalf("%s: %v", recipe, err)
		}
		m2, meta, err := nn.Load(cfg.Checkpoint, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		m2.Free()
		return res, m, meta
	}
	base := "adamw,lr=0.002,sched=constant,bs=64,epochs=1,aug=none"
	full, _, meta := run("mlp", base)
	if full.Steps != 8 {
		t.Errorf("512 images in batches of 64: %d steps, want 8", full.Steps)
	}
	if want, _ := train.ParseRecipe(base); meta[train.MetaRecipe] != want.String() {
		t.Errorf("checkpoint records recipe %q, want %q", meta[train.MetaRecipe], want.String())
	}
	if full.TestAccuracy < 0.5 {
		t.Errorf("AdamW, one epoch of 512 images: test accuracy %.3f", full.TestAccuracy)
	}
	half, _, _ := run("mlp", base+",share=0.5")
	if half.Steps != 4 {
		t.Errorf("share 0.5: %d steps, want 4", half.Steps)
	}
	losses := map[string]float64{}
	for _, v := range []string{"", ",ls=0.2", ",aug=noise", ",aug=crop", ",opt=adam"} {
		recipe := base + v
		if v == ",opt=adam" {
			recipe = strings.Replace(base, "adamw", "adam", 1)
		}
		if strings.Contains(v, "aug=") {
			recipe = strings.Replace(base, ",aug=none", "", 1) + v
		}
		res, _, _ := run("mlp", recipe)
		losses[v] = res.Epochs[0].Loss
	}
	for v, l := range losses {
		if v != "" && l == losses[""] {
			t.Errorf("recipe change %q left the training loss at %v", v, l)
		}
	}
	// Smoothed targets keep the loss above the entropy floor ε·log K-ish:
	// the smoothed run's loss is higher.
	if losses[",ls=0.2"] <= losses[""] {
		t.Errorf("label smoothing 0.2 gave loss %.4f, no smoothing %.4f; want higher", losses[",ls=0.2"], losses[""])
	}
	_, m, meta := run("widecnn", base+",dropout=0.4")
	if m.Spec.Dropout != 0.4 || meta["dropout"] != "0.4" {
		t.Errorf("widecnn with dropout 0.4: spec %v, meta %q", m.Spec.Dropout, meta["dropout"])
	}
	_, m, meta = run("deepnarrow", base+",dropout=0.4")
	if m.Spec.Dropout != 0 || strings.Contains(meta[train.MetaRecipe], "dropout") {
		t.Errorf("deepnarrow has no dropout, yet spec %v, recipe %q", m.Spec.Dropout, meta[train.MetaRecipe])
	}
}

// Retraining with soft labels and a share queries the source for the share
// only, and learns from its probabilities.
func TestRetrainSoftShare(t *testing.T) {
	trainSet, testSet := fashion(t)
	small := trainSet.Subset(seq(400))
	src := newModel(t, "mlp", small, 1)
	if _, err := train.Train(context.Background(), src, small, fast(1)); err != nil {
		t.Fatal(err)
	}
	r, err := train.ParseRecipe("adam,sched=constant,bs=50,epochs=2,aug=none,labels=soft,share=0.5")
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.Apply(train.Config{Seed: 2, Test: testSet.Subset(seq(200))})
	m, der, err := train.Derive(context.Background(), train.AttackRetraining, src, small, train.DefaultOptions(train.AttackRetraining), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if der.Queries != 200 || der.Examples != 200 || der.Train.Steps != 8 {
		t.Errorf("share 0.5 of 400: %d queries, %d examples, %d steps; want 200, 200, 8", der.Queries, der.Examples, der.Train.Steps)
	}
	if der.TestAccuracy < 0.4 {
		t.Errorf("soft-label surrogate: test accuracy %.3f", der.TestAccuracy)
	}
}
