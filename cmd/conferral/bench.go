package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// benchOps are the measured operations, in table order.
func benchOps() []string { return []string{"train_step", "forward", "input_grad"} }

// benchGo times the binding on the same steps as bench/torch_bench.py.
func benchGo(models []string, c, hw int64, batch, warmup, iters int, d torch.Device) (map[string][]float64, error) {
	// libtorch's OpenMP pool belongs to the calling OS thread: keep the
	// benchmark on one, as the Python interpreter is.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	res := map[string][]float64{}
	for _, arch := range models {
		m, err := nn.New(benchSpec(arch, c, hw), 1, d)
		if err != nil {
			return nil, err
		}
		err = torch.Catch(func() {
			x, y := benchBatch(batch, c, hw, d)
			defer x.Free()
			defer y.Free()
			opt := benchOptimizer(m)
			defer opt.Free()
			train := trainStep(m, opt, x, y)
			steps := map[string]func(){
				"train_step": func() { m.SetTraining(true); train() },
			}
			eval := func(f func()) func() { return func() { m.SetTraining(false); f() } }
			forward, inputGrad := inferenceSteps(m, x, y)
			steps["forward"], steps["input_grad"] = eval(forward), eval(inputGrad)
			timeSteps(res, arch+"/", steps, benchOps(), warmup, iters)
		})
		m.Free()
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// benchGoAtOnce trains jobs models of each arch at once, as the demo's
// server runs its fleet: each on its own OS thread with one libtorch
// thread, warmup steps, then iters timed train steps each. It returns the
// wall time per train step of all of them together, in seconds: the
// throughput's inverse.
func benchGoAtOnce(models []string, c, hw int64, batch, warmup, iters, jobs int, d torch.Device) (map[string]float64, error) {
	res := map[string]float64{}
	for _, arch := range models {
		start := make(chan struct{})
		var ready, done sync.WaitGroup
		errs := make([]error, jobs)
		for j := range jobs {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				var once sync.Once
				warm := func() { once.Do(ready.Done) }
				defer warm() // also when it failed before its timed steps
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				torch.SetNumThreads(1) // libtorch's threads are per OS thread
				m, err := nn.New(benchSpec(arch, c, hw), uint64(j+1), d)
				if err != nil {
					errs[j] = err
					return
				}
				defer m.Free()
				errs[j] = torch.Catch(func() {
					x, y := benchBatch(batch, c, hw, d)
					defer x.Free()
					defer y.Free()
					opt := benchOptimizer(m)
					defer opt.Free()
					m.SetTraining(true)
					step := trainStep(m, opt, x, y)
					for range warmup {
						step()
					}
					warm()
					<-start
					for range iters {
						step()
					}
				})
			}()
		}
		ready.Wait()
		t := time.Now()
		close(start)
		done.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("training %d %s models at once: %w", jobs, arch, err)
		}
		res[arch] = time.Since(t).Seconds() / float64(jobs*iters)
	}
	return res, nil
}

// benchOptimizer is the fleet's optimizer (SGD with Nesterov momentum and
// weight decay), as bench/torch_bench.py builds it.
func benchOptimizer(m *nn.Model) *torch.Optimizer {
	return torch.NewSGD(m.Params(), torch.SGDOpts{LR: 0.01, Momentum: 0.9, Nesterov: true, WeightDecay: 5e-4})
}

// trainStep is one train step of m on the batch x, y: forward,
// cross-entropy, backward, the optimizer's step.
func trainStep(m *nn.Model, opt *torch.Optimizer, x, y *torch.Tensor) func() {
	return func() {
		torch.Scoped(func(s *torch.Scope) {
			loss := torch.CrossEntropy(m.Forward(s.Add(x.Detach())), y, torch.ReduceMean)
			opt.ZeroGrad()
			loss.Backward()
			opt.Step()
		})
	}
}

