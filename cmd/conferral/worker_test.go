package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/conferral/conferral/backend/server"
	"github.com/conferral/conferral/internal/pgtest"
	"github.com/conferral/conferral/shared"
)

// childEnv makes the test binary the conferral binary: the fleet tests
// start real `conferral worker` processes from it (and kill one).
const childEnv = "CONFERRAL_TEST_CLI_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if os.Getenv(hwmEnv) == "1" {
			reportHWM(os.Stderr) // peakrss_test.go
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testFleet is a real PostgreSQL, a coordinating `conferral serve` (in
// process, running no jobs) behind a real HTTP server, and worker
// processes sharing an artifact folder.
type testFleet struct {
	pg      *pgtest.Server
	art     string
	srv     *server.Server
	http    *httptest.Server
	lease   time.Duration
	mu      sync.Mutex
	workers map[string]*fleetWorker
}

// fleetWorker is one `conferral worker` process.
type fleetWorker struct {
	name string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startFleet(tb testing.TB, lease time.Duration) *testFleet {
	tb.Helper()
	return startFleetWith(tb, lease, "")
}

// startFleetWith starts a fleet whose artifacts are in store (an object
// store's URL), or in a shared folder when store is "".
func startFleetWith(tb testing.TB, lease time.Duration, store string) *testFleet {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx)
	if err != nil {
		tb.Fatalf("PostgreSQL did not start: %v", err)
	}
	f := &testFleet{pg: pg, art: store, lease: lease, workers: map[string]*fleetWorker{}}
	if store == "" {
		f.art = tb.TempDir()
	}
	tb.Cleanup(func() {
		if err := pg.Stop(); err != nil {
			tb.Error(err)
		}
	})
	f.srv, err = server.New(ctx, server.Config{Dir: tb.TempDir(), Database: pg.URL, Artifacts: f.art,
		NoWork: true, Name: "coordinator", Device: "cpu", Lease: lease})
	if err != nil {
		tb.Fatalf("serve --database: %v", err)
	}
	f.http = httptest.NewServer(f.srv.Handler())
	tb.Cleanup(func() {
		f.http.Close()
		if err := f.srv.Close(context.Background()); err != nil {
			tb.Errorf("closing the server: %v", err)
		}
	})
	tb.Cleanup(f.stopWorkers)
	return f
}

// startWorker starts `conferral worker` in a child process.
func (f *testFleet) startWorker(tb testing.TB, name string, slots int) *fleetWorker {
	tb.Helper()
	w := &fleetWorker{name: name, done: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "worker", "--database", f.pg.URL, "--artifacts", f.art, "--cache", tb.TempDir(),
		"--device", "cpu", "--threads", "1", "--workers", fmt.Sprint(slots), "--name", name, "--lease", f.lease.String(), "--quiet")
	w.cmd.Env = append(os.Environ(), childEnv+"=1")
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		tb.Fatalf("starting worker %s: %v", name, err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	f.mu.Lock()
	f.workers[name] = w
	f.mu.Unlock()
	return w
}

// stopWorkers asks the workers still running to stop, as Ctrl-C does.
func (f *testFleet) stopWorkers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.workers {
		w.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range f.workers {
		select {
		case <-w.done:
		case <-time.After(time.Minute):
			w.cmd.Process.Kill()
			<-w.done
		}
	}
}

// kill ends a worker at once, as a crash or a pulled plug does.
func (w *fleetWorker) kill(tb testing.TB) {
	tb.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatalf("killing worker %s: %v", w.name, err)
	}
	<-w.done
}

func (f *testFleet) call(tb testing.TB, method, path string, body, out any) {
	tb.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.http.URL+path, r)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		tb.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			tb.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// follow subscribes to a job's events on the server's websocket; the
// function it returns waits for the job's final event and returns them all.
func (f *testFleet) follow(tb testing.TB, id string) func() []shared.Event {
	tb.Helper()
	url := "ws" + strings.TrimPrefix(f.http.URL, "http") + "/api/events?job=" + id
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		tb.Fatalf("websocket: %v", err)
	}
	var evs []shared.Event
	done := make(chan error, 1)
	go func() {
		for {
			var e shared.Event
			if err := conn.ReadJSON(&e); err != nil {
				done <- err
				return
			}
			evs = append(evs, e)
			if e.Kind == shared.State && e.State.Final() {
				done <- nil
				return
			}
		}
	}()
	return func() []shared.Event {
		tb.Helper()
		defer conn.Close()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("websocket: %v", err)
			}
		case <-time.After(time.Minute):
			tb.Errorf("websocket: no final event of job %s", id)
			conn.Close()
			<-done
		}
		return evs
	}
}

