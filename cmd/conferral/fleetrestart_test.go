package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/conferral/conferral/shared"
)

// TestFleetDatabaseRestart kills a worker while it trains and then
// restarts PostgreSQL while the killed job waits for its lease to run out:
// every connection of the coordinator and of the surviving worker drops
// for a second. The coordinator's API must answer again, every job must
// complete exactly once (the killed one on the survivor, in its second
// attempt), and a job submitted after the restart must run.
func TestFleetDatabaseRestart(t *testing.T) {
	const lease = 4 * time.Second
	f := startFleet(t, lease)
	workers := []*fleetWorker{f.startWorker(t, "w1", 1), f.startWorker(t, "w2", 1)}
	long := f.submit(t, trainJob(1000, 8, 2000))
	for i := range 4 {
		f.submit(t, trainJob(int64(i+1), 1, 300))
	}
	// The restart must hit the other worker while it runs a job too.
	js := f.waitFor(t, "the long job training while the other worker runs a short one", 3*time.Minute, func(js map[string]shared.Job) bool {
		l := js[long.ID]
		if l.State != shared.JobRunning || l.Worker == "" || l.Progress == nil {
			return false
		}
		for id, j := range js {
			if id != long.ID && j.State == shared.JobRunning && j.Worker != "" && j.Worker != l.Worker {
				return true
			}
		}
		return false
	})
	var victim, survivor *fleetWorker
	for _, w := range workers {
		if w.name == js[long.ID].Worker {
			victim = w
		} else {
			survivor = w
		}
	}
	if victim == nil {
		t.Fatalf("the long job runs on %q, not on a test worker", js[long.ID].Worker)
	}
	victim.kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := f.pg.Restart(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s while it ran job %s, then restarted PostgreSQL (%.1f s down)", victim.name, long.ID, time.Since(start).Seconds())

	// The coordinator answers again once its pool has reconnected.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(f.http.URL + "/api/jobs")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator does not answer 30 s after the restart: %v %v", resp, err)
		}
	}
	t.Logf("the coordinator answers %.1f s after the restart began", time.Since(start).Seconds())

	after := f.submit(t, trainJob(99, 1, 300))
	js = f.waitFor(t, "every job to finish", 5*time.Minute, allFinal)
	for id, j := range js {
		if j.State != shared.JobCompleted {
			t.Errorf("job %s: %s attempt %d on %s (%s), want completed", id, j.State, j.Attempt, j.Worker, j.Error)
		}
	}
	if l := js[long.ID]; l.Worker != survivor.name || l.Attempt != 2 {
		t.Errorf("the killed job ran last on %s in attempt %d, want %s in attempt 2", l.Worker, l.Attempt, survivor.name)
	}
	if a := js[after.ID]; a.Worker != survivor.name {
		t.Errorf("the job submitted after the restart ran on %q, want %s", a.Worker, survivor.name)
	}

	// One completed queue row per job; only the killed worker's attempts
	// were taken back.
	conn, err := pgx.Connect(context.Background(), f.pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	type qrow struct {
		Job, State string
		By         []string
	}
	var qrows []qrow
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		rows, err := conn.Query(context.Background(), `SELECT args->>'job', state, attempted_by FROM river_job ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		if qrows, err = pgx.CollectRows(rows, pgx.RowToStructByPos[qrow]); err != nil {
			t.Fatal(err)
		}
		settled := true
		for _, r := range qrows {
			settled = settled && (r.State == "completed" || r.State == "cancelled")
		}
		if settled || time.Now().After(deadline) {
			break
		}
	}
	completed := map[string]int{}
	for _, r := range qrows {
		switch r.State {
		case "completed":
			completed[r.Job]++
		case "cancelled":
			if len(r.By) == 0 || r.By[len(r.By)-1] != victim.name {
				t.Errorf("queue row of job %s cancelled (run by %v); only the killed worker's attempts should be", r.Job, r.By)
			}
		default:
			t.Errorf("queue row of job %s left %s", r.Job, r.State)
		}
	}
	for id, j := range js {
		n := completed[id]
		if j.Worker == victim.name && j.Attempt == 1 {
			n++ // finished by the victim just before it died; its row taken back
		}
		if n != 1 {
			t.Errorf("job %s completed %d times, want once (record: %s on %s, attempt %d)", id, n, j.State, j.Worker, j.Attempt)
		}
	}
	// What the outage did, as the jobs' events tell it.
	for id := range js {
		for _, e := range jobEvents(t, f, id) {
			if strings.Contains(e.Message, "database was unreachable") {
				t.Logf("job %s: %s", id, e.Message)
			}
		}
	}
	var models []shared.ModelInfo
	f.call(t, "GET", "/api/models", nil, &models)
	if len(models) != len(js) {
		t.Errorf("%d models stored for %d jobs", len(models), len(js))
	}
}
