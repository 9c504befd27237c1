package fingerprint

import (
	"context"
	"fmt"

	"github.com/conferral/conferral/backend/suspect"
)

// DefaultThreshold is θ of §5.2.
const DefaultThreshold = 0.7

// Verdict is Verify's answer with the evidence behind it.
type Verdict struct {
	Suspect      string  `json:"suspect"`
	Fingerprints int     `json:"fingerprints"`
	Agree        int     `json:"agree"`
	Accuracy     float64 `json:"fingerprint_accuracy"`
	Threshold    float64 `json:"threshold"`
	Surrogate    bool    `json:"surrogate"`
	// PValue is P[X ≥ Agree], X ~ Binomial(Fingerprints, BaseRate): how
	// likely this much agreement is for an independent model that agrees
	// with each key independently at BaseRate. The fingerprint's own rate
	// comes from the training references, which selection made disagree
	// (at τ = 1, by construction), so it is floored at chance; pass the
	// agreement rate of held-out references (an experiment measures it) for
	// a p-value a reviewer can lean on.
	PValue   float64 `json:"p_value"`
	BaseRate float64 `json:"base_rate"`
	// Calibrated says BaseRate was given by the caller or measured on
	// held-out references (Calibrate), not taken from the training ones.
	Calibrated bool `json:"calibrated"`
	// Labels are the suspect's answers, Matches whether each equals its key.
	Labels  []int64 `json:"labels"`
	Matches []bool  `json:"matches"`
	// Queries is the number of images the suspect was sent: Fingerprints,
	// or more for a remote suspect that had to retry.
	Queries int `json:"queries"`
}

// Verify is Algorithm 1: it queries the suspect with the fingerprints and
// declares it a surrogate when its fingerprint accuracy reaches θ.
// baseRate ≤ 0 takes the fingerprint's own reference rate.
func Verify(ctx context.Context, s suspect.Suspect, fp *Fingerprint, theta, baseRate float64) (*Verdict, error) {
	if fp.N == 0 {
		return nil, fmt.Errorf("verify: the fingerprint is empty")
	}
	q, counts := s.(suspect.Counter)
	before := 0
	if counts {
		before = q.Queries()
	}
	labels, err := s.Classify(ctx, suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W})
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s, err)
	}
	if len(labels) != fp.N {
		return nil, fmt.Errorf("verify %s: %d answers to %d queries", s, len(labels), fp.N)
	}
	calibrated := baseRate > 0 || fp.Meta.Calibration > 0
	if baseRate <= 0 {
		baseRate = fp.Meta.ReferenceRate
	}
	v := &Verdict{Suspect: s.String(), Fingerprints: fp.N, Threshold: theta, BaseRate: baseRate, Calibrated: calibrated,
		Labels: labels, Matches: make([]bool, fp.N), Queries: fp.N}
	if counts {
		v.Queries = q.Queries() - before
	}
	for i, l := range labels {
		if l == fp.Keys[i] {
			v.Matches[i] = true
			v.Agree++
		}
	}
	v.Accuracy = float64(v.Agree) / float64(fp.N)
	v.Surrogate = v.Accuracy >= theta
	v.PValue = BinomialTail(v.Agree, fp.N, baseRate)
	return v, nil
}

// Explain says what a verdict means in plain words.
func (v *Verdict) Explain() string {
	if v.Surrogate {
		return fmt.Sprintf("%s agrees with the source on %d of %d fingerprints (%.0f%% ≥ θ = %.0f%%): it is very likely derived from the source model. A model agreeing with each fingerprint independently at rate %.2f would agree this often with probability %.2g (the rate is the most agreeing reference model's, never below chance).",
			v.Suspect, v.Agree, v.Fingerprints, 100*v.Accuracy, 100*v.Threshold, v.BaseRate, v.PValue)
	}
	return fmt.Sprintf("%s agrees with the source on %d of %d fingerprints (%.0f%% < θ = %.0f%%): no evidence that it was derived from the source model.",
		v.Suspect, v.Agree, v.Fingerprints, 100*v.Accuracy, 100*v.Threshold)
}