func (f *testFleet) submit(tb testing.TB, req shared.JobRequest) shared.Job {
	tb.Helper()
	var j shared.Job
	f.call(tb, "POST", "/api/jobs", req, &j)
	return j
}

func (f *testFleet) jobs(tb testing.TB) map[string]shared.Job {
	tb.Helper()
	var js []shared.Job
	f.call(tb, "GET", "/api/jobs", nil, &js)
	m := map[string]shared.Job{}
	for _, j := range js {
		m[j.ID] = j
	}
	return m
}

// waitFor polls the jobs until cond holds, failing with the workers'
// output if the fleet stops making progress for a while.
func (f *testFleet) waitFor(tb testing.TB, what string, limit time.Duration, cond func(map[string]shared.Job) bool) map[string]shared.Job {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		js := f.jobs(tb)
		if cond(js) {
			return js
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, j := range js {
				fmt.Fprintf(&b, "  job %s: %s attempt %d on %s: %s\n", j.ID, j.State, j.Attempt, j.Worker, j.Error)
			}
			f.mu.Lock()
			for _, w := range f.workers {
				fmt.Fprintf(&b, "worker %s:\n%s\n", w.name, w.out.String())
			}
			f.mu.Unlock()
			tb.Fatalf("waiting for %s: not after %s\n%s", what, limit, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allFinal(js map[string]shared.Job) bool {
	for _, j := range js {
		if !j.State.Final() {
			return false
		}
	}
	return true
}

// trainJob is a small training job: a 1-epoch MLP on a few hundred images.
func trainJob(seed int64, epochs, limit int) shared.JobRequest {
	return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{
		Arch: "mlp", Epochs: epochs, Seed: seed, NoAugment: true, BatchSize: 64,
		DataArgs: shared.DataArgs{Limit: limit}}}
}

// TestFleet runs a batch of small training jobs on two worker processes
// over a real PostgreSQL, kills one worker while it runs a job, and checks
// that the job completes on the other, that every job ran to completion
// exactly once, and that the shared folder holds only complete artifacts
// named by their sha256.
func TestFleet(t *testing.T) {
	const lease = 4 * time.Second
	f := startFleet(t, lease)
	workers := []*fleetWorker{f.startWorker(t, "w1", 2), f.startWorker(t, "w2", 2)}

	// The long job is queued first, so that a worker holds it while the
	// short ones pass through both workers' second slot.
	long := f.submit(t, trainJob(1000, 8, 2000))
	// The coordinator runs no job: what its websocket shows of the long
	// job, the workers' events, comes through the database.
	live := f.follow(t, long.ID)
	short := map[string]bool{}
	for i := range 8 {
		short[f.submit(t, trainJob(int64(i+1), 1, 300)).ID] = true
	}

	// Kill the long job's worker once it trains and both workers have
	// completed short jobs.
	js := f.waitFor(t, "the long job training while both workers complete short jobs", 3*time.Minute, func(js map[string]shared.Job) bool {
		l := js[long.ID]
		if l.State != shared.JobRunning || l.Worker == "" || l.Progress == nil {
			return false
		}
		done := map[string]bool{}
		for id := range short {
			if j := js[id]; j.State == shared.JobCompleted {
				done[j.Worker] = true
			}
		}
		return done["w1"] && done["w2"]
	})
	// The fleet as the browser sees it: the coordinator (no slots) and
	// both workers, alive, one of them running the long job.
	var ws []shared.Worker
	f.call(t, "GET", "/api/workers", nil, &ws)
	members := map[string]shared.Worker{}
	for _, w := range ws {
		members[w.ID] = w
	}
	if len(ws) != 3 || members["coordinator"].Slots != 0 || members["w1"].Slots != 2 || !members["w1"].Alive || !members["w2"].Alive ||
		!slices.Contains(members[js[long.ID].Worker].Jobs, long.ID) {
		t.Errorf("GET /api/workers: %+v, want the coordinator and w1, w2 alive, the long job on %s", ws, js[long.ID].Worker)
	}
	victimName := js[long.ID].Worker
	var victim, survivor *fleetWorker
	for _, w := range workers {
		if w.name == victimName {
			victim = w
		} else {
			survivor = w
		}
	}
	if victim == nil {
		t.Fatalf("the long job runs on %q, not on a test worker", victimName)
	}
	start := time.Now()
	victim.kill(t)
	t.Logf("killed %s while it ran job %s (attempt %d)", victim.name, long.ID, js[long.ID].Attempt)

	js = f.waitFor(t, "every job to finish", 5*time.Minute, allFinal)
	t.Logf("every job finished %.1f s after the kill (lease %s)", time.Since(start).Seconds(), lease)

	// Every job completed; the killed one on the survivor, in its second
	// attempt, after a record of what happened.
	for id, j := range js {
		if j.Started != nil && j.Finished != nil {
			t.Logf("job %s: %s attempt %d on %s, %.1f s", id, j.State, j.Attempt, j.Worker, j.Finished.Sub(*j.Started).Seconds())
		}
		if j.State != shared.JobCompleted {
			t.Errorf("job %s: %s (%s), want completed", id, j.State, j.Error)
		}
		if j.Result == nil || len(j.Result.Models) != 1 {
			t.Errorf("job %s: result %+v, want one model", id, j.Result)
		}
	}
	if l := js[long.ID]; l.Worker != survivor.name || l.Attempt != 2 {
		t.Errorf("the killed job ran last on %s in attempt %d, want %s in attempt 2", l.Worker, l.Attempt, survivor.name)
	}
	evs := jobEvents(t, f, long.ID)
	took, runs := false, 0
	for _, e := range evs {
		took = took || strings.Contains(e.Message, "worker "+victim.name+" stopped answering during attempt 1")
		if e.Kind == shared.State && e.State == shared.JobRunning {
			runs++
		}
	}
	if !took || runs != 2 {
		t.Errorf("the killed job's events tell of %d runs and took=%v, want 2 runs and that %s stopped answering: %+v", runs, took, victim.name, evs)
	}

	// The browser's view: the coordinator's websocket carried the
	// workers' events live, in order, up to the completion.
	got := live()
	runs, progress := 0, 0
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Errorf("websocket: event %d after %d", e.Seq, got[i-1].Seq)
		}
		switch {
		case e.Kind == shared.State && e.State == shared.JobRunning:
			runs++
		case e.Kind == shared.Progress:
			progress++
		}
	}
	if runs != 2 || progress == 0 || len(got) == 0 || got[len(got)-1].State != shared.JobCompleted {
		t.Errorf("websocket: %d events, %d running, %d progress, want 2 runs, progress and completed last: %+v", len(got), runs, progress, got)
	}

	// Nothing lost or duplicated: one completed queue row per job, the
	// killed attempt's row cancelled, one model per job.
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
	// River records a completion shortly after the job's own record.
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
	reaped := map[string]bool{}
	for _, r := range qrows {
		switch r.State {
		case "completed":
			completed[r.Job]++
		case "cancelled": // an attempt of the killed worker, taken back
			if len(r.By) == 0 || r.By[len(r.By)-1] != victim.name {
				t.Errorf("queue row of job %s cancelled (run by %v); only the killed worker's attempts should be", r.Job, r.By)
			}
			reaped[r.Job] = true
		default:
			t.Errorf("queue row of job %s left %s", r.Job, r.State)
		}
	}
	// The killed worker is listed dead (or gone), and nobody runs
	// anything.
	f.call(t, "GET", "/api/workers", nil, &ws)
	for _, w := range ws {
		if (w.ID == victim.name && w.Alive) || len(w.Jobs) != 0 {
			t.Errorf("GET /api/workers after the batch: %+v", w)
		}
	}

	// A job the victim finished just before it died has its record
	// completed but its queue row still running: the reaper cancels the
	// row and, the record being final, runs nothing again.
	ranOn := map[string]int{}
	for id, j := range js {
		ranOn[j.Worker]++
		n := completed[id]
		if reaped[id] && j.Worker == victim.name && j.Attempt == 1 {
			n++
		}
		if n != 1 {
			t.Errorf("job %s completed %d times, want once (queue rows %d, taken back %v, record: %s on %s, attempt %d)",
				id, n, completed[id], reaped[id], j.State, j.Worker, j.Attempt)
		}
		// The job the victim was running started its record (attempt 1),
		// so the survivor's is attempt 2. A row the victim claimed in the
		// instant before it died may never have reached its record: then
		// the survivor's run is the first to start, attempt 1.
		want := []int{1, 2}
		if id == long.ID {
			want = []int{2}
		}
		if reaped[id] && j.Worker == survivor.name && !slices.Contains(want, j.Attempt) {
			t.Errorf("job %s, taken back from %s, ran last in attempt %d, want %v", id, victim.name, j.Attempt, want)
		}
	}
	if !reaped[long.ID] {
		t.Errorf("the killed job's first attempt is not among the rows taken back: %v", reaped)
	}
	if ranOn["w1"] == 0 || ranOn["w2"] == 0 {
		t.Errorf("jobs completed per worker: %v, want both workers used", ranOn)
	}
	t.Logf("jobs completed per worker: %v", ranOn)

	var models []shared.ModelInfo
	f.call(t, "GET", "/api/models", nil, &models)
	if len(models) != len(js) {
		t.Errorf("%d models stored for %d jobs", len(models), len(js))
	}

	// The shared folder: every visible file is named by its content's
	// sha256; the killed worker may have left a temporary, never a
	// half-written artifact.
	ents, err := os.ReadDir(f.art)
	if err != nil {
		t.Fatal(err)
	}
	visible := 0
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		visible++
		b, err := os.ReadFile(filepath.Join(f.art, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if want := hex.EncodeToString(sum[:]) + ".safetensors"; e.Name() != want {
			t.Errorf("artifact %s holds content whose name would be %s", e.Name(), want)
		}
	}
	if visible != len(js) {
		t.Errorf("%d artifacts in the shared folder, want %d", visible, len(js))
	}

	// The survivor leaves the fleet cleanly when asked to stop.
	survivor.cmd.Process.Signal(syscall.SIGTERM)
	<-survivor.done
	if survivor.err != nil {
		t.Errorf("worker %s stopped with %v:\n%s", survivor.name, survivor.err, survivor.out.String())
	}
	var left int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM conferral_workers WHERE id = $1`, survivor.name).Scan(&left); err != nil || left != 0 {
		t.Errorf("worker %s still listed in the fleet after stopping (%d rows, %v)", survivor.name, left, err)
	}
}

// jobEvents reads a job's recorded events from the database.
func jobEvents(t *testing.T, f *testFleet, id string) []shared.Event {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), f.pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT body FROM conferral_events WHERE job = $1::bigint ORDER BY seq`, id)
	if err != nil {
		t.Fatal(err)
	}
	bodies, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]shared.Event, len(bodies))
	for i, b := range bodies {
		if err := json.Unmarshal([]byte(b), &evs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return evs
}

// BenchmarkFleet measures the throughput of a fleet of small training jobs
// (1-epoch MLPs on 300 images) with one and with two worker processes,
// each running one job at a time on one libtorch thread.
func BenchmarkFleet(b *testing.B) {
	const jobs = 8
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			f := startFleet(b, 5*time.Second)
			for i := range n {
				f.startWorker(b, fmt.Sprintf("w%d", i+1), 1)
			}
			seed := int64(0)
			var took []float64 // each job's run, from start to finish
			b.ResetTimer()
			for b.Loop() {
				ids := map[string]bool{}
				for range jobs {
					seed++
					ids[f.submit(b, trainJob(seed, 1, 300)).ID] = true
				}
				js := f.waitFor(b, "the batch", 10*time.Minute, func(js map[string]shared.Job) bool {
					for id := range ids {
						if !js[id].State.Final() {
							return false
						}
					}
					return true
				})
				for id := range ids {
					j := js[id]
					if j.State != shared.JobCompleted {
						b.Fatalf("job %s: %s (%s)", id, j.State, j.Error)
					}
					took = append(took, j.Finished.Sub(*j.Started).Seconds())
				}
			}
			b.ReportMetric(float64(jobs*b.N)/b.Elapsed().Minutes(), "jobs/min")
			slices.Sort(took)
			b.ReportMetric(took[len(took)/2], "s/job")
		})
	}
}

