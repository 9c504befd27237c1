package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
)

// robustnessPlan are the flags of `experiment robustness`; the plan itself
// (the attacks, their settings, how rows are judged) is
// experiment.RobustnessPlan, which the server runs too.
type robustnessPlan struct {
	epochs, fineTuneEpochs int // training epochs of attacks that train a new model / continue the source
	fineTuneExamples       int // §6.3: 10,000 inputs for fine-tuning and adversarial training
	lambdas, rhos          []float64
	seed                   int64
	transfer               string // Knockoff's transfer set ("" picks MNIST for Fashion-MNIST)
	transferDir            string
}

// robustnessAttacks loads Knockoff's transfer set (a dataset or a folder of
// images) and lists the plan's attacks.
func robustnessAttacks(p robustnessPlan, src nn.Spec, adversary *data.Dataset) ([]experiment.Attack, error) {
	transfer, err := loadTransfer(p.transfer, p.transferDir, src, adversary, adversary.Len(), p.seed)
	if err != nil {
		return nil, err
	}
	plan := experiment.DefaultRobustnessPlan()
	plan.Epochs, plan.FineTuneEpochs, plan.FineTuneExamples = p.epochs, p.fineTuneEpochs, p.fineTuneExamples
	plan.Lambdas, plan.Rhos, plan.Seed, plan.Transfer = p.lambdas, p.rhos, p.seed, transfer
	return plan.Attacks(adversary)
}

// robustnessFingerprint loads the fingerprint the study judges with, checking
// that it belongs to the fleet's source, or extracts one from the fleet.
func robustnessFingerprint(ctx context.Context, path, modelsDir string, f *experiment.Fleet, ds experiment.Data, cfg fingerprint.Config, e *env) (*fingerprint.Fingerprint, error) {
	if path == "" {
		cfg.Progress = e.progress.Report
		return experiment.StudyFingerprint(ctx, f, ds, cfg)
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
