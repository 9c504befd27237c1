package predict_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/predict"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

func TestMain(m *testing.M) {
	torch.SetNumThreads(1)
	os.Exit(m.Run())
}

// world is a tiny real setting: an MLP source trained on part of the
// defender's half of Fashion-MNIST, one training surrogate and reference,
// a fingerprint crafted by C-BIM, and an independent model.
type world struct {
	source, surrogate, reference *nn.Model
	independent                  *nn.Model // trained on other data, seen by nothing
	fp                           *fingerprint.Fingerprint
}

var (
	worldOnce sync.Once
	theWorld  *world
	worldErr  error
)

func getWorld(t *testing.T) *world {
	t.Helper()
	worldOnce.Do(func() { theWorld, worldErr = buildWorld() })
	if worldErr != nil {
		t.Fatalf("building the models: %v", worldErr)
	}
	return theWorld
}

func seq(from, to int) []int {
	idx := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		idx = append(idx, i)
	}
	return idx
}

func buildWorld() (*world, error) {
	ctx := context.Background()
	torch.ManualSeed(1)
	full, err := data.FashionMNIST("", true)
	if err != nil {
		return nil, err
	}
	def, adv := data.Split(full, 1)
	other := adv.Subset(seq(1500, 3000))
	def, adv = def.Subset(seq(0, 1500)), adv.Subset(seq(0, 1500))
	cfg := func(seed int64) train.Config {
		return train.Config{Epochs: 2, BatchSize: 64, Optimizer: "adam", LR: 1e-3, Schedule: "constant", Seed: seed}
	}
	fit := func(seed int64, d *data.Dataset, teacher *nn.Model) (*nn.Model, error) {
		m, err := nn.New(train.SpecFor("mlp", d), uint64(seed), torch.CPU)
		if err != nil {
			return nil, err
		}
		if teacher != nil {
			_, err = train.Retrain(ctx, teacher, m, d, cfg(seed))
		} else {
			_, err = train.Train(ctx, m, d, cfg(seed))
		}
		return m, err
	}
	w := &world{}
	if w.source, err = fit(1, def, nil); err != nil {
		return nil, err
	}
	if w.surrogate, err = fit(2, adv, w.source); err != nil {
		return nil, err
	}
	if w.reference, err = fit(3, adv, nil); err != nil {
		return nil, err
	}
	if w.independent, err = fit(4, other, nil); err != nil {
		return nil, err
	}
	tm := fingerprint.Training{Source: w.source, Surrogates: []fingerprint.Model{w.surrogate}, References: []fingerprint.Model{w.reference},
		SurrogateIDs: []string{"surrogate"}, ReferenceIDs: []string{"reference"}, SourceID: "source", SourceArch: "mlp"}
	fc := fingerprint.Config{CBIM: attack.CBIMConfig{Eps: 0.1, Alpha: 0.01, Steps: 10, Dropout: 0.5, Loss: attack.LossLinear},
		Tau: 1, Candidates: 60, Batch: 60, Seed: 7}
	if w.fp, err = fingerprint.Extract(ctx, tm, def, fc); err != nil {
		return nil, err
	}
	if w.fp.N < 3 {
		return nil, fmt.Errorf("only %d fingerprints", w.fp.N)
	}
	return w, nil
}

// serve starts the handler for m on 127.0.0.1.
func serve(t *testing.T, m predict.Model, fp *fingerprint.Fingerprint, o predict.Options) (*predict.Handler, string) {
	t.Helper()
	o.Classes, o.C, o.H, o.W = fp.Meta.Classes, fp.C, fp.H, fp.W
	h, err := predict.New(m, o)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return h, s.URL
}

