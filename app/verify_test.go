//go:build !wasm

package app

import (
	"strings"
	"testing"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// TestVerdictEvasion checks that the verdict card shows a calibrated
// verdict's evasion check, warns when the suspect's answers look evasive,
// and says nothing of it where the verdict carries none.
func TestVerdictEvasion(t *testing.T) {
	p := func(v float64) *float64 { return &v }
	verdict := func(e *shared.Evasion) *shared.Verdict {
		return &shared.Verdict{N: 100, Matches: 20, Accuracy: 0.2, Interval: [2]float64{0.13, 0.29}, Confidence: 0.95, Theta: 0.7, Threshold: 0.52,
			Outcome: shared.OutcomeInconclusive, PValue: p(0.9), EmpiricalP: p(0.8), Calibrated: true, Evasion: e,
			Null: &shared.Null{Models: 30, Architectures: []string{"cnn"}, Mean: 0.3, SD: 0.08, FPR: 0.01, Threshold: 0.52}}
	}
	honest := &shared.Evasion{Wrong: 70, Truth: 42, Share: 0.6, Mean: 0.62, Random: 1.0 / 9, Floor: 0.366, PValue: 0.9996}
	evasive := &shared.Evasion{Wrong: 80, Truth: 9, Share: 0.1125, Mean: 0.62, Random: 1.0 / 9, Floor: 0.366, PValue: 2.5e-8, Evasive: true}
	cases := []struct {
		name      string
		v         *shared.Verdict
		want, not []string
	}{
		{"none", verdict(nil), nil, []string{"evasion check", `id="verdict-evasive"`, "detect-and-evade"}},
		{"uncalibrated", &shared.Verdict{N: 40, Matches: 28, Accuracy: 0.7, Interval: [2]float64{0.53, 0.83}, Confidence: 0.95, Theta: 0.7, Threshold: 0.7,
			Outcome: shared.OutcomeInconclusive}, []string{"no p-value"}, []string{"evasion check"}},
		{"honest", verdict(honest),
			[]string{`id="verdict-evasion"`, `data-evasive="false"`, "42 of 70", "evasion check: wrong answers naming the true class (60.0%; floor 36.6%, p = 1.000)"},
			[]string{`id="verdict-evasive"`, "detect-and-evade", "not cleared"}},
		{"evasive", verdict(evasive),
			[]string{"data-evasive", "9 of 80", "(11.2%; floor 36.6%, p = 2.5e-08)", `id="verdict-evasive"`,
				"only 9 of the suspect&#39;s 80 wrong answers", "62.0%", "11.1%", "detect-and-evade", "not cleared", "never accuses",
				"which would clear it", "not accused either"},
			[]string{`data-evasive="false"`, "More fingerprints"}},
	}
	for _, c := range cases {
		html := ui.HTMLString((&verify{verdict: c.v}).card())
		for _, w := range c.want {
			if !strings.Contains(html, w) {
				t.Errorf("%s: the card lacks %q:\n%s", c.name, w, html)
			}
		}
		for _, w := range c.not {
			if strings.Contains(html, w) {
				t.Errorf("%s: the card says %q:\n%s", c.name, w, html)
			}
		}
	}
}
