package train

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Optimizer names, as a recipe and Config.Optimizer take them.
const (
	OptSGD      = "sgd"          // SGD with momentum (Recipe.Momentum)
	OptNesterov = "sgd+nesterov" // SGD with Nesterov momentum
	OptAdam     = "adam"         // Adam, weight decay as an L2 term of the gradient
	OptAdamW    = "adamw"        // Adam with decoupled weight decay
)

// Schedule names.
const (
	SchedCosine   = "cosine"   // cosine annealing to 0 over the run
	SchedStep     = "step"     // ×0.1 at 50% and 75% of the run
	SchedConstant = "constant" // the peak rate throughout
)

// Augmentation names.
const (
	AugNone     = "none"
	AugCrop     = "crop"      // random crop of the zero-padded image
	AugCropFlip = "crop+flip" // and a horizontal flip with probability ½
	AugNoise    = "noise"     // Gaussian pixel noise of deviation NoiseStd
)

// Label kinds: what a surrogate learns from its teacher.
const (
	LabelsHard = "hard" // the teacher's argmax label
	LabelsSoft = "soft" // the teacher's probability vector (T = 1)
)

// NoiseStd is the deviation, in pixel units, of the noise augmentation.
const NoiseStd = 0.1

// Optimizers lists the optimizers a recipe may name.
func Optimizers() []string { return []string{OptSGD, OptNesterov, OptAdam, OptAdamW} }

// Schedules lists the learning-rate schedules.
func Schedules() []string { return []string{SchedCosine, SchedStep, SchedConstant} }

// Augmentations lists the augmentations.
func Augmentations() []string { return []string{AugNone, AugCrop, AugCropFlip, AugNoise} }

// LabelKinds lists what a surrogate may learn from its teacher.
func LabelKinds() []string { return []string{LabelsHard, LabelsSoft} }

// Recipe is how a model is trained, as a value: it parses from and prints
// to one compact string (ParseRecipe, String), travels as JSON, and is
// recorded in model files (MetaRecipe). Seeds are not part of a recipe:
// two models of one recipe differ by their seed.
type Recipe struct {
	Optimizer string  `json:"optimizer"`
	LR        float64 `json:"lr"` // peak learning rate
	// Momentum is SGD's (0 for Adam and AdamW, whose betas are PyTorch's).
	Momentum    float64 `json:"momentum"`
	Schedule    string  `json:"schedule"`
	BatchSize   int     `json:"batch_size"`
	Epochs      int     `json:"epochs"`
	WeightDecay float64 `json:"weight_decay"`
	Augment     string  `json:"augment"`
	// LabelSmoothing ε trains on (1−ε)·target + ε/K (PyTorch's
	// label_smoothing); 0 for none.
	LabelSmoothing float64 `json:"label_smoothing,omitempty"`
	// Labels says whether a surrogate learns its teacher's labels or its
	// probability vectors; models trained on ground truth ignore it.
	Labels string `json:"labels"`
	// Share is the fraction of the training data used, drawn at random
	// from the model's seed; in (0,1].
	Share float64 `json:"share"`
	// Dropout, when positive, replaces the rate of every dropout layer of
	// an architecture that has them; 0 keeps the architecture's own.
	Dropout float64 `json:"dropout,omitempty"`
}

// DefaultRecipe is Conferral's own recipe (Defaults): SGD with Nesterov
// momentum 0.9, lr 0.05, cosine schedule, batch 128, 10 epochs, weight
// decay 5e-4, random crops and flips, hard labels, all of the data.
func DefaultRecipe() Recipe { return Defaults(10).Recipe() }

// RecipeFor is DefaultRecipe with another optimizer and that optimizer's
// customary rate, momentum and decay: SGD lr 0.05, momentum 0.9, decay
// 5e-4; Adam lr 0.001, no decay; AdamW lr 0.001, decay 0.01 (PyTorch's
// default). ParseRecipe fills what a string leaves out from it.
func RecipeFor(optimizer string) Recipe {
	r := DefaultRecipe()
	r.Optimizer = optimizer
	switch optimizer {
	case OptAdam:
		r.LR, r.Momentum, r.WeightDecay = 0.001, 0, 0
	case OptAdamW:
		r.LR, r.Momentum, r.WeightDecay = 0.001, 0, 0.01
	}
	return r
}

