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
func (t SPRT) Bounds() (lower, upper float64) { return waldBounds(t.Alpha, t.Beta) }

// Decide is the test's decision after s agreements and f disagreements.
func (t SPRT) Decide(s, f int) Decision { return wald(t.LogLR(s, f), t.Alpha, t.Beta) }

func waldBounds(alpha, beta float64) (lower, upper float64) {
	return math.Log(beta / (1 - alpha)), math.Log((1 - beta) / alpha)
}

// wald decides on a log likelihood ratio by Wald's bounds.
func wald(lr, alpha, beta float64) Decision {
	l, u := waldBounds(alpha, beta)
	switch {
	case lr >= u:
		return RejectNull
	case lr <= l:
		return AcceptNull
	}
	return Continue
}

// ModelsSPRT is Wald's sequential test against the calibration models
// themselves rather than a fit over them.
//
// H₀, the suspect is independent: it is like one of the N calibration
// models, picked at random, whose agreement rate after Agree[j] of Keys
// agreements is Beta(Agree[j]+½, Keys−Agree[j]+½) (Jeffreys), so a
// stream's likelihood is the average over the models of their Pólya urns,
// (1/N) Σⱼ B(aⱼ+s, bⱼ+f)/B(aⱼ, bⱼ). H₁, the suspect is derived: its rate
// is uniform on [Line, 1], Line being the fixed-size test's accusing
// line, so the stream's likelihood is ∫ₗ¹ pˢ(1−p)ᶠ dp / (1−Line). The
// ratio of the two is a martingale under H₀, so stopping when it reaches
// (1−β)/α accuses an independent model with probability at most α at any
// stopping time (Ville). Unlike SPRT with one fitted beta, a null spread
// from 0 to 0.75 puts no mass near 1 that the models did not show, and no
// single derived rate has to be guessed.
type ModelsSPRT struct {
	Agree       []int // each calibration model's agreements
	Keys        int   // out of this many keys
	Line        float64
	Alpha, Beta float64
}

// Check says whether the test is well posed.
func (t ModelsSPRT) Check() error {
	switch {
	case len(t.Agree) == 0 || t.Keys <= 0:
		return fmt.Errorf("sprt: %d calibration models over %d keys", len(t.Agree), t.Keys)
	case !(t.Line > 0 && t.Line < 1):
		return fmt.Errorf("sprt: accusing line %.3f outside (0, 1): this calibration cannot accuse at the level", t.Line)
	case !(t.Alpha > 0 && t.Alpha < 0.5 && t.Beta > 0 && t.Beta < 0.5):
		return fmt.Errorf("sprt: error rates α = %g, β = %g outside (0, 0.5)", t.Alpha, t.Beta)
	}
	for _, k := range t.Agree {
		if k < 0 || k > t.Keys {
			return fmt.Errorf("sprt: a calibration model's agreement %d outside 0..%d", k, t.Keys)
		}
	}
	return nil
}

// LogLR is log[L₁/L₀] after s agreements and f disagreements.
func (t ModelsSPRT) LogLR(s, f int) float64 {
	// log Σⱼ exp(nullⱼ), accumulated in one pass against the running
	// maximum: Decide runs on every answered key, so no slice per call.
	m, sum := math.Inf(-1), 0.0
	for _, k := range t.Agree {
		a, b := float64(k)+0.5, float64(t.Keys-k)+0.5
		switch x := LogBeta(a+float64(s), b+float64(f)) - LogBeta(a, b); {
		case x > m:
			sum, m = sum*math.Exp(m-x)+1, x
		default:
			sum += math.Exp(x - m)
		}
	}
	l0 := m + math.Log(sum) - math.Log(float64(len(t.Agree)))
	// ∫ₗ¹ pˢ(1−p)ᶠ dp = B(s+1, f+1)·P[Beta(s+1, f+1) ≥ L], and
	// P[Beta(s+1, f+1) ≥ L] = P[Binomial(s+f+1, L) ≤ s] = P[Binomial(s+f+1, 1−L) ≥ f+1].
	l1 := LogBeta(float64(s+1), float64(f+1)) + logBinomialTail(f+1, s+f+1, 1-t.Line) - math.Log1p(-t.Line)
	return l1 - l0
}

// Decide is the test's decision after s agreements and f disagreements.
func (t ModelsSPRT) Decide(s, f int) Decision { return wald(t.LogLR(s, f), t.Alpha, t.Beta) }
