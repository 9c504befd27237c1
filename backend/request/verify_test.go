package request

import (
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/shared"
)

func TestVerify(t *testing.T) {
	zero := int64(0)
	for _, tc := range []struct {
		name string
		a    shared.VerifyArgs
		want fingerprint.Rule
		err  string
	}{
		{"defaults", shared.VerifyArgs{}, fingerprint.Rule{}, ""},
		{"θ and level", shared.VerifyArgs{Theta: 0.8, FPR: 0.05}, fingerprint.Rule{Theta: 0.8, FPR: 0.05}, ""},
		{"sequential defaults: order seed 1", shared.VerifyArgs{Sequential: true},
			fingerprint.Rule{Sequential: &fingerprint.Sequential{Seed: 1}}, ""},
		{"sequential settings, a zero seed kept", shared.VerifyArgs{Sequential: true, Miss: 0.1, DerivedRate: 0.9, Batch: 4, OrderSeed: &zero},
			fingerprint.Rule{Sequential: &fingerprint.Sequential{Miss: 0.1, DerivedRate: 0.9, Batch: 4, Seed: 0}}, ""},
		{"θ above 1", shared.VerifyArgs{Theta: 1.5}, fingerprint.Rule{}, "theta 1.5"},
		{"negative level", shared.VerifyArgs{FPR: -0.1}, fingerprint.Rule{}, "fpr -0.1"},
		{"β of one half", shared.VerifyArgs{Sequential: true, Miss: 0.5}, fingerprint.Rule{}, "miss 0.5"},
		{"huge batch", shared.VerifyArgs{Sequential: true, Batch: 1 << 20}, fingerprint.Rule{}, "batch 1048576"},
		{"sequential settings alone", shared.VerifyArgs{Batch: 4}, fingerprint.Rule{}, "ask for sequential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Verify(tc.a)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Theta != tc.want.Theta || got.FPR != tc.want.FPR || (got.Sequential == nil) != (tc.want.Sequential == nil) ||
				(got.Sequential != nil && *got.Sequential != *tc.want.Sequential) {
				t.Errorf("rule %+v (sequential %+v), want %+v (sequential %+v)", got, got.Sequential, tc.want, tc.want.Sequential)
			}
		})
	}
}
