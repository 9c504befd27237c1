package stats

import (
	"fmt"
	"math"
)

// Decision is what a sequential test says after some observations.
type Decision int

const (
	// Continue: the evidence cannot decide yet.
	Continue Decision = iota
	// AcceptNull: the stream looks like an independent model's.
	AcceptNull
	// RejectNull: the stream looks like a derived model's.
	RejectNull
)

func (d Decision) String() string {
	switch d {
	case AcceptNull:
		return "accept null"
	case RejectNull:
		return "reject null"
	}
	return "continue"
}

// SPRT is Wald's sequential probability ratio test on a stream of
// agreements (1) and disagreements (0) of one suspect with the keys.
//
// H₀, the suspect is independent: its agreement rate p was drawn once from
// Null, a beta-binomial fit over independent models, so the stream's
// likelihood is the Pólya urn's, B(α+s, β+f)/B(α, β) after s agreements
// and f disagreements. H₁, the suspect is derived: it agrees at rate P1.
// The log likelihood ratio Λ = s·log P1 + f·log(1−P1) − log[B(α+s,
// β+f)/B(α,β)] is a martingale under H₀, so stopping when Λ ≥ log((1−β)/α)
// falsely accuses with probability at most α at any stopping time (Ville's
// inequality), and stopping when Λ ≤ log(β/(1−α)) clears a model that
// agrees at P1 with probability at most β/(1−α) (Wald).
type SPRT struct {
	Null BetaBinomial
	P1   float64 // the derived models' agreement rate
	// Alpha is the false-accusation rate, Beta the rate of clearing a
	// derived model.
	Alpha, Beta float64
}

// Check says whether the test is well posed.
func (t SPRT) Check() error {
	switch {
	case !(t.Null.Alpha > 0 && t.Null.Beta > 0):
		return fmt.Errorf("sprt: null Beta(%g, %g) needs positive parameters", t.Null.Alpha, t.Null.Beta)
	case !(t.P1 > 0 && t.P1 < 1):
		return fmt.Errorf("sprt: derived agreement rate %g outside (0, 1)", t.P1)
	case !(t.P1 > t.Null.Mean()):
		return fmt.Errorf("sprt: derived agreement rate %.3f is not above the independent models' mean %.3f", t.P1, t.Null.Mean())
	case !(t.Alpha > 0 && t.Alpha < 0.5 && t.Beta > 0 && t.Beta < 0.5):
		return fmt.Errorf("sprt: error rates α = %g, β = %g outside (0, 0.5)", t.Alpha, t.Beta)
	}
	return nil
}

// LogLR is Λ after s agreements and f disagreements.
func (t SPRT) LogLR(s, f int) float64 {
	return float64(s)*math.Log(t.P1) + float64(f)*math.Log1p(-t.P1) -
		(LogBeta(t.Null.Alpha+float64(s), t.Null.Beta+float64(f)) - LogBeta(t.Null.Alpha, t.Null.Beta))
}

// Bounds are Wald's thresholds on Λ: accept H₀ at or below lower, reject
// it at or above upper.
func (t SPRT) Bounds() (lower, upper float64) {
	return math.Log(t.Beta / (1 - t.Alpha)), math.Log((1 - t.Beta) / t.Alpha)
}

// Decide is the test's decision after s agreements and f disagreements.
func (t SPRT) Decide(s, f int) Decision {
	l, u := t.Bounds()
	switch lr := t.LogLR(s, f); {
	case lr >= u:
		return RejectNull
	case lr <= l:
		return AcceptNull
	}
	return Continue
}