// benchSpec is a model of arch for the benchmark's c×hw×hw inputs.
func benchSpec(arch string, c, hw int64) nn.Spec {
	mean, std := make([]float64, c), make([]float64, c)
	for i := range mean {
		mean[i], std[i] = 0.5, 0.25
	}
	return nn.Spec{Arch: arch, Dataset: "bench", Classes: strings.Split("0123456789", ""), C: c, H: hw, W: hw, Mean: mean, Std: std}
}

// benchBatch is a random batch and its labels on d; the caller frees both.
func benchBatch(batch int, c, hw int64, d torch.Device) (x, y *torch.Tensor) {
	labels := make([]int64, batch)
	for i := range labels {
		labels[i] = int64(i % 10)
	}
	return torch.Rand(nil, d, int64(batch), c, hw, hw), torch.FromSlice(nil, labels, int64(batch)).ToDevice(d)
}

// inferenceSteps are the forward pass (no gradients) and the input
// gradient of the cross-entropy on x, y: the steps an attack repeats.
func inferenceSteps(m interface {
	Forward(*torch.Tensor) *torch.Tensor
}, x, y *torch.Tensor) (forward, inputGrad func()) {
	forward = func() {
		torch.NoGrad(func() { torch.Scoped(func(s *torch.Scope) { m.Forward(s.Add(x.Detach())) }) })
	}
	inputGrad = func() {
		torch.Scoped(func(s *torch.Scope) {
			xi := s.Add(x.Detach()).SetRequiresGrad(true)
			loss := torch.CrossEntropy(m.Forward(xi), y, torch.ReduceMean)
			torch.Grads([]*torch.Tensor{loss}, []*torch.Tensor{xi})
		})
	}
	return forward, inputGrad
}

// timeSteps runs each of ops warmup times, then times it iters times,
// into res[prefix+op] in seconds.
func timeSteps(res map[string][]float64, prefix string, steps map[string]func(), ops []string, warmup, iters int) {
	for _, op := range ops {
		fn := steps[op]
		for range warmup {
			fn()
		}
		var ts []float64
		for range iters {
			t := time.Now()
			fn()
			ts = append(ts, time.Since(t).Seconds())
		}
		res[prefix+op] = ts
	}
}

// benchCBIM times C-BIM steps on 1 source + 3 surrogates + 3 references
// (small CNNs, 1×28×28), the loop of bench/torch_bench.py's cbim.
func benchCBIM(batch, steps, iters int, d torch.Device) ([]float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	spec := nn.Spec{Arch: "cnn", Dataset: "bench", Classes: strings.Split("0123456789", ""), C: 1, H: 28, W: 28, Mean: []float64{0.5}, Std: []float64{0.25}}
	var ms []attack.Model
	for i := range 7 {
		m, err := nn.New(spec, uint64(i+1), d)
		if err != nil {
			return nil, err
		}
		defer m.Free()
		ms = append(ms, m)
	}
	ens := attack.Ensemble{Source: ms[0], Surrogates: ms[1:4], References: ms[4:]}
	labels := make([]int64, batch)
	for i := range labels {
		labels[i] = int64(i % 10)
	}
	cfg := attack.CBIMConfig{Eps: 0.05, Alpha: 0.01, Steps: steps, Dropout: 0.5, Loss: attack.LossLinear}
	var out []float64
	err := torch.Catch(func() {
		run := func() {
			torch.Scoped(func(s *torch.Scope) {
				x := s.Add(torch.Rand(nil, d, int64(batch), 1, 28, 28))
				y := torch.FromSlice(s, labels, int64(batch)).ToDevice(d)
				if _, err := attack.CBIM(ens, x, y, cfg); err != nil {
					panic(err) // a *torch.Error: torch.Catch returns it
				}
			})
		}
		run()
		for range max(1, iters/3) {
			t := time.Now()
			run()
			out = append(out, time.Since(t).Seconds()/float64(steps))
		}
	})
	return out, err
}

type torchBench struct {
	Version string               `json:"torch_version"`
	Threads int                  `json:"threads"`
	Results map[string][]float64 `json:"results"`
}