// TestRemoteVerdicts verifies real models through both protocols, every
// kind of answer, both layouts and scaled values: each remote verdict must
// equal the local one exactly, and cost exactly one query per fingerprint.
func TestRemoteVerdicts(t *testing.T) {
	w := getWorld(t)
	cases := []struct {
		name   string
		server predict.Options
		path   string
		client suspect.RemoteOptions
	}{
		{"kserve probabilities", predict.Options{}, "/v2/models/model", suspect.RemoteOptions{}},
		{"tfserving probabilities, NHWC from metadata", predict.Options{Layout: suspect.NHWC}, "/v1/models/model", suspect.RemoteOptions{}},
		{"kserve labels only", predict.Options{Answer: predict.Index}, "/v2/models/model/infer", suspect.RemoteOptions{}},
		{"tfserving labels only", predict.Options{Answer: predict.Index}, "/v1/models/model:predict", suspect.RemoteOptions{}},
		{"kserve class names", predict.Options{Answer: predict.Name}, "/v2/models/model", suspect.RemoteOptions{Classes: w.fp.Meta.Classes}},
		{"tfserving class names", predict.Options{Answer: predict.Name}, "/v1/models/model", suspect.RemoteOptions{Classes: w.fp.Meta.Classes}},
		{"kserve one-hot NHWC in batches", predict.Options{Answer: predict.OneHot, Layout: suspect.NHWC}, "/v2/models/model", suspect.RemoteOptions{Layout: suspect.NHWC, Batch: 2}},
		{"tfserving columnar 0-255 in batches", predict.Options{Scale: 255}, "/v1/models/model", suspect.RemoteOptions{Scale: 255, Columnar: true, Batch: 3, Protocol: suspect.TFServing}},
		{"kserve named model, version 1", predict.Options{Name: "fmnist"}, "/v2/models/fmnist/versions/1", suspect.RemoteOptions{Protocol: suspect.KServe}},
	}
	models := []struct {
		name string
		m    *nn.Model
	}{{"source", w.source}, {"reference", w.reference}, {"independent", w.independent}}
	for _, c := range cases {
		for _, mod := range models {
			t.Run(c.name+"/"+mod.name, func(t *testing.T) {
				h, url := serve(t, mod.m, w.fp, c.server)
				ctx := context.Background()
				local, err := fingerprint.Verify(ctx, &suspect.Local{Model: mod.m, Name: mod.name}, w.fp, fingerprint.Rule{})
				if err != nil {
					t.Fatal(err)
				}
				o := c.client
				o.AllowPrivate = true
				r, err := suspect.NewRemote(url+c.path, o)
				if err != nil {
					t.Fatal(err)
				}
				remote, err := fingerprint.Verify(ctx, r, w.fp, fingerprint.Rule{})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(remote.Labels, local.Labels) || remote.Agree != local.Agree || remote.Accuracy != local.Accuracy ||
					remote.Surrogate != local.Surrogate || remote.Outcome != local.Outcome || !slices.Equal(remote.Matches, local.Matches) {
					t.Errorf("remote verdict differs from the local one:\nremote %+v\nlocal  %+v", remote, local)
				}
				if remote.Queries != w.fp.N || h.Served() != w.fp.N || r.Queries() != w.fp.N {
					t.Errorf("%d fingerprints, verdict says %d queries, the remote %d, the server served %d", w.fp.N, remote.Queries, r.Queries(), h.Served())
				}
				t.Logf("%d fingerprints, accuracy %.3f, %s", w.fp.N, remote.Accuracy, remote.Outcome)
				// The source agrees on every key; with few keys the
				// uncalibrated interval may not clear θ, but it is never
				// called independent.
				if mod.name == "source" && (remote.Accuracy != 1 || remote.Outcome == fingerprint.Independent) {
					t.Errorf("the source itself: %s", remote.Explain())
				}
			})
		}
	}
}