// Validate reports the first value out of its range.
func (r Recipe) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !slices.Contains(Optimizers(), r.Optimizer):
		return fmt.Errorf("recipe: optimizer %q: want one of %s", r.Optimizer, strings.Join(Optimizers(), ", "))
	case !(r.LR > 0) || !finite(r.LR):
		return fmt.Errorf("recipe: lr %v is not positive", r.LR)
	case !(r.Momentum >= 0 && r.Momentum < 1):
		return fmt.Errorf("recipe: momentum %v is not in [0,1)", r.Momentum)
	case r.Momentum > 0 && (r.Optimizer == OptAdam || r.Optimizer == OptAdamW):
		return fmt.Errorf("recipe: momentum is SGD's; %s has none", r.Optimizer)
	case !slices.Contains(Schedules(), r.Schedule):
		return fmt.Errorf("recipe: schedule %q: want one of %s", r.Schedule, strings.Join(Schedules(), ", "))
	case r.BatchSize < 1:
		return fmt.Errorf("recipe: batch size %d is not positive", r.BatchSize)
	case r.Epochs < 1:
		return fmt.Errorf("recipe: epochs %d is not positive", r.Epochs)
	case !(r.WeightDecay >= 0) || !finite(r.WeightDecay):
		return fmt.Errorf("recipe: weight decay %v is negative", r.WeightDecay)
	case !slices.Contains(Augmentations(), r.Augment):
		return fmt.Errorf("recipe: augmentation %q: want one of %s", r.Augment, strings.Join(Augmentations(), ", "))
	case !(r.LabelSmoothing >= 0 && r.LabelSmoothing < 1):
		return fmt.Errorf("recipe: label smoothing %v is not in [0,1)", r.LabelSmoothing)
	case !slices.Contains(LabelKinds(), r.Labels):
		return fmt.Errorf("recipe: labels %q: want hard or soft", r.Labels)
	case !(r.Share > 0 && r.Share <= 1):
		return fmt.Errorf("recipe: share %v is not in (0,1]", r.Share)
	case !(r.Dropout >= 0 && r.Dropout < 1):
		return fmt.Errorf("recipe: dropout %v is not in [0,1)", r.Dropout)
	}
	return nil
}

// The keys of the compact form, in the order String writes them.
const (
	keyOptimizer = "opt"
	keyLR        = "lr"
	keyMomentum  = "mom"
	keySchedule  = "sched"
	keyBatch     = "bs"
	keyEpochs    = "epochs"
	keyDecay     = "wd"
	keyAugment   = "aug"
	keySmoothing = "ls"
	keyLabels    = "labels"
	keyShare     = "share"
	keyDropout   = "dropout"
)

func recipeKeys() []string {
	return []string{keyOptimizer, keyLR, keyMomentum, keySchedule, keyBatch, keyEpochs, keyDecay,
		keyAugment, keySmoothing, keyLabels, keyShare, keyDropout}
}

// String is the recipe's compact form: the optimizer, then key=value pairs
// separated by commas, every field written except a zero label smoothing
// or dropout, and momentum for Adam and AdamW (which have none):
//
//	adamw,lr=0.001,sched=constant,bs=64,epochs=3,wd=0.01,aug=none,ls=0.1,labels=hard,share=0.5
//	sgd+nesterov,lr=0.05,mom=0.9,sched=cosine,bs=128,epochs=10,wd=0.0005,aug=crop+flip,labels=hard,share=1
//
// ParseRecipe reads it back to the same value.
func (r Recipe) String() string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	var b strings.Builder
	b.WriteString(r.Optimizer)
	add := func(k, v string) { b.WriteString("," + k + "=" + v) }
	add(keyLR, f(r.LR))
	if r.Optimizer == OptSGD || r.Optimizer == OptNesterov {
		add(keyMomentum, f(r.Momentum))
	}
	add(keySchedule, r.Schedule)
	add(keyBatch, strconv.Itoa(r.BatchSize))
	add(keyEpochs, strconv.Itoa(r.Epochs))
	add(keyDecay, f(r.WeightDecay))
	add(keyAugment, r.Augment)
	if r.LabelSmoothing != 0 {
		add(keySmoothing, f(r.LabelSmoothing))
	}
	add(keyLabels, r.Labels)
	add(keyShare, f(r.Share))
	if r.Dropout != 0 {
		add(keyDropout, f(r.Dropout))
	}
	return b.String()
}