// TestFleetObjectStore runs a fleet whose artifacts live in an
// S3-compatible object store (gofakes3 on 127.0.0.1): an extraction that
// trains its own surrogates and references fans them out over both
// workers, and crafts with models that other processes trained, fetched
// from the store and checked against their names.
func TestFleetObjectStore(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("fleet"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend).Server())
	defer s3.Close()
	store := "s3+http://conferral:secret@" + strings.TrimPrefix(s3.URL, "http://") + "/fleet/artifacts"
	f := startFleetWith(t, 5*time.Second, store)
	f.startWorker(t, "w1", 1)
	f.startWorker(t, "w2", 1)

	src := f.submit(t, trainJob(1, 1, 600))
	js := f.waitFor(t, "the source", 3*time.Minute, func(js map[string]shared.Job) bool { return js[src.ID].State.Final() })
	if j := js[src.ID]; j.State != shared.JobCompleted {
		t.Fatalf("source: %s: %s", j.State, j.Error)
	}
	source := js[src.ID].Result.Models[0]
	ex := f.submit(t, shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: shared.DataArgs{Limit: 200}, Source: source.ID,
		Eps: 0.25, Alpha: 0.025, Steps: 10, Tau: new(0.01), Candidates: 40, Batch: 40,
		Train: &shared.ExtractTraining{Surrogates: 2, References: 2, Archs: []string{"mlp"}, Epochs: 1, Limit: 300}}})
	js = f.waitFor(t, "the extraction", 5*time.Minute, func(js map[string]shared.Job) bool { return js[ex.ID].State.Final() })
	j := js[ex.ID]
	if j.State != shared.JobCompleted || j.Result == nil || j.Result.Fingerprint == nil {
		t.Fatalf("extraction: %s: %s", j.State, j.Error)
	}
	tr := j.Args.Extract.Train
	if len(tr.Jobs) != 4 || len(j.Args.Extract.Surrogates) != 2 || len(j.Args.Extract.References) != 2 {
		t.Fatalf("extraction trained %v into surrogates %v and references %v", tr.Jobs, j.Args.Extract.Surrogates, j.Args.Extract.References)
	}
	ranOn := map[string]int{}
	for _, id := range tr.Jobs {
		c := js[id]
		if c.State != shared.JobCompleted {
			t.Errorf("training job %s: %s: %s", id, c.State, c.Error)
		}
		ranOn[c.Worker]++
	}
	if ranOn["w1"] == 0 || ranOn["w2"] == 0 {
		t.Errorf("the extraction's training jobs ran %v, want on both workers", ranOn)
	}
	t.Logf("training jobs per worker %v; source on %s, extraction on %s", ranOn, js[src.ID].Worker, j.Worker)

	// The store holds every artifact, named by its content's sha256.
	var models []shared.ModelInfo
	f.call(t, "GET", "/api/models", nil, &models)
	want := map[string]bool{j.Result.Fingerprint.ID + ".safetensors": true}
	for _, m := range models {
		want[m.ID+".safetensors"] = true
	}
	if len(models) != 5 {
		t.Errorf("%d models stored, want the source and 4 training models", len(models))
	}
	objs, err := backend.ListBucket("fleet", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs.Contents {
		name := strings.TrimPrefix(o.Key, "artifacts/")
		obj, err := backend.GetObject("fleet", o.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(obj.Contents)
		obj.Contents.Close()
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:])+".safetensors" != name {
			t.Errorf("object %s holds other bytes", o.Key)
		}
		delete(want, name)
	}
	if len(want) != 0 {
		t.Errorf("artifacts missing from the store: %v", want)
	}
}