func benchTorch(ctx context.Context, python string, models []string, shape string, batch, warmup, iters, threads, cbimSteps int) (*torchBench, error) {
	cmd := exec.CommandContext(ctx, python, "bench/torch_bench.py", "--threads", fmt.Sprint(threads), "--batch", fmt.Sprint(batch),
		"--iters", fmt.Sprint(iters), "--warmup", fmt.Sprint(warmup), "--models", strings.Join(models, ","), "--shape", shape,
		"--cbim-steps", fmt.Sprint(cbimSteps))
	// The binding keeps freed memory in glibc's heap (backend/torch
	// malloc.go); PyTorch gets the same allocator policy, or its first model
	// pays page faults on fresh pages every step that the binding does not
	// (that, and not the arithmetic, once made PyTorch's LeNet look 4-6×
	// slower than the binding's).
	cmd.Env = append(os.Environ(), "GLIBC_TUNABLES="+torch.MallocTunables)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("running the PyTorch side (%s bench/torch_bench.py; `apt-get install python3-torch`): %w: %s", python, err, errb.String())
	}
	var tb torchBench
	if err := json.Unmarshal(out.Bytes(), &tb); err != nil {
		return nil, fmt.Errorf("reading the PyTorch side's output: %w", err)
	}
	return &tb, nil
}

