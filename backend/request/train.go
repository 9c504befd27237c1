package request

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// MaxEpochs bounds a request's epochs: a typo should not occupy a device
// for a month.
const MaxEpochs = 1000

// MaxMembers bounds a derive request's ensemble members.
const MaxMembers = 32

// MaxAdvSteps bounds a derive request's adversarial steps (the default is
// 100 for pgd, 7 for pgd-at and trades).
const MaxAdvSteps = 1000

// training is the training part of a train or a derive request: a recipe
// and the single fields that override it.
type training struct {
	recipe                string
	epochs, batch         int
	optimizer, schedule   string
	lr                    float64
	momentum, weightDecay *float64
	noAugment             bool
}

// over is base, or the request's recipe when it names one, with the
// request's single fields over it, as the CLI's flags override --recipe:
// another optimizer brings its customary rate, momentum and decay (unless
// given), and noAugment turns augmentation off. A recipe that does not
// parse, or that the fields put out of range, is an error.
func (t training) over(base train.Recipe) (train.Recipe, error) {
	switch {
	case t.optimizer != "" && !slices.Contains(train.Optimizers(), t.optimizer):
		return base, fmt.Errorf("optimizer %q: want one of %s", t.optimizer, strings.Join(train.Optimizers(), ", "))
	case t.lr < 0 || t.batch < 0:
		return base, errors.New("lr and batch_size must not be negative")
	case t.epochs < 0 || t.epochs > MaxEpochs:
		return base, fmt.Errorf("epochs %d: want 0 to %d", t.epochs, MaxEpochs)
	}
	r := base
	if t.recipe != "" {
		var err error
		if r, err = train.ParseRecipe(t.recipe); err != nil {
			return base, err
		}
	}
	if t.optimizer != "" && t.optimizer != r.Optimizer {
		o := train.RecipeFor(t.optimizer)
		r.Optimizer, r.LR, r.Momentum, r.WeightDecay = o.Optimizer, o.LR, o.Momentum, o.WeightDecay
	}
	if t.epochs > 0 {
		r.Epochs = t.epochs
	}
	if t.batch > 0 {
		r.BatchSize = t.batch
	}
	if t.lr > 0 {
		r.LR = t.lr
	}
	if t.momentum != nil {
		r.Momentum = *t.momentum
	}
	if t.weightDecay != nil {
		r.WeightDecay = *t.weightDecay
	}
	if t.schedule != "" {
		r.Schedule = t.schedule
	}
	if t.noAugment {
		r.Augment = train.AugNone
	}
	if err := r.Validate(); err != nil {
		return base, err
	}
	if r.Epochs > MaxEpochs {
		return base, fmt.Errorf("recipe: epochs %d: want at most %d", r.Epochs, MaxEpochs)
	}
	return r, nil
}

// Train is the training a train request asks for: its recipe (Conferral's
// own, train.DefaultRecipe, when it names none) with the request's single
// fields over it, from its seed (default 1).
func Train(a shared.TrainArgs) (train.Config, error) {
	r, err := training{recipe: a.Recipe, epochs: a.Epochs, batch: a.BatchSize, optimizer: a.Optimizer, schedule: a.Schedule,
		lr: a.LR, momentum: a.Momentum, weightDecay: a.WeightDecay, noAugment: a.NoAugment}.over(train.DefaultRecipe())
	if err != nil {
		return train.Config{}, err
	}
	if a.Teacher == "" {
		r.Labels = train.LabelsHard // ground truth has no probabilities to learn
	}
	return r.Apply(train.Config{Seed: cmp.Or(a.Seed, 1)}), nil
}

// Derivation is what a derive request asks for.
type Derivation struct {
	Attack train.Attack
	// Config is the training of an attack that trains: its recipe, or the
	// attack's own (train.AttackConfig), with the request's fields over it.
	Config  train.Config
	Options train.Options
	// Examples is how many of the adversary's examples it uses (0: all).
	Examples int
}

// Derive is the derivation a derive request asks for: the attack's
// defaults (train.AttackConfig, train.DefaultOptions,
// train.DefaultExamples) with the request's settings over them. Knockoff's
// transfer set (Transfer, by default experiment.DefaultTransfer of the
// source's dataset) is the caller's to load.
func Derive(a shared.DeriveArgs) (Derivation, error) {
	atk, err := train.ParseAttack(a.Attack)
	if err != nil {
		return Derivation{}, err
	}
	if err := checkDerive(a); err != nil {
		return Derivation{}, err
	}
	base := train.AttackConfig(a.Attack)
	if a.Recipe != "" && !atk.Trains {
		return Derivation{}, fmt.Errorf("recipe: %s trains nothing and takes no recipe", a.Attack)
	}
	r, err := training{recipe: a.Recipe, epochs: a.Epochs, batch: a.BatchSize, optimizer: a.Optimizer, schedule: a.Schedule,
		lr: a.LR, momentum: a.Momentum, weightDecay: a.WeightDecay, noAugment: a.NoAugment}.over(base.Recipe())
	if err != nil {
		return Derivation{}, err
	}
	d := Derivation{Attack: atk, Config: r.Apply(train.Config{Seed: cmp.Or(a.Seed, base.Seed)}),
		Options: train.DefaultOptions(a.Attack), Examples: train.DefaultExamples(a.Attack)}
	o := &d.Options
	o.Arch = a.Arch
	if a.Temperature > 0 {
		o.Temperature = a.Temperature
	}
	if a.Members > 0 {
		o.Members = a.Members
	}
	if a.Lambda != nil { // zero: no noise
		o.Lambda = *a.Lambda
	}
	if a.Rho != nil { // zero: no true labels
		o.Rho = *a.Rho
	}
	if a.Fraction > 0 {
		o.Fraction = a.Fraction
	}
	if a.Bits > 0 {
		o.Bits = a.Bits
	}
	if a.Examples != nil { // zero: all
		d.Examples = *a.Examples
	}
	switch a.Attack {
	case train.AttackFGM, train.AttackPGD:
		advOver(a, &o.Adv.Eps, &o.Adv.Alpha, &o.Adv.Steps)
	case train.AttackPGDAT, train.AttackTRADES:
		advOver(a, &o.Robust.Eps, &o.Robust.Alpha, &o.Robust.Steps)
		if a.Beta != nil { // zero: no robustness term
			o.Robust.Beta = *a.Beta
		}
	case train.AttackCombined:
		if a.Steps != "" {
			o.Steps = a.Steps
		}
	}
	return d, nil
}

