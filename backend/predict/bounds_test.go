package predict_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/predict"
	"github.com/conferral/conferral/backend/torch"
)

// TestHandlerLargeValues sends finite values far outside the pixel range:
// the model's scores overflow, and the answer is a 400 that says why, in
// JSON, not a 500 about encoding NaN.
func TestHandlerLargeValues(t *testing.T) {
	classes := []string{"a", "b", "c"}
	m, err := nn.New(nn.Spec{Arch: "mlp", Dataset: "test", Classes: classes, C: 1, H: 4, W: 4, Mean: []float64{0.5}, Std: []float64{0.25}}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	h, err := predict.New(m, predict.Options{Classes: classes, C: 1, H: 4, W: 4})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	image := func(v string) string { return strings.TrimSuffix(strings.Repeat(v+",", 16), ",") }
	cases := []struct {
		name, path, body string
		status           int
		says             string
	}{
		{"kserve, in range", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,4,4],"datatype":"FP32","data":[` + image("0.5") + `]}]}`, 200, `"shape":[1,3]`},
		{"kserve, 3e38", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,4,4],"datatype":"FP32","data":[` + image("3e38") + `]}]}`, 400, "image 0: the model's scores are not finite"},
		{"kserve, -3e38", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[2,1,4,4],"datatype":"FP32","data":[` + image("0.5") + "," + image("-3e38") + `]}]}`, 400, "image 1: the model's scores are not finite"},
		{"tfserving, 3e38", "/v1/models/model:predict", `{"instances":[[[` + strings.Repeat("["+strings.TrimSuffix(strings.Repeat("3e38,", 4), ",")+"],", 3) + "[3e38,3e38,3e38,3e38]" + `]]]}`, 400, "not finite"},
		{"tfserving, beyond float32", "/v1/models/model:predict", `{"instances":[[[[1e39,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]]]]}`, 400, "not a float32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+c.path, "application/json", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.says) || !json.Valid(body) {
				t.Errorf("%d %s, want %d with %q", resp.StatusCode, body, c.status, c.says)
			}
		})
	}
}

// TestHandlerMemory measures what a request costs the handler: images are
// read straight into float32s, bounded by the declared shape, and a body
// over the bound is refused before it is read.
func TestHandlerMemory(t *testing.T) {
	classes := []string{"a", "b", "c"}
	m, err := nn.New(nn.Spec{Arch: "mlp", Dataset: "test", Classes: classes, C: 1, H: 28, W: 28, Mean: []float64{0.5}, Std: []float64{0.25}}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	h, err := predict.New(m, predict.Options{Classes: classes, C: 1, H: 28, W: 28, MaxBatch: 256})
	if err != nil {
		t.Fatal(err)
	}
	values := func(n int) string { return strings.TrimSuffix(strings.Repeat("0.123456,", n), ",") }
	kserve := func(images, n int) string {
		return `{"inputs":[{"name":"input","shape":[` + fmt.Sprint(images) + `,1,28,28],"datatype":"FP32","data":[` + values(n) + `]}]}`
	}
	row := "[" + strings.TrimSuffix(strings.Repeat("["+values(28)+"],", 28), ",") + "]"
	tf := func(images int) string {
		return `{"instances":[` + strings.TrimSuffix(strings.Repeat("["+row+"],", images), ",") + `]}`
	}
	cases := []struct {
		name, path, body string
		status           int
		most             float64 // bytes allocated, at most this many times the body's size
	}{
		{"kserve, 256 images", "/v2/models/model/infer", kserve(256, 256*784), 200, 4},
		{"tfserving, 256 images", "/v1/models/model:predict", tf(256), 200, 4},
		{"kserve, one image declared, 200,000 values sent", "/v2/models/model/infer", kserve(1, 200_000), 400, 3},
		{"tfserving, 257 images", "/v1/models/model:predict", tf(257), 400, 3},
		{"over the body bound", "/v2/models/model/infer", kserve(1, 5_000_000), 413, 0.01},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", c.path, strings.NewReader(c.body))
			w := httptest.NewRecorder()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			h.ServeHTTP(w, req)
			runtime.ReadMemStats(&after)
			alloc := float64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("%s: %d-byte body, %.1f MB allocated (%.2f× the body)", c.name, len(c.body), alloc/1e6, alloc/float64(len(c.body)))
			if w.Code != c.status {
				t.Fatalf("%d %.200s, want %d", w.Code, w.Body, c.status)
			}
			if alloc > c.most*float64(len(c.body)) {
				t.Errorf("%.0f bytes allocated for a %d-byte body, want at most %.2f× it", alloc, len(c.body), c.most)
			}
		})
	}
}

// TestHandlerPending holds the one slot for requests with a body that is
// still arriving: another request is answered 503 with Retry-After at
// once, and is served once the slot is free.
func TestHandlerPending(t *testing.T) {
	classes := []string{"a", "b", "c"}
	m, err := nn.New(nn.Spec{Arch: "mlp", Dataset: "test", Classes: classes, C: 1, H: 2, W: 2, Mean: []float64{0.5}, Std: []float64{0.25}}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	h, err := predict.New(m, predict.Options{Classes: classes, C: 1, H: 2, W: 2, MaxPending: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	const body = `{"instances":[[[[0,0.5],[1,0.25]]]]}`
	pr, pw := io.Pipe()
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Post(srv.URL+"/v1/models/model:predict", "application/json", pr)
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	io.WriteString(pw, body[:10])
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err = http.Post(srv.URL+"/v1/models/model:predict", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a request while another is read: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	io.WriteString(pw, body[10:])
	pw.Close()
	if c := <-slow; c != http.StatusOK {
		t.Errorf("the slow request: %d", c)
	}
	resp, err = http.Post(srv.URL+"/v1/models/model:predict", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a request after: %d", resp.StatusCode)
	}
}
