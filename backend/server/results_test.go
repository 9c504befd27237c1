package server

import (
	"io"
	"maps"
	"net/http"
	"net/url"
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
	write(filepath.Join(results, "fingerprint-4x2", "notes.txt"), "<html><script>alert(1)</script>")
	write(filepath.Join(results, "fingerprint-4x2", "COMMAND"), "<!DOCTYPE html>conferral experiment\n")
	write(filepath.Join(results, "fingerprint-4x2", "runs.tsv"), "model\tauc\n")
	write(filepath.Join(results, "fingerprint-4x2", "result.json"), "{}")
	write(filepath.Join(results, "fingerprint-4x2", "COMMAND.sh"), "not served")
	write(filepath.Join(results, "figure.png"), "a file, not a report")
	if err := os.MkdirAll(filepath.Join(results, "benchmark"), 0o755); err != nil { // no markdown: no report
		t.Fatal(err)
	}
	write(filepath.Join(root, "secret", "README.md"), "outside")
	write(filepath.Join(root, "secret", "sub", "README.md"), "outside")
	if err := os.Symlink(filepath.Join(root, "secret"), filepath.Join(results, "linked")); err != nil {
		t.Fatal(err)
	}
	// Reports in a study's folder: a study's parts, and parts of those.
	write(filepath.Join(results, "levers", "README.md"), "# Levers\n")
	write(filepath.Join(results, "levers", "fleet8", "README.md"), "# Fleet of 8\n")
	write(filepath.Join(results, "levers", "fleet8", "acc.png"), "png")
	write(filepath.Join(results, "leaveout", "lenet", "whole-fleet", "README.md"), "# Whole fleet\n")
	write(filepath.Join(results, "leaveout", "lenet", "notes.txt"), "no markdown: no report")
	write(filepath.Join(results, "deep", "a", "b", "c", "d", "README.md"), "too deep")
	write(filepath.Join(results, "levers", "bad name", "README.md"), "not a report's name")
	if err := os.Symlink(filepath.Join(root, "secret"), filepath.Join(results, "levers", "linked")); err != nil {
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
	if !slices.Equal(names, []string{"mine", "results:fingerprint-4x2", "results:leaveout/lenet/whole-fleet", "results:levers", "results:levers/fleet8"}) {
		t.Fatalf("reports %q, want the server's own, then the committed studies and their parts", names)
	}
	if r := list[1]; r.Study != "fingerprint-4x2" || !slices.Equal(r.Files, []string{"README.md", "roc.png", "COMMAND", "notes.txt", "runs.tsv"}) {
		t.Errorf("committed report %+v", r)
	}
	if r := list[4]; r.Study != "levers" || !slices.Equal(r.Files, []string{"README.md", "acc.png"}) {
		t.Errorf("nested committed report %+v", r)
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
	for path, want := range map[string]string{ // the app escapes a nested report's name (url.PathEscape)
		"/api/reports/results:levers%2Ffleet8/README.md":                         "# Fleet of 8\n",
		"/api/reports/results:levers%2Ffleet8/acc.png":                           "png",
		"/api/reports/results:leaveout%2Flenet%2Fwhole-fleet/README.md":          "# Whole fleet\n",
		"/api/reports/" + url.PathEscape("results:levers/fleet8") + "/README.md": "# Fleet of 8\n",
	} {
		if code, body := get(path); code != http.StatusOK || body != want {
			t.Errorf("GET %s: %d %q, want %q", path, code, body, want)
		}
	}
	// The plain text a report links to is sent as such, never sniffed
	// into a page: its markdown as markdown, its plots as PNGs.
	for file, want := range map[string][2]string{
		"notes.txt": {"text/plain; charset=utf-8", "<html><script>alert(1)</script>"},
		"COMMAND":   {"text/plain; charset=utf-8", "<!DOCTYPE html>conferral experiment\n"},
		"runs.tsv":  {"text/plain; charset=utf-8", "model\tauc\n"},
		"README.md": {"text/markdown; charset=utf-8", "# Fingerprint study\n"},
		"roc.png":   {"image/png", "png"},
	} {
		resp, err := http.Get(ts.http.URL + "/api/reports/results:fingerprint-4x2/" + file)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != want[0] || resp.Header.Get("X-Content-Type-Options") != "nosniff" || string(b) != want[1] {
			t.Errorf("%s: %d, %s (%s), %q; want %s, nosniff, %q", file, resp.StatusCode, resp.Header.Get("Content-Type"),
				resp.Header.Get("X-Content-Type-Options"), b, want[0], want[1])
		}
	}
	if code, body := get("/api/reports/mine/README.md"); code != http.StatusOK || body != "# Mine\n" {
		t.Errorf("the server's own markdown: %d %q", code, body)
	}
	for _, bad := range []string{
		"/api/reports/results:fingerprint-4x2/result.json",
		"/api/reports/results:fingerprint-4x2/COMMAND.sh",
		"/api/reports/results:linked/README.md",
		"/api/reports/results:..%2Fsecret/README.md",
		"/api/reports/results:fingerprint-4x2/..%2F..%2Fsecret%2FREADME.md",
		"/api/reports/results:benchmark/README.md",
		"/api/reports/results:/README.md",
		"/api/reports/results:./README.md",
		// Nothing outside the folder through a nested name: no "..", no
		// absolute path, no empty or "." step, no link on the way, no
		// folder deeper than a listed one, no file that is not listed.
		"/api/reports/results:levers%2F..%2F..%2Fsecret/README.md",
		"/api/reports/results:levers%2F..%2Flevers/README.md",
		"/api/reports/results:%2Fsecret/README.md",
		"/api/reports/results:" + url.PathEscape(filepath.Join(root, "secret")) + "/README.md",
		"/api/reports/results:levers%2F%2Ffleet8/README.md",
		"/api/reports/results:levers%2F.%2Ffleet8/README.md",
		"/api/reports/results:levers%2Ffleet8%2F/README.md",
		"/api/reports/results:levers%2Flinked/README.md",
		"/api/reports/results:linked%2Fsub/README.md",
		"/api/reports/results:levers%2Flinked%2Fsub/README.md",
		"/api/reports/results:deep%2Fa%2Fb%2Fc%2Fd/README.md",
		"/api/reports/results:leaveout%2Flenet/README.md",
		"/api/reports/results:leaveout%2Flenet/notes.txt",
		"/api/reports/results:levers%2Fbad%20name/README.md",
		"/api/reports/results:levers/fleet8/README.md",
		"/api/reports/results:levers%2Ffleet8/..%2FREADME.md",
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
	write("notes/todo.json", "no markdown: no report yet")
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

	// A report in a report's folder, and a change to it, are seen as
	// those in the results folder are.
	write("fresh/part/README.md", "# Part\n")
	settle(long, "fresh/part", "fresh", "notes", "conferrability-b", ".")
	three := map[string][]string{"notes": {"README.md"}, "conferrability-b": {"README.md"}, "fresh": {"README.md", "roc.png"}, "fresh/part": {"README.md"}}
	check("a nested report", three)
	write("fresh/part/acc.png", "png")
	settle(long, "fresh/part")
	check("a nested report's unchanged times", three)
	settle(long.Add(time.Minute), "fresh/part")
	three["fresh/part"] = []string{"README.md", "acc.png"}
	check("a nested report changed", three)
	if err := os.RemoveAll(filepath.Join(results, "fresh", "part")); err != nil {
		t.Fatal(err)
	}
	settle(long.Add(2*time.Minute), "fresh")
	delete(three, "fresh/part")
	check("a nested report removed", three)
}
