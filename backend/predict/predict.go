// Package predict serves a classifier as a prediction endpoint in the two
// common REST dialects: the Open Inference Protocol (KServe v2: POST
// /v2/models/{name}/infer) and TensorFlow Serving (POST
// /v1/models/{name}:predict). It is what `conferral serve-model` runs, for
// demos and for testing remote suspects against a real server.
package predict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/protocol/kserve"
	"github.com/conferral/conferral/backend/protocol/tfserving"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
)

// Answer is what the endpoint returns for each image.
type Answer string

// The answers a Handler can give.
const (
	// Probabilities are the softmax of the model's output (the default).
	Probabilities Answer = "probabilities"
	// Index is the class index only: a labels-only endpoint.
	Index Answer = "index"
	// Name is the class name only.
	Name Answer = "name"
	// OneHot is a one-hot vector of the class.
	OneHot Answer = "onehot"
)

// ParseAnswer reads probabilities, index, name or onehot.
func ParseAnswer(s string) (Answer, error) {
	switch a := Answer(strings.ToLower(strings.TrimSpace(s))); a {
	case "", Probabilities:
		return Probabilities, nil
	case Index, Name, OneHot:
		return a, nil
	}
	return "", fmt.Errorf("unknown answer %q (probabilities, index, name or onehot)", s)
}

// Model is the classifier served.
type Model = nn.Classifier

// Options describe the served model and how it answers.
type Options struct {
	// Name is the model's name in URLs ("model" when empty).
	Name string
	// Classes name the classes; their number is the model's.
	Classes []string
	// C, H, W is the image size.
	C, H, W int
	// Layout is the input layout the endpoint advertises and expects:
	// NCHW (the default) or NHWC.
	Layout suspect.Layout
	// Answer is what each image gets back (Probabilities when empty).
	Answer Answer
	// Scale divides the values received (1 when zero; 255 for an endpoint
	// that takes 0–255).
	Scale float64
	// MaxBatch bounds the images in one request (1024 when zero).
	MaxBatch int
	// MaxBodyBytes bounds a request body (when zero, what MaxBatch images
	// take as JSON, at most 64 MiB). The images are read straight into
	// float32s, bounded by the declared shape or MaxBatch.
	MaxBodyBytes int64
	// MaxPending bounds the inference requests being read, decoded, run
	// or waiting to run at once (4 when zero): each holds its images, and
	// the model runs one at a time. Others are answered 503 with
	// Retry-After.
	MaxPending int
	// Threads is libtorch's intra-op thread count on the goroutine's OS
	// thread during a forward pass (0: libtorch's default there). The
	// count is per OS thread, and requests run on threads other than the
	// one that set it at start-up.
	Threads int
	// Guard, when set, sees every batch the model answers and flags
	// inputs; Evade rewrites the answers to flagged ones (a suspect that
	// detects and evades verification: Hitaj et al.).
	Guard Guard
	Evade Evader
}

// Guard flags inputs: a detector of fingerprint queries. It runs with the
// model, on the same OS thread, one batch at a time.
type Guard interface {
	// Flag says which of the n images x (pixel space, NCHW) are flagged,
	// given the model's softmaxes p (n×k, row-major).
	Flag(x, p []float32, n int) ([]bool, error)
}

// Evader rewrites the answer to a flagged image: given its pixels and the
// model's softmax (which it may change in place), the label to answer.
type Evader interface {
	Evade(x, p []float32) int64
}

// Handler serves one model. Inference is serialised: one request runs the
// model at a time.
type Handler struct {
	m       Model
	o       Options
	mu      sync.Mutex // the model runs one batch at a time
	served  atomic.Int64
	flagged atomic.Int64
	pending chan struct{} // a slot per request in progress (MaxPending)
}

