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

// The demo's second fingerprint, the source's own mistakes, is a step after
// C-BIM's with its own verdict cards; a story without one has no such step.
func TestStoryNatural(t *testing.T) {
	var s storyJobs
	src := s.train("source", shared.JobCompleted)
	srcID := src.Result.Models[0].ID
	s.train("train-surrogate-mlp-0", shared.JobCompleted)
	s.train("test-surrogate-mlp-0", shared.JobCompleted)
	s.train("test-reference-mlp-0", shared.JobCompleted)
	d, _ := findStory(s.newestFirst(), nil)
	var keys []string
	for _, st := range d.Steps {
		keys = append(keys, st.Key)
	}
	if want := []string{stepSource, stepFleet, stepCBIM, stepAdversary, stepVerify}; !slices.Equal(keys, want) {
		t.Errorf("steps without a natural fingerprint %q, want %q", keys, want)
	}

	s.add(shared.Job{Kind: shared.JobExtract, State: shared.JobCompleted,
		Args:   shared.JobRequest{Extract: &shared.ExtractArgs{Name: "demo fingerprint", Source: srcID}},
		Result: &shared.JobResult{Fingerprint: &shared.FingerprintInfo{ID: "fp-cbim", Attack: shared.AttackCBIM}}})
	nat := s.add(shared.Job{Kind: shared.JobExtract, State: shared.JobRunning,
		Args:     shared.JobRequest{Extract: &shared.ExtractArgs{Name: "demo natural fingerprint", Source: srcID, Natural: true}},
		Progress: &shared.Event{Kind: shared.Progress, Step: 1, Total: 4, Seq: 1}})
	d, _ = findStory(s.newestFirst(), nil)
	keys = keys[:0]
	for _, st := range d.Steps {
		keys = append(keys, st.Key)
	}
	if want := []string{stepSource, stepFleet, stepCBIM, stepNatural, stepAdversary, stepVerify}; !slices.Equal(keys, want) {
		t.Fatalf("steps %q, want %q", keys, want)
	}
	if st := d.Steps[3]; st.State() != "running" || st.Frac != 0.25 || st.Count() != "0 of 1 fingerprint" {
		t.Errorf("the natural step mid-extraction: %s, %.2f, %q", st.State(), st.Frac, st.Count())
	}
	h := &home{story: d, hasStory: true, live: map[string]shared.Event{}}
	if html := ui.HTMLString(h.stepView(d.Steps[3])); !strings.Contains(html, "appear here when the extraction has chosen them") || !strings.Contains(html, "not the paper") {
		t.Errorf("the natural step before its fingerprint:\n%s", html)
	}

	nat.State, nat.Progress = shared.JobCompleted, nil
	nat.Result = &shared.JobResult{Fingerprint: &shared.FingerprintInfo{ID: "fp-natural-0123456789", Attack: shared.AttackNatural, Count: 37, Tau: 0.6}}
	verify := func(model, fp, outcome string, acc float64) {
		s.add(shared.Job{Kind: shared.JobVerify, State: shared.JobCompleted,
			Args:   shared.JobRequest{Verify: &shared.VerifyArgs{Fingerprint: fp, Model: model}},
			Result: &shared.JobResult{Verdict: &shared.Verdict{Outcome: outcome, Accuracy: acc, Threshold: 0.4}}})
	}
	verify("m-test-surrogate-mlp-0", "fp-cbim", shared.OutcomeDerived, 0.9)
	verify("m-test-reference-mlp-0", "fp-cbim", shared.OutcomeIndependent, 0.1)
	verify("m-test-surrogate-mlp-0", "fp-natural-0123456789", shared.OutcomeDerived, 0.7)
	verify("m-test-reference-mlp-0", "fp-natural-0123456789", shared.OutcomeInconclusive, 0.35)
	verify("m-source", "fp-natural-0123456789", shared.OutcomeDerived, 1) // not a suspect of the story

	d, _ = findStory(s.newestFirst(), nil)
	if d.Running() {
		t.Error("the finished story says it runs")
	}
	if st := d.Steps[len(d.Steps)-1]; st.Key != stepVerify || len(st.Jobs) != 4 || st.Count() != "4 of 4 verdicts" {
		t.Errorf("verification counts both fingerprints' verdicts: %s %q", st.Key, st.Count())
	}
	vs, nv := d.Verdicts(), d.NaturalVerdicts()
	if len(vs) != 2 || vs[0].Verdict.Accuracy != 0.9 || vs[1].Verdict.Accuracy != 0.1 {
		t.Errorf("C-BIM's verdicts %+v", vs)
	}
	if len(nv) != 2 || nv[0].Verdict.Accuracy != 0.7 || nv[1].Verdict.Outcome != shared.OutcomeInconclusive {
		t.Errorf("the natural fingerprint's verdicts %+v", nv)
	}
	h = &home{story: d, hasStory: true, live: map[string]shared.Event{}}
	html := ui.HTMLString(h.stepView(d.Steps[3]))
	for _, want := range []string{`data-state="done"`, "37 held-out images the source misclassifies", "τ = 0.60", "fp-natural-0", "test-surrogate-mlp-0: derived", "test-reference-mlp-0: inconclusive", "wrong: it is independent"} {
		if !strings.Contains(html, want) {
			t.Errorf("the natural step lacks %q:\n%s", want, html)
		}
	}
	if strings.Count(html, `story-verdict"`) != 2 {
		t.Errorf("the natural step has %d verdict cards, want 2:\n%s", strings.Count(html, `story-verdict"`), html)
	}
	if html := ui.HTMLString(h.stepView(d.Steps[len(d.Steps)-1])); strings.Count(html, `story-verdict"`) != 2 || strings.Contains(html, "0.35") {
		t.Errorf("the verification step shows the natural fingerprint's cards:\n%s", html)
	}
}
