package server

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// TestExtractFanOut runs an extraction that trains its own surrogates and
// references as jobs of their own, waits for them without holding the
// server's only worker slot, and crafts with their models.
func TestExtractFanOut(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	req := shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: shared.DataArgs{Limit: 200}, Source: f.source.ID,
		Surrogates: []string{f.surrogate.ID}, // one given, two trained
		Eps:        0.25, Alpha: 0.025, Steps: 10, Tau: new(0.01), Candidates: 40, Batch: 40,
		Train: &shared.ExtractTraining{Surrogates: 2, References: 2, Archs: []string{"mlp"}, Epochs: 1, Limit: 300}}}
	j := ts.mustComplete(req)
	a := j.Args.Extract
	if a.Train == nil || len(a.Train.Jobs) != 4 || !a.Train.Gathered {
		t.Fatalf("the extraction's training: %+v, want 4 jobs gathered", a.Train)
	}
	if len(a.Surrogates) != 3 || a.Surrogates[0] != f.surrogate.ID || len(a.References) != 2 {
		t.Errorf("the extraction used surrogates %v and references %v, want the given one and 2 + 2 trained", a.Surrogates, a.References)
	}
	for i, id := range a.Train.Jobs {
		var c shared.Job
		if code := ts.call("GET", "/api/jobs/"+id, nil, &c); code != http.StatusOK {
			t.Fatalf("GET training job %s: %d", id, code)
		}
		role, in := shared.RoleSurrogate, a.Surrogates
		if i >= 2 {
			role, in = shared.RoleReference, a.References
		}
		if c.State != shared.JobCompleted || c.Result == nil || len(c.Result.Models) != 1 {
			t.Fatalf("training job %s: %s %s", id, c.State, c.Error)
		}
		m := c.Result.Models[0]
		if m.Role != role || !slices.Contains(in, m.ID) {
			t.Errorf("training job %s made a %s (%s), want a %s among %v", id, m.Role, m.ID, role, in)
		}
		if role == shared.RoleSurrogate && m.Parent != f.source.ID {
			t.Errorf("surrogate %s was taught by %q, want the source", m.ID, m.Parent)
		}
	}
	if j.Result == nil || j.Result.Fingerprint == nil || j.Result.Fingerprint.Count == 0 {
		t.Fatalf("extraction result %+v, want a fingerprint", j.Result)
	}
	// The extraction told what it waited for.
	c := ts.watch(j.ID)
	_, seen := until(t, c, func(e shared.Event) bool { return e.Kind == shared.State && e.State.Final() })
	c.Close()
	queued := false
	for _, e := range seen {
		queued = queued || strings.Contains(e.Message, "queued 4 training jobs")
	}
	if !queued {
		t.Errorf("no event tells of the queued training jobs: %+v", seen)
	}
}

// TestExtractFanOutRefused checks the requests for training models that
// are refused before anything is queued.
func TestExtractFanOutRefused(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	for _, tc := range []struct {
		name  string
		train shared.ExtractTraining
		refs  []string
		says  string
	}{
		{"no references at all", shared.ExtractTraining{Surrogates: 2}, nil, "at least one surrogate and one reference"},
		{"negative", shared.ExtractTraining{Surrogates: -1, References: 2}, nil, "want 0 to 256"},
		{"too many", shared.ExtractTraining{Surrogates: 200, References: 100}, nil, "want 0 to 256"},
		{"bad arch", shared.ExtractTraining{Surrogates: 1, References: 1, Archs: []string{"mlp", "nope"}}, nil, "nope"},
		{"bad epochs", shared.ExtractTraining{Surrogates: 1, References: 1, Epochs: 100000}, nil, "epochs"},
		{"jobs set by the client", shared.ExtractTraining{Surrogates: 1, References: 1, Jobs: []string{"1"}}, nil, "server's to set"},
		{"gathered set by the client", shared.ExtractTraining{Surrogates: 1}, []string{f.reference.ID}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.train
			if tc.says == "" { // a valid request with Gathered forged
				tr.Gathered, tc.says = true, "server's to set"
			}
			refused(t, ts, shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
				Source: f.source.ID, Surrogates: []string{}, References: tc.refs, Train: &tr}}, tc.says)
		})
	}
	var jobs []shared.Job
	ts.call("GET", "/api/jobs", nil, &jobs)
	for _, j := range jobs {
		if j.Kind == shared.JobExtract && j.ID != f.extractJob {
			t.Errorf("a refused request left job %s", j.ID)
		}
	}
}

