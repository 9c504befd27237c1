package experiment

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/train"
)

// RobustnessPlan is the plan of the robustness study, the paper's Tables 4
// and 5 at CPU scale: which removal attacks run, with which settings, and
// how their rows are judged. `conferral experiment robustness` and the
// server's experiment job (study "robustness") both run it.
type RobustnessPlan struct {
	// Epochs trains the attacks that train a new model; FineTuneEpochs
	// those that continue the source (fine-tuning, adversarial training).
	Epochs, FineTuneEpochs int
	// FineTuneExamples is how many of the adversary's examples fine-tuning
	// and adversarial training see (§6.3: 10,000).
	FineTuneExamples int
	// Lambdas are the Noise attack's weights λ and Rhos the True Labels
	// fractions ρ, one row each (Table 4).
	Lambdas, Rhos []float64
	Seed          int64
	// Transfer is Knockoff's transfer set (see [AsTransfer]); the plan
	// needs one.
	Transfer *data.Dataset
	// Theta is Algorithm 1's threshold; Margin the accuracy loss within
	// which §6.3 demands that the fingerprint still recognises a model.
	Theta, Margin float64
}

// DefaultRobustnessPlan is the study as `conferral experiment robustness`
// runs it by default, without its transfer set.
func DefaultRobustnessPlan() RobustnessPlan {
	return RobustnessPlan{
		Epochs: 2, FineTuneEpochs: 1, FineTuneExamples: 10000,
		Lambdas: []float64{0.05, 0.1, 0.2, 0.3, 0.4, 0.5},
		Rhos:    []float64{0.1, 0.2, 0.3, 0.4},
		Seed:    fingerprint.DefaultConfig().Seed,
		Theta:   fingerprint.DefaultThreshold, Margin: 0.05,
	}
}

// Attacks lists the rows of the paper's Tables 4 and 5, then the attacks
// beyond the paper, as they run on the adversary's half.
func (p RobustnessPlan) Attacks(adversary *data.Dataset) ([]Attack, error) {
	if p.Transfer == nil {
		return nil, errors.New("robustness: Knockoff needs a transfer set")
	}
	cfg := func(name string) train.Config {
		c := train.AttackConfig(name)
		c.Epochs, c.Seed = p.Epochs, p.Seed
		if train.FineTuning(name) {
			c.Epochs = p.FineTuneEpochs
		}
		return c
	}
	row := func(group, name, param string, mod func(*train.Options)) Attack {
		o := train.DefaultOptions(name)
		if mod != nil {
			mod(&o)
		}
		return Attack{Group: group, Name: name, Param: param, Options: o, Config: cfg(name)}
	}
	small := adversary.First(p.FineTuneExamples)
	fine := func(a Attack) Attack { a.Data = small; return a }
	def := train.DefaultOptions("")
	out := []Attack{
		row("Model extraction", train.AttackRetraining, "T = 1", nil),
		row("Model extraction", train.AttackJagielski, fmt.Sprintf("T′ = %g", def.Temperature), nil),
		row("Model extraction", train.AttackKnockoff, "transfer "+p.Transfer.Name, func(o *train.Options) { o.Transfer = p.Transfer }),
		row("Model extraction", train.AttackPapernot, fmt.Sprintf("%d seeds, %d rounds", def.Papernot.Seeds, def.Papernot.Rounds), nil),
		fine(row("Fine-tuning", train.AttackFTLL, "", nil)),
		fine(row("Fine-tuning", train.AttackFTAL, "", nil)),
		fine(row("Fine-tuning", train.AttackRTLL, "", nil)),
		fine(row("Fine-tuning", train.AttackRTAL, "", nil)),
		fine(row("Adversarial training", train.AttackFGM, fmt.Sprintf("ε = %g", train.AdvDefaults(train.AttackFGM).Eps), nil)),
		fine(row("Adversarial training", train.AttackPGD, fmt.Sprintf("ε = %g (L2)", train.AdvDefaults(train.AttackPGD).Eps), nil)),
		row("Adaptive", train.AttackEnsemble, fmt.Sprintf("n = %d", def.Members), nil),
	}
	for _, l := range p.Lambdas {
		out = append(out, row("Adaptive", train.AttackNoise, fmt.Sprintf("λ = %.2f", l), func(o *train.Options) { o.Lambda = l }))
	}
	for _, r := range p.Rhos {
		out = append(out, row("Adaptive", train.AttackTrueLabels, fmt.Sprintf("ρ = %.2f", r), func(o *train.Options) { o.Rho = r }))
	}
	labelsOnly := row("Beyond the paper", train.AttackRetraining, "T = 1", nil)
	labelsOnly.LabelsOnly = true
	out = append(out,
		row("Beyond the paper", train.AttackPrune, fmt.Sprintf("%.0f%% of weights", 100*def.Fraction), nil),
		row("Beyond the paper", train.AttackQuantize, fmt.Sprintf("%d bits", def.Bits), nil),
		labelsOnly,
	)
	return out, nil
}

// Study is the plan's study of the adversary's half: its attacks, judged
// at Theta with retention demanded within Margin. command is what the
// report says reproduces it.
func (p RobustnessPlan) Study(adversary *data.Dataset, command string) (*RobustnessStudy, error) {
	attacks, err := p.Attacks(adversary)
	if err != nil {
		return nil, err
	}
	return &RobustnessStudy{Attacks: attacks, Theta: p.Theta, Margin: p.Margin, Command: command}, nil
}

// StudyFingerprint extracts the fingerprint a study judges with when none
// is given: the fleet's main setting (its training models, C-BIM as cfg
// says).
func StudyFingerprint(ctx context.Context, f *Fleet, ds Data, cfg fingerprint.Config) (*fingerprint.Fingerprint, error) {
	return f.Extract(ctx, ds, Setting{Name: "main", Eps: cfg.CBIM.Eps, Loss: cfg.CBIM.Loss, Best: cfg.CBIM.Best}, cfg)
}

// DefaultTransfer names Knockoff's transfer set for a source that
// classifies dataset when none is named: MNIST for Fashion-MNIST; other
// datasets have no natural one.
func DefaultTransfer(dataset string) (string, error) {
	if data.CanonicalName(dataset) != "fashion-mnist" {
		return "", fmt.Errorf("knockoff: a transfer set is required for a %s source", dataset)
	}
	return "mnist", nil
}

// AsTransfer makes t Knockoff's transfer set for the source src, whose
// classes are classes: its images must have the source's shape; its own
// labels are dropped (the adversary has none, the source gives them).
func AsTransfer(t *data.Dataset, src nn.Spec, classes []string) (*data.Dataset, error) {
	if t.C != int(src.C) || t.H != int(src.H) || t.W != int(src.W) {
		return nil, fmt.Errorf("knockoff: transfer set %s has %dx%dx%d images, the source takes %dx%dx%d", t.Name, t.C, t.H, t.W, src.C, src.H, src.W)
	}
	t.Classes = slices.Clone(classes)
	clear(t.Labels)
	return t, nil
}
