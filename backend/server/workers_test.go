package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/conferral/conferral/shared"
)

// TestWorkersAlone checks /api/workers of a server without a fleet: itself,
// with its device and slots.
func TestWorkersAlone(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir(), Workers: 2})
	var ws []shared.Worker
	if code := ts.call("GET", "/api/workers", nil, &ws); code != http.StatusOK {
		t.Fatalf("GET /api/workers: %d", code)
	}
	if len(ws) != 1 || !ws[0].Alive || ws[0].Slots != 2 || ws[0].Device != "cpu" || ws[0].Jobs == nil || len(ws[0].Jobs) != 0 {
		t.Errorf("workers %+v, want this server alone: alive, 2 slots on cpu, no jobs", ws)
	}
}

// TestSoloThreads: with jobs of one thread each, a job that starts alone
// gets SoloThreads, and jobs that start while others run get Threads; each
// says so in its events.
func TestSoloThreads(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir(), Workers: 2, Threads: 1, SoloThreads: 2})
	c := ts.watch("")
	threads := map[string]string{} // job → its "libtorch threads: N"
	follow := func(ids ...string) {
		t.Helper()
		done := map[string]bool{}
		until(t, c, func(e shared.Event) bool {
			if _, n, ok := strings.Cut(e.Message, "libtorch threads: "); ok && e.Kind == shared.Log {
				threads[e.Job] = strings.TrimSuffix(n, ")")
			}
			if e.Kind == shared.State && e.State.Final() {
				done[e.Job] = true
			}
			for _, id := range ids {
				if !done[id] {
					return false
				}
			}
			return true
		})
	}
	lone := ts.submit(tiny("lone", "defender", 1, "", 200)).ID
	follow(lone)
	if threads[lone] != "2" {
		t.Errorf("a job alone ran on %q threads, want 2 (SoloThreads)", threads[lone])
	}
	var ids []string
	for i := range 4 {
		ids = append(ids, ts.submit(tiny("busy", "defender", int64(2+i), "", 2000)).ID)
	}
	follow(ids...)
	ones := 0
	for _, id := range ids {
		switch threads[id] {
		case "1":
			ones++
		case "2":
		default:
			t.Errorf("job %s ran on %q threads, want 1 or 2", id, threads[id])
		}
	}
	if ones == 0 {
		t.Errorf("none of 4 jobs submitted together ran on 1 thread: %v", threads)
	}
}
