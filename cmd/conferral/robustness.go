package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/report"
)

// robustnessFingerprint loads the fingerprint the study judges with, checking
// that it belongs to the fleet's source, or extracts one from the fleet.
func robustnessFingerprint(ctx context.Context, path, modelsDir string, f *experiment.Fleet, ds experiment.Data, cfg fingerprint.Config, e *env) (*fingerprint.Fingerprint, error) {
	if path == "" {
		cfg.Progress = e.progress.Report
		return experiment.StudyFingerprint(ctx, f, ds, cfg)
	}
	return fingerprintOf(path, filepath.Join(modelsDir, f.Source().Name+".safetensors"), f.Source().Name)
}

// fingerprintOf loads the fingerprint at path and checks that it was
// extracted from the source model file src (or, for a fingerprint an
// experiment extracted, the fleet's source named name).
func fingerprintOf(path, src, name string) (*fingerprint.Fingerprint, error) {
	fp, err := fingerprint.Load(path)
	if err != nil {
		return nil, err
	}
	sum, err := fileSHA256(src)
	if err != nil {
		return nil, err
	}
	// A fingerprint extracted with `conferral extract` names its source by
	// sha256; one extracted by an experiment names the fleet's source.
	if id := fp.Meta.SourceSHA256; id != sum && (name == "" || id != name) {
		return nil, usagef("robustness: %s was extracted from another source (sha256 %.12s…, the source is %.12s…)", path, fp.Meta.SourceSHA256, sum)
	}
	return fp, nil
}

// robustnessSource is `experiment robustness --source`: the study derives
// from a source model file instead of a fleet's source, judges with
// --fingerprint (required: there is no fleet to extract one from) and its
// --calibration, and writes no contrast section. Everything is checked
// before anything trains.
type robustnessSource struct {
	plan                    experiment.RobustnessPlan
	source, fp, calibration string
	transfer, transferDir   string
	models, describe        string
	command                 string
	ds                      experiment.Data
	dir                     report.Dir
}

func (r robustnessSource) run(ctx context.Context, e *env) error {
	if r.fp == "" {
		return usagef("--source needs --fingerprint: with no fleet there is nothing to extract one from")
	}
	src, _, err := nn.Load(r.source, e.device)
	if err != nil {
		return usageError{err}
	}
	defer src.Free()
	if data.CanonicalName(src.Spec.Dataset) != data.CanonicalName(r.ds.Test.Name) {
		return usagef("the source %s classifies %s, the data is %s", r.source, src.Spec.Dataset, r.ds.Test.Name)
	}
	fp, err := fingerprintOf(r.fp, r.source, "")
	if err != nil {
		return err
	}
	var cal *fingerprint.Calibration
	if r.calibration != "" {
		if cal, err = fingerprint.LoadCalibration(r.calibration, fp); err != nil {
			return usageError{err}
		}
	}
	if r.plan.Transfer, err = loadTransfer(r.transfer, r.transferDir, src.Spec, r.ds.Adversary, r.ds.Adversary.Len(), r.plan.Seed); err != nil {
		return err
	}
	st, err := r.plan.Study(r.ds.Adversary, r.command)
	if err != nil {
		return usageError{err}
	}
	st.Calibration = cal
	st.Describe = r.describe
	sum, err := fileSHA256(r.source)
	if err != nil {
		return err
	}
	_, err = st.RunSource(ctx, experiment.StudySource{Model: src, Key: "sha256:" + sum}, nil, fp, r.ds, r.models, r.dir, e.progress.Report)
	if err != nil {
		return fmt.Errorf("robustness: %w", err)
	}
	return nil
}

// emitReport prints the report an experiment wrote into dir.
func emitReport(e *env, dir report.Dir) error {
	e.progress.done()
	md, err := os.ReadFile(dir.Path("README.md"))
	if err != nil {
		return err
	}
	return e.emit(map[string]string{"report": dir.Path("README.md")}, fmt.Sprintf("%s\n(report: %s)\n", md, dir.Path("README.md")))
}