// advOver sets an attack's adversarial radius, step and steps to the
// request's where it gives them (adversarial fine-tuning's and the inner
// maximisation of adversarial training alike).
func advOver(a shared.DeriveArgs, eps, alpha *float64, steps *int) {
	if a.AdvEps > 0 {
		*eps = a.AdvEps
	}
	if a.AdvAlpha > 0 {
		*alpha = a.AdvAlpha
	}
	if a.AdvSteps > 0 {
		*steps = a.AdvSteps
	}
}

// uses are the derive request's settings that only some attacks take, by
// the attacks that take them: checkDerive refuses one given for another.
var uses = []struct {
	field   string
	given   func(a shared.DeriveArgs) bool
	attacks []string
}{
	{"adv_eps", func(a shared.DeriveArgs) bool { return a.AdvEps != 0 }, []string{train.AttackFGM, train.AttackPGD, train.AttackPGDAT, train.AttackTRADES}},
	{"adv_alpha", func(a shared.DeriveArgs) bool { return a.AdvAlpha != 0 }, []string{train.AttackPGD, train.AttackPGDAT, train.AttackTRADES}},
	{"adv_steps", func(a shared.DeriveArgs) bool { return a.AdvSteps != 0 }, []string{train.AttackPGD, train.AttackPGDAT, train.AttackTRADES}},
	{"beta", func(a shared.DeriveArgs) bool { return a.Beta != nil }, []string{train.AttackTRADES}},
	{"steps", func(a shared.DeriveArgs) bool { return a.Steps != "" }, []string{train.AttackCombined}},
}

// checkDerive refuses a derive request's attack parameters out of range
// (zero, or nil, takes the attack's default).
func checkDerive(a shared.DeriveArgs) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !(a.Fraction >= 0 && a.Fraction <= 1):
		return fmt.Errorf("fraction %v: want a fraction of the weights in [0,1]", a.Fraction)
	case a.Bits != 0 && (a.Bits < 2 || a.Bits > 16):
		return fmt.Errorf("bits %d: want 2 to 16 bits per weight", a.Bits)
	case a.Rho != nil && !(*a.Rho >= 0 && *a.Rho <= 1):
		return fmt.Errorf("rho %v: want a fraction of true labels in [0,1]", *a.Rho)
	case a.Lambda != nil && (!(*a.Lambda >= 0) || !finite(*a.Lambda)):
		return fmt.Errorf("lambda %v: want a non-negative number", *a.Lambda)
	case !(a.Temperature >= 0) || !finite(a.Temperature):
		return fmt.Errorf("temperature %v: want a non-negative number", a.Temperature)
	case a.Members < 0 || a.Members > MaxMembers:
		return fmt.Errorf("members %d: want 0 (the default) to %d", a.Members, MaxMembers)
	case a.Examples != nil && *a.Examples < 0:
		return fmt.Errorf("examples %d: want 0 (all) or more", *a.Examples)
	}
	for _, u := range uses {
		if u.given(a) && !slices.Contains(u.attacks, a.Attack) {
			return fmt.Errorf("%s: %s does not use it (only %s)", u.field, a.Attack, strings.Join(u.attacks, ", "))
		}
	}
	robust := a.Attack == train.AttackPGDAT || a.Attack == train.AttackTRADES
	switch {
	case !(a.AdvEps >= 0) || !finite(a.AdvEps):
		return fmt.Errorf("adv_eps %v: want a positive radius", a.AdvEps)
	case robust && a.AdvEps > 1:
		return fmt.Errorf("adv_eps %v: want an L∞ radius in (0,1] for %s", a.AdvEps, a.Attack)
	case !(a.AdvAlpha >= 0) || !finite(a.AdvAlpha):
		return fmt.Errorf("adv_alpha %v: want a positive step", a.AdvAlpha)
	case a.AdvSteps < 0 || a.AdvSteps > MaxAdvSteps:
		return fmt.Errorf("adv_steps %d: want 0 (the default) to %d", a.AdvSteps, MaxAdvSteps)
	case a.Beta != nil && (!(*a.Beta >= 0) || !finite(*a.Beta)):
		return fmt.Errorf("beta %v: want a non-negative weight", *a.Beta)
	}
	if a.Steps != "" {
		if _, err := train.ParseSteps(a.Steps); err != nil {
			return fmt.Errorf("steps: %w", err)
		}
	}
	return nil
}
