package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/conferral/conferral/app"
	"github.com/conferral/conferral/backend/server"
	"github.com/conferral/conferral/shared"
)

// storyServer starts a server of its own in a temporary folder (the
// story's jobs must not mix with the other tests' fixture) and returns its
// base URL.
func storyServer(t *testing.T) string {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	srv, err := server.New(ctx, server.Config{Dir: t.TempDir(), Device: "cpu", Threads: 1, Workers: 1,
		Addr: "127.0.0.1:0", App: app.Handler(filepath.Dir(e2e.wasm))})
	if err != nil {
		stop()
		t.Fatalf("starting the story's server: %v", err)
	}
	addr := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(ctx, func(a string) { addr <- a }) }()
	t.Cleanup(func() { stop(); <-served })
	select {
	case a := <-addr:
		return "http://" + a
	case err := <-served:
		t.Fatalf("serving: %v", err)
	}
	return ""
}

// storyPage is what the home page shows of the story.
type storyPage struct {
	Steps   []storyStepPage
	Running string
	Text    string
	Lead    string
	Cards   []storyCard
	Images  int
}

type storyStepPage struct {
	ID, State, Count, Why string
	Done, Jobs, Epochs    string
	Frac                  string
	Lines                 int
}

type storyCard struct {
	Suspect, Outcome, Truth, Text string
}

func readStory(t *testing.T, ctx context.Context) storyPage {
	t.Helper()
	return eval[storyPage](t, ctx, `(() => {
		const s = document.querySelector('#story');
		return {
			Running: s ? s.dataset.running : '',
			Text: document.querySelector('main').innerText,
			Lead: document.querySelector('main p.lead').innerText,
			Images: document.querySelectorAll('#step-cbim .home-example img').length,
			Steps: [...document.querySelectorAll('#story .story-step')].map(e => ({
				ID: e.id, State: e.dataset.state, Done: e.dataset.done, Jobs: e.dataset.jobs, Frac: e.dataset.frac,
				Count: e.querySelector('.step-count').innerText, Why: e.querySelector('.why').innerText,
				Epochs: (e.querySelector('[data-epochs]') || {dataset: {}}).dataset.epochs || '',
				Lines: e.querySelectorAll('svg polyline').length})),
			Cards: [...document.querySelectorAll('#step-verify .story-verdict')].map(c => ({
				Suspect: c.dataset.suspect, Outcome: c.dataset.outcome, Truth: c.dataset.truth, Text: c.innerText})),
		}; })()`)
}

