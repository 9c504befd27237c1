package server

import (
	"bytes"
	"image/png"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/shared"
)

// TestRobustnessJob runs the robustness study (Tables 4 and 5) as a server
// job at toy scale, the plan the CLI runs by default, and reads its report
// back through the API: one row per attack of the plan, the fleet's testing
// models for contrast, and the plot.
func TestRobustnessJob(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	j := ts.mustComplete(shared.JobRequest{Kind: shared.JobExperiment, Experiment: &shared.ExperimentArgs{
		Study: "robustness", Name: "robust", Limit: 300, Archs: []string{"mlp"}, SourceArch: "mlp", Per: 1, Epochs: 1,
		Points: 100, Focus: 0.15}})
	r := j.Result.Report
	if r == nil || r.Name != "robust" || r.Study != "robustness" || len(r.Files) != 2 || r.Files[0] != "README.md" || r.Files[1] != "robustness.png" {
		t.Fatalf("report %+v", r)
	}
	var reports []shared.ReportInfo
	ts.call("GET", "/api/reports", nil, &reports)
	if len(reports) != 1 || reports[0].Name != "robust" || reports[0].Study != "robustness" {
		t.Fatalf("reports %+v", reports)
	}
	get := func(f string) []byte {
		resp, err := http.Get(ts.http.URL + "/api/reports/robust/" + f)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Fatalf("%s: %d, %d bytes", f, resp.StatusCode, len(b))
		}
		return b
	}
	if _, err := png.Decode(bytes.NewReader(get("robustness.png"))); err != nil {
		t.Errorf("robustness.png: %v", err)
	}
	md := string(get("README.md"))
	for _, want := range []string{"Tables 4 and 5", "conferral serve: experiment job " + j.ID, "Retention:", "transfer mnist", "retraining (labels only)",
		"λ = 0.05", "ρ = 0.40", "test-surrogate-mlp-0", "test-reference-mlp-0", "robustness.png"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	// Every attack of the default plan has its row in the table of derived
	// models, in the plan's order.
	plan := experiment.DefaultRobustnessPlan()
	plan.Transfer = &data.Dataset{Name: "mnist"}
	attacks, err := plan.Attacks(&data.Dataset{})
	if err != nil {
		t.Fatal(err)
	}
	at := strings.Index(md, "## Derived models")
	for _, a := range attacks {
		name := a.Name
		if a.LabelsOnly {
			name += " (labels only)"
		}
		row := "| " + name + " | " + a.Param + " | "
		i := strings.Index(md[max(at, 0):], row)
		if at < 0 || i < 0 {
			t.Errorf("no row %q after the last one in the report", row)
			continue
		}
		at += i + len(row)
	}
	if len(attacks) != 24 {
		t.Errorf("%d attacks in the default plan, want 24 (11 of Table 4's and 5's kinds, 6 λ, 4 ρ, 3 beyond the paper)", len(attacks))
	}
}

// TestRobustnessJobRefused: a robustness request with fields the study does
// not use, or on a dataset without Knockoff's default transfer set, is a
// 400 before anything trains.
func TestRobustnessJobRefused(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	for _, c := range []struct {
		args shared.ExperimentArgs
		says string
	}{
		{shared.ExperimentArgs{Study: "robustness", EpsSweep: []float64{0.1}}, "sweeps neither"},
		{shared.ExperimentArgs{Study: "robustness", Taus: []float64{0.5}}, "sweeps neither"},
		{shared.ExperimentArgs{Study: "robustness", Dataset: "mnist"}, "transfer set is required"},
		{shared.ExperimentArgs{Study: "robustness", Epochs: -1}, "epochs -1"},
		{shared.ExperimentArgs{Study: "fingerprint", Full: true}, "only the robustness study"},
	} {
		var e shared.APIError
		req := shared.JobRequest{Kind: shared.JobExperiment, Experiment: &c.args}
		if code := ts.call("POST", "/api/jobs", req, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, c.says) {
			t.Errorf("%+v: %d %q, want 400 saying %q", c.args, code, e.Error, c.says)
		}
	}
}

// TestRobustnessPlan: a request's full strength reaches the plan (its
// budgets and extra attacks), and its epochs survive it.
func TestRobustnessPlan(t *testing.T) {
	plain := robustnessPlan(shared.ExperimentArgs{Study: "robustness", Epochs: 3})
	full := robustnessPlan(shared.ExperimentArgs{Study: "robustness", Epochs: 3, Full: true})
	if plain.Full || plain.Epochs != 3 || len(plain.EnsembleBudget) != 0 {
		t.Errorf("plain plan %+v", plain)
	}
	want := experiment.DefaultRobustnessPlan()
	want.Epochs = 3
	want = want.FullStrength()
	if !full.Full || full.Epochs != 3 || !slices.Equal(full.EnsembleBudget, want.EnsembleBudget) || !slices.Equal(full.CombinedSteps, want.CombinedSteps) {
		t.Errorf("full plan %+v, want %+v", full, want)
	}
}
