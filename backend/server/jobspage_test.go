package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"testing"

	"github.com/conferral/conferral/shared"
)

// TestJobsPages follows GET /api/jobs page by page, newest first.
func TestJobsPages(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	ctx := context.Background()
	for range 7 {
		if _, err := ts.store.NewJob(ctx, tiny("paged", "defender", 1, "", 64)); err != nil {
			t.Fatal(err)
		}
	}
	get := func(path string) (int, []string, string) {
		resp, err := http.Get(ts.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var jobs []shared.Job
		json.Unmarshal(b, &jobs)
		ids := []string{}
		for _, j := range jobs {
			ids = append(ids, j.ID)
		}
		next := ""
		if m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(resp.Header.Get("Link")); m != nil {
			next = m[1]
		}
		return resp.StatusCode, ids, next
	}
	var pages [][]string
	for path := "/api/jobs?limit=3"; path != ""; {
		code, ids, next := get(path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, code)
		}
		pages = append(pages, ids)
		path = next
	}
	want := [][]string{{"7", "6", "5"}, {"4", "3", "2"}, {"1"}}
	if !slices.EqualFunc(pages, want, slices.Equal) {
		t.Errorf("pages %v, want %v", pages, want)
	}
	if _, ids, next := get("/api/jobs"); len(ids) != 7 || next != "" {
		t.Errorf("the default page: %v, next %q", ids, next)
	}
	for _, bad := range []string{"?limit=0", "?limit=5000", "?limit=x", "?before=abc", "?before=-3"} {
		if code, _, _ := get("/api/jobs" + bad); code != http.StatusBadRequest {
			t.Errorf("GET /api/jobs%s: %d, want 400", bad, code)
		}
	}
}