// TestDemoStoryOnHome runs a toy demo (the jobs and names of `conferral
// demo --serve`, on 1,000 images and one-epoch MLPs) and opens the home
// page in the middle of it, after it has been followed live to the end,
// and again after a reload.
func TestDemoStoryOnHome(t *testing.T) {
	base := storyServer(t)
	bg := context.Background()
	submit := func(r shared.JobRequest) shared.Job {
		t.Helper()
		var j shared.Job
		if err := callAt(bg, base, http.MethodPost, "/api/jobs", r, &j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	wait := func(id string) *shared.Job {
		t.Helper()
		j, err := waitJobAt(bg, base, id)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	train := func(name, split, teacher string, limit, epochs int, seed int64) shared.JobRequest {
		return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{
			DataArgs: shared.DataArgs{Split: split, Limit: limit}, Name: name, Arch: "mlp", Epochs: epochs, Seed: seed, Teacher: teacher}}
	}

	// 1. The source, two epochs so that its chart has two points.
	src := wait(submit(train("source", "defender", "", 1000, 2, 1)).ID).Result.Models[0].ID
	// 2. The fleet and the adversary's models, in the demo's order. A long
	// job that is not the story's holds the one worker after the first
	// two, so that the page is opened in the middle of the fleet.
	first := []shared.JobRequest{
		train("train-surrogate-mlp-0", "defender", src, 1000, 1, 100),
		train("train-reference-mlp-0", "defender", "", 1000, 1, 101),
	}
	rest := []shared.JobRequest{
		train("train-surrogate-mlp-1", "defender", src, 1000, 1, 102),
		train("train-reference-mlp-1", "defender", "", 1000, 1, 103),
		train("calibration-mlp-0", "defender", "", 1000, 1, 104),
		train("calibration-mlp-1", "defender", "", 1000, 1, 105),
		train("test-surrogate-mlp-0", "adversary", src, 1000, 1, 106),
		train("test-reference-mlp-0", "adversary", "", 1000, 1, 107),
	}
	var ids []string
	for _, r := range first {
		ids = append(ids, submit(r).ID)
	}
	holder := submit(train("queue-holder", "defender", "", 0, 50, 9)).ID
	for _, r := range rest {
		ids = append(ids, submit(r).ID)
	}
	for _, id := range ids[:2] {
		wait(id)
	}

	ctx, cancel := chromedp.NewContext(e2e.browser)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('main[data-page=home][data-loaded=true] #story') !== null`, "the story")
	// The source's chart is filled from its replayed epoch events.
	waitFor(t, ctx, `document.querySelector('#step-source [data-epochs]').dataset.epochs === '2'`, "the source's epochs")
	var j shared.Job
	if err := callAt(bg, base, http.MethodGet, "/api/jobs/"+holder, nil, &j); err != nil || j.State.Final() {
		t.Fatalf("the queue holder is %s (%v): the page was not opened mid-run", j.State, err)
	}
	mid := readStory(t, ctx)
	var order []string
	for _, s := range mid.Steps {
		order = append(order, s.ID)
		if len(s.Why) < 80 {
			t.Errorf("step %s explains itself in %q", s.ID, s.Why)
		}
	}
	if want := []string{"step-source", "step-fleet", "step-cbim", "step-adversary", "step-verify"}; !slices.Equal(order, want) {
		t.Fatalf("steps %q, want %q", order, want)
	}
	want := []storyStepPage{
		{State: "done", Done: "1", Jobs: "1", Count: "1 of 1 model", Frac: "1.000"},
		{State: "running", Done: "2", Jobs: "6", Count: "2 of 6 models", Frac: "0.333"}, // the others are queued
		{State: "waiting", Done: "0", Jobs: "0", Count: "not started", Frac: "0.000"},
		{State: "running", Done: "0", Jobs: "2", Count: "0 of 2 models", Frac: "0.000"},
		{State: "waiting", Done: "0", Jobs: "0", Count: "not started", Frac: "0.000"},
	}
	for i, w := range want {
		s := mid.Steps[i]
		if s.State != w.State || s.Done != w.Done || s.Jobs != w.Jobs || s.Count != w.Count || s.Frac != w.Frac {
			t.Errorf("mid-run %s: %s, %s of %s, %q; want %+v", s.ID, s.State, s.Done, s.Jobs, s.Count, w)
		}
	}
	if mid.Steps[0].Lines != 3 { // loss, train and test accuracy
		t.Errorf("the source's charts draw %d lines, want 3", mid.Steps[0].Lines)
	}
	if mid.Running != "true" || strings.Contains(mid.Text, "No fingerprint is stored yet") || !strings.Contains(mid.Text, "The fingerprints appear here when C-BIM has made them") {
		t.Errorf("mid-run page (running %q):\n%s", mid.Running, mid.Text)
	}
	if strings.Contains(mid.Lead, "judged a surrogate") || !strings.Contains(mid.Lead, "derived") || !strings.Contains(mid.Lead, "inconclusive") {
		t.Errorf("the lead says %q", mid.Lead)
	}
	shoot(t, ctx, "home-story-mid")

	// The rest is followed live, without a reload.
	if err := callAt(bg, base, http.MethodPost, "/api/jobs/"+holder+"/cancel", nil, &j); err != nil {
		t.Fatal(err)
	}
	var models []string
	for _, id := range ids {
		models = append(models, wait(id).Result.Models[0].ID)
	}
	waitFor(t, ctx, `document.querySelector('#step-fleet').dataset.state === 'done' && document.querySelector('#step-adversary').dataset.state === 'done'`,
		"the fleet and the adversary's models, live")
	ex := wait(submit(shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: shared.DataArgs{Limit: 1000}, Name: "demo fingerprint", Source: src,
		Surrogates: []string{models[0], models[2]}, References: []string{models[1], models[3]}, Calibration: models[4:6],
		Eps: 0.15, Steps: 20, Candidates: 256, Tau: new(1.0), Seed: 1,
	}}).ID).Result.Fingerprint
	waitFor(t, ctx, `document.querySelector('#step-cbim').dataset.state === 'done' && document.querySelectorAll('#step-cbim .home-example').length > 0`,
		"the fingerprints, live")
	verdicts := map[string]*shared.Verdict{}
	for i, name := range []string{"test-surrogate-mlp-0", "test-reference-mlp-0"} {
		id := submit(shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: ex.ID, Model: models[6+i]}}).ID
		verdicts[name] = wait(id).Result.Verdict
	}
	waitFor(t, ctx, `document.querySelectorAll('#step-verify .story-verdict').length === 2`, "the verdict cards, live")

	// Reloaded at the end, the page shows the whole story again.
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('main[data-page=home][data-loaded=true] #story') !== null && document.querySelectorAll('#step-verify .story-verdict').length === 2`, "the story after a reload")
	// The source's epochs come from its job's events, replayed after the
	// page has loaded: wait for them rather than read them mid-replay.
	waitFor(t, ctx, `(document.querySelector('#step-source [data-epochs]') || {dataset: {}}).dataset.epochs === '2'`, "the source's epochs after a reload")
	waitFor(t, ctx, imagesLoaded("#step-cbim .home-example img"), "the fingerprints' images")
	end := readStory(t, ctx)
	for _, s := range end.Steps {
		if s.State != "done" {
			t.Errorf("at the end %s is %s (%s)", s.ID, s.State, s.Count)
		}
	}
	if end.Running != "false" || end.Images < 3 || end.Steps[0].Epochs != "2" {
		t.Errorf("at the end: running %q, %d fingerprint images, %s source epochs", end.Running, end.Images, end.Steps[0].Epochs)
	}
	for _, c := range end.Cards {
		v := verdicts[c.Suspect]
		if v == nil {
			t.Errorf("a card for %q, no such suspect", c.Suspect)
			continue
		}
		truth := shared.OutcomeIndependent
		if strings.HasPrefix(c.Suspect, "test-surrogate-") {
			truth = shared.OutcomeDerived
		}
		// The card says the job's verdict: its outcome, accuracy, interval
		// and calibrated threshold, and whether it is right.
		for _, w := range []string{
			fmt.Sprintf("%.2f", v.Accuracy), fmt.Sprintf("%.2f–%.2f", v.Interval[0], v.Interval[1]),
			fmt.Sprintf("calibrated threshold %.2f", v.Threshold), "it is " + truth,
		} {
			if !strings.Contains(c.Text, w) {
				t.Errorf("%s's card lacks %q:\n%s", c.Suspect, w, c.Text)
			}
		}
		if c.Outcome != v.Outcome || c.Truth != truth || !v.Calibrated {
			t.Errorf("%s's card: %s (truth %s), the job's verdict %s (calibrated %v)", c.Suspect, c.Outcome, c.Truth, v.Outcome, v.Calibrated)
		}
	}
	shoot(t, ctx, "home-story")
}
