package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/conferral/conferral/internal/pgtest"
	"github.com/conferral/conferral/shared"
)

// TestConcurrentSubmissions sends many verifications at once: every one is
// accepted (202) or refused as busy (503 with Retry-After), never 500;
// every accepted job has its own ID, is linked to the queue and begins
// with its queued event.
func TestConcurrentSubmissions(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	const n = 500
	body, _ := json.Marshal(shared.VerifyArgs{Fingerprint: f.fp.ID, Model: f.surrogate.ID})
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: n, MaxIdleConnsPerHost: n}}
	type answer struct {
		status     int
		retryAfter string
		job        shared.Job
		body       string
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Post(ts.http.URL+"/api/verify", "application/json", bytes.NewReader(body))
			if err != nil {
				answers[i].body = err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers[i] = answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b)}
			if resp.StatusCode == http.StatusAccepted {
				json.Unmarshal(b, &answers[i].job)
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	ids := map[string]bool{}
	busy := 0
	for i, a := range answers {
		switch a.status {
		case http.StatusAccepted:
			if a.job.ID == "" || ids[a.job.ID] {
				t.Errorf("request %d: job ID %q missing or repeated", i, a.job.ID)
			}
			ids[a.job.ID] = true
		case http.StatusServiceUnavailable:
			busy++
			if a.retryAfter == "" {
				t.Errorf("request %d: 503 without Retry-After: %s", i, a.body)
			}
		default:
			t.Errorf("request %d: %d %s", i, a.status, a.body)
		}
	}
	t.Logf("%d concurrent submissions in %v: %d accepted, %d busy", n, took, len(ids), busy)
	ctx := context.Background()
	for id := range ids {
		if q, err := ts.store.QueueID(ctx, id); err != nil || q == 0 {
			t.Errorf("job %s: queue ID %d, %v", id, q, err)
		}
		evs, err := ts.store.Events(ctx, id)
		if err != nil || len(evs) == 0 || evs[0].Seq != 1 || evs[0].State != shared.JobQueued {
			t.Errorf("job %s: first event %v, %v; want queued with seq 1", id, evs, err)
		}
	}
	jobs, err := ts.store.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if recorded := len(jobs) - countBefore(f); recorded != len(ids) {
		t.Errorf("%d jobs recorded for %d accepted", recorded, len(ids))
	}
}

// countBefore is the number of jobs the fixture's folder holds.
func countBefore(f fixture) int {
	n := 0
	fmt.Sscan(f.extractJob, &n)
	return n
}

// TestSubmitBusy holds the database's only connection while a job is
// submitted: the submission is refused with 503 and a Retry-After, not a
// 500, and the same request succeeds once the database is free. (A
// training request is checked without the database.)
func TestSubmitBusy(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	ts.submitWait = 200 * time.Millisecond
	req := tiny("busy", "defender", 1, "", 64)
	req.Train.Epochs = 1
	post := func() (int, string, string) {
		body, _ := json.Marshal(req)
		resp, err := http.Post(ts.http.URL+"/api/jobs", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
	}
	conn, err := ts.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	code, retry, b := post()
	conn.Close()
	if code != http.StatusServiceUnavailable || retry == "" || !bytes.Contains([]byte(b), []byte("busy")) {
		t.Errorf("busy database: %d, Retry-After %q, %s; want 503 with Retry-After", code, retry, b)
	}
	if code, _, b := post(); code != http.StatusAccepted {
		t.Errorf("free again: %d %s", code, b)
	}
}

// TestConcurrentSubmissionsPostgres is TestConcurrentSubmissions on a
// fleet's PostgreSQL, where submissions run in parallel transactions and
// number their jobs under an advisory lock; the coordinator runs no jobs.
func TestConcurrentSubmissionsPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatalf("PostgreSQL did not start: %v", err)
	}
	t.Cleanup(func() { pg.Stop() })
	ts := start(t, Config{Dir: t.TempDir(), Database: pg.URL, Artifacts: t.TempDir(), NoWork: true, Name: "coordinator"})
	const n = 100
	body, _ := json.Marshal(tiny("pg", "defender", 1, "", 64))
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: n, MaxIdleConnsPerHost: n}}
	codes := make([]int, n)
	jobs := make([]shared.Job, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(ts.http.URL+"/api/jobs", "application/json", bytes.NewReader(body))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			if resp.StatusCode != http.StatusAccepted && resp.Header.Get("Retry-After") == "" {
				b, _ := io.ReadAll(resp.Body)
				t.Errorf("request %d: %d %s", i, resp.StatusCode, b)
				return
			}
			json.NewDecoder(resp.Body).Decode(&jobs[i])
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for i, c := range codes {
		if c == http.StatusAccepted {
			if ids[jobs[i].ID] {
				t.Errorf("job ID %s given twice", jobs[i].ID)
			}
			ids[jobs[i].ID] = true
			if q, err := ts.store.QueueID(ctx, jobs[i].ID); err != nil || q == 0 {
				t.Errorf("job %s: queue ID %d, %v", jobs[i].ID, q, err)
			}
		} else if c != http.StatusServiceUnavailable {
			t.Errorf("request %d: %d", i, c)
		}
	}
	t.Logf("%d concurrent submissions on PostgreSQL: %d accepted", n, len(ids))
}