// ParseRecipe reads a recipe's compact form: comma-separated fields, the
// first of which may be a bare optimizer name (else opt=NAME; default
// sgd+nesterov), the others key=value with the keys opt, lr, mom, sched,
// bs, epochs, wd, aug, ls, labels, share and dropout. What the string leaves
// out comes from RecipeFor(optimizer): "adamw,epochs=3" is AdamW at lr
// 0.001 with decay 0.01 for 3 epochs, crops and flips, batch 128. The
// empty string is DefaultRecipe. Unknown keys, repeated keys and values out
// of range are errors.
func ParseRecipe(s string) (Recipe, error) {
	vals := map[string]string{}
	if s = strings.TrimSpace(s); s != "" {
		for i, field := range strings.Split(s, ",") {
			field = strings.TrimSpace(field)
			k, v, ok := strings.Cut(field, "=")
			if !ok {
				if i != 0 {
					return Recipe{}, fmt.Errorf("recipe %q: %q is not key=value (only the optimizer may stand alone, first)", s, field)
				}
				k, v = keyOptimizer, field
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !slices.Contains(recipeKeys(), k) {
				return Recipe{}, fmt.Errorf("recipe %q: unknown key %q (have %s)", s, k, strings.Join(recipeKeys(), ", "))
			}
			if _, dup := vals[k]; dup {
				return Recipe{}, fmt.Errorf("recipe %q: %s given twice", s, k)
			}
			vals[k] = v
		}
	}
	opt := OptNesterov
	if v, ok := vals[keyOptimizer]; ok {
		opt = v
	}
	if !slices.Contains(Optimizers(), opt) {
		return Recipe{}, fmt.Errorf("recipe %q: optimizer %q: want one of %s", s, opt, strings.Join(Optimizers(), ", "))
	}
	r := RecipeFor(opt)
	floats := map[string]*float64{keyLR: &r.LR, keyMomentum: &r.Momentum, keyDecay: &r.WeightDecay,
		keySmoothing: &r.LabelSmoothing, keyShare: &r.Share, keyDropout: &r.Dropout}
	ints := map[string]*int{keyBatch: &r.BatchSize, keyEpochs: &r.Epochs}
	strs := map[string]*string{keySchedule: &r.Schedule, keyAugment: &r.Augment, keyLabels: &r.Labels}
	for k, v := range vals {
		var err error
		switch {
		case floats[k] != nil:
			*floats[k], err = strconv.ParseFloat(v, 64)
		case ints[k] != nil:
			*ints[k], err = strconv.Atoi(v)
		case strs[k] != nil:
			*strs[k] = v
		}
		if err != nil {
			return Recipe{}, fmt.Errorf("recipe %q: %s=%q is not a number", s, k, v)
		}
	}
	if err := r.Validate(); err != nil {
		return Recipe{}, fmt.Errorf("%w (in %q)", err, s)
	}
	return r, nil
}

// Set parses s into r, so that a *Recipe is a flag.Value.
func (r *Recipe) Set(s string) error {
	p, err := ParseRecipe(s)
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// UnmarshalJSON accepts the compact string or an object of the fields;
// fields an object leaves out come from RecipeFor(its optimizer).
func (r *Recipe) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return r.Set(s)
	}
	var probe struct {
		Optimizer string `json:"optimizer"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return fmt.Errorf("recipe: %w", err)
	}
	type plain Recipe // without this method
	p := plain(RecipeFor(cmp.Or(probe.Optimizer, OptNesterov)))
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("recipe: %w", err)
	}
	if err := Recipe(p).Validate(); err != nil {
		return err
	}
	*r = Recipe(p)
	return nil
}

// Apply returns c trained by r: r's hyper-parameters replace c's, and what
// a recipe does not say (seed, labels, test set, checkpoint, progress)
// stays c's.
func (r Recipe) Apply(c Config) Config {
	c.Optimizer, c.LR, c.Momentum, c.Schedule = r.Optimizer, r.LR, r.Momentum, r.Schedule
	c.BatchSize, c.Epochs, c.WeightDecay = r.BatchSize, r.Epochs, r.WeightDecay
	c.Augmentation, c.Augment = r.Augment, r.Augment != AugNone
	c.LabelSmoothing, c.SoftLabels, c.Share, c.Dropout = r.LabelSmoothing, r.Labels == LabelsSoft, r.Share, r.Dropout
	return c
}

// Recipe is the recipe c trains by (Augment without Augmentation reads as
// crops and flips, a zero Share as all of the data, and Momentum counts
// only for SGD).
func (c Config) Recipe() Recipe {
	r := Recipe{Optimizer: c.Optimizer, LR: c.LR, Momentum: c.Momentum, Schedule: c.Schedule,
		BatchSize: c.BatchSize, Epochs: c.Epochs, WeightDecay: c.WeightDecay, Augment: c.augmentation(),
		LabelSmoothing: c.LabelSmoothing, Labels: LabelsHard, Share: c.Share, Dropout: c.Dropout}
	if c.SoftLabels {
		r.Labels = LabelsSoft
	}
	if r.Share == 0 {
		r.Share = 1
	}
	if r.Optimizer == "" {
		r.Optimizer = OptNesterov // what an empty optimizer has always trained with
	}
	if r.Optimizer == OptAdam || r.Optimizer == OptAdamW {
		r.Momentum = 0 // Adam's betas are its own; SGD's momentum plays no part
	}
	if r.Schedule == "" {
		r.Schedule = SchedCosine
	}
	return r
}

// MetaRecipe is the model-file metadata key of the recipe's compact form.
const MetaRecipe = "train.recipe"

// RecipeOf reads the recipe recorded in a model file's metadata; ok is
// false when there is none (models trained before recipes were recorded,
// imported models).
func RecipeOf(meta map[string]string) (r Recipe, ok bool, err error) {
	s, ok := meta[MetaRecipe]
	if !ok {
		return Recipe{}, false, nil
	}
	r, err = ParseRecipe(s)
	return r, true, err
}

// SampleRecipe draws one recipe at random from r: every optimizer,
// schedule and augmentation with equal chance; the learning rate
// log-uniform around the optimizer's customary one (SGD 0.01–0.1, Adam and
// AdamW 3e-4–3e-3); batch 32 to 256; 3 to 12 epochs; the optimizer's
// customary decay or none (AdamW: 0.01 or 0.05); label smoothing 0 half the
// time, else 0.05–0.2; soft labels a third of the time; all of the data
// half the time, else a half or three quarters; dropout the architecture's
// own half the time, else 0.1–0.5.
func SampleRecipe(rng *rand.Rand) Recipe {
	return sampleWith(rng, Optimizers()[rng.IntN(4)], Schedules()[rng.IntN(3)], Augmentations()[rng.IntN(4)])
}

func sampleWith(rng *rand.Rand, opt, sched, aug string) Recipe {
	pick := func(vs ...float64) float64 { return vs[rng.IntN(len(vs))] }
	logUniform := func(lo, hi float64) float64 {
		v := math.Exp(math.Log(lo) + rng.Float64()*(math.Log(hi)-math.Log(lo)))
		return roundSig(v, 2)
	}
	r := RecipeFor(opt)
	r.Schedule, r.Augment = sched, aug
	switch opt {
	case OptSGD, OptNesterov:
		r.LR = logUniform(0.01, 0.1)
		r.WeightDecay = pick(0, 1e-4, 5e-4)
	case OptAdam:
		r.LR = logUniform(3e-4, 3e-3)
		r.WeightDecay = pick(0, 0, 1e-4)
	case OptAdamW:
		r.LR = logUniform(3e-4, 3e-3)
		r.WeightDecay = pick(0.01, 0.05)
	}
	r.BatchSize = int(pick(32, 64, 128, 256))
	r.Epochs = 3 + rng.IntN(10)
	if rng.IntN(2) == 1 {
		r.LabelSmoothing = pick(0.05, 0.1, 0.2)
	}
	if rng.IntN(3) == 0 {
		r.Labels = LabelsSoft
	}
	if rng.IntN(2) == 1 {
		r.Share = pick(0.5, 0.75)
	}
	if rng.IntN(2) == 1 {
		r.Dropout = pick(0.1, 0.3, 0.5)
	}
	return r
}

// SampleRecipes draws n recipes from seed, reproducibly (the same n and
// seed give the same recipes), and stratified so that a
// set is diverse by construction: the optimizers, schedules and
// augmentations each go round in shuffled order, so every value of each
// appears once n reaches their number, and no two counts differ by more
// than one. The rest is drawn as SampleRecipe does.
func SampleRecipes(n int, seed uint64) []Recipe {
	rng := rand.New(rand.NewPCG(seed, 0x7ec1be))
	strata := func(vs []string) []string {
		var out []string
		for len(out) < n {
			p := slices.Clone(vs)
			rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
			out = append(out, p...)
		}
		return out[:n]
	}
	opts, scheds, augs := strata(Optimizers()), strata(Schedules()), strata(Augmentations())
	out := make([]Recipe, n)
	for i := range out {
		out[i] = sampleWith(rng, opts[i], scheds[i], augs[i])
	}
	return out
}

// roundSig rounds v to d significant digits, so that sampled rates print
// short and parse back exactly.
func roundSig(v float64, d int) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', d, 64), 64)
	return r
}
