//go:build !wasm

package app

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// storyJobs builds a demo's jobs as GET /api/jobs lists them, newest first.
type storyJobs struct{ jobs []shared.Job }

func (s *storyJobs) add(j shared.Job) *shared.Job {
	j.ID = fmt.Sprint(len(s.jobs) + 1)
	s.jobs = append(s.jobs, j)
	return &s.jobs[len(s.jobs)-1]
}

func (s *storyJobs) train(name string, state shared.JobState) *shared.Job {
	j := shared.Job{Kind: shared.JobTrain, State: state, Args: shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{Name: name}}}
	if state == shared.JobCompleted {
		j.Result = &shared.JobResult{Models: []shared.ModelInfo{{ID: "m-" + name, Name: name, TestAcc: 0.8}}}
	}
	return s.add(j)
}

func (s *storyJobs) newestFirst() []shared.Job {
	out := slices.Clone(s.jobs)
	slices.Reverse(out)
	return out
}

func TestFindStory(t *testing.T) {
	var s storyJobs
	if _, ok := findStory(nil, nil); ok {
		t.Fatal("a story without jobs")
	}
	// An earlier demo's jobs, which the story must not count.
	s.train("source", shared.JobCompleted)
	s.train("train-surrogate-mlp-0", shared.JobFailed)
	s.train("e2e-source", shared.JobCompleted) // not the demo's

	src := s.train("source", shared.JobCompleted)
	srcID := src.Result.Models[0].ID
	s.train("train-surrogate-mlp-0", shared.JobCompleted)
	s.train("train-reference-mlp-0", shared.JobCompleted)
	run := s.train("calibration-mlp-0", shared.JobRunning)
	run.Progress = &shared.Event{Kind: shared.Progress, Step: 10, Total: 40, Seq: 3}
	s.train("test-surrogate-mlp-0", shared.JobQueued)
	s.train("test-reference-mlp-0", shared.JobQueued)

	d, ok := findStory(s.newestFirst(), map[string]shared.Event{})
	if !ok {
		t.Fatal("no story found")
	}
	if d.Source.ID != src.ID {
		t.Errorf("source job %s, want the newest, %s", d.Source.ID, src.ID)
	}
	want := []struct {
		key, state string
		jobs, done int
		frac       float64
	}{
		{stepSource, "done", 1, 1, 1},
		{stepFleet, "running", 3, 2, (1 + 1 + 0.25) / 3},
		{stepCBIM, "waiting", 0, 0, 0},
		{stepAdversary, "running", 2, 0, 0},
		{stepVerify, "waiting", 0, 0, 0},
	}
	check := func(d demoStory) {
		t.Helper()
		for i, w := range want {
			st := d.Steps[i]
			if st.Key != w.key || st.State() != w.state || len(st.Jobs) != w.jobs || st.Done != w.done || math.Abs(st.Frac-w.frac) > 1e-9 {
				t.Errorf("step %d: %s %s, %d jobs, %d done, %.3f; want %+v", i, st.Key, st.State(), len(st.Jobs), st.Done, st.Frac, w)
			}
		}
	}
	check(d)
	if !d.Running() || d.Fingerprint() != nil {
		t.Errorf("running %v, fingerprint %v mid-run", d.Running(), d.Fingerprint())
	}
	// A newer live event moves the running job on.
	d, _ = findStory(s.newestFirst(), map[string]shared.Event{run.ID: {Kind: shared.Progress, Step: 30, Total: 40, Seq: 9}})
	want[1].frac = (1 + 1 + 0.75) / 3
	check(d)

	// The rest of the story: the fleet trained, C-BIM, the verdicts.
	for i := range s.jobs {
		if j := &s.jobs[i]; j.State == shared.JobQueued || j.ID == run.ID {
			j.State, j.Result = shared.JobCompleted, &shared.JobResult{Models: []shared.ModelInfo{{ID: "m-" + j.Args.Train.Name}}}
		}
	}
	s.add(shared.Job{Kind: shared.JobExtract, State: shared.JobCompleted,
		Args:   shared.JobRequest{Extract: &shared.ExtractArgs{Name: "demo fingerprint", Source: srcID}},
		Result: &shared.JobResult{Fingerprint: &shared.FingerprintInfo{ID: "fp"}}})
	verify := func(model, fp, outcome string) {
		s.add(shared.Job{Kind: shared.JobVerify, State: shared.JobCompleted,
			Args:   shared.JobRequest{Verify: &shared.VerifyArgs{Fingerprint: fp, Model: model}},
			Result: &shared.JobResult{Verdict: &shared.Verdict{Outcome: outcome}}})
	}
	verify("m-test-surrogate-mlp-0", "fp", shared.OutcomeDerived)
	verify("m-test-reference-mlp-0", "fp", shared.OutcomeDerived)
	verify("m-test-reference-mlp-0", "other", shared.OutcomeIndependent) // another fingerprint
	verify("m-source", "fp", shared.OutcomeDerived)                      // not a suspect of the story

	d, _ = findStory(s.newestFirst(), nil)
	if d.Running() {
		t.Error("the finished story says it runs")
	}
	for _, st := range d.Steps {
		if st.State() != "done" || st.Frac != 1 {
			t.Errorf("step %s: %s, %.2f", st.Key, st.State(), st.Frac)
		}
	}
	if fp := d.Fingerprint(); fp == nil || fp.ID != "fp" {
		t.Errorf("fingerprint %+v", fp)
	}
	vs := d.Verdicts()
	if len(vs) != 2 || vs[0].Model != "m-test-surrogate-mlp-0" || vs[1].Model != "m-test-reference-mlp-0" {
		t.Fatalf("verdicts %+v", vs)
	}
	if d.Truth(vs[0].Model) != shared.OutcomeDerived || d.Truth(vs[1].Model) != shared.OutcomeIndependent {
		t.Errorf("truths %s, %s", d.Truth(vs[0].Model), d.Truth(vs[1].Model))
	}
}