// TestRemoteRefusals runs the failures a real endpoint of the wrong kind
// gives: each is a clear error, and none costs a query it need not.
func TestRemoteRefusals(t *testing.T) {
	w := getWorld(t)
	fp := w.fp
	images := suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W}
	other := suspect.Images{X: make([]float32, 2*3*32*32), N: 2, C: 3, H: 32, W: 32}
	cases := []struct {
		name   string
		server predict.Options
		path   string
		client suspect.RemoteOptions
		images suspect.Images
		want   []string
		is     error
		served int
	}{
		{"loopback without permission", predict.Options{}, "/v2/models/model", suspect.RemoteOptions{AllowPrivate: false}, images,
			[]string{"loopback address", "refused"}, suspect.ErrRefused, 0},
		{"budget too small", predict.Options{}, "/v2/models/model", suspect.RemoteOptions{Budget: fp.N - 1}, images,
			[]string{"query budget exhausted", fmt.Sprintf("0 of %d images sent, %d more needed", fp.N-1, fp.N)}, suspect.ErrBudget, 0},
		{"layout disagrees with metadata", predict.Options{Layout: suspect.NHWC}, "/v2/models/model", suspect.RemoteOptions{Layout: suspect.NCHW}, images,
			[]string{"input shape [-1 28 28 1] is NHWC, not the NCHW asked for"}, nil, 0},
		{"images of another size", predict.Options{}, "/v1/models/model", suspect.RemoteOptions{}, other,
			[]string{"does not take 3×32×32 images"}, nil, 0},
		{"wrong layout, no metadata asked", predict.Options{Layout: suspect.NHWC}, "/v2/models/model", suspect.RemoteOptions{Layout: suspect.NCHW, InputName: "input"}, images,
			[]string{"HTTP 400", "the model takes [-1 28 28 1] (NHWC)"}, nil, 0},
		{"names without classes", predict.Options{Answer: predict.Name}, "/v2/models/model", suspect.RemoteOptions{}, images,
			[]string{"is a name, and no class names were given"}, nil, fp.N},
		{"unknown model", predict.Options{}, "/v2/models/other", suspect.RemoteOptions{}, images,
			[]string{"HTTP 404", `no model "other"`}, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, url := serve(t, w.source, fp, c.server)
			o := c.client
			o.AllowPrivate = c.name != "loopback without permission"
			r, err := suspect.NewRemote(url+c.path, o)
			if err == nil {
				_, err = r.Classify(context.Background(), c.images)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			if h.Served() != c.served {
				t.Errorf("the server classified %d images, want %d", h.Served(), c.served)
			}
		})
	}
}

