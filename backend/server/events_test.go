package server

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// TestNonFiniteMetrics reports a diverged training's events (+Inf and NaN
// metrics): they reach a websocket watcher, the record and the job's
// progress, with the finite metrics kept and the others named.
func TestNonFiniteMetrics(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	ctx := context.Background()
	j, err := ts.store.NewJob(ctx, tiny("diverged", "defender", 1, "", 64))
	if err != nil {
		t.Fatal(err)
	}
	c := ts.watch(j.ID)
	// Progress steps are not replayed: report once the server's side of
	// the websocket listens.
	for deadline := time.Now().Add(10 * time.Second); !ts.hub.watched(j.ID); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the websocket never subscribed")
		}
	}
	report := ts.reporter(ctx, j.ID)
	events := []shared.Event{
		{Kind: shared.Progress, Stage: "train", Step: 1, Total: 1, Metrics: map[string]float64{"loss": math.Inf(1), "lr": 0.001}},
		{Kind: shared.Epoch, Stage: "train", Epoch: 1, Message: "epoch 1", Metrics: map[string]float64{"loss": math.NaN(), "train_acc": 0.1, "test_acc": math.Inf(-1)}},
	}
	for _, e := range events {
		report(e)
	}
	for i, want := range []struct {
		kind    shared.EventKind
		metrics map[string]float64
		message string
	}{
		{shared.Progress, map[string]float64{"lr": 0.001}, "not finite: loss=+Inf"},
		{shared.Epoch, map[string]float64{"train_acc": 0.1}, "epoch 1 (not finite: loss=NaN, test_acc=-Inf)"},
	} {
		e, _ := until(t, c, func(e shared.Event) bool { return e.Kind == want.kind })
		if len(e.Metrics) != len(want.metrics) || e.Message != want.message {
			t.Errorf("event %d: metrics %v, message %q; want %v, %q", i, e.Metrics, e.Message, want.metrics, want.message)
		}
		for k, v := range want.metrics {
			if e.Metrics[k] != v {
				t.Errorf("event %d: %s = %v, want %v", i, k, e.Metrics[k], v)
			}
		}
	}
	evs, err := ts.store.Events(ctx, j.ID)
	if err != nil || len(evs) != 1 || !strings.Contains(evs[0].Message, "loss=NaN") {
		t.Errorf("recorded events %+v, %v; want the epoch", evs, err)
	}
	got, err := ts.store.Job(ctx, j.ID)
	if err != nil || got.Progress == nil || got.Progress.Kind != shared.Epoch {
		t.Errorf("progress %+v, %v; want the epoch", got.Progress, err)
	}
	// The caller's map is left as it was.
	if !math.IsInf(events[0].Metrics["loss"], 1) {
		t.Error("the reporter changed the caller's metrics")
	}
}

// watched says whether a subscription follows job.
func (h *hub) watched(job string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.job == job {
			return true
		}
	}
	return false
}