// TestFleetGracefulStop stops a worker as Ctrl-C does while it trains: the
// worker leaves the fleet at once, and its job runs again from the start
// on the other worker.
func TestFleetGracefulStop(t *testing.T) {
	f := startFleet(t, 5*time.Second)
	workers := map[string]*fleetWorker{"w1": f.startWorker(t, "w1", 1), "w2": f.startWorker(t, "w2", 1)}
	j := f.submit(t, trainJob(7, 8, 2000))
	js := f.waitFor(t, "the job training", 3*time.Minute, func(js map[string]shared.Job) bool {
		return js[j.ID].State == shared.JobRunning && js[j.ID].Progress != nil
	})
	first := workers[js[j.ID].Worker]
	if first == nil {
		t.Fatalf("job %s runs on %q", j.ID, js[j.ID].Worker)
	}
	first.cmd.Process.Signal(syscall.SIGTERM)
	<-first.done
	if first.err != nil {
		t.Errorf("worker %s stopped with %v:\n%s", first.name, first.err, first.out.String())
	}
	js = f.waitFor(t, "the job to finish", 5*time.Minute, func(js map[string]shared.Job) bool { return js[j.ID].State.Final() })
	got := js[j.ID]
	if got.State != shared.JobCompleted || got.Attempt != 2 || got.Worker == first.name {
		t.Errorf("job %s: %s in attempt %d on %s (%s), want completed in attempt 2 on the other worker", j.ID, got.State, got.Attempt, got.Worker, got.Error)
	}
	stopped := false
	for _, e := range jobEvents(t, f, j.ID) {
		stopped = stopped || (e.State == shared.JobQueued && strings.Contains(e.Message, "stopped during attempt 1"))
	}
	if !stopped {
		t.Errorf("no event of job %s tells that its worker stopped", j.ID)
	}
}

