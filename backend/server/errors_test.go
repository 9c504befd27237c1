package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// TestOneJSONValue refuses a body with anything but white space after its
// JSON value: a second value used to be ignored.
func TestOneJSONValue(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	const bad = `{"kind":"train","train":{"arch":"nope"}}`
	for _, c := range []struct {
		name, body, says string
	}{
		{"one value", bad, `arch "nope"`},
		{"one value and white space", bad + " \n\t", `arch "nope"`},
		{"two values", bad + `{"kind":"train","train":{}}`, "data after the JSON value"},
		{"a value and junk", bad + "]", "data after the JSON value"},
		{"a value and a number", bad + " 7", "data after the JSON value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			var e shared.APIError
			if code := ts.do(req, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, c.says) {
				t.Errorf("%d %q, want 400 saying %q", code, e.Error, c.says)
			}
		})
	}
}

// TestErrorsHidePaths checks that errors shown to clients (answers and
// jobs' errors) name files relative to the server's folders.
func TestErrorsHidePaths(t *testing.T) {
	dir := t.TempDir()
	ts := start(t, Config{Dir: dir})
	ctx := context.Background()
	sum, path, _, err := ts.art.write(strings.NewReader("weights"), 1<<10, ".safetensors")
	if err != nil {
		t.Fatal(err)
	}
	m := shared.ModelInfo{ID: sum, SHA256: sum, Name: "gone", Arch: "mlp", Role: shared.RoleSource, Dataset: "fashion-mnist", Created: time.Now()}
	if err := ts.store.PutModel(ctx, m, path); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	var e shared.APIError
	code := ts.call("GET", "/api/models/"+sum, nil, &e)
	if code < 400 || strings.Contains(e.Error, dir) || !strings.Contains(e.Error, "artifacts/"+sum+".safetensors") {
		t.Errorf("missing model file: %d %q; want an error naming artifacts/%s.safetensors and not %s", code, e.Error, sum, dir)
	}

	j, err := ts.store.NewJob(ctx, tiny("failing", "defender", 1, "", 64))
	if err != nil {
		t.Fatal(err)
	}
	msg := "loading " + filepath.Join(dir, "artifacts", "x.onnx") + " and " + filepath.Join(dir, "reports", "r1", "README.md") + " and " + filepath.Join(dir, "conferral.db")
	if _, err := ts.finish(ctx, j.ID, shared.JobFailed, nil, msg); err != nil {
		t.Fatal(err)
	}
	var got shared.Job
	ts.call("GET", "/api/jobs/"+j.ID, nil, &got)
	if want := "loading artifacts/x.onnx and reports/r1/README.md and conferral.db"; got.Error != want {
		t.Errorf("job error %q, want %q", got.Error, want)
	}
}
