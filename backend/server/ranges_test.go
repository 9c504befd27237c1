package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/conferral/conferral/shared"
)

// TestArgumentRanges refuses out-of-range derive and experiment arguments
// with 400 when the job is requested, not as a failed job or a report.
func TestArgumentRanges(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	derive := func(args string) string {
		return `{"kind":"derive","derive":{"source":"abc","attack":"prune",` + args + `}}`
	}
	experiment := func(args string) string {
		return `{"kind":"experiment","experiment":{"study":"conferrability",` + args + `}}`
	}
	for _, c := range []struct {
		name, body, says string
	}{
		{"bits 1000", derive(`"bits":1000`), "bits 1000"},
		{"bits 1", derive(`"bits":1`), "bits 1"},
		{"bits -8", derive(`"bits":-8`), "bits -8"},
		{"fraction 5", derive(`"fraction":5`), "fraction 5"},
		{"fraction -0.1", derive(`"fraction":-0.1`), "fraction -0.1"},
		{"rho 2", derive(`"rho":2`), "rho 2"},
		{"lambda -1", derive(`"lambda":-1`), "lambda -1"},
		{"temperature -3", derive(`"temperature":-3`), "temperature -3"},
		{"members 10000", derive(`"members":10000`), "members 10000"},
		{"examples -5", derive(`"examples":-5`), "examples -5"},
		{"unknown transfer set", derive(`"transfer":"cats"`), `transfer dataset "cats"`},
		{"derive in range reaches the model check", derive(`"bits":8,"fraction":0.5`), `no stored model "abc"`},
		{"eps -1", experiment(`"eps_sweep":[-1]`), "eps_sweep value -1"},
		{"eps 0", experiment(`"eps_sweep":[0.1,0]`), "eps_sweep value 0"},
		{"eps 2", experiment(`"eps_sweep":[2]`), "eps_sweep value 2"},
		{"tau 1.5", experiment(`"taus":[1.5]`), "taus value 1.5"},
		{"a sweep too long", experiment(`"eps_sweep":[` + strings.TrimSuffix(strings.Repeat("0.1,", 33), ",") + `]`), "at most 32"},
		{"focus -1", experiment(`"focus":-1`), "focus -1"},
		{"points -3", experiment(`"points":-3`), "points -3"},
		{"per 1000", experiment(`"per":1000`), "per 1000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			var e shared.APIError
			if code := ts.do(req, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, c.says) {
				t.Errorf("%d %q, want 400 saying %q", code, e.Error, c.says)
			}
		})
	}
	var jobs []shared.Job
	ts.call("GET", "/api/jobs", nil, &jobs)
	if len(jobs) != 0 {
		t.Errorf("%d jobs recorded, want none", len(jobs))
	}
}