// TestWorkerUsage checks the worker's refusals of a bad command line.
func TestWorkerUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"no database", []string{"worker", "--artifacts", "/tmp"}, "--database postgres://... is required"},
		{"SQLite is one machine's", []string{"worker", "--database", "conferral.db", "--artifacts", "/tmp"}, "--database postgres://... is required"},
		{"no artifacts", []string{"worker", "--database", "postgres://db/conferral"}, "--artifacts DIR or s3://... is required"},
		{"no slots", []string{"worker", "--database", "postgres://db/conferral", "--artifacts", "/tmp", "--workers", "0"}, "--workers 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := invoke(t, context.Background(), append(tc.args, "--device", "cpu")...)
			if code != 2 || !strings.Contains(stderr, tc.says) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.says)
			}
		})
	}
}

// TestServeFleetCLI runs `conferral serve --database … --coordinator` as a
// process and asks it for its health and its fleet.
func TestServeFleetCLI(t *testing.T) {
	f := startFleet(t, 5*time.Second) // for its PostgreSQL
	cmd := exec.Command(os.Args[0], "serve", "--database", f.pg.URL, "--artifacts", t.TempDir(), "--dir", t.TempDir(),
		"--coordinator", "--addr", "127.0.0.1:0", "--device", "cpu", "--threads", "1", "--quiet")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("serve stopped with %v: %s", err, stderr.String())
		}
	}()
	line := make([]byte, 512)
	n, err := out.Read(line)
	if err != nil {
		t.Fatalf("serve printed nothing: %v: %s", err, stderr.String())
	}
	_, rest, ok := strings.Cut(string(line[:n]), "http://")
	base, _, _ := strings.Cut(rest, "/")
	if !ok || base == "" {
		t.Fatalf("serve printed %q", line[:n])
	}
	var ws []shared.Worker
	resp, err := http.Get("http://" + base + "/api/workers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&ws); err != nil {
		t.Fatal(err)
	}
	// The in-process coordinator of startFleet and this one.
	serving := 0
	for _, w := range ws {
		if w.Slots == 0 && w.Alive && w.ID != "coordinator" {
			serving++
		}
	}
	if serving != 1 {
		t.Errorf("the fleet as the CLI's server lists it: %+v, want it among the members", ws)
	}
}