// TestHandler checks the routes and the errors a client gets.
func TestHandler(t *testing.T) {
	w := getWorld(t)
	_, url := serve(t, w.source, w.fp, predict.Options{MaxBatch: 2, MaxBodyBytes: 4096})
	img := strings.TrimSuffix(strings.Repeat("0.5,", 784), ",")
	cases := []struct {
		method, path, body string
		status             int
		want               string // substring of the answer
	}{
		{"GET", "/v2/health/ready", "", 200, "{}"},
		{"GET", "/v2", "", 200, `"name":"conferral"`},
		{"GET", "/v2/models/model", "", 200, `"inputs":[{"datatype":"FP32","name":"input","shape":[-1,1,28,28]}]`},
		{"GET", "/v2/models/model/ready", "", 200, `"ready":true`},
		{"GET", "/v1/models/model", "", 200, `"state":"AVAILABLE"`},
		{"GET", "/v1/models/model/metadata", "", 200, `"dim":[{"name":"","size":"-1"},{"name":"","size":"1"},{"name":"","size":"28"},{"name":"","size":"28"}]`},
		{"GET", "/v2/models/model/infer", "", 405, "infer takes POST"},
		{"POST", "/v2/models/model", "{}", 405, "not allowed"},
		{"GET", "/v1/models/model:predict", "", 405, ":predict takes POST"},
		{"GET", "/v2/models/nope", "", 404, `no model "nope"`},
		{"GET", "/v2/models/model/versions/2", "", 404, "version 1"},
		{"GET", "/v3/anything", "", 404, "no route"},
		{"POST", "/v2/models/model/infer", `{"inputs":[`, 400, "not KServe v2 JSON"},
		{"POST", "/v2/models/model/infer", `{"inputs":[]}`, 400, "0 inputs"},
		{"POST", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"INT8","data":[]}]}`, 400, `is "INT8"`},
		{"POST", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[1,2]}]}`, 400, "has 2 values; shape [1 1 28 28] needs 784"},
		{"POST", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[3,1,28,28],"datatype":"FP32","data":[]}]}`, 400, "3 images in one request; at most 2"},
		{"POST", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":["a"]}]}`, 400, "not a number"},
		{"POST", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[` + img + `]}],"outputs":[{"name":"logits"}]}`, 400, `no output "logits"`},
		{"POST", "/v2/models/model/infer", `{"id":"q1","inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[` + img + `]}]}`, 200, `"id":"q1"`},
		{"POST", "/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[0,1,28,28],"datatype":"FP32","data":[]}]}`, 200, `"shape":[0,10]`},
		{"POST", "/v2/models/model/infer", strings.Repeat(" ", 5000), 413, "over 4096 bytes"},
		{"POST", "/v1/models/model:predict", `{"instances":[[1,2]]}`, 400, "image 0: a list of 2 where a list of 1 belongs"},
		{"POST", "/v1/models/model:predict", `{"examples":[]}`, 400, `neither "instances" nor "inputs"`},
		{"POST", "/v1/models/model:predict", `{"instances":{}}`, 400, "not a list of images"},
	}
	for _, c := range cases {
		req, err := http.NewRequest(c.method, url+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(body, &e)
		if resp.StatusCode != c.status || !(strings.Contains(string(body), c.want) || e.Error != "" && strings.Contains(e.Error, c.want)) {
			t.Errorf("%s %s: %d %s, want %d with %q", c.method, c.path, resp.StatusCode, body, c.status, c.want)
		}
		if !json.Valid(body) {
			t.Errorf("%s %s: the answer is not JSON: %s", c.method, c.path, body)
		}
	}
}

// TestNew refuses options that cannot serve.
func TestNew(t *testing.T) {
	w := getWorld(t)
	good := predict.Options{Classes: []string{"a", "b"}, C: 1, H: 28, W: 28}
	cases := []struct {
		name string
		edit func(*predict.Options)
		want string
	}{
		{"bad name", func(o *predict.Options) { o.Name = "a/b" }, "model name"},
		{"one class", func(o *predict.Options) { o.Classes = []string{"a"} }, "1 classes"},
		{"no size", func(o *predict.Options) { o.H = 0 }, "image size"},
		{"layout", func(o *predict.Options) { o.Layout = "CHWN" }, "unknown layout"},
		{"answer", func(o *predict.Options) { o.Answer = "logits" }, "unknown answer"},
		{"scale", func(o *predict.Options) { o.Scale = -1 }, "scale"},
	}
	for _, c := range cases {
		o := good
		c.edit(&o)
		if _, err := predict.New(w.source, o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.want)
		}
	}
	// A model with 10 classes served as if it had 2 answers with a clear error.
	h, err := predict.New(w.source, good)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(h)
	defer s.Close()
	r, err := suspect.NewRemote(s.URL+"/v2/models/model", suspect.RemoteOptions{AllowPrivate: true, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Classify(context.Background(), suspect.Images{X: w.fp.Float32()[:784], N: 1, C: 1, H: 28, W: 28})
	if err == nil || !strings.Contains(err.Error(), "the model gives 10 scores for 2 classes") {
		t.Errorf("error %v, want one about 10 scores for 2 classes", err)
	}
}

// FuzzHandler sends arbitrary bodies to both inference routes of a small
// real model: every answer is 200, 400 or 413 with a JSON body, never a
// crash or a 500.
func FuzzHandler(f *testing.F) {
	f.Add("/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[1,1,2,2],"datatype":"FP32","data":[0,0.5,1,0.25]}]}`)
	f.Add("/v2/models/model/infer", `{"inputs":[{"name":"input","shape":[2,1,2,2],"datatype":"FP64","data":[[0,0.5,1,0.25],[1,1,1,1]]}]}`)
	f.Add("/v1/models/model:predict", `{"instances":[[[[0,0.5],[1,0.25]]]]}`)
	f.Add("/v1/models/model:predict", `{"inputs":{"x":[[[[0,0.5],[1,0.25]]]]}}`)
	f.Add("/v1/models/model:predict", `{"instances":[{"x":[[[1e39,0],[0,0]]]}]}`)
	spec := nn.Spec{Arch: "mlp", Dataset: "t", Classes: []string{"a", "b", "c"}, C: 1, H: 2, W: 2, Mean: []float64{0.5}, Std: []float64{0.3}}
	m, err := nn.New(spec, 1, torch.CPU)
	if err != nil {
		f.Fatal(err)
	}
	h, err := predict.New(m, predict.Options{Classes: spec.Classes, C: 1, H: 2, W: 2, MaxBatch: 8, MaxBodyBytes: 1 << 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path, body string) {
		if path != "/v2/models/model/infer" && path != "/v1/models/model:predict" {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
		if c := w.Code; c != 200 && c != 400 && c != 413 {
			t.Fatalf("%s %q: status %d: %s", path, body, c, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q: not JSON: %s", path, body, w.Body)
		}
	})
}
