package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
)

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
