package server

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/conferral/conferral/internal/onnxtest"
)

// TestUploadMemoryBudget uploads the memory bomb of issue 15 (a 31 KB
// graph whose Expand grows each 28×28 image): the server refuses it with
// the importer's estimate and its budget (Config.ONNXMemory) before it
// runs, while a real model of the same images is accepted under the same
// budget.
func TestUploadMemoryBudget(t *testing.T) {
	f, dir := copyFixture(t)
	good, err := os.ReadFile("testdata/mlp_28x28.onnx")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		budget int64
		file   []byte
		status int
		says   string
	}{
		{"a real model, 1 MiB budget", 1 << 20, good, http.StatusAccepted, ""},
		{"256 rows, 1 MiB budget", 1 << 20, onnxtest.ExpandBomb(1, 28, 28, 256, 10), http.StatusBadRequest,
			"the uploaded model is not usable: onnx: one image needs about 1.5 MiB of intermediate values by the importer's estimate, over the memory budget of 1.0 MiB"},
		{"200,000 rows, default budget", 0, onnxtest.ExpandBomb(1, 28, 28, 200_000, 10), http.StatusBadRequest,
			"one image needs about 1.2 GiB of intermediate values by the importer's estimate, over the memory budget of 1.0 GiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			if err := os.CopyFS(d, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			os.Remove(d + "/lock")
			ts := start(t, Config{Dir: d, ONNXMemory: tc.budget})
			var body bytes.Buffer
			mw := multipart.NewWriter(&body)
			mw.WriteField("fingerprint", f.fp.ID)
			w, _ := mw.CreateFormFile("file", "model.onnx")
			w.Write(tc.file)
			mw.Close()
			resp, err := http.Post(ts.http.URL+"/api/verify", mw.FormDataContentType(), &body)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.says) {
				t.Fatalf("%d %s, want %d saying %q", resp.StatusCode, b, tc.status, tc.says)
			}
		})
	}
}
