package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("CONFERRAL_SERVER_HELPER"); dir != "" {
		os.Exit(helperServer(dir))
	}
	torch.SetNumThreads(1)
	os.Exit(m.Run())
}

// helperServer runs a server in a child process for the crash test: it
// prints its address and serves until killed.
func helperServer(dir string) int {
	s, err := New(context.Background(), Config{Dir: dir, Device: "cpu", Addr: "127.0.0.1:0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = s.ListenAndServe(context.Background(), func(addr string) { fmt.Printf("ADDR %s\n", addr) })
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// testServer is a Server behind a real HTTP server on 127.0.0.1.
type testServer struct {
	*Server
	http *httptest.Server
	t    *testing.T
}

func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.Device == "" {
		cfg.Device = "cpu"
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := &testServer{Server: s, http: httptest.NewServer(s.Handler()), t: t}
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.hub.closeAll()
	ts.http.Close()
	if err := ts.Close(context.Background()); err != nil {
		ts.t.Errorf("Close: %v", err)
	}
}

// call sends a request and decodes a JSON answer into out (when not nil).
func (ts *testServer) call(method, path string, body any, out any) int {
	ts.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			ts.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, ts.http.URL+path, r)
	if err != nil {
		ts.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return ts.do(req, out)
}

func (ts *testServer) do(req *http.Request, out any) int {
	ts.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			ts.t.Fatalf("%s %s: %d, decoding %q: %v", req.Method, req.URL.Path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// submit posts a job request and returns the queued job.
func (ts *testServer) submit(req shared.JobRequest) shared.Job {
	ts.t.Helper()
	var j shared.Job
	var e shared.APIError
	b, _ := json.Marshal(req)
	hr, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", bytes.NewReader(b))
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		json.Unmarshal(body, &e)
		ts.t.Fatalf("POST /api/jobs %s: %d %s", req.Kind, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &j); err != nil {
		ts.t.Fatal(err)
	}
	return j
}

// watch opens the event websocket of a job (all jobs for "").
func (ts *testServer) watch(job string) *websocket.Conn {
	ts.t.Helper()
	u := "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/api/events"
	if job != "" {
		u += "?job=" + job
	}
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		ts.t.Fatalf("dialing %s: %v (%v)", u, err, resp)
	}
	ts.t.Cleanup(func() { c.Close() })
	return c
}

// until reads events from c until one satisfies f, and returns it and the
// events read.
func until(t *testing.T, c *websocket.Conn, f func(shared.Event) bool) (shared.Event, []shared.Event) {
	t.Helper()
	var seen []shared.Event
	for {
		var e shared.Event
		if err := c.ReadJSON(&e); err != nil {
			t.Fatalf("reading events after %d: %v", len(seen), err)
		}
		seen = append(seen, e)
		if f(e) {
			return e, seen
		}
	}
}

// wait follows a job's events until it reaches a final state and returns
// the job as stored.
func (ts *testServer) wait(id string) shared.Job {
	ts.t.Helper()
	c := ts.watch(id)
	until(ts.t, c, func(e shared.Event) bool { return e.Kind == shared.State && e.State.Final() })
	c.Close()
	var j shared.Job
	if code := ts.call("GET", "/api/jobs/"+id, nil, &j); code != http.StatusOK {
		ts.t.Fatalf("GET job %s: %d", id, code)
	}
	return j
}

func (ts *testServer) mustComplete(req shared.JobRequest) shared.Job {
	ts.t.Helper()
	j := ts.wait(ts.submit(req).ID)
	if j.State != shared.JobCompleted {
		ts.t.Fatalf("%s job %s: %s: %s", req.Kind, j.ID, j.State, j.Error)
	}
	return j
}

// tiny is a one-epoch MLP on the first n Fashion-MNIST images.
func tiny(name, split string, seed int64, teacher string, n int) shared.JobRequest {
	return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{
		DataArgs: shared.DataArgs{Split: split, Limit: n}, Name: name, Arch: "mlp", Epochs: 1,
		Optimizer: "adam", LR: 1e-3, BatchSize: 64, NoAugment: true, Seed: seed, Teacher: teacher}}
}

// fixture is a server folder with a source, a surrogate, a reference and
// a fingerprint, made once through the API and copied by the tests that
// need them.
type fixture struct {
	dir                          string
	source, surrogate, reference shared.ModelInfo
	fp                           shared.FingerprintInfo
	extractJob                   string
}

var (
	fixtureOnce sync.Once
	theFixture  fixture
	fixtureErr  string
)

func getFixture(t testing.TB) fixture {
	t.Helper()
	fixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "conferral-server-fixture-")
		if err != nil {
			fixtureErr = err.Error()
			return
		}
		theFixture, fixtureErr = buildFixture(dir)
	})
	if fixtureErr != "" {
		t.Fatalf("building the fixture: %s", fixtureErr)
	}
	return theFixture
}

func buildFixture(dir string) (fixture, string) {
	f := fixture{dir: dir}
	s, err := New(context.Background(), Config{Dir: dir, Device: "cpu"})
	if err != nil {
		return f, err.Error()
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	run := func(req shared.JobRequest) (shared.Job, string) {
		j, err := s.Submit(ctx, req)
		if err != nil {
			return j, err.Error()
		}
		sub := s.hub.subscribe(j.ID)
		defer s.hub.unsubscribe(sub)
		for {
			if j, err = s.store.Job(ctx, j.ID); err != nil {
				return j, err.Error()
			}
			if j.State.Final() {
				break
			}
			select {
			case <-sub.c:
			case <-time.After(time.Second):
			}
		}
		if j.State != shared.JobCompleted {
			return j, fmt.Sprintf("%s job: %s: %s", req.Kind, j.State, j.Error)
		}
		return j, ""
	}
	j, e := run(tiny("source", "defender", 1, "", 600))
	if e != "" {
		return f, e
	}
	f.source = j.Result.Models[0]
	if j, e = run(tiny("surrogate", "adversary", 2, f.source.ID, 600)); e != "" {
		return f, e
	}
	f.surrogate = j.Result.Models[0]
	if j, e = run(tiny("reference", "adversary", 3, "", 600)); e != "" {
		return f, e
	}
	f.reference = j.Result.Models[0]
	j, e = run(shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: shared.DataArgs{Limit: 200}, Source: f.source.ID,
		Surrogates: []string{f.surrogate.ID}, References: []string{f.reference.ID},
		Eps: 0.25, Alpha: 0.025, Steps: 20, Tau: new(0.01), Candidates: 40, Batch: 40, Loss: "geometric", BestIterate: true}})
	if e != "" {
		return f, e
	}
	f.fp, f.extractJob = *j.Result.Fingerprint, j.ID
	return f, ""
}

// copyFixture copies the fixture's folder for a test's own server.
func copyFixture(t testing.TB) (fixture, string) {
	t.Helper()
	f := getFixture(t)
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(f.dir)); err != nil {
		t.Fatalf("copying the fixture: %v", err)
	}
	os.Remove(dir + "/lock")
	return f, dir
}
