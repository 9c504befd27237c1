package suspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// batch3 is three 1×2×2 images.
func batch3() Images {
	return Images{X: []float32{0, 0.25, 0.5, 1, 0.1, 0.2, 0.3, 0.4, 1, 1, 0, 0}, N: 3, C: 1, H: 2, W: 2}
}

// endpoint serves fn on 127.0.0.1 and counts requests and images.
type endpoint struct {
	mu       sync.Mutex
	requests int
	images   int
	bodies   [][]byte
	auth     []string // Authorization headers of the POSTs
	meta     string   // the metadata answer (404 when empty)
}

func (e *endpoint) serve(t *testing.T, fn func(w http.ResponseWriter, r *http.Request, n int)) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if e.meta == "" { // no metadata: defaults
				http.NotFound(w, r)
				return
			}
			fmt.Fprint(w, e.meta)
			return
		}
		body, _ := io.ReadAll(r.Body)
		n := imagesIn(body)
		e.mu.Lock()
		e.requests++
		e.images += n
		e.bodies = append(e.bodies, body)
		e.auth = append(e.auth, r.Header.Get("Authorization"))
		e.mu.Unlock()
		fn(w, r, n)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func (e *endpoint) counts() (int, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests, e.images
}

// imagesIn counts the images of a KServe or TF Serving request.
func imagesIn(body []byte) int {
	var req struct {
		Inputs    json.RawMessage `json:"inputs"`
		Instances []any           `json:"instances"`
	}
	if json.Unmarshal(body, &req) != nil {
		return 0
	}
	if req.Instances != nil {
		return len(req.Instances)
	}
	var ks []struct {
		Shape []int `json:"shape"`
	}
	if json.Unmarshal(req.Inputs, &ks) == nil && len(ks) == 1 && len(ks[0].Shape) > 0 {
		return ks[0].Shape[0]
	}
	var cols []any
	if json.Unmarshal(req.Inputs, &cols) == nil {
		return len(cols)
	}
	return 0
}

// labelsAnswer answers n images with labels i%k as KServe probabilities.
func labelsAnswer(w http.ResponseWriter, n int) {
	const k = 3
	data := make([]float32, n*k)
	for i := range n {
		data[i*k+i%k] = 0.9
	}
	json.NewEncoder(w).Encode(map[string]any{"outputs": []any{map[string]any{"name": "probabilities", "shape": []int{n, k}, "datatype": "FP32", "data": data}}})
}

func fast(o RemoteOptions) RemoteOptions {
	o.AllowPrivate = true
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	return o
}

