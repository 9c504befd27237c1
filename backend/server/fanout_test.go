package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/train"
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

// TestExtractTwins runs an extraction with a stored twin of the source and
// one it trains itself: the trained twin has the source's architecture and
// recorded recipe and another seed, and the fingerprint records both twins
// (Meta.Twins) and lists them among its training models as twins.
func TestExtractTwins(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	given := ts.mustComplete(tiny("twin", "defender", 7, "", 600)).Result.Models[0] // the source's arch and recipe, seed 7
	j := ts.mustComplete(shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: shared.DataArgs{Limit: 200}, Source: f.source.ID,
		Surrogates: []string{f.surrogate.ID}, References: []string{f.reference.ID}, Twins: []string{given.ID},
		Eps: 0.25, Alpha: 0.025, Steps: 10, Tau: new(0.01), Candidates: 40, Batch: 40,
		Train: &shared.ExtractTraining{Twins: 1, Epochs: 3, Limit: 300}}}) // epochs: not the twins'
	a := j.Args.Extract
	if a.Train == nil || len(a.Train.Jobs) != 1 || !a.Train.Gathered || len(a.Twins) != 2 || a.Twins[0] != given.ID {
		t.Fatalf("the extraction's training %+v and twins %v, want one twin trained after the given one", a.Train, a.Twins)
	}
	var c shared.Job
	if code := ts.call("GET", "/api/jobs/"+a.Train.Jobs[0], nil, &c); code != http.StatusOK || c.State != shared.JobCompleted || len(c.Result.Models) != 1 {
		t.Fatalf("the twin's training job: %d %s %s", code, c.State, c.Error)
	}
	twin := c.Result.Models[0]
	if twin.ID != a.Twins[1] || twin.Role != shared.RoleTwin || twin.Arch != f.source.Arch || twin.Parent != "" {
		t.Errorf("trained twin %+v, want a %s of the source's arch %s, taught by no one", twin, shared.RoleTwin, f.source.Arch)
	}
	meta := func(id string) map[string]string {
		_, path, err := ts.store.Model(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		sf, err := safetensors.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sf.Metadata
	}
	sm, tm := meta(f.source.ID), meta(twin.ID)
	if sm[train.MetaRecipe] == "" || tm[train.MetaRecipe] != sm[train.MetaRecipe] || twin.Recipe != f.source.Recipe {
		t.Errorf("the twin's recipe %q (record %q), want the source's %q", tm[train.MetaRecipe], twin.Recipe, sm[train.MetaRecipe])
	}
	if tm["train.seed"] == sm["train.seed"] || tm["train.split"] != "defender" {
		t.Errorf("the twin was trained from seed %s on the %s split, the source from seed %s: want another seed, the defender's split", tm["train.seed"], tm["train.split"], sm["train.seed"])
	}
	if j.Result == nil || j.Result.Fingerprint == nil {
		t.Fatalf("extraction result %+v, want a fingerprint", j.Result)
	}
	_, path, err := ts.store.Fingerprint(context.Background(), j.Result.Fingerprint.ID)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := fingerprint.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fp.Meta.Twins, a.Twins) {
		t.Errorf("the fingerprint records twins %v, want %v", fp.Meta.Twins, a.Twins)
	}
	var d shared.FingerprintDetail
	if code := ts.call("GET", "/api/fingerprints/"+j.Result.Fingerprint.ID, nil, &d); code != http.StatusOK {
		t.Fatalf("GET the fingerprint: %d", code)
	}
	var roles []string
	for _, m := range d.Models {
		roles = append(roles, m.Role)
	}
	if want := []string{shared.RoleSurrogate, shared.RoleReference, shared.RoleTwin, shared.RoleTwin}; !slices.Equal(roles, want) || d.Models[2].ID != given.ID {
		t.Errorf("the fingerprint's training models are %v, want %v (the given twin first)", roles, want)
	}
}

// TestExtractFanOutRefused checks the requests for training models that
// are refused before anything is queued.
func TestExtractFanOutRefused(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	for _, tc := range []struct {
		name        string
		train       shared.ExtractTraining
		refs, twins []string
		says        string
	}{
		{"no references at all", shared.ExtractTraining{Surrogates: 2}, nil, nil, "at least one surrogate and one reference"},
		{"twins are no references", shared.ExtractTraining{Surrogates: 1, Twins: 1}, nil, nil, "at least one surrogate and one reference"},
		{"negative", shared.ExtractTraining{Surrogates: -1, References: 2}, nil, nil, "want 0 to 256"},
		{"negative twins", shared.ExtractTraining{Surrogates: 1, References: 1, Twins: -1}, nil, nil, "want 0 to 256"},
		{"too many", shared.ExtractTraining{Surrogates: 200, References: 100}, nil, nil, "want 0 to 256"},
		{"too many with the twins", shared.ExtractTraining{Surrogates: 100, References: 100, Twins: 57}, nil, nil, "want 0 to 256"},
		{"bad arch", shared.ExtractTraining{Surrogates: 1, References: 1, Archs: []string{"mlp", "nope"}}, nil, nil, "nope"},
		{"bad epochs", shared.ExtractTraining{Surrogates: 1, References: 1, Epochs: 100000}, nil, nil, "epochs"},
		{"jobs set by the client", shared.ExtractTraining{Surrogates: 1, References: 1, Jobs: []string{"1"}}, nil, nil, "server's to set"},
		{"gathered set by the client", shared.ExtractTraining{Surrogates: 1}, []string{f.reference.ID}, nil, ""},
		{"a twin that is a reference", shared.ExtractTraining{Surrogates: 1}, []string{f.reference.ID}, []string{f.reference.ID},
			"twin " + f.reference.ID + " is also a reference"},
		{"a twin that is the source", shared.ExtractTraining{Surrogates: 1, References: 1}, nil, []string{f.source.ID}, "is also the source"},
		{"an unknown twin", shared.ExtractTraining{Surrogates: 1, References: 1}, nil, []string{"nope"}, `twin: no stored model "nope"`},
		{"a twin made from the source", shared.ExtractTraining{Surrogates: 1}, []string{f.reference.ID}, []string{f.surrogate.ID}, "was made from the source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.train
			if tc.says == "" { // a valid request with Gathered forged
				tr.Gathered, tc.says = true, "server's to set"
			}
			refused(t, ts, shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
				Source: f.source.ID, Surrogates: []string{}, References: tc.refs, Twins: tc.twins, Train: &tr}}, tc.says)
		})
	}
	// A source that records no recipe (only its record is read) has no
	// twins to train.
	sum, path, _, err := ts.art.write(strings.NewReader("weights of an uploaded model"), 1<<10, ".safetensors")
	if err != nil {
		t.Fatal(err)
	}
	up := shared.ModelInfo{ID: sum, SHA256: sum, Name: "uploaded", Arch: f.source.Arch, Role: shared.RoleUploaded, Dataset: f.source.Dataset, Created: time.Now()}
	if err := ts.store.PutModel(context.Background(), up, path); err != nil {
		t.Fatal(err)
	}
	refused(t, ts, shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{Source: sum,
		Surrogates: []string{f.surrogate.ID}, References: []string{f.reference.ID}, Train: &shared.ExtractTraining{Twins: 1}}},
		"the source uploaded records no training recipe")
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
