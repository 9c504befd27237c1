//go:build !wasm

package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/conferral/conferral/shared"
)

// TestClient checks what the client makes of the server's answers, the
// same in the browser (fetch) and here (net/http): JSON decoded, an error
// answer turned into the server's words, a report file read as text, and
// the request's method, type and body as sent.
func TestClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "POST /api/jobs":
			var req shared.JobRequest
			b, _ := io.ReadAll(r.Body)
			if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &req) != nil || req.Kind != shared.JobTrain {
				http.Error(w, "bad request "+string(b), http.StatusTeapot)
				return
			}
			json.NewEncoder(w).Encode(shared.Job{ID: "7", Kind: req.Kind})
		case "POST /api/jobs/a b/cancel":
			w.WriteHeader(http.StatusNoContent)
		case "GET /api/models":
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(shared.APIError{Error: "the store is down"})
		case "GET /api/reports/r/README.md":
			io.WriteString(w, "# report\n")
		default:
			http.Error(w, "no such thing", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c, ctx := newClient(srv.URL+"/"), context.Background()
	if j, err := c.Start(ctx, shared.JobRequest{Kind: shared.JobTrain}); err != nil || j.ID != "7" || j.Kind != shared.JobTrain {
		t.Errorf("start: %+v, %v", j, err)
	}
	if err := c.Cancel(ctx, "a b"); err != nil {
		t.Errorf("cancel: %v", err)
	}
	if _, err := c.Models(ctx); err == nil || err.Error() != "GET /api/models: the store is down (HTTP 503)" {
		t.Errorf("models: %v", err)
	}
	if _, err := c.Fingerprints(ctx); err == nil || !strings.Contains(err.Error(), "HTTP 404 no such thing") {
		t.Errorf("fingerprints: %v", err)
	}
	if md, err := c.ReportFile(ctx, "r", "README.md"); err != nil || md != "# report\n" {
		t.Errorf("report file: %q, %v", md, err)
	}
	if _, err := newClient("http://127.0.0.1:1").Jobs(ctx); err == nil || !strings.HasPrefix(err.Error(), "GET /api/jobs?limit=1000: ") {
		t.Errorf("no server: %v", err)
	}
}
