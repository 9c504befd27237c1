package server

import (
	"net/http"
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
