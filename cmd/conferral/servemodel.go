package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/detect"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/predict"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// runServeModel serves a model as a prediction endpoint in both REST
// protocols until interrupted.
func runServeModel(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("serve-model", flag.ContinueOnError)
	apply := common(fs, e)
	model := fs.String("model", "", "model file: a zoo model or a deployed ensemble (safetensors), or an .onnx file; required")
	classes := fs.String("classes", "", "comma-separated class names for an .onnx model (default: 0, 1, ...)")
	addr := fs.String("addr", "127.0.0.1:8500", "address to listen on (port 0 picks a free one)")
	name := fs.String("name", "model", "the model's name in URLs: /v2/models/NAME, /v1/models/NAME")
	labelsOnly := fs.Bool("labels-only", false, "answer with the class index only (same as --answer index)")
	answer := fs.String("answer", "probabilities", "what each image gets back: probabilities, index, name or onehot")
	layout := fs.String("layout", "nchw", "input layout the endpoint takes: nchw or nhwc")
	scale := fs.Float64("scale", 1, "pixel scale the endpoint takes (255 for 0-255 inputs)")
	maxBatch := fs.Int("max-batch", 1024, "most images in one request")
	maxPending := fs.Int("max-pending", 4, "requests read, decoded, run or waiting at once; more are answered 503 with Retry-After")
	onnxMemory := onnxMemoryFlag(fs)
	detPath := fs.String("detector", "", "detect and evade (Hitaj et al.): a detector file (experiment evasion --save-detectors) run on every query; flagged ones get a wrong answer")
	flagFPR := fs.Float64("flag-fpr", 0.05, "with --detector: the share of the detector's own benign inputs it flags on this model (its threshold)")
	evade := fs.String("evade", "random", "with --detector: what a flagged query gets: random (another label, the same for the same input) or second (the second-best label)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return usagef("--model is required")
	}
	ev, err := detect.ParseEvasion(*evade)
	if err != nil {
		return usagef("--evade: %v", err)
	}
	if *detPath == "" && setFlags(fs, []string{"flag-fpr", "evade"}) != nil {
		return usagef("--flag-fpr and --evade need --detector")
	}
	if !(*flagFPR > 0 && *flagFPR < 1) {
		return usagef("--flag-fpr %g outside (0, 1)", *flagFPR)
	}
	a, err := predict.ParseAnswer(*answer)
	if err != nil {
		return usagef("--answer: %v", err)
	}
	if *labelsOnly {
		if a != predict.Probabilities && a != predict.Index {
			return usagef("--labels-only and --answer %s disagree", a)
		}
		a = predict.Index
	}
	l, err := suspect.ParseLayout(*layout)
	if err != nil {
		return usagef("--layout: %v", err)
	}
	if err := apply(); err != nil {
		return err
	}
	var det *detect.Detector
	if *detPath != "" { // before the model: the file a user is likeliest to get wrong
		if det, err = detect.Load(*detPath, e.device); err != nil {
			return usagef("--detector: %v", err)
		}
		defer det.Free()
	}
	m, spec, err := loadServed(e, *model, *classes, int64(*onnxMemory))
	if err != nil {
		return err
	}
	defer m.Free()
	o := predict.Options{Name: *name, Classes: spec.Classes, C: int(spec.C), H: int(spec.H), W: int(spec.W),
		Layout: l, Answer: a, Scale: *scale, MaxBatch: *maxBatch, MaxPending: *maxPending, Threads: threadsFlag(fs)}
	guarding := ""
	if det != nil {
		g, err := guardOf(det, m, spec, *flagFPR)
		if err != nil {
			return err
		}
		o.Guard, o.Evade = g, ev
		guarding = fmt.Sprintf("  detect and evade: %s (set against %s fingerprints) flags a score above %.4g, %.1f %% of its %d benign inputs on this model; flagged queries get %s\n",
			det.Kind, det.Against, g.Threshold, 100**flagFPR, det.N(), map[detect.Evasion]string{detect.Random: "another label than the model's (the same for the same input)", detect.Second: "the second-best label"}[ev])
	}
	h, err := predict.New(m, o)
	if err != nil {
		return usageError{err}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve-model: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(e.stdout, "serving %s (%s, %d classes, %dx%dx%d %s, answers: %s)\n  KServe v2:          %s/v2/models/%s\n  TensorFlow Serving: %s/v1/models/%s\n",
		*model, spec.Arch, len(spec.Classes), spec.C, spec.H, spec.W, strings.ToUpper(string(l)), a, base, *name, base, *name)
	fmt.Fprint(e.stdout, guarding)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve-model: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil {
		return fmt.Errorf("serve-model: shutting down: %w", err)
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve-model: %w", err)
	}
	return nil
}

// guardOf binds det to the served model m at the threshold that flags a
// share fpr of the detector's benign inputs on m.
func guardOf(det *detect.Detector, m served, spec nn.Spec, fpr float64) (*detect.Guard, error) {
	if int64(det.C) != spec.C || int64(det.H) != spec.H || int64(det.W) != spec.W {
		return nil, usagef("--detector takes %dx%dx%d images, the model %dx%dx%d", det.C, det.H, det.W, spec.C, spec.H, spec.W)
	}
	thr, err := det.Threshold(m, fpr)
	if err != nil {
		return nil, fmt.Errorf("serve-model: setting the detector's threshold: %w", err)
	}
	return &detect.Guard{D: det, M: m, Threshold: thr}, nil
}

// served is a model serve-model can serve.
type served interface {
	predict.Model
	Free()
}

// loadServed loads a Conferral model, a deployed ensemble or an .onnx
// model (within the memory budget onnxMemory), with what the endpoint says
// about its input and classes.
func loadServed(e *env, path, classes string, onnxMemory int64) (served, nn.Spec, error) {
	if isONNX(path) {
		m, err := onnx.Open(strings.TrimSpace(path), onnx.Options{MaxMemory: onnxMemory}) // conventions from the file
		if err != nil {
			return nil, nn.Spec{}, budgetHint(err)
		}
		if err := m.To(e.device); err != nil {
			m.Free()
			return nil, nn.Spec{}, err
		}
		c, h, w := m.InputShape()
		spec := nn.Spec{Arch: "onnx", C: int64(c), H: int64(h), W: int64(w)}
		k := m.Classes()
		if k <= 0 { // known after a forward pass
			err := torch.Catch(func() {
				torch.NoGrad(func() {
					torch.Scoped(func(s *torch.Scope) {
						x := torch.FromSlice(s, make([]float32, c*h*w), 1, int64(c), int64(h), int64(w))
						if d := m.Device(); d != torch.CPU {
							x = x.ToDevice(d)
						}
						k = int(m.Forward(x).Size(1))
					})
				})
			})
			if err != nil {
				m.Free()
				return nil, nn.Spec{}, fmt.Errorf("serve-model: %s: a trial forward pass: %w", path, err)
			}
		}
		for i := range k {
			spec.Classes = append(spec.Classes, strconv.Itoa(i))
		}
		if classes != "" {
			names := strings.Split(classes, ",")
			if len(names) != k {
				m.Free()
				return nil, nn.Spec{}, usagef("--classes names %d classes; %s has %d", len(names), path, k)
			}
			spec.Classes = names
		}
		return m, spec, nil
	}
	if classes != "" {
		return nil, nn.Spec{}, usagef("--classes is for .onnx models; %s names its classes", path)
	}
	m, _, err := train.LoadDeployed(path, e.device)
	if err != nil {
		return nil, nn.Spec{}, err
	}
	switch x := m.(type) {
	case *nn.Model:
		return m, x.Spec, nil
	case *train.Ensemble:
		if first, ok := x.Members[0].(*nn.Model); ok {
			return m, first.Spec, nil
		}
	}
	m.Free()
	return nil, nn.Spec{}, fmt.Errorf("serve-model: %s: cannot serve a %T", path, m)
}

// threadsFlag is the value of the common --threads flag.
func threadsFlag(fs *flag.FlagSet) int {
	if f := fs.Lookup("threads"); f != nil {
		if g, ok := f.Value.(flag.Getter); ok {
			if n, ok := g.Get().(int); ok {
				return n
			}
		}
	}
	return 0
}

// isRemote says whether a suspect is a URL (only http and https ones get
// past the guard; others are refused with a clear error).
func isRemote(s string) bool {
	return strings.Contains(s, "://")
}

// remoteFlags registers verify's flags for remote suspects; the function
// returned reads them.
func remoteFlags(fs *flag.FlagSet) func() (suspect.RemoteOptions, error) {
	proto := fs.String("protocol", "auto", "protocol of http(s) suspects: auto (from the URL path), kserve or tfserving")
	layout := fs.String("layout", "auto", "image layout of http(s) and .onnx suspects: auto (from the endpoint's metadata or the file), nchw or nhwc; endpoints also take nhw (one channel, no channel axis) and flat (C·H·W values)")
	scale := fs.Float64("scale", 1, "multiply pixel values given to http(s) and .onnx suspects (255 for 0-255 models)")
	allowPrivate := fs.Bool("allow-private", false, "allow http(s) suspects on loopback, private and link-local addresses")
	allowNets := fs.String("allow-net", "", "comma-separated networks (CIDR) allowed although not public, e.g. 10.1.2.0/24 (this host's own addresses only when named alone, e.g. 10.1.2.3/32)")
	budget := fs.Int("budget", 0, "most images sent to each http(s) suspect, retries included (0: no limit)")
	timeout := fs.Duration("timeout", 30*time.Second, "time limit of each request to an http(s) suspect")
	retries := fs.Int("retries", 3, "retries after connection refused, 5xx or 429 (0: none)")
	batch := fs.Int("remote-batch", 64, "images per request to an http(s) suspect")
	input := fs.String("input", "", "input tensor name for http(s) suspects (default: from the metadata, else \"input\")")
	output := fs.String("output", "", "output name holding the class, when an endpoint returns several")
	header := http.Header{}
	fs.Func("header", "`Name: value` header sent to http(s) suspects, e.g. \"Authorization: Bearer …\" (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, ":")
		if k = strings.TrimSpace(k); !ok || k == "" || strings.ContainsAny(k, " \t") {
			return fmt.Errorf("want Name: value, got %q", s)
		}
		header.Add(k, strings.TrimSpace(v))
		return nil
	})
	return func() (suspect.RemoteOptions, error) {
		p, err := suspect.ParseProtocol(*proto)
		if err != nil {
			return suspect.RemoteOptions{}, usagef("--protocol: %v", err)
		}
		l, err := suspect.ParseLayout(*layout)
		if err != nil {
			return suspect.RemoteOptions{}, usagef("--layout: %v", err)
		}
		if *budget < 0 || *batch <= 0 || *timeout <= 0 || *retries < 0 || !(*scale > 0) {
			return suspect.RemoteOptions{}, usagef("--budget, --retries ≥ 0; --remote-batch, --timeout, --scale > 0")
		}
		o := suspect.RemoteOptions{Protocol: p, Layout: l, Scale: *scale, AllowPrivate: *allowPrivate, Budget: *budget,
			Timeout: *timeout, Retries: *retries, Batch: *batch, InputName: *input, OutputName: *output, Header: header}
		if *retries == 0 {
			o.Retries = -1
		}
		for _, s := range strings.Split(*allowNets, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			n, err := netip.ParsePrefix(s)
			if err != nil {
				return o, usagef("--allow-net: %v", err)
			}
			o.AllowNets = append(o.AllowNets, n.Masked())
		}
		return o, nil
	}
}
