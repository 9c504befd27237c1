package server

import (
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

// TestCommittedReportsCache: the committed studies' listing is kept
// between requests while the modification times of the results folder and
// of its subfolders stay as they were, and a report added, removed or
// changed (a file added to it) shows at the next request.
func TestCommittedReportsCache(t *testing.T) {
	results := t.TempDir()
	long := time.Now().Add(-time.Hour) // old enough to be trusted
	settle := func(when time.Time, dirs ...string) {
		t.Helper()
		for _, d := range dirs {
			if err := os.Chtimes(filepath.Join(results, d), when, when); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(results, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(results, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("fingerprint-a/README.md", "# A\n")
	write("notes/todo.txt", "no markdown: no report yet")
	settle(long, "fingerprint-a", "notes", ".")

	ts := start(t, Config{Dir: t.TempDir(), Results: results})
	listing := func() map[string][]string {
		t.Helper()
		var list []shared.ReportInfo
		if code := ts.call(http.MethodGet, "/api/reports", nil, &list); code != http.StatusOK {
			t.Fatalf("GET /api/reports: %d", code)
		}
		out := map[string][]string{}
		for _, r := range list {
			out[strings.TrimPrefix(r.Name, committedPrefix)] = r.Files
		}
		return out
	}
	check := func(when string, want map[string][]string) {
		t.Helper()
		if got := listing(); !maps.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s: listed %v, want %v", when, got, want)
		}
	}
	check("first", map[string][]string{"fingerprint-a": {"README.md"}})

	// A file slipped in with the folder's time put back is not seen: the
	// listing is the one kept.
	write("fingerprint-a/roc.png", "png")
	settle(long, "fingerprint-a")
	check("unchanged times", map[string][]string{"fingerprint-a": {"README.md"}})

	// The folder's time moves on (an older time than now, so that only the
	// change of time can tell): the report's files are read again.
	settle(long.Add(time.Minute), "fingerprint-a")
	check("a report changed", map[string][]string{"fingerprint-a": {"README.md", "roc.png"}})

	// A folder that becomes a report, and a new one.
	write("notes/README.md", "# Notes\n")
	write("conferrability-b/README.md", "# B\n")
	check("reports added", map[string][]string{"fingerprint-a": {"README.md", "roc.png"}, "notes": {"README.md"}, "conferrability-b": {"README.md"}})

	if err := os.RemoveAll(filepath.Join(results, "fingerprint-a")); err != nil {
		t.Fatal(err)
	}
	check("a report removed", map[string][]string{"notes": {"README.md"}, "conferrability-b": {"README.md"}})

	// Times as recent as the listing's read cannot tell a change made in
	// the same clock tick: that listing is not kept.
	settle(long, "notes", "conferrability-b", ".")
	write("fresh/README.md", "# Fresh\n")
	mods := map[string]time.Time{}
	for _, d := range []string{".", "fresh"} {
		st, err := os.Stat(filepath.Join(results, d))
		if err != nil {
			t.Fatal(err)
		}
		mods[d] = st.ModTime()
	}
	check("a fresh report", map[string][]string{"notes": {"README.md"}, "conferrability-b": {"README.md"}, "fresh": {"README.md"}})
	write("fresh/roc.png", "png")
	for d, m := range mods { // as if in the same tick
		settle(m, d)
	}
	check("a fresh report changed in the same tick", map[string][]string{"notes": {"README.md"}, "conferrability-b": {"README.md"}, "fresh": {"README.md", "roc.png"}})
}
