package server

import (
	"github.com/conferral/conferral/shared"
)

// Bounds of request arguments that nothing else bounds: each one's work
// grows with it.
const (
	maxSweep  = 32  // values of an experiment's ε or τ sweep
	maxPoints = 1e5 // an experiment's start points
	maxPer    = 64  // an experiment's models per group
)

// checkExperimentRanges refuses experiment arguments out of range at
// request time: an ε of -1 used to write a report with ε = -1.
func checkExperimentRanges(a *shared.ExperimentArgs) error {
	if len(a.EpsSweep) > maxSweep || len(a.Taus) > maxSweep {
		return badInput("%d ε and %d τ values: at most %d each", len(a.EpsSweep), len(a.Taus), maxSweep)
	}
	for _, e := range a.EpsSweep {
		if !(e > 0 && e <= 1) {
			return badInput("eps_sweep value %v: want ε in (0,1]", e)
		}
	}
	for _, t := range a.Taus {
		if !(t >= 0 && t <= 1) {
			return badInput("taus value %v: want τ in [0,1]", t)
		}
	}
	switch {
	case !(a.Focus >= 0 && a.Focus <= 1):
		return badInput("focus %v: want a value in [0,1]", a.Focus)
	case a.Points < 0 || a.Points > maxPoints:
		return badInput("points %d: want 0 (the default) to %d", a.Points, int(maxPoints))
	case a.Per < 0 || a.Per > maxPer:
		return badInput("per %d: want 0 (the default) to %d", a.Per, maxPer)
	}
	return nil
}