// New checks o and returns the handler.
func New(m Model, o Options) (*Handler, error) {
	if o.Name == "" {
		o.Name = "model"
	}
	if strings.ContainsAny(o.Name, "/:?#% ") {
		return nil, fmt.Errorf("predict: model name %q may not contain / : ? # %% or spaces", o.Name)
	}
	if len(o.Classes) < 2 {
		return nil, fmt.Errorf("predict: %d classes; a classifier has at least 2", len(o.Classes))
	}
	if o.C <= 0 || o.H <= 0 || o.W <= 0 {
		return nil, fmt.Errorf("predict: bad image size %dx%dx%d", o.C, o.H, o.W)
	}
	switch o.Layout {
	case suspect.LayoutAuto:
		o.Layout = suspect.NCHW
	case suspect.NCHW, suspect.NHWC:
	default:
		return nil, fmt.Errorf("predict: unknown layout %q", o.Layout)
	}
	a, err := ParseAnswer(string(o.Answer))
	if err != nil {
		return nil, fmt.Errorf("predict: %w", err)
	}
	o.Answer = a
	switch {
	case o.Scale == 0:
		o.Scale = 1
	case !(o.Scale > 0) || math.IsInf(o.Scale, 0):
		return nil, fmt.Errorf("predict: scale %v is not a positive number", o.Scale)
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.MaxBodyBytes <= 0 {
		// What MaxBatch images take as JSON text (32 bytes a value, with
		// room to spare), and never more than 64 MiB.
		o.MaxBodyBytes = min(64<<20, 1<<20+int64(o.MaxBatch)*int64(o.C*o.H*o.W)*32)
	}
	if t, ok := m.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(false)
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 4
	}
	if (o.Guard == nil) != (o.Evade == nil) {
		return nil, errors.New("predict: a guard needs an evasion and an evasion a guard")
	}
	return &Handler{m: m, o: o, pending: make(chan struct{}, o.MaxPending)}, nil
}

// Flagged is the number of images the guard flagged so far.
func (h *Handler) Flagged() int { return int(h.flagged.Load()) }

// Served is the number of images classified so far.
func (h *Handler) Served() int { return int(h.served.Load()) }

// requestError is a bad request: its message goes back to the client.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// ServeHTTP routes both protocols.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == kserve.ServerPath || p == kserve.ServerPath+"/":
		h.get(w, r, kserve.ServerMetadata{Name: "conferral", Version: "1", Extensions: []string{}})
	case p == kserve.LivePath || p == kserve.ReadyPath:
		h.get(w, r, struct{}{})
	case strings.HasPrefix(p, kserve.Prefix):
		h.kserve(w, r, strings.TrimPrefix(p, kserve.Prefix))
	case strings.HasPrefix(p, tfserving.Prefix):
		h.tfserving(w, r, strings.TrimPrefix(p, tfserving.Prefix))
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s; try /v2/models/%s/infer or /v1/models/%s:predict", p, h.o.Name, h.o.Name))
	}
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, v any) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" not allowed here")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// model checks the model segment (and an optional version 1).
func (h *Handler) model(rest string) (tail string, ok bool) {
	name, tail, _ := strings.Cut(rest, "/")
	if name != h.o.Name {
		return "", false
	}
	if v, ok := strings.CutPrefix(tail, "versions/"); ok {
		ver, t, _ := strings.Cut(v, "/")
		if ver != "1" {
			return "", false
		}
		tail = t
	}
	return tail, true
}

// noModel answers 404 for the model path rest.
func (h *Handler) noModel(w http.ResponseWriter, rest string) {
	name, _, _ := strings.Cut(rest, "/")
	writeError(w, http.StatusNotFound, fmt.Sprintf("no model %q (this endpoint serves %q, version 1)", name, h.o.Name))
}

func (h *Handler) kserve(w http.ResponseWriter, r *http.Request, rest string) {
	tail, ok := h.model(strings.TrimSuffix(rest, "/"))
	if !ok {
		h.noModel(w, rest)
		return
	}
	switch tail {
	case "":
		h.get(w, r, h.kserveMetadata())
	case "ready":
		h.get(w, r, kserve.ModelReady{Name: h.o.Name, Ready: true})
	case "infer":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, "infer takes POST")
			return
		}
		h.respond(w, r, h.kserveInfer)
	default:
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path)
	}
}