// TestFleetCancel cancels, from the server, a job that a worker process
// runs: the worker stops it and takes the next job.
func TestFleetCancel(t *testing.T) {
	f := startFleet(t, 5*time.Second)
	f.startWorker(t, "w1", 1)
	long := f.submit(t, trainJob(11, 30, 2000))
	next := f.submit(t, trainJob(12, 1, 300))
	f.waitFor(t, "the long job training", 3*time.Minute, func(js map[string]shared.Job) bool {
		return js[long.ID].State == shared.JobRunning && js[long.ID].Progress != nil
	})
	var j shared.Job
	f.call(t, "POST", "/api/jobs/"+long.ID+"/cancel", nil, &j)
	js := f.waitFor(t, "the cancel and the next job", 2*time.Minute, func(js map[string]shared.Job) bool {
		return js[long.ID].State.Final() && js[next.ID].State.Final()
	})
	if got := js[long.ID]; got.State != shared.JobCancelled || got.Result != nil {
		t.Errorf("cancelled job %s: %s (%s), result %+v", long.ID, got.State, got.Error, got.Result)
	}
	if got := js[next.ID]; got.State != shared.JobCompleted || got.Worker != "w1" {
		t.Errorf("next job %s: %s on %s (%s)", next.ID, got.State, got.Worker, got.Error)
	}
}

