package server

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/conferral/conferral/shared"
)

// TestCommittedReports lists the committed studies beside the server's own
// reports and serves their files, and nothing outside their folders.
func TestCommittedReports(t *testing.T) {
	root := t.TempDir()
	results := filepath.Join(root, "results")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(results, "fingerprint-4x2", "README.md"), "# Fingerprint study\n")
	write(filepath.Join(results, "fingerprint-4x2", "roc.png"), "png")
	write(filepath.Join(results, "fingerprint-4x2", "notes.txt"), "not served")
	write(filepath.Join(results, "figure.png"), "a file, not a report")
	if err := os.MkdirAll(filepath.Join(results, "benchmark"), 0o755); err != nil { // no markdown: no report
		t.Fatal(err)
	}
	write(filepath.Join(root, "secret", "README.md"), "outside")
	if err := os.Symlink(filepath.Join(root, "secret"), filepath.Join(results, "linked")); err != nil {
		t.Fatal(err)
	}

	ts := start(t, Config{Dir: t.TempDir(), Results: results})
	own := shared.ReportInfo{Name: "mine", Study: "conferrability", Files: []string{"README.md"}}
	if err := os.MkdirAll(filepath.Join(ts.reports, "mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(ts.reports, "mine", "README.md"), "# Mine\n")
	if err := ts.store.PutReport(t.Context(), own, filepath.Join(ts.reports, "mine")); err != nil {
		t.Fatal(err)
	}
	var list []shared.ReportInfo
	if code := ts.call(http.MethodGet, "/api/reports", nil, &list); code != http.StatusOK {
		t.Fatalf("GET /api/reports: %d", code)
	}
	var names []string
	for _, r := range list {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"mine", "results:fingerprint-4x2"}) {
		t.Fatalf("reports %q, want the server's own, then the committed study", names)
	}
	if r := list[1]; r.Study != "fingerprint" || !slices.Equal(r.Files, []string{"README.md", "roc.png"}) {
		t.Errorf("committed report %+v", r)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(ts.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/api/reports/results:fingerprint-4x2/README.md"); code != http.StatusOK || body != "# Fingerprint study\n" {
		t.Errorf("the committed markdown: %d %q", code, body)
	}
	if code, body := get("/api/reports/mine/README.md"); code != http.StatusOK || body != "# Mine\n" {
		t.Errorf("the server's own markdown: %d %q", code, body)
	}
	for _, bad := range []string{
		"/api/reports/results:fingerprint-4x2/notes.txt",
		"/api/reports/results:linked/README.md",
		"/api/reports/results:..%2Fsecret/README.md",
		"/api/reports/results:fingerprint-4x2/..%2F..%2Fsecret%2FREADME.md",
		"/api/reports/results:benchmark/README.md",
		"/api/reports/results:/README.md",
		"/api/reports/results:./README.md",
	} {
		if code, body := get(bad); code != http.StatusNotFound {
			t.Errorf("GET %s: %d %q, want 404", bad, code, body)
		}
	}
	// A server without a results folder lists its own reports only.
	if rs, err := committedReports(""); err != nil || rs != nil {
		t.Errorf("no folder: %v, %v", rs, err)
	}
}