func (h *Handler) tfserving(w http.ResponseWriter, r *http.Request, rest string) {
	rest = strings.TrimSuffix(rest, "/")
	if m, ok := strings.CutSuffix(rest, tfserving.PredictSuffix); ok {
		if tail, ok := h.model(m); !ok || tail != "" {
			h.noModel(w, m)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, ":predict takes POST")
			return
		}
		h.respond(w, r, h.tfPredict)
		return
	}
	tail, ok := h.model(rest)
	if !ok {
		h.noModel(w, rest)
		return
	}
	switch tail {
	case "":
		h.get(w, r, tfserving.ModelStatus{ModelVersionStatus: []tfserving.VersionStatus{{
			Version: "1", State: "AVAILABLE", Status: tfserving.Status{ErrorCode: "OK"}}}})
	case "metadata":
		h.get(w, r, h.tfMetadata())
	default:
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path)
	}
}

// inputShape is the advertised input shape, batch first (−1: any).
func (h *Handler) inputShape() []int64 {
	if h.o.Layout == suspect.NHWC {
		return []int64{-1, int64(h.o.H), int64(h.o.W), int64(h.o.C)}
	}
	return []int64{-1, int64(h.o.C), int64(h.o.H), int64(h.o.W)}
}

// output is the name, datatype and per-image shape of the answer.
func (h *Handler) output() (name, datatype string, shape []int64) {
	k := int64(len(h.o.Classes))
	switch h.o.Answer {
	case Index:
		return "label", "INT64", []int64{-1}
	case Name:
		return "label", "BYTES", []int64{-1}
	case OneHot:
		return "onehot", "FP32", []int64{-1, k}
	}
	return "probabilities", "FP32", []int64{-1, k}
}

func (h *Handler) kserveMetadata() kserve.ModelMetadata {
	name, dt, shape := h.output()
	return kserve.ModelMetadata{
		Name: h.o.Name, Versions: []string{"1"}, Platform: "conferral",
		Inputs:  []kserve.TensorMetadata{{Name: "input", Datatype: kserve.FP32, Shape: h.inputShape()}},
		Outputs: []kserve.TensorMetadata{{Name: name, Datatype: dt, Shape: shape}},
	}
}

func (h *Handler) tfMetadata() tfserving.ModelMetadata {
	name, dt, shape := h.output()
	tfdt := map[string]string{kserve.FP32: tfserving.Float, kserve.INT64: tfserving.Int64, kserve.BYTES: tfserving.String}[dt]
	sig := tfserving.SignatureDef{
		Inputs:     map[string]tfserving.TensorInfo{"input": {Dtype: tfserving.Float, TensorShape: tfserving.Shape(h.inputShape()), Name: "serving_default_input:0"}},
		Outputs:    map[string]tfserving.TensorInfo{name: {Dtype: tfdt, TensorShape: tfserving.Shape(shape), Name: "StatefulPartitionedCall:0"}},
		MethodName: "tensorflow/serving/predict",
	}
	return tfserving.ModelMetadata{
		ModelSpec: tfserving.ModelSpec{Name: h.o.Name, Version: "1"},
		Metadata:  tfserving.Metadata{SignatureDef: tfserving.Signatures{SignatureDef: map[string]tfserving.SignatureDef{tfserving.DefaultSignature: sig}}},
	}
}