// benchZoo is one round of the zoo models (train step, forward, input
// gradient), C-BIM and the imported ONNX model, Go then PyTorch, into goRes
// and pyRes; version gets PyTorch's.
func benchZoo(ctx context.Context, e *env, models []string, c, hw int64, batch, iters int, python string, goRes, pyRes map[string][]float64, version *string) error {
	g, err := benchGo(models, c, hw, batch, 3, iters, e.device)
	if err != nil {
		return err
	}
	tb, err := benchTorch(ctx, python, models, fmt.Sprintf("%d,%d,%d", c, hw, hw), batch, 3, iters, torch.NumThreads(), 10)
	if err != nil {
		return err
	}
	*version = tb.Version
	for k, v := range g {
		goRes[k] = append(goRes[k], v...)
	}
	cb, err := benchCBIM(batch, 10, iters, e.device)
	if err != nil {
		return err
	}
	goRes["cbim/7-model ensemble"] = append(goRes["cbim/7-model ensemble"], cb...)
	ob, err := benchONNX(c, hw, batch, 3, iters, e.device)
	if err != nil {
		return err
	}
	for k, v := range ob {
		goRes[k] = append(goRes[k], v...)
	}
	for k, v := range tb.Results {
		pyRes[k] = append(pyRes[k], v...)
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func runBench(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	apply := common(fs, e)
	out := fs.String("out", "", "write the markdown report here too")
	batch := fs.Int("batch", 128, "batch size")
	iters := fs.Int("iters", 10, "timed iterations per round")
	rounds := fs.Int("rounds", 3, "alternating Go/PyTorch rounds")
	modelsFlag := fs.String("models", "cnn,resnet20", "models to benchmark, with C-BIM and the imported ONNX model (empty: only the fleet)")
	fleetFlag := fs.String("fleet", "lenet,mlp,mlpdrop", "the demo fleet's architectures, trained on 1x28x28 images: models × epochs per minute (empty: skip)")
	jobs := fs.Int("jobs", 0, "the fleet also as the demo trains it: this many models at once, one thread each (0: one per thread; 1: skip)")
	python := fs.String("python", "/usr/bin/python3", "Python with Debian's python3-torch")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	if e.device != torch.CPU {
		return usagef("bench compares against CPU PyTorch; use --device cpu")
	}
	var models []string
	if *modelsFlag != "" {
		models = strings.Split(*modelsFlag, ",")
	}
	if *jobs < 0 {
		return usagef("bench: --jobs %d: want 0 (one per thread) or more", *jobs)
	}
	if *jobs == 0 {
		*jobs = torch.NumThreads()
	}
	if len(models) == 0 && *fleetFlag == "" {
		return usagef("bench: nothing to measure (--models and --fleet both empty)")
	}
	const c, hw = 3, 32
	goRes, pyRes := map[string][]float64{}, map[string][]float64{}
	var version string
	for r := range *rounds {
		e.progress.Report(shared.Event{Kind: shared.Progress, Stage: "bench", Step: int64(r), Total: int64(*rounds)})
		if len(models) > 0 {
			if err := benchZoo(ctx, e, models, c, hw, *batch, *iters, *python, goRes, pyRes, &version); err != nil {
				return err
			}
		}
		if *fleetFlag != "" {
			fleet := strings.Split(*fleetFlag, ",")
			g, err := benchGo(fleet, 1, 28, *batch, 3, *iters, e.device)
			if err != nil {
				return err
			}
			ft, err := benchTorch(ctx, *python, fleet, "1,28,28", *batch, 3, *iters, torch.NumThreads(), 0)
			if err != nil {
				return err
			}
			version = ft.Version
			for k, v := range g {
				goRes["fleet:"+k] = append(goRes["fleet:"+k], v...)
			}
			for k, v := range ft.Results {
				pyRes["fleet:"+k] = append(pyRes["fleet:"+k], v...)
			}
			if *jobs > 1 {
				at, err := benchGoAtOnce(fleet, 1, 28, *batch, 3, *iters, *jobs, e.device)
				if err != nil {
					return err
				}
				for arch, sec := range at {
					k := "fleet-at-once:" + arch + "/train_step"
					goRes[k] = append(goRes[k], sec)
				}
			}
		}
	}
	var rows []benchRow
	var sb strings.Builder
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = shellQuote(a)
	}
	cmdline := "conferral bench " + strings.Join(shown, " ")
	fmt.Fprintf(&sb, "# Binding vs PyTorch on the same libtorch\n\n")
	fmt.Fprintf(&sb, "Command: `%s` (via `make bench`), %s, %d threads, %s, %d rounds × %d iterations, alternating Go and PyTorch; medians. PyTorch %s (Debian python3-torch).\n\n",
		strings.TrimSpace(cmdline), time.Now().UTC().Format("2006-01-02"), torch.NumThreads(), cpuModel(), *rounds, *iters, version)
	if len(models) > 0 {
		fmt.Fprintf(&sb, "The zoo: batch %d of %dx%dx%d.\n\n", *batch, c, hw, hw)
		fmt.Fprintf(&sb, "| model | step | Go ms | PyTorch ms | Go throughput ÷ PyTorch |\n|---|---|---:|---:|---:|\n")
		keys := [][2]string{}
		for _, m := range models {
			for _, op := range benchOps() {
				keys = append(keys, [2]string{m, op})
			}
		}
		keys = append(keys, [2]string{"cbim", "7-model ensemble"})
		for _, km := range keys {
			{
				m, op := km[0], km[1]
				k := m + "/" + op
				g, p := median(goRes[k]), median(pyRes[k])
				r := benchRow{Model: m, Op: op, GoMs: g * 1e3, TorchMs: p * 1e3, ThroughputVsTorch: p / g}
				rows = append(rows, r)
				fmt.Fprintf(&sb, "| %s | %s | %.1f | %.1f | %.2f× |\n", m, op, r.GoMs, r.TorchMs, r.ThroughputVsTorch)
			}
		}
		cb := median(goRes["cbim/7-model ensemble"])
		fmt.Fprintf(&sb, "\nC-BIM (1 source + 3 surrogates + 3 references, small CNNs, batch %d of 1x28x28, eq. 11-14 with dropout 0.5): one step takes %.0f ms, so the binding crafts %.1f candidates per second at 100 steps (PyTorch: %.1f).\n",
			*batch, cb*1e3, float64(*batch)/(100*cb), float64(*batch)/(100*median(pyRes["cbim/7-model ensemble"])))
	}
	if *fleetFlag != "" {
		fleet := strings.Split(*fleetFlag, ",")
		fmt.Fprintf(&sb, "\n## The demo fleet: one model at a time, train steps only (batch %d of 1x28x28, %d threads)\n\n", *batch, torch.NumThreads())
		rows = append(rows, fleetTable(&sb, fleet, *batch, "fleet:", "", goRes, pyRes)...)
		if *jobs > 1 {
			fmt.Fprintf(&sb, "\n## The demo fleet as `make demo` trains it: %d models at once, one thread each, against PyTorch one model at a time on %d threads\n\n", *jobs, torch.NumThreads())
			fmt.Fprintf(&sb, "Go's step time is the wall time of %d models' steps together divided by their count (%d goroutines, each on its own OS thread with one libtorch thread, as the demo's server runs its jobs).\n\n", *jobs, *jobs)
			rows = append(rows, fleetTable(&sb, fleet, *batch, "fleet-at-once:", " at once", goRes, pyRes)...)
		}
		fmt.Fprintf(&sb, "\nThe arithmetic alone: `make demo` prints its own fleet stage's wall time (data loading, augmentation, evaluation and the queue included) to compare with.\n")
	}
	if len(models) > 0 {
		onnxRows, onnxText := benchONNXReport(goRes, pyRes)
		for _, r := range onnxRows {
			rows = append(rows, benchRow{Model: "onnx:" + benchONNXArch, Op: r.Op, GoMs: r.GoMs, TorchMs: r.TorchMs, ThroughputVsTorch: r.ThroughputVsTorch})
		}
		sb.WriteString(onnxText)
	}
	e.progress.done()
	if *out != "" {
		if err := os.WriteFile(*out, []byte(sb.String()), 0o644); err != nil {
			return err
		}
	}
	return e.emit(rows, sb.String())
}

// benchRow is one measured step of `conferral bench --json`.
type benchRow struct {
	Model, Op         string
	GoMs, TorchMs     float64
	ThroughputVsTorch float64 `json:"throughput_vs_torch"`
}

// fleetTable writes the fleet's train steps, Go's under goPrefix+arch
// and PyTorch's under "fleet:"+arch (always one model at a time), as
// models × epochs per minute, then the demo's own mix of them.
func fleetTable(sb *strings.Builder, fleet []string, batch int, goPrefix, label string, goRes, pyRes map[string][]float64) []benchRow {
	// An epoch of the demo's 30,000 images is ceil(30000/batch) train steps.
	steps := float64((30000 + batch - 1) / batch)
	var rows []benchRow
	fmt.Fprintf(sb, "| model | Go ms per step%s | PyTorch ms per step | Go models × epochs per minute | PyTorch | Go ÷ PyTorch |\n|---|---:|---:|---:|---:|---:|\n", label)
	for _, m := range fleet {
		g, p := median(goRes[goPrefix+m+"/train_step"]), median(pyRes["fleet:"+m+"/train_step"])
		r := benchRow{Model: goPrefix + m, Op: "epochs_per_minute", GoMs: g * 1e3, TorchMs: p * 1e3, ThroughputVsTorch: p / g}
		rows = append(rows, r)
		fmt.Fprintf(sb, "| %s | %.1f | %.1f | %.1f | %.1f | %.2f× |\n", m, r.GoMs, r.TorchMs, 60/(steps*g), 60/(steps*p), r.ThroughputVsTorch)
	}
	// The demo's own mix (demoFleet: MLPs train twice LeNet's epochs).
	var eps, goT, pyT float64
	for _, fm := range demoFleet(1, demoCalibration) {
		gk, pk := goPrefix+fm.arch+"/train_step", "fleet:"+fm.arch+"/train_step"
		if len(goRes[gk]) > 0 && len(pyRes[pk]) > 0 {
			eps += float64(fm.epochs)
			goT += float64(fm.epochs) * steps * median(goRes[gk])
			pyT += float64(fm.epochs) * steps * median(pyRes[pk])
		}
	}
	if eps > 0 {
		rows = append(rows, benchRow{Model: goPrefix + "demo mix", Op: "epochs_per_minute", GoMs: goT * 1e3 / (eps * steps), TorchMs: pyT * 1e3 / (eps * steps), ThroughputVsTorch: pyT / goT})
		fmt.Fprintf(sb, "| the demo's mix | | | %.1f | %.1f | %.2f× |\n", 60*eps/goT, 60*eps/pyT, pyT/goT)
	}
	return rows
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}
