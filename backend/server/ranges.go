package server

import (
	"math"
	"strings"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/shared"
)

// Bounds of request arguments that nothing else bounds: each one's work
// grows with it.
const (
	maxMembers = 32  // a derive job's ensemble members
	maxSweep   = 32  // values of an experiment's ε or τ sweep
	maxPoints  = 1e5 // an experiment's start points
	maxPer     = 64  // an experiment's models per group
)

// checkDeriveRanges refuses derive arguments out of range at request time
// (zero takes the attack's default), where they used to fail only as jobs.
func checkDeriveRanges(a *shared.DeriveArgs) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !(a.Fraction >= 0 && a.Fraction <= 1):
		return badInput("fraction %v: want a fraction of the weights in [0,1]", a.Fraction)
	case a.Bits != 0 && (a.Bits < 2 || a.Bits > 16):
		return badInput("bits %d: want 2 to 16 bits per weight", a.Bits)
	case !(a.Rho >= 0 && a.Rho <= 1):
		return badInput("rho %v: want a fraction of true labels in [0,1]", a.Rho)
	case !(a.Lambda >= 0) || !finite(a.Lambda):
		return badInput("lambda %v: want a non-negative number", a.Lambda)
	case !(a.Temperature >= 0) || !finite(a.Temperature):
		return badInput("temperature %v: want a non-negative number", a.Temperature)
	case a.Members < 0 || a.Members > maxMembers:
		return badInput("members %d: want 0 (the default) to %d", a.Members, maxMembers)
	case a.Examples < 0:
		return badInput("examples %d: want 0 (all) or more", a.Examples)
	case a.Transfer != "" && data.CanonicalName(a.Transfer) == "":
		return badInput("transfer dataset %q: want one of %s", a.Transfer, strings.Join(data.Names(), ", "))
	}
	return nil
}

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