// TestRemoteFailures runs the failure modes against real servers.
func TestRemoteFailures(t *testing.T) {
	closed := func(t *testing.T, _ *endpoint) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr + "/v2/models/m"
	}
	serving := func(fn func(e *endpoint, w http.ResponseWriter, r *http.Request, n int)) func(*testing.T, *endpoint) string {
		return func(t *testing.T, e *endpoint) string {
			return e.serve(t, func(w http.ResponseWriter, r *http.Request, n int) { fn(e, w, r, n) }) + "/v2/models/m"
		}
	}
	cases := []struct {
		name     string
		url      func(*testing.T, *endpoint) string
		opts     RemoteOptions
		calls    int      // Classify calls of batch3
		want     []string // error substrings; none: success
		is       error    // the error must wrap this
		requests int      // requests the server must have seen
		labels   []int64  // the answer, when not [0 1 2]
		queries  int      // Queries() after
		absent   []string // what the error must not say
	}{
		{name: "dead endpoint", url: closed, opts: RemoteOptions{Retries: 2}, calls: 1,
			want: []string{"reading metadata", "3 attempts failed", "connection refused"}, is: syscall.ECONNREFUSED, queries: 0},
		{name: "dead endpoint, no metadata asked", url: closed, opts: RemoteOptions{Retries: 1, Layout: NCHW, InputName: "x"}, calls: 1,
			want: []string{"images 0–2", "2 attempts failed", "connection refused"}, is: syscall.ECONNREFUSED, queries: 6},
		{name: "slow endpoint", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			<-r.Context().Done() // answers only when the client gives up
		}), opts: RemoteOptions{Timeout: 100 * time.Millisecond}, calls: 1,
			want: []string{"no answer within 100ms"}, is: context.DeadlineExceeded, requests: 1, queries: 3},
		{name: "500 then 200", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			if req, _ := e.counts(); req == 1 {
				http.Error(w, `{"error":"warming up"}`, http.StatusInternalServerError)
				return
			}
			labelsAnswer(w, n)
		}), calls: 1, requests: 2, queries: 6},
		{name: "429 with Retry-After then 200", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			if req, _ := e.counts(); req == 1 {
				w.Header().Set("Retry-After", "0")
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
			labelsAnswer(w, n)
		}), calls: 1, requests: 2, queries: 6},
		{name: "always 503", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			http.Error(w, `{"error":"model not loaded"}`, http.StatusServiceUnavailable)
		}), opts: RemoteOptions{Retries: 1}, calls: 1, want: []string{"2 attempts failed", "HTTP 503", "model not loaded"}, requests: 2, queries: 6},
		{name: "400 is not retried", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"input shape [3,1,2,2]; the model takes [-1,3,32,32]"}`)
		}), calls: 1, want: []string{"HTTP 400", "the model takes [-1,3,32,32]"}, requests: 1, queries: 3},
		{name: "budget exhausted", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			labelsAnswer(w, n)
		}), opts: RemoteOptions{Budget: 5}, calls: 2, want: []string{"query budget exhausted", "3 of 5 images sent, 3 more needed"}, is: ErrBudget, requests: 1, queries: 3},
		{name: "budget spent by a retry", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			http.Error(w, "busy", http.StatusBadGateway)
		}), opts: RemoteOptions{Budget: 4}, calls: 1, want: []string{"query budget exhausted", "HTTP 502"}, is: ErrBudget, requests: 1, queries: 3},
		{name: "budget exactly enough", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			labelsAnswer(w, n)
		}), opts: RemoteOptions{Budget: 6, Batch: 2}, calls: 2, requests: 4, queries: 6, labels: []int64{0, 1, 0}},
		{name: "malformed JSON", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			fmt.Fprint(w, `{"outputs": [{"name": "p", "data": [0.1, 0.9`)
		}), calls: 1, want: []string{"not KServe v2 JSON"}, requests: 1, queries: 3},
		{name: "wrong number of predictions", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			labelsAnswer(w, n-1)
		}), calls: 1, want: []string{"2 answers to 3 images"}, requests: 1, queries: 3},
		{name: "shape disagrees with data", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			fmt.Fprint(w, `{"outputs":[{"name":"p","shape":[3,2],"datatype":"FP32","data":[1,0,0,1]}]}`)
		}), calls: 1, want: []string{"shape [3 2] holds 6 values, data has 4"}, requests: 1, queries: 3},
		{name: "answer too large", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			fmt.Fprintf(w, `{"outputs":[{"name":"p","shape":[3],"datatype":"INT64","data":[1,2,0]}],"pad":%q}`, strings.Repeat("x", 4096))
		}), opts: RemoteOptions{MaxResponseBytes: 1024}, calls: 1, want: []string{"larger than 1024 bytes"}, requests: 1, queries: 3},
		{name: "a body that is not a JSON error is not repeated", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, "<html>root:x:0:0:root:/root:/bin/bash</html>")
		}), calls: 1, want: []string{"HTTP 404", "a 44-byte text/html answer (not shown)"}, absent: []string{"root", "html>"}, requests: 1, queries: 3},
		{name: "an error message is cleaned and bounded", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "\x1b[31mbad\x1b[0m\x07 \x1b]0;pwned\x07input\u202e\r\n" + strings.Repeat("y", 10000)})
		}), calls: 1, want: []string{"HTTP 400 Bad Request: bad input yyy", "…"}, absent: []string{"\x1b", "\a", "\u202e", "\r", "\n", "pwned", "[31m", strings.Repeat("y", maxShown)}, requests: 1, queries: 3},
		{name: "output names are cleaned", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			fmt.Fprintf(w, `{"outputs":[{"name":"\u001b[2Jp\u0000","shape":[3,2],"datatype":"FP32","data":[1,0,0,1]}]}`)
		}), calls: 1, want: []string{`output "p": shape [3 2] holds 6 values`}, absent: []string{"\x1b", "\x00", "[2J"}, requests: 1, queries: 3},
		{name: "error in a 200", url: serving(func(e *endpoint, w http.ResponseWriter, r *http.Request, n int) {
			fmt.Fprint(w, `{"error":"tensor too big"}`)
		}), calls: 1, want: []string{"the endpoint says: tensor too big"}, requests: 1, queries: 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &endpoint{}
			r, err := NewRemote(c.url(t, e), fast(c.opts))
			if err != nil {
				t.Fatal(err)
			}
			var labels []int64
			for range c.calls {
				if labels, err = r.Classify(context.Background(), batch3()); err != nil {
					break
				}
			}
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Classify: %v", err)
				}
				want := c.labels
				if want == nil {
					want = []int64{0, 1, 2}
				}
				if !slices.Equal(labels, want) {
					t.Errorf("labels %v, want %v", labels, want)
				}
			} else {
				if err == nil {
					t.Fatalf("Classify succeeded; want an error with %q", c.want)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				for _, a := range c.absent {
					if strings.Contains(err.Error(), a) {
						t.Errorf("error %q says %q", err, a)
					}
				}
				if c.is != nil && !errors.Is(err, c.is) {
					t.Errorf("error %q is not %v", err, c.is)
				}
			}
			if req, _ := e.counts(); req != c.requests {
				t.Errorf("%d requests reached the server, want %d", req, c.requests)
			}
			if q := r.Queries(); q != c.queries {
				t.Errorf("Queries() = %d, want %d", q, c.queries)
			}
		})
	}
}

// TestRemoteCancel checks that a cancelled context stops at once: before
// sending, while waiting for an answer, and while backing off.
func TestRemoteCancel(t *testing.T) {
	e := &endpoint{}
	arrived := make(chan struct{}, 10)
	url := e.serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		arrived <- struct{}{}
		if r.URL.Query().Get("mode") == "busy" {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		<-r.Context().Done()
	})
	t.Run("before", func(t *testing.T) {
		r, err := NewRemote(url+"/v2/models/m", fast(RemoteOptions{}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := r.Classify(ctx, batch3()); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		if r.Queries() != 0 {
			t.Errorf("%d images sent after cancellation", r.Queries())
		}
	})
	for _, mode := range []string{"hang", "busy"} {
		t.Run(mode, func(t *testing.T) {
			// An hour-long timeout and backoff: only cancellation can end it.
			r, err := NewRemote(url+"/v2/models/m?mode="+mode, fast(RemoteOptions{Timeout: time.Hour, Backoff: time.Hour}))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-arrived
				cancel()
			}()
			if _, err := r.Classify(ctx, batch3()); !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
		})
	}
}

// TestAnswers decodes the answers endpoints give: scores, one-hot vectors,
// class indices and names, nested or named, in both protocols.
func TestAnswers(t *testing.T) {
	classes := []string{"cat", "dog", "emu"}
	cases := []struct {
		name    string
		proto   Protocol
		answer  string
		classes []string
		output  string
		want    []int64
		err     string
	}{
		{"kserve probabilities", KServe, `{"outputs":[{"name":"p","shape":[3,3],"datatype":"FP32","data":[0.1,0.2,0.7,0.5,0.3,0.2,0,1,0]}]}`, nil, "", []int64{2, 0, 1}, ""},
		{"kserve nested data", KServe, `{"outputs":[{"name":"p","shape":[3,3],"datatype":"FP32","data":[[0.1,0.2,0.7],[0.5,0.3,0.2],[0,1,0]]}]}`, nil, "", []int64{2, 0, 1}, ""},
		{"kserve logits", KServe, `{"outputs":[{"name":"logits","shape":[3,3],"datatype":"FP32","data":[-1,-2,-0.5,3,-1e9,2.9,-7,-6,-8]}]}`, classes, "", []int64{2, 0, 1}, ""},
		{"kserve ties pick the first", KServe, `{"outputs":[{"name":"p","shape":[3,3],"datatype":"FP32","data":[0.5,0.5,0,0,0.5,0.5,0.2,0.2,0.2]}]}`, nil, "", []int64{0, 1, 0}, ""},
		{"kserve one-hot", KServe, `{"outputs":[{"name":"onehot","shape":[3,3],"datatype":"FP32","data":[0,0,1,1,0,0,0,1,0]}]}`, classes, "", []int64{2, 0, 1}, ""},
		{"kserve index", KServe, `{"outputs":[{"name":"label","shape":[3],"datatype":"INT64","data":[2,0,1]}]}`, nil, "", []int64{2, 0, 1}, ""},
		{"kserve index as [n,1]", KServe, `{"outputs":[{"name":"label","shape":[3,1],"datatype":"INT32","data":[[2],[0],[1]]}]}`, nil, "", []int64{2, 0, 1}, ""},
		{"kserve names", KServe, `{"outputs":[{"name":"label","shape":[3],"datatype":"BYTES","data":["emu","cat","dog"]}]}`, classes, "", []int64{2, 0, 1}, ""},
		{"kserve picks probabilities over others", KServe, `{"outputs":[{"name":"embedding","shape":[3,2],"datatype":"FP32","data":[9,9,9,9,9,9]},{"name":"probabilities","shape":[3,3],"datatype":"FP32","data":[0,0,1,1,0,0,0,1,0]}]}`, nil, "", []int64{2, 0, 1}, ""},
		{"kserve named output", KServe, `{"outputs":[{"name":"a","shape":[3],"datatype":"INT64","data":[0,0,0]},{"name":"b","shape":[3],"datatype":"INT64","data":[2,0,1]}]}`, nil, "b", []int64{2, 0, 1}, ""},
		{"kserve missing named output", KServe, `{"outputs":[{"name":"a","shape":[3],"datatype":"INT64","data":[0,0,0]}]}`, nil, "b", nil, `no output "b" (it has "a")`},
		{"kserve names without classes", KServe, `{"outputs":[{"name":"label","shape":[3],"datatype":"BYTES","data":["emu","cat","dog"]}]}`, nil, "", nil, "no class names were given"},
		{"kserve unknown name", KServe, `{"outputs":[{"name":"label","shape":[3],"datatype":"BYTES","data":["emu","cat","yak"]}]}`, classes, "", nil, `"yak" is none of the classes`},
		{"kserve index out of range", KServe, `{"outputs":[{"name":"label","shape":[3],"datatype":"INT64","data":[2,0,3]}]}`, classes, "", nil, "class index 3 is out of range"},
		{"kserve fractional index", KServe, `{"outputs":[{"name":"label","shape":[3],"datatype":"FP32","data":[2,0,1.5]}]}`, nil, "", nil, "1.5 is not a class index"},
		{"kserve too many scores", KServe, `{"outputs":[{"name":"p","shape":[3,4],"datatype":"FP32","data":[0,0,1,0,1,0,0,0,0,1,0,0]}]}`, classes, "", nil, "4 scores for 3 classes"},
		{"kserve no outputs", KServe, `{"outputs":[]}`, nil, "", nil, "no outputs"},
		{"kserve string scores", KServe, `{"outputs":[{"name":"p","shape":[3,2],"datatype":"BYTES","data":["a","b","c","d","e","f"]}]}`, nil, "", nil, "not scores"},
		{"tf probabilities", TFServing, `{"predictions":[[0.1,0.2,0.7],[0.5,0.3,0.2],[0,1,0]]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf index", TFServing, `{"predictions":[2,0,1]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf index in lists", TFServing, `{"predictions":[[2],[0],[1]]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf names", TFServing, `{"predictions":["emu","cat","dog"]}`, classes, "", []int64{2, 0, 1}, ""},
		{"tf number strings", TFServing, `{"predictions":[["2"],["0"],["1"]]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf one-hot", TFServing, `{"predictions":[[0,0,1],[1,0,0],[0,1,0]]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf estimator objects", TFServing, `{"predictions":[{"class_ids":[2],"classes":["2"],"probabilities":[0.1,0.2,0.7]},{"class_ids":[0],"classes":["0"],"probabilities":[0.8,0.1,0.1]},{"class_ids":[1],"classes":["1"],"probabilities":[0.1,0.8,0.1]}]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf named output", TFServing, `{"predictions":[{"x":[1,0,0],"y":[0,0,1]},{"x":[1,0,0],"y":[1,0,0]},{"x":[1,0,0],"y":[0,1,0]}]}`, nil, "y", []int64{2, 0, 1}, ""},
		{"tf ambiguous objects", TFServing, `{"predictions":[{"x":1,"y":2},{"x":1,"y":2},{"x":1,"y":2}]}`, nil, "", nil, `cannot tell which of the outputs "x", "y"`},
		{"tf columnar", TFServing, `{"outputs":[[0.1,0.2,0.7],[0.5,0.3,0.2],[0,1,0]]}`, nil, "", []int64{2, 0, 1}, ""},
		{"tf columnar named", TFServing, `{"outputs":{"scores":[[0.1,0.2,0.7],[0.5,0.3,0.2],[0,1,0]],"keys":[7,8,9]}}`, nil, "scores", []int64{2, 0, 1}, ""},
		{"tf wrong count", TFServing, `{"predictions":[[0.1,0.2,0.7],[0.5,0.3,0.2]]}`, nil, "", nil, "2 predictions for 3 images"},
		{"tf error", TFServing, `{"error":"Failed to process element: 0"}`, nil, "", nil, "the endpoint says: Failed to process element: 0"},
		{"tf malformed", TFServing, `{"predictions":[[0.1,`, nil, "", nil, "not TensorFlow Serving JSON"},
		{"tf neither key", TFServing, `{"result":[1,2,3]}`, nil, "", nil, `neither "predictions" nor "outputs"`},
		{"tf NaN-free null", TFServing, `{"predictions":[null,1,2]}`, nil, "", nil, "label is null"},
		{"tf empty answer", TFServing, `{"predictions":[[],[1],[2]]}`, nil, "", nil, "an empty answer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Remote{o: RemoteOptions{Classes: c.classes, OutputName: c.output}, proto: c.proto}
			var got []int64
			var err error
			if c.proto == KServe {
				got, err = r.kserveLabels([]byte(c.answer), 3)
			} else {
				got, err = r.tfLabels([]byte(c.answer), 3)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("labels %v, want %v", got, c.want)
			}
		})
	}
}

// TestEndpoints reads the protocol and the URLs to call from the URL.
func TestEndpoints(t *testing.T) {
	cases := []struct {
		url         string
		proto       Protocol
		wantProto   Protocol
		infer, meta string
		err         string
	}{
		{"http://h:8000/v2/models/mnist", ProtocolAuto, KServe, "http://h:8000/v2/models/mnist/infer", "http://h:8000/v2/models/mnist", ""},
		{"http://h:8000/v2/models/mnist/infer", ProtocolAuto, KServe, "http://h:8000/v2/models/mnist/infer", "http://h:8000/v2/models/mnist", ""},
		{"http://h/v2/models/mnist/versions/3/infer", ProtocolAuto, KServe, "http://h/v2/models/mnist/versions/3/infer", "http://h/v2/models/mnist/versions/3", ""},
		{"https://h/serving/v2/models/m/?key=1", ProtocolAuto, KServe, "https://h/serving/v2/models/m/infer?key=1", "https://h/serving/v2/models/m?key=1", ""},
		{"http://h:8501/v1/models/mnist", ProtocolAuto, TFServing, "http://h:8501/v1/models/mnist:predict", "http://h:8501/v1/models/mnist/metadata", ""},
		{"http://h:8501/v1/models/mnist:predict", ProtocolAuto, TFServing, "http://h:8501/v1/models/mnist:predict", "http://h:8501/v1/models/mnist/metadata", ""},
		{"http://h/v1/models/mnist/versions/2:predict", ProtocolAuto, TFServing, "http://h/v1/models/mnist/versions/2:predict", "http://h/v1/models/mnist/versions/2/metadata", ""},
		{"http://h/v1/models/mnist/labels/stable", TFServing, TFServing, "http://h/v1/models/mnist/labels/stable:predict", "http://h/v1/models/mnist/labels/stable/metadata", ""},
		{"http://h/predict", KServe, KServe, "http://h/predict", "", ""},
		{"http://h/predict", TFServing, TFServing, "http://h/predict", "", ""},
		{"http://h/predict", ProtocolAuto, "", "", "", "cannot tell the protocol"},
		{"http://h/v2/models/", ProtocolAuto, "", "", "", "names no model"},
		{"http://h/v2/models/m/explain", ProtocolAuto, "", "", "", "not a KServe v2 model URL"},
		{"http://h/v1/models/m:classify", ProtocolAuto, "", "", "", "not a TensorFlow Serving model URL"},
		{"http://h/v1/models/mnist", KServe, KServe, "http://h/v1/models/mnist", "", ""},
	}
	for _, c := range cases {
		r, err := NewRemote(c.url, RemoteOptions{Protocol: c.proto})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s (%s): error %v, want one with %q", c.url, c.proto, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s (%s): %v", c.url, c.proto, err)
			continue
		}
		if r.proto != c.wantProto || r.inferURL != c.infer || r.metaURL != c.meta {
			t.Errorf("%s (%s): %s %q %q, want %s %q %q", c.url, c.proto, r.proto, r.inferURL, r.metaURL, c.wantProto, c.infer, c.meta)
		}
	}
}

// TestRequests checks the bodies sent: layouts, scale and names.
func TestRequests(t *testing.T) {
	b := Images{X: []float32{0, 0.5, 1, 0.25, 0.75, 0.125}, N: 1, C: 2, H: 1, W: 3} // c0: 0 .5 1; c1: .25 .75 .125
	gray := Images{X: []float32{0, 0.5, 1, 0.25, 0.75, 0.125}, N: 1, C: 1, H: 2, W: 3}
	tfMeta := func(dims ...int) string {
		var d []string
		for _, n := range dims {
			d = append(d, fmt.Sprintf(`{"size":"%d"}`, n))
		}
		return `{"metadata":{"signature_def":{"signature_def":{"serving_default":{"inputs":{"x":{"dtype":"DT_FLOAT","tensor_shape":{"dim":[` + strings.Join(d, ",") + `]}}}}}}}}`
	}
	cases := []struct {
		name  string
		url   string
		o     RemoteOptions
		want  string
		reply string
		meta  string
		img   *Images // b when nil
		err   string
	}{
		{"kserve nchw with a header", "/v2/models/m", RemoteOptions{Header: http.Header{"Authorization": {"Bearer t0k3n"}}},
			`{"inputs":[{"name":"input","shape":[1,2,1,3],"datatype":"FP32","data":[0,0.5,1,0.25,0.75,0.125]}]}`, `{"outputs":[{"name":"l","shape":[1],"datatype":"INT64","data":[1]}]}`, "", nil, ""},
		{"kserve nhwc scaled named", "/v2/models/m", RemoteOptions{Layout: NHWC, Scale: 255, InputName: "x", OutputName: "l"},
			`{"inputs":[{"name":"x","shape":[1,1,3,2],"datatype":"FP32","data":[0,63.75,127.5,191.25,255,31.875]}],"outputs":[{"name":"l"}]}`, `{"outputs":[{"name":"l","shape":[1],"datatype":"INT64","data":[1]}]}`, "", nil, ""},
		{"tf nhwc (default)", "/v1/models/m", RemoteOptions{},
			`{"instances":[[[[0,0.25],[0.5,0.75],[1,0.125]]]]}`, `{"predictions":[1]}`, "", nil, ""},
		{"tf nchw", "/v1/models/m", RemoteOptions{Layout: NCHW},
			`{"instances":[[[[0,0.5,1]],[[0.25,0.75,0.125]]]]}`, `{"predictions":[1]}`, "", nil, ""},
		{"tf named instance", "/v1/models/m", RemoteOptions{Layout: NCHW, InputName: "img"},
			`{"instances":[{"img":[[[0,0.5,1]],[[0.25,0.75,0.125]]]}]}`, `{"predictions":[1]}`, "", nil, ""},
		{"tf columnar named", "/v1/models/m", RemoteOptions{Layout: NCHW, InputName: "img", Columnar: true},
			`{"inputs":{"img":[[[[0,0.5,1]],[[0.25,0.75,0.125]]]]}}`, `{"outputs":[1]}`, "", nil, ""},
		{"kserve flat from metadata", "/v2/models/m", RemoteOptions{},
			`{"inputs":[{"name":"x","shape":[1,6],"datatype":"FP32","data":[0,0.5,1,0.25,0.75,0.125]}]}`, `{"outputs":[{"name":"l","shape":[1],"datatype":"INT64","data":[1]}]}`,
			`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,6]}]}`, nil, ""},
		{"kserve NHWC from metadata", "/v2/models/m", RemoteOptions{},
			`{"inputs":[{"name":"x","shape":[1,1,3,2],"datatype":"FP32","data":[0,0.25,0.5,0.75,1,0.125]}]}`, `{"outputs":[{"name":"l","shape":[1],"datatype":"INT64","data":[1]}]}`,
			`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,1,3,2]}]}`, nil, ""},
		{"tf flat", "/v1/models/m", RemoteOptions{Layout: Flat},
			`{"instances":[[0,0.5,1,0.25,0.75,0.125]]}`, `{"predictions":[1]}`, "", nil, ""},
		{"tf NHW from metadata", "/v1/models/m", RemoteOptions{},
			`{"instances":[[[0,0.5,1],[0.25,0.75,0.125]]]}`, `{"predictions":[1]}`, tfMeta(-1, 2, 3), &gray, ""},
		{"tf NCHW from metadata", "/v1/models/m", RemoteOptions{},
			`{"instances":[[[[0,0.5,1],[0.25,0.75,0.125]]]]}`, `{"predictions":[1]}`, tfMeta(-1, 1, 2, 3), &gray, ""},
		{"kserve NHW for two channels", "/v2/models/m", RemoteOptions{Layout: NHW}, "", "", "", nil, "drops the channel axis"},
		{"kserve rank 3 for two channels", "/v2/models/m", RemoteOptions{}, "", "",
			`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,1,3]}]}`, nil, "does not take 2×1×3 images"},
		{"kserve flat of another size", "/v2/models/m", RemoteOptions{}, "", "",
			`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,784]}]}`, nil, "does not take 2×1×3 = 6 values per image"},
		{"kserve rank 5", "/v2/models/m", RemoteOptions{}, "", "",
			`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,1,1,2,3]}]}`, nil, "rank 2, 3 or 4"},
		{"kserve INT8 input", "/v2/models/m", RemoteOptions{}, "", "",
			`{"inputs":[{"name":"x","datatype":"INT8","shape":[-1,2,1,3]}]}`, nil, "only FP32 inputs"},
		{"kserve two inputs", "/v2/models/m", RemoteOptions{}, "", "",
			`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,2,1,3]},{"name":"y","datatype":"FP32","shape":[-1]}]}`, nil, "2 inputs; name one"},
		{"tf DT_INT32 input", "/v1/models/m", RemoteOptions{}, "", "",
			strings.Replace(tfMeta(-1, 1, 3, 2), "DT_FLOAT", "DT_INT32", 1), nil, "only DT_FLOAT"},
		{"kserve garbage metadata", "/v2/models/m", RemoteOptions{}, "", "", `<html>`, nil, "not KServe v2 model metadata"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &endpoint{meta: c.meta}
			url := e.serve(t, func(w http.ResponseWriter, r *http.Request, n int) { fmt.Fprint(w, c.reply) })
			r, err := NewRemote(url+c.url, fast(c.o))
			if err != nil {
				t.Fatal(err)
			}
			img := b
			if c.img != nil {
				img = *c.img
			}
			got, err := r.Classify(context.Background(), img)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("error %v, want one with %q", err, c.err)
				}
				if len(e.bodies) != 0 {
					t.Errorf("%d requests sent", len(e.bodies))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, []int64{1}) {
				t.Errorf("labels %v", got)
			}
			if len(e.bodies) != 1 || string(e.bodies[0]) != c.want {
				t.Fatalf("sent %s\nwant %s", e.bodies, c.want)
			}
			if want := c.o.Header.Get("Authorization"); e.auth[0] != want {
				t.Errorf("Authorization %q, want %q", e.auth[0], want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"3", 3 * time.Second},
		{"0", 0},
		{"120", maxRetryAfter},
		{"-5", 0},
		{"soon", 0},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0},
		{time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), maxRetryAfter},
	}
	for _, c := range cases {
		if got := parseRetryAfter(c.in); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// FuzzAnswers feeds arbitrary bodies to both decoders: an answer is
// labels or an error, never a panic, and labels are one per image, in
// range.
func FuzzAnswers(f *testing.F) {
	f.Add([]byte(`{"outputs":[{"name":"p","shape":[3,3],"datatype":"FP32","data":[0.1,0.2,0.7,0.5,0.3,0.2,0,1,0]}]}`), 3)
	f.Add([]byte(`{"predictions":[{"class_ids":[2]},{"class_ids":[0]}]}`), 2)
	f.Add([]byte(`{"outputs":{"scores":[[1,0]],"keys":[7]}}`), 1)
	f.Add([]byte(`{"outputs":[{"name":"l","shape":[2,1],"datatype":"BYTES","data":[["cat"],["3"]]}]}`), 2)
	classes := []string{"cat", "dog", "emu", "yak"}
	f.Fuzz(func(t *testing.T, body []byte, n int) {
		if n < 0 || n > 64 {
			return
		}
		r := &Remote{o: RemoteOptions{Classes: classes}}
		for _, decode := range []func([]byte, int) ([]int64, error){r.kserveLabels, r.tfLabels} {
			labels, err := decode(body, n)
			if err != nil {
				continue
			}
			if len(labels) != n {
				t.Fatalf("%d labels for %d images from %s", len(labels), n, body)
			}
			for _, l := range labels {
				if l < 0 || l >= int64(len(classes)) {
					t.Fatalf("label %d from %s", l, body)
				}
			}
		}
	})
}

// TestRemoteConcurrent shares one Remote between goroutines: the budget
// holds exactly, and the count of queries is exact.
func TestRemoteConcurrent(t *testing.T) {
	e := &endpoint{}
	url := e.serve(t, func(w http.ResponseWriter, r *http.Request, n int) { labelsAnswer(w, n) })
	r, err := NewRemote(url+"/v2/models/m", fast(RemoteOptions{Budget: 9}))
	if err != nil {
		t.Fatal(err)
	}
	const callers = 4
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			labels, err := r.Classify(context.Background(), batch3())
			if err == nil && !slices.Equal(labels, []int64{0, 1, 2}) {
				err = fmt.Errorf("labels %v", labels)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok, over := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrBudget):
			over++
		default:
			t.Error(err)
		}
	}
	if _, images := e.counts(); ok != 3 || over != 1 || r.Queries() != 9 || images != 9 {
		t.Errorf("%d succeeded, %d over budget, %d queries, %d images served; want 3, 1, 9, 9", ok, over, r.Queries(), images)
	}
}

// TestRemoteText cleans what an endpoint says before it is shown.
func TestRemoteText(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want string
	}{
		{"model not loaded", 200, "model not loaded"},
		{"  two\n\tlines \r\n", 200, "two lines"},
		{"\x1b[1;31mred\x1b[0m", 200, "red"},
		{"title\x1b]0;evil\x07 after", 200, "title after"},
		{"osc st\x1b]8;;http://x\x1b\\link", 200, "osc stlink"},
		{"dcs\x1bPq#0\x1b\\ end", 200, "dcs end"},
		{"c1 csi\u009b2J here", 200, "c1 csi here"},
		{"esc\x1bc reset", 200, "esc reset"},
		{"cut\x1b[", 200, "cut"},
		{"bell\a nul\x00 del\x7f", 200, "bell nul del"},
		{"bidi \u202egnp.exe\u202c zero\u200bwidth", 200, "bidi gnp.exe zerowidth"},
		{"bad \xff\xfe utf8", 200, "bad utf8"},
		{"héllo wörld ✓", 200, "héllo wörld ✓"},
		{"abcdef", 3, "abc…"},
		{"ab cdef", 3, "ab …"},
		{"abc", 3, "abc"},
		{strings.Repeat("\x1b[0m", 10000), 10, ""},
	}
	for _, c := range cases {
		if got := remoteText(c.in, c.n); got != c.want {
			t.Errorf("remoteText(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	if got := remoteList([]string{"a", "b\x1b[2J", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"}); got != `"a", "b", "c", "d", "e", "f", "g", "h", "i", "j" and 2 more` {
		t.Errorf("remoteList = %s", got)
	}
}

// TestAnswerLimit holds an answer to n images to what n answers take: a
// 60 MB answer under the 64 MiB cap used to be read and decoded whole
// (gigabytes); now reading stops at the bound, whatever the server sends,
// and the memory it costs is measured.
func TestAnswerLimit(t *testing.T) {
	classes := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	padded := func(size int, chunked bool) func(w http.ResponseWriter, r *http.Request, n int) {
		return func(w http.ResponseWriter, r *http.Request, n int) {
			head := `{"outputs":[{"name":"p","shape":[3],"datatype":"INT64","data":[0,1,2]}],"pad":"`
			if !chunked {
				w.Header().Set("Content-Length", fmt.Sprint(len(head)+size+2))
			}
			io.WriteString(w, head)
			chunk := strings.Repeat("x", 1<<16)
			for left := size; left > 0; left -= len(chunk) {
				if _, err := io.WriteString(w, chunk[:min(left, len(chunk))]); err != nil {
					return // the client stopped reading
				}
			}
			io.WriteString(w, `"}`)
		}
	}
	wide := func(w http.ResponseWriter, r *http.Request, n int) { // 1,000 scores an image
		scores := make([]float64, n*1000)
		for i := range n {
			scores[i*1000+i] = 0.123456789
		}
		json.NewEncoder(w).Encode(map[string]any{"outputs": []any{map[string]any{"name": "p", "shape": []int{n, 1000}, "datatype": "FP64", "data": scores}}})
	}
	limit3 := answerBase + 3*(answerPerImage+10*answerPerClass)
	cases := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, n int)
		classes []string
		says    string // "" when the answer is taken
	}{
		{"60 MB, chunked", padded(60<<20, true), classes, fmt.Sprintf("larger than %d bytes", limit3)},
		{"60 MB, said up front", padded(60<<20, false), classes, fmt.Sprintf("larger than %d bytes (it says", limit3)},
		{"just under the bound", padded(limit3-200, true), classes, ""},
		{"1,000 scores an image, classes not named", wide, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &endpoint{}
			r, err := NewRemote(e.serve(t, c.handler)+"/v2/models/m", fast(RemoteOptions{Classes: c.classes, Layout: NCHW, InputName: "x", Retries: -1}))
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err = r.Classify(context.Background(), batch3())
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%s: %d bytes allocated", c.name, alloc)
			if c.says == "" {
				if err != nil {
					t.Fatalf("Classify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("Classify: %v, want an error saying %q", err, c.says)
			}
			if alloc > 4<<20 {
				t.Errorf("refusing the answer allocated %d bytes", alloc)
			}
		})
	}
}
