package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

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
		Eps:        0.25, Alpha: 0.025, Steps: 10, Tau: 0.01, Candidates: 40, Batch: 40,
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
			b, _ := json.Marshal(shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
				Source: f.source.ID, Surrogates: []string{}, References: tc.refs, Train: &tr}})
			resp, err := http.Post(ts.http.URL+"/api/jobs", "application/json", bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.says) {
				t.Errorf("%d %s, want 400 saying %q", resp.StatusCode, body, tc.says)
			}
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
