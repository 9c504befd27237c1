package request

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/shared"
)

// TestExtract: a request's settings reach the configuration, its zeros
// take fingerprint.DefaultConfig's except τ and dropout, whose zeros reach
// the attack, and a request out of range is refused with the field named.
func TestExtract(t *testing.T) {
	def := fingerprint.DefaultConfig()
	for _, tc := range []struct {
		name, body string
		want       func(c *fingerprint.Config)
	}{
		{"defaults", `{}`, func(c *fingerprint.Config) {}},
		{"zero tau and dropout reach the attack", `{"tau":0,"dropout":0}`, func(c *fingerprint.Config) { c.Tau, c.CBIM.Dropout = 0, 0 }},
		{"zeros elsewhere take the defaults", `{"eps":0,"alpha":0,"steps":0,"candidates":0,"batch":0,"seed":0,"tau_surr":0}`, func(c *fingerprint.Config) {}},
		{"every setting", `{"eps":0.1,"alpha":0.02,"steps":5,"dropout":0.25,"loss":"ce","best_iterate":true,"shift":1,"noise":0.1,"tau":0.5,"tau_surr":0.75,"candidates":10,"batch":7,"seed":3,"start":"train"}`,
			func(c *fingerprint.Config) {
				c.CBIM.Eps, c.CBIM.Alpha, c.CBIM.Steps, c.CBIM.Dropout, c.CBIM.Loss, c.CBIM.Best, c.CBIM.Shift, c.CBIM.Noise = 0.1, 0.02, 5, 0.25, attack.LossCE, true, 1, 0.1
				c.Tau, c.TauSurr, c.Candidates, c.Batch, c.Seed = 0.5, 0.75, 10, 7, 3
			}},
		{"natural with the settings it uses", `{"natural":true,"tau":0.6,"tau_surr":0.5,"candidates":10,"batch":10,"seed":3,"start":"test"}`,
			func(c *fingerprint.Config) {
				c.Natural, c.Tau, c.TauSurr, c.Candidates, c.Batch, c.Seed = true, 0.6, 0.5, 10, 10, 3
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a shared.ExtractArgs
			if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
				t.Fatal(err)
			}
			got, err := Extract(a)
			if err != nil {
				t.Fatal(err)
			}
			want := def
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s:\n got %+v\nwant %+v", tc.body, got, want)
			}
		})
	}
}

func TestExtractRefuses(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"eps":1.5}`, "eps, tau and tau_surr must lie in [0,1]"},
		{`{"tau":-0.1}`, "eps, tau and tau_surr must lie in [0,1]"},
		{`{"tau_surr":2}`, "eps, tau and tau_surr must lie in [0,1]"},
		{`{"dropout":1}`, "dropout in [0,1)"},
		{`{"alpha":-0.01}`, "want a step size and a step count of 0"},
		{`{"steps":-1}`, "want a step size and a step count of 0"},
		{`{"candidates":-1}`, "candidates -1"},
		{`{"loss":"hinge"}`, "hinge"},
		{`{"shift":-1}`, "shift"},
		{`{"start":"middle"}`, "middle"},
		{`{"natural":true,"dropout":0,"noise":0.1}`, "natural: C-BIM's settings do not apply (a natural fingerprint runs no C-BIM: its examples are the source's own mistakes, unperturbed); leave out dropout, noise"},
		{`{"source":"s","twins":["t","s"]}`, "twin s is also the source"},
		{`{"surrogates":["a"],"twins":["a"]}`, "twin a is also a surrogate"},
		{`{"references":["r"],"twins":["r"]}`, "twin r is also a reference"},
		{`{"calibration":["c","d"],"twins":["d"]}`, "twin d is also a calibration model"},
		{`{"twins":["t","t"]}`, "twin t is also a twin already"},
		{`{"twins":[""]}`, "twins: a model ID is required"},
	} {
		var a shared.ExtractArgs
		if err := json.Unmarshal([]byte(tc.body), &a); err != nil {
			t.Fatal(err)
		}
		if _, err := Extract(a); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.body, err, tc.want)
		}
	}
}

// TestCBIMOnly: the list of C-BIM's settings is the one the API
// documents, and a request that sets every one of them is told each.
func TestCBIMOnly(t *testing.T) {
	names := []string{"eps", "alpha", "steps", "dropout", "loss", "best_iterate", "shift", "noise"}
	if got := CBIMOnlyNames(); !slices.Equal(got, names) {
		t.Errorf("CBIMOnlyNames %q, want %q", got, names)
	}
	zero := 0.0
	all := shared.ExtractArgs{Eps: 0.1, Alpha: 0.02, Steps: 5, Dropout: &zero, Loss: "linear", BestIterate: true, Shift: 1, Noise: 0.1, Tau: &zero, TauSurr: 1, Candidates: 3, Batch: 3, Seed: 3}
	if got := CBIMOnly(all); !slices.Equal(got, names) {
		t.Errorf("CBIMOnly of every setting %q, want %q", got, names)
	}
	if got := CBIMOnly(shared.ExtractArgs{Tau: &zero, TauSurr: 1, Candidates: 3}); got != nil {
		t.Errorf("CBIMOnly of natural's settings %q, want none", got)
	}
}
