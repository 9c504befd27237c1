package request

import (
	"errors"
	"fmt"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/shared"
)

// MaxVerifyBatch bounds the fingerprints a sequential verification sends
// per query.
const MaxVerifyBatch = 1024

// DefaultOrderSeed is the seed of the order a sequential verification asks
// the fingerprints in, unless the request names one.
const DefaultOrderSeed = 1

// Verify is the decision rule a verify request asks for, without its
// calibration (the caller loads the fingerprint's, which the rule's Check
// then holds to it): θ, the false-positive level and, for a sequential
// verification, Wald's test with the request's settings over the defaults.
func Verify(a shared.VerifyArgs) (fingerprint.Rule, error) {
	if err := checkVerify(a); err != nil {
		return fingerprint.Rule{}, err
	}
	r := fingerprint.Rule{Theta: a.Theta, FPR: a.FPR}
	if a.Sequential {
		r.Sequential = &fingerprint.Sequential{DerivedRate: a.DerivedRate, Miss: a.Miss, Batch: a.Batch, Seed: DefaultOrderSeed}
		if a.OrderSeed != nil {
			r.Sequential.Seed = *a.OrderSeed
		}
	}
	return r, nil
}

// checkVerify refuses settings out of range, and sequential settings
// without a sequential verification.
func checkVerify(a shared.VerifyArgs) error {
	var errs []error
	bad := func(field string, v any, want string) { errs = append(errs, fmt.Errorf("%s %v: %s", field, v, want)) }
	if a.Theta != 0 && !(a.Theta > 0 && a.Theta <= 1) {
		bad("theta", a.Theta, "outside (0, 1]")
	}
	if a.FPR != 0 && !(a.FPR > 0 && a.FPR < 0.5) {
		bad("fpr", a.FPR, "outside (0, 0.5)")
	}
	if a.Miss != 0 && !(a.Miss > 0 && a.Miss < 0.5) {
		bad("miss", a.Miss, "outside (0, 0.5)")
	}
	if a.DerivedRate != 0 && !(a.DerivedRate > 0 && a.DerivedRate <= 1) {
		bad("derived_rate", a.DerivedRate, "outside (0, 1]")
	}
	if a.Batch < 0 || a.Batch > MaxVerifyBatch {
		bad("batch", a.Batch, fmt.Sprintf("outside 1..%d", MaxVerifyBatch))
	}
	if !a.Sequential && (a.Miss != 0 || a.DerivedRate != 0 || a.Batch != 0 || a.OrderSeed != nil) {
		errs = append(errs, errors.New("miss, derived_rate, batch and order_seed set a sequential verification: ask for sequential too"))
	}
	return errors.Join(errs...)
}
