package train

// Combined removal attacks, beyond the paper: an adversary chains several
// attacks, e.g. distillation, then fine-tuning, then pruning, then
// quantization, each step working on the model the previous one left.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/nn"
)

// Steps of a combined attack, as Options.Steps names them.
const (
	StepDistill  = "distill"  // a new model on the source's soft labels at T′ (Jagielski)
	StepRetrain  = "retrain"  // a new model on the source's hard labels (Retraining)
	StepFineTune = "finetune" // every layer of the current model, on the source's labels, at a fifth of the learning rate
	StepPrune    = "prune"    // magnitude pruning of the current model (Options.Fraction); later fine-tuning keeps the zeros
	StepQuantize = "quantize" // Options.Bits-bit weight quantization of the current model
)

// CombinedSteps lists the steps a combined attack may chain.
func CombinedSteps() []string {
	return []string{StepDistill, StepRetrain, StepFineTune, StepPrune, StepQuantize}
}

// DefaultSteps is the combined attack of issue 17: distillation, then
// fine-tuning, then pruning, then quantization.
const DefaultSteps = "distill,finetune,prune,quantize"

// ParseSteps reads a combined attack's comma-separated steps. An unknown
// step, an empty spec, or a step that trains a new model (distill,
// retrain) anywhere but first is an error that names the steps there are:
// callers check it before anything trains.
func ParseSteps(spec string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(spec, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(CombinedSteps(), s) {
			return nil, fmt.Errorf("combined attack %q: unknown step %q (want a comma-separated list of %s)", spec, s, strings.Join(CombinedSteps(), ", "))
		}
		if (s == StepDistill || s == StepRetrain) && len(out) > 0 {
			return nil, fmt.Errorf("combined attack %q: %s trains a new model from the source, so it can only be the first step", spec, s)
		}
		out = append(out, s)
	}
	return out, nil
}

// deriveCombined runs the steps of j.o.Steps in order: from a new model of
// j.o.Arch when the first step is distill or retrain, from a copy of the
// source otherwise. Training steps use j.cfg (fine-tuning at a fifth of its
// learning rate: the paper's fine-tuning rate 0.01 against the project's
// 0.05); every step sees the adversary's data j.d. Queries add up over the
// steps.
func deriveCombined(ctx context.Context, j derivation) (Deployed, *Derivation, error) {
	steps, err := ParseSteps(j.o.Steps)
	if err != nil {
		return nil, nil, fmt.Errorf("derive %s: %w", j.name, err)
	}
	der := &Derivation{Attack: AttackCombined}
	var m *nn.Model
	var masks []paramMask
	defer func() { freeMasks(masks) }()
	base := cmp.Or(j.cfg.Stage, "combined "+j.o.Steps)
	for i, step := range steps {
		c := j.cfg
		c.Stage = fmt.Sprintf("%s step %d/%d (%s)", base, i+1, len(steps), step)
		sd, err := combinedStep(ctx, j, step, &m, &masks, c)
		if sd != nil {
			der.Steps = append(der.Steps, sd)
			der.Queries += sd.Queries
			der.Examples = max(der.Examples, sd.Examples)
			if sd.Train != nil {
				der.Train = sd.Train
			}
			der.Layers = append(der.Layers, sd.Layers...)
		}
		if err != nil {
			err = fmt.Errorf("combined step %d (%s): %w", i+1, step, err)
			if m == nil {
				return nil, der, err
			}
			return m, der, err
		}
	}
	return m, der, nil
}

// combinedStep runs one step on *m (a new model or a copy of the source
// when *m is nil) and records pruning's masks in *masks.
func combinedStep(ctx context.Context, j derivation, step string, m **nn.Model, masks *[]paramMask, c Config) (*Derivation, error) {
	var err error
	switch step {
	case StepDistill:
		if *m, err = newSurrogate(j.source, j.o.Arch, j.d, j.cfg.Seed); err != nil {
			return nil, err
		}
		return Jagielski(ctx, j.source, *m, j.d, j.o.Temperature, c)
	case StepRetrain:
		if *m, err = newSurrogate(j.source, j.o.Arch, j.d, j.cfg.Seed); err != nil {
			return nil, err
		}
		res, err := Retrain(ctx, j.source, *m, j.d, c)
		return &Derivation{Attack: AttackRetraining, Queries: int64(j.d.Len()), Examples: j.d.Len(), Train: res}, err
	}
	if *m == nil {
		if *m, err = j.source.Clone(j.source.Device()); err != nil {
			return nil, fmt.Errorf("copying the source: %w", err)
		}
	}
	switch step {
	case StepFineTune:
		c.LR /= 5
		return fitOnSource(ctx, j.source, *m, j.d, AttackFTAL, c.Stage, c, fitOpts{masks: *masks})
	case StepPrune:
		st, err := Prune(*m, j.o.Fraction)
		if err != nil {
			return nil, err
		}
		freeMasks(*masks)
		*masks, err = zeroMasks(weights(*m))
		return &Derivation{Attack: AttackPrune, Layers: st}, err
	case StepQuantize:
		st, err := Quantize(*m, j.o.Bits)
		return &Derivation{Attack: AttackQuantize, Layers: st}, err
	}
	return nil, fmt.Errorf("unknown step %q", step) // ParseSteps let it through
}
