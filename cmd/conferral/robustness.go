package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/train"
)

// robustnessPlan are the knobs of `experiment robustness`.
type robustnessPlan struct {
	epochs, fineTuneEpochs int // training epochs of attacks that train a new model / continue the source
	fineTuneExamples       int // §6.3: 10,000 inputs for fine-tuning and adversarial training
	lambdas, rhos          []float64
	seed                   int64
	transfer               string // Knockoff's transfer set ("" picks MNIST for Fashion-MNIST)
	transferDir            string
}

// robustnessAttacks lists the rows of the paper's Tables 4 and 5 at CPU scale,
// then the attacks beyond the paper.
func robustnessAttacks(p robustnessPlan, src nn.Spec, adversary *data.Dataset) ([]experiment.Attack, error) {
	cfg := func(name string) train.Config {
		c := train.AttackConfig(name)
		c.Epochs, c.Seed = p.epochs, p.seed
		if train.FineTuning(name) {
			c.Epochs = p.fineTuneEpochs
		}
		return c
	}
	row := func(group, name, param string, mod func(*train.Options)) experiment.Attack {
		o := train.DefaultOptions(name)
		if mod != nil {
			mod(&o)
		}
		return experiment.Attack{Group: group, Name: name, Param: param, Options: o, Config: cfg(name)}
	}
	small := adversary.First(p.fineTuneExamples)
	fine := func(a experiment.Attack) experiment.Attack { a.Data = small; return a }
	transfer, err := loadTransfer(p.transfer, p.transferDir, src, adversary, adversary.Len(), p.seed)
	if err != nil {
		return nil, err
	}
	def := train.DefaultOptions("")
	out := []experiment.Attack{
		row("Model extraction", train.AttackRetraining, "T = 1", nil),
		row("Model extraction", train.AttackJagielski, fmt.Sprintf("T′ = %g", def.Temperature), nil),
		row("Model extraction", train.AttackKnockoff, "transfer "+transfer.Name, func(o *train.Options) { o.Transfer = transfer }),
		row("Model extraction", train.AttackPapernot, fmt.Sprintf("%d seeds, %d rounds", def.Papernot.Seeds, def.Papernot.Rounds), nil),
		fine(row("Fine-tuning", train.AttackFTLL, "", nil)),
		fine(row("Fine-tuning", train.AttackFTAL, "", nil)),
		fine(row("Fine-tuning", train.AttackRTLL, "", nil)),
		fine(row("Fine-tuning", train.AttackRTAL, "", nil)),
		fine(row("Adversarial training", train.AttackFGM, fmt.Sprintf("ε = %g", train.AdvDefaults(train.AttackFGM).Eps), nil)),
		fine(row("Adversarial training", train.AttackPGD, fmt.Sprintf("ε = %g (L2)", train.AdvDefaults(train.AttackPGD).Eps), nil)),
		row("Adaptive", train.AttackEnsemble, fmt.Sprintf("n = %d", def.Members), nil),
	}
	for _, l := range p.lambdas {
		out = append(out, row("Adaptive", train.AttackNoise, fmt.Sprintf("λ = %.2f", l), func(o *train.Options) { o.Lambda = l }))
	}
	for _, r := range p.rhos {
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

// robustnessFingerprint loads the fingerprint the study judges with, checking
// that it belongs to the fleet's source, or extracts one from the fleet.
func robustnessFingerprint(ctx context.Context, path, modelsDir string, f *experiment.Fleet, ds experiment.Data, cfg fingerprint.Config, e *env) (*fingerprint.Fingerprint, error) {
	if path == "" {
		cfg.Progress = e.progress.Report
		return f.Extract(ctx, ds, experiment.Setting{Name: "main", Eps: cfg.CBIM.Eps, Loss: cfg.CBIM.Loss, Best: cfg.CBIM.Best}, cfg)
	}
	fp, err := fingerprint.Load(path)
	if err != nil {
		return nil, err
	}
	sum, err := fileSHA256(filepath.Join(modelsDir, f.Source().Name+".safetensors"))
	if err != nil {
		return nil, err
	}
	// A fingerprint extracted with `conferral extract` names its source by
	// sha256; one extracted by an experiment names the fleet's source.
	if id := fp.Meta.SourceSHA256; id != sum && id != f.Source().Name {
		return nil, fmt.Errorf("robustness: %s was extracted from another source (sha256 %.12s…, the fleet's source is %.12s…)", path, fp.Meta.SourceSHA256, sum)
	}
	return fp, nil
}