// respond reads the body, runs fn and writes its answer or error.
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, fn func(body []byte) (any, error)) {
	select {
	case h.pending <- struct{}{}:
		defer func() { <-h.pending }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("busy: %d requests in progress, the most at once; retry shortly", cap(h.pending)))
		return
	}
	if r.ContentLength > h.o.MaxBodyBytes { // refused before reading a byte
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", h.o.MaxBodyBytes))
		return
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // one allocation, not a doubling series
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes))
	body := buf.Bytes()
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mb.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the request: "+err.Error())
		return
	}
	v, err := fn(body)
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			writeError(w, re.status, re.msg)
			return
		}
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (h *Handler) kserveInfer(body []byte) (any, error) {
	var req kserve.InferRequest
	if err := decode(body, &req); err != nil {
		return nil, badRequest("the request is not KServe v2 JSON: %v", err)
	}
	if len(req.Inputs) != 1 {
		return nil, badRequest("%d inputs; the model takes one (\"input\")", len(req.Inputs))
	}
	in := req.Inputs[0]
	if in.Datatype != kserve.FP32 && in.Datatype != kserve.FP64 {
		return nil, badRequest("input %q is %q; send FP32", in.Name, in.Datatype)
	}
	outName, dt, _ := h.output()
	for _, o := range req.Outputs {
		if o.Name != outName {
			return nil, badRequest("no output %q (the model answers %q)", o.Name, outName)
		}
	}
	want := h.inputShape()
	if len(in.Shape) != 4 || in.Shape[1] != want[1] || in.Shape[2] != want[2] || in.Shape[3] != want[3] || in.Shape[0] < 0 {
		return nil, badRequest("input shape %v; the model takes %v (%s)", in.Shape, want, h.o.Layout)
	}
	n := int(in.Shape[0])
	if n > h.o.MaxBatch {
		return nil, badRequest("%d images in one request; at most %d", n, h.o.MaxBatch)
	}
	// Straight into float32s, at most what the declared shape holds.
	want4 := n * h.o.C * h.o.H * h.o.W
	nums := numbers{b: in.Data, max: want4, out: make([]float32, 0, min(want4, len(in.Data)/2+1))}
	if err := nums.flat(0); err != nil {
		return nil, badRequest("input data: %v", err)
	}
	x := nums.out
	if len(x) != want4 {
		return nil, badRequest("input data has %d values; shape %v needs %d", len(x), in.Shape, n*h.o.C*h.o.H*h.o.W)
	}
	labels, probs, err := h.run(x, n)
	if err != nil {
		return nil, err
	}
	k := len(h.o.Classes)
	var out any
	var shape []int64
	switch h.o.Answer {
	case Index:
		out, shape = labels, []int64{int64(n)}
	case Name:
		names := make([]string, n)
		for i, l := range labels {
			names[i] = h.o.Classes[l]
		}
		out, shape = names, []int64{int64(n)}
	case OneHot:
		out, shape = oneHot(labels, k), []int64{int64(n), int64(k)}
	default:
		out, shape = probs, []int64{int64(n), int64(k)}
	}
	return kserve.InferResponseOf[any]{ID: req.ID, ModelName: h.o.Name, ModelVersion: "1",
		Outputs: []kserve.TensorOf[any]{{Name: outName, Datatype: dt, Shape: shape, Data: out}}}, nil
}

func (h *Handler) tfPredict(body []byte) (any, error) {
	var req tfserving.PredictRequest // the images are read below, straight into float32s
	if err := decode(body, &req); err != nil {
		return nil, badRequest("the request is not TensorFlow Serving JSON: %v", err)
	}
	key, v := "instances", req.Instances
	if v == nil {
		if v = req.Inputs; v == nil {
			return nil, badRequest("the request has neither \"instances\" nor \"inputs\"")
		}
		key = "inputs"
		var named map[string]json.RawMessage
		if json.Unmarshal(v, &named) == nil { // {"inputs": {"input": [...]}}
			if len(named) != 1 {
				return nil, badRequest("%d named inputs; the model takes one", len(named))
			}
			for _, t := range named {
				v = t
			}
		}
	}
	per := h.o.C * h.o.H * h.o.W
	max := h.o.MaxBatch * per
	nums := numbers{b: v, max: max, out: make([]float32, 0, min(max, len(v)/2+1))}
	n, err := nums.images(h.inputShape()[1:], h.o.MaxBatch)
	if err != nil {
		if strings.HasPrefix(err.Error(), "image ") {
			return nil, badRequest("%v (the model takes %v, %s)", err, h.inputShape()[1:], h.o.Layout)
		}
		return nil, badRequest("%q: %v", key, err)
	}
	x := nums.out
	labels, probs, err := h.run(x, n)
	if err != nil {
		return nil, err
	}
	k := len(h.o.Classes)
	preds := make([]any, n)
	for i, l := range labels {
		switch h.o.Answer {
		case Index:
			preds[i] = l
		case Name:
			preds[i] = h.o.Classes[l]
		case OneHot:
			preds[i] = oneHot(labels[i:i+1], k)
		default:
			preds[i] = probs[i*k : (i+1)*k]
		}
	}
	if key == "inputs" {
		return tfserving.PredictResponseOf[any]{Outputs: preds}, nil
	}
	return tfserving.PredictResponseOf[any]{Predictions: preds}, nil
}