// TestExperimentFanOut runs a study whose models are trained as jobs of
// their own, the source first, and checks that the study ran with them.
func TestExperimentFanOut(t *testing.T) {
	dir := t.TempDir()
	ts := start(t, Config{Dir: dir, Workers: 2})
	j := ts.mustComplete(shared.JobRequest{Kind: shared.JobExperiment, Experiment: &shared.ExperimentArgs{
		Study: "conferrability", Name: "fanned", Limit: 300, Archs: []string{"mlp"}, SourceArch: "mlp", Per: 1, Epochs: 1,
		EpsSweep: []float64{0.1}, Focus: 0.1, Points: 10, Fanout: true}})
	a := j.Args.Experiment
	if len(a.Jobs) != 5 || !a.Gathered {
		t.Fatalf("model jobs %v (gathered %v), want the source and 4 others", a.Jobs, a.Gathered)
	}
	var src shared.Job
	var last time.Time // when the last model job finished
	for i, id := range a.Jobs {
		var c shared.Job
		if code := ts.call("GET", "/api/jobs/"+id, nil, &c); code != http.StatusOK {
			t.Fatalf("GET job %s: %d", id, code)
		}
		if c.State != shared.JobCompleted || c.Args.Experiment.Member == "" || !strings.Contains(c.Result.Message, "trained") {
			t.Errorf("model job %s: %s %q: %s %+v", id, c.State, c.Args.Experiment.Member, c.Error, c.Result)
		}
		if c.Finished != nil && c.Finished.After(last) {
			last = *c.Finished
		}
		if i == 0 {
			src = c
			if c.Args.Experiment.Member != "source" {
				t.Errorf("the first model job trains %q, want the source", c.Args.Experiment.Member)
			}
		} else if c.Started.Before(*src.Finished) {
			t.Errorf("model job %s started before the source was trained", id)
		}
	}
	if r := j.Result.Report; r == nil || r.Name != "fanned" || len(r.Files) < 2 {
		t.Fatalf("report %+v", j.Result.Report)
	}
	models, _ := filepath.Glob(filepath.Join(dir, "fleet", "*.safetensors"))
	if len(models) != 5 {
		t.Errorf("%d trained models in the folder, want 5: %v", len(models), models)
	}
	for _, m := range models { // the study used them as the jobs left them
		if fi, err := os.Stat(m); err != nil || fi.ModTime().After(last) {
			t.Errorf("%s was written after the model jobs finished (%v)", m, err)
		}
	}
	for _, tc := range []struct {
		name string
		args shared.ExperimentArgs
		says string
	}{
		{"jobs from the client", shared.ExperimentArgs{Study: "conferrability", Fanout: true, Jobs: []string{"1"}}, "server's to set"},
		{"fanout and member", shared.ExperimentArgs{Study: "conferrability", Fanout: true, Member: "source"}, "exclude each other"},
		{"unknown member", shared.ExperimentArgs{Study: "conferrability", Member: "nobody"}, `member "nobody"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, ts, shared.JobRequest{Kind: shared.JobExperiment, Experiment: &tc.args}, tc.says)
		})
	}
}

// refused posts req and checks that the server refuses it with a 400 whose
// error says says.
func refused(t *testing.T, ts *testServer, req shared.JobRequest, says string) {
	t.Helper()
	var e shared.APIError
	if code := ts.call("POST", "/api/jobs", req, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, says) {
		t.Errorf("%d %q, want 400 saying %q", code, e.Error, says)
	}
}