// TestFleetExperiment runs a study whose models are trained as jobs of
// their own on two worker processes, in the shared folder.
func TestFleetExperiment(t *testing.T) {
	f := startFleet(t, 5*time.Second)
	f.startWorker(t, "w1", 1)
	f.startWorker(t, "w2", 1)
	ex := f.submit(t, shared.JobRequest{Kind: shared.JobExperiment, Experiment: &shared.ExperimentArgs{
		Study: "conferrability", Name: "fleet", Limit: 300, Archs: []string{"mlp"}, SourceArch: "mlp", Per: 2, Epochs: 1,
		EpsSweep: []float64{0.1}, Focus: 0.1, Points: 10, Fanout: true}})
	js := f.waitFor(t, "the study", 5*time.Minute, func(js map[string]shared.Job) bool { return js[ex.ID].State.Final() })
	j := js[ex.ID]
	if j.State != shared.JobCompleted || j.Result == nil || j.Result.Report == nil {
		t.Fatalf("study: %s: %s", j.State, j.Error)
	}
	ranOn := map[string]int{}
	for _, id := range j.Args.Experiment.Jobs {
		if c := js[id]; c.State != shared.JobCompleted {
			t.Errorf("model job %s: %s: %s", id, c.State, c.Error)
		}
		ranOn[js[id].Worker]++
	}
	if len(j.Args.Experiment.Jobs) != 9 || ranOn["w1"] == 0 || ranOn["w2"] == 0 {
		t.Errorf("%d model jobs ran %v, want 9 over both workers", len(j.Args.Experiment.Jobs), ranOn)
	}
	t.Logf("model jobs per worker %v; the study on %s", ranOn, j.Worker)
	// The report is in the shared folder, where the server serves it from.
	resp, err := http.Get(f.http.URL + "/api/reports/fleet/README.md")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET the report's README.md: %s", resp.Status)
	}
}
