package request

import (
	"cmp"
	"slices"

	"github.com/conferral/conferral/shared"
)

// Study is the fleet and the sweeps of an experiment request (the
// conferrability, fingerprint and robustness studies): the plan's source
// architecture, the architectures of its surrogates and references, how
// many of each per half and their epochs; the ε, τ and τ_S swept; and the
// conferrability study's start points and focus ε.
type Study struct {
	SourceArch          string
	Archs               []string
	Per, Epochs         int
	Eps, Taus, TauSurrs []float64
	Points              int
	Focus               float64
}

// DefaultStudy is what an experiment request's zeros take, and the
// defaults of the CLI's `experiment` flags.
func DefaultStudy() Study {
	return Study{SourceArch: "cnn", Archs: []string{"cnn", "mlp", "resnet20"}, Per: 2, Epochs: 2,
		Eps: []float64{0.025, 0.05, 0.1, 0.15}, Taus: []float64{0.5, 0.75, 1}, TauSurrs: []float64{0, 1}, Points: 200, Focus: 0.15}
}

// Experiment is the study an experiment request asks for: DefaultStudy
// with the request's fields over it. (A fingerprint study's start points
// and a robustness study's fingerprint ε are the extraction's unless the
// request's Points and Focus give them: the callers read those fields.)
func Experiment(a shared.ExperimentArgs) Study {
	s := DefaultStudy()
	s.SourceArch = cmp.Or(a.SourceArch, s.SourceArch)
	if len(a.Archs) > 0 {
		s.Archs = slices.Clone(a.Archs)
	}
	if a.Per > 0 {
		s.Per = a.Per
	}
	if a.Epochs > 0 {
		s.Epochs = a.Epochs
	}
	if len(a.EpsSweep) > 0 {
		s.Eps = slices.Clone(a.EpsSweep)
	}
	if len(a.Taus) > 0 {
		s.Taus = slices.Clone(a.Taus)
	}
	if a.Points > 0 {
		s.Points = a.Points
	}
	if a.Focus > 0 {
		s.Focus = a.Focus
	}
	return s
}