func TestStoryViews(t *testing.T) {
	var s storyJobs
	s.train("source", shared.JobCompleted)
	failed := s.train("train-surrogate-mlp-0", shared.JobFailed)
	failed.Error = "out of memory"
	d, _ := findStory(s.newestFirst(), nil)
	h := &home{story: d, hasStory: true, live: map[string]shared.Event{}}
	html := ui.HTMLString(h.stepView(d.Steps[1]))
	for _, want := range []string{`data-state="failed"`, "train-surrogate-mlp-0 failed: out of memory", "0 of 1 model"} {
		if !strings.Contains(html, want) {
			t.Errorf("the failed fleet's step lacks %q:\n%s", want, html)
		}
	}
	if html := ui.HTMLString(h.stepView(d.Steps[2])); !strings.Contains(html, "The fingerprints appear here when C-BIM has made them") || strings.Contains(html, "No fingerprint is stored yet") {
		t.Errorf("C-BIM's step before the fingerprint:\n%s", html)
	}

	null := &shared.Null{Models: 10, Mean: 0.2, SD: 0.05, FPR: 0.01}
	v := shared.Verdict{Suspect: "/x/test-reference-mlp-0.safetensors", Outcome: shared.OutcomeDerived, Accuracy: 0.81, Interval: [2]float64{0.7, 0.9},
		Confidence: 0.95, Threshold: 0.42, Theta: 0.7, Calibrated: true, Null: null}
	html = ui.HTMLString(verdictCard(v, "test-reference-mlp-0", shared.OutcomeIndependent))
	for _, want := range []string{"test-reference-mlp-0: derived", "0.81", "0.70–0.90", "calibrated threshold 0.42: 10 independent models", "wrong: it is independent", `data-outcome="derived"`} {
		if !strings.Contains(html, want) {
			t.Errorf("the verdict card lacks %q:\n%s", want, html)
		}
	}
}