// run classifies n images x laid out as the options say.
func (h *Handler) run(x []float32, n int) (labels []int64, probs []float32, err error) {
	c, hh, w := h.o.C, h.o.H, h.o.W
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, nil, badRequest("value %d is %v", i, v)
		}
	}
	if h.o.Scale != 1 {
		for i := range x {
			x[i] = float32(float64(x[i]) / h.o.Scale)
		}
	}
	if h.o.Layout == suspect.NHWC {
		t := make([]float32, len(x))
		per := c * hh * w
		for i := 0; i < n; i++ {
			src, dst := x[i*per:(i+1)*per], t[i*per:(i+1)*per]
			for y := 0; y < hh; y++ {
				for xx := 0; xx < w; xx++ {
					for ch := 0; ch < c; ch++ {
						dst[(ch*hh+y)*w+xx] = src[(y*w+xx)*c+ch]
					}
				}
			}
		}
		x = t
	}
	if n == 0 {
		return []int64{}, []float32{}, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	runtime.LockOSThread() // libtorch's thread pool belongs to the OS thread
	defer runtime.UnlockOSThread()
	if h.o.Threads > 0 && torch.NumThreads() != h.o.Threads {
		torch.SetNumThreads(h.o.Threads)
	}
	k := len(h.o.Classes)
	var wrong error
	err = torch.Catch(func() {
		torch.NoGrad(func() {
			torch.Scoped(func(s *torch.Scope) {
				t := torch.FromSlice(s, x, int64(n), int64(c), int64(hh), int64(w))
				if d := h.m.Device(); d != torch.CPU {
					t = t.ToDevice(d)
				}
				out := h.m.Forward(t)
				if got := out.Size(1); got != int64(k) {
					wrong = fmt.Errorf("the model gives %d scores for %d classes", got, k)
					return
				}
				p := out.Softmax(1)
				labels = p.Argmax(1, false).ToDevice(torch.CPU).Int64s()
				probs = p.ToDevice(torch.CPU).Float32s()
			})
		})
	})
	if err == nil {
		err = wrong
	}
	if err != nil {
		return nil, nil, fmt.Errorf("running the model: %w", err)
	}
	// Finite values far outside the pixel range can overflow the model's
	// layers: its scores are then not numbers, which no answer can carry.
	for i, p := range probs {
		if math.IsNaN(float64(p)) || math.IsInf(float64(p), 0) {
			return nil, nil, badRequest("image %d: the model's scores are not finite numbers; its values lie too far outside the pixel range [0, %g]", i/k, h.o.Scale)
		}
	}
	if h.o.Guard != nil {
		flags, err := h.o.Guard.Flag(x, probs, n)
		if err == nil && len(flags) != n {
			err = fmt.Errorf("%d flags for %d images", len(flags), n)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("running the detector: %w", err)
		}
		per, nf := c*hh*w, 0
		for i, f := range flags {
			if f {
				labels[i] = h.o.Evade.Evade(x[i*per:(i+1)*per], probs[i*k:(i+1)*k])
				nf++
			}
		}
		h.flagged.Add(int64(nf))
	}
	h.served.Add(int64(n))
	return labels, probs, nil
}

func oneHot(labels []int64, k int) []float32 {
	out := make([]float32, len(labels)*k)
	for i, l := range labels {
		out[i*k+int(l)] = 1
	}
	return out
}

// decode reads the request's envelope; the images inside stay JSON text
// (json.RawMessage) for numbers to read. json.Unmarshal needs no buffer of
// its own and refuses anything after the value.
func decode(b []byte, v any) error {
	return json.Unmarshal(b, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
