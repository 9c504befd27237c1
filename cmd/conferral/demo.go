package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
	"golang.org/x/sync/errgroup"
)

// flagSet reports whether the command line set flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// demoModel is one model of the demo's fleet.
type demoModel struct {
	name, arch string
	adversary  bool // trained on the adversary's half (a testing model)
	surrogate  bool // Retraining on the source's labels; otherwise ground truth
	// calibration: an independent model of the defender's half that takes
	// no part in crafting and measures how often innocent models agree.
	calibration bool
	epochs      int
}

// demoCalibration is how many independent models calibrate the demo's
// verdicts by default: twice the models for the null's fit (its 1 % line
// lay at 0.61–0.73 in three full demos with 20, at 0.62–0.78 in three
// with 10; README).
const demoCalibration = 20

// The demo's source and fleet architectures: the zoo's cheapest that still
// learn Fashion-MNIST in a few epochs on two cores.
const demoSourceArch = "lenet"

var demoArchs = [...]string{"lenet", "mlp", "mlpdrop"}

// demoFleet is the story's models: 8 training surrogates and 8 references
// on the defender's half feed C-BIM; calibration models, also the
// defender's, calibrate the verdicts; 4 surrogates and 4 references on the
// adversary's half are the suspects the fingerprint never saw. MLPs train
// twice as many epochs (they are ~5× cheaper per epoch).
func demoFleet(epochs, calibration int) []demoModel {
	var f []demoModel
	ep := func(arch string) int {
		if arch == "lenet" {
			return epochs
		}
		return 2 * epochs
	}
	add := func(n int, prefix string, adversary, surrogate, calibration bool) {
		for i := range n {
			arch := demoArchs[i%len(demoArchs)]
			f = append(f, demoModel{fmt.Sprintf("%s-%s-%d", prefix, arch, i), arch, adversary, surrogate, calibration, ep(arch)})
		}
	}
	add(8, "train-surrogate", false, true, false)
	add(8, "train-reference", false, false, false)
	add(calibration, "calibration", false, false, true)
	add(4, "test-surrogate", true, true, false)
	add(4, "test-reference", true, false, false)
	return f
}

// demoTrain is the training request of one of the demo's models: the
// served demo submits it as a job, the local demo converts it alike
// (request.Train). Every model trained without the source is a reference
// (the calibration models too); with it (teacher), a surrogate.
func demoTrain(name, arch string, epochs int, seed int64, teacher string) shared.TrainArgs {
	role := shared.RoleReference
	switch {
	case name == "source":
		role = shared.RoleSource
	case teacher != "":
		role = shared.RoleSurrogate
	}
	return shared.TrainArgs{Name: name, Arch: arch, Epochs: epochs, Seed: seed, Teacher: teacher, Role: role}
}

// demoShare splits the demo's threads among the models it trains at once:
// jobs of them (by default one per thread on a CPU, one on a GPU), each
// with an equal share of the threads. Two of the fleet's small models
// trained at once on one thread each beat one after the other on both
// threads (BENCH.md, docs/performance.md).
func demoShare(jobs, threads int, gpu bool) (workers, perJob int) {
	workers = jobs
	switch {
	case workers > 0:
	case gpu:
		workers = 1
	default:
		workers = max(1, threads)
	}
	return workers, max(1, threads/workers)
}

// demoExtract sets the extraction settings that separated best in the
// fingerprint study (docs/results/fingerprint-4x2-taus) wherever the
// command line left them alone.
func demoExtract(fs *flag.FlagSet, a shared.ExtractArgs) shared.ExtractArgs {
	set := func(name string, apply func()) {
		if !flagSet(fs, name) {
			apply()
		}
	}
	set("eps", func() { a.Eps = 0.05 })
	set("steps", func() { a.Steps = 50 })
	set("loss", func() { a.Loss = string(attack.LossGeometric) })
	set("best-iterate", func() { a.BestIterate = true })
	set("tau", func() { a.Tau = new(0.5) })
	set("tau-surr", func() { a.TauSurr = 1 })
	set("candidates", func() { a.Candidates = 1000 }) // the study's 600, for more keys: narrower intervals
	return a
}

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	out := fs.String("out", "demo-out", "folder for the demo's models, fingerprint and pictures")
	epochs := fs.Int("epochs", 2, "training epochs per model (the source gets one more)")
	calibrators := fs.Int("calibration", demoCalibration, "independent models that calibrate the verdicts (at least 2)")
	argsOf := extractFlags(fs)
	start := fs.String("start", fingerprint.StartTest, "where C-BIM starts: test (held-out images) or train (the defender's half)")
	serve := fs.Bool("serve", false, "run the story as jobs of `conferral serve` (in OUT/server), watchable in the browser")
	addr := fs.String("addr", "127.0.0.1:8080", "with --serve: where the server listens")
	web := fs.String("web", "bin/web", "with --serve: folder of the browser app's app.wasm (`make web`)")
	keep := fs.Bool("keep", true, "with --serve: serve on after the story until Ctrl-C")
	jobs := fs.Int("jobs", 0, "models trained at once (jobs, with --serve), the threads shared among them (0: one per thread, one thread each, on a CPU; measured faster for the fleet's mix, BENCH.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	// The request of the C-BIM fingerprint (the demo makes a natural one
	// too, demoNatural): the one the served demo's job carries.
	ex, err := argsOf()
	if err != nil {
		return err
	}
	ex = demoExtract(fs, ex)
	ex.Start, ex.Natural = *start, false
	cfg, err := extractConfig(ex)
	if err != nil {
		return err
	}
	if *jobs < 0 {
		return usagef("--jobs %d: want 0 (one per thread) or more", *jobs)
	}
	if *calibrators < 2 {
		return usagef("--calibration %d: want at least 2 models", *calibrators)
	}
	all, _ := strconv.Atoi(fs.Lookup("threads").Value.String())
	workers, threads := demoShare(*jobs, all, e.device.IsCUDA())
	if *serve {
		return runDemoServe(ctx, e, demoServe{addr: *addr, web: *web, keep: *keep, workers: workers, threads: threads, solo: all, out: *out, df: df, epochs: *epochs, calibration: *calibrators,
			extract: ex})
	}
	df.split = "all"
	full, test, err := df.load()
	if err != nil {
		return err
	}
	defender, adversary := data.Split(full, df.splitSeed)
	say := func(format string, a ...any) {
		e.progress.Report(shared.Event{Kind: shared.Log, Stage: "demo", Message: fmt.Sprintf(format, a...)})
	}
	say("%s: defender and adversary halves of %d images each, %d test images; device %v; output in %s", full.Name, defender.Len(), test.Len(), e.device, *out)

	fit := func(ctx context.Context, name string, m *nn.Model, teacher *nn.Model, d *data.Dataset, ep int, seed int64) error {
		req := demoTrain(name, m.Spec.Arch, ep, seed, "")
		if teacher != nil {
			req = demoTrain(name, m.Spec.Arch, ep, seed, "source")
		}
		cfg, err := request.Train(req) // as the served demo's job does
		if err != nil {
			return err
		}
		cfg.Test, cfg.Progress, cfg.Stage = test, e.progress.Report, "train "+name
		var res *train.Result
		if teacher != nil {
			res, err = train.Retrain(ctx, teacher, m, d, cfg)
		} else {
			res, err = train.Train(ctx, m, d, cfg)
		}
		if err != nil {
			return err
		}
		say("%-26s %-4s test accuracy %.4f", name, m.Spec.Arch, res.TestAccuracy)
		return m.Save(filepath.Join(*out, name+".safetensors"), map[string]string{"demo.role": name,
			train.MetaRecipe: train.TrainedRecipe(cfg, m).String()})
	}

	clock := newStageClock()
	// 1. The defender trains the source model.
	source, err := nn.New(train.SpecFor(demoSourceArch, defender), 1, e.device)
	if err != nil {
		return err
	}
	defer source.Free()
	if err := fit(ctx, "source", source, nil, defender, *epochs+1, 1); err != nil {
		return err
	}
	clock.lap("source (1 model)")
	// 2. Surrogates (Retraining on the source's labels) and references
	// (ground truth), on both halves.
	models := map[string]*nn.Model{}
	defer func() {
		for _, m := range models {
			m.Free()
		}
	}()
	fleet := demoFleet(*epochs, *calibrators)
	// The fleet trains `workers` models at once, each on its own OS thread
	// with its share of the threads, as the served demo's jobs do.
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(fctx)
	g.SetLimit(workers)
	for i, fm := range fleet {
		d, teacher := defender, (*nn.Model)(nil)
		if fm.adversary {
			d = adversary
		}
		if fm.surrogate {
			teacher = source
		}
		m, err := nn.New(train.SpecFor(fm.arch, d), uint64(100+i), e.device)
		if err != nil {
			stop()
			g.Wait() // the models already training stop before they are freed
			return err
		}
		models[fm.name] = m
		g.Go(func() error {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			torch.SetNumThreads(threads) // libtorch's threads are per OS thread
			return fit(gctx, fm.name, m, teacher, d, fm.epochs, int64(100+i))
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	clock.lap(fmt.Sprintf("fleet (%d models)", len(fleet)))
	// 3. Extract the fingerprint with C-BIM on the training models, with
	// the settings that separated best in the fingerprint study.
	cfg.Progress = e.progress.Report
	tm := fingerprint.Training{Source: source, SourceID: "demo source", SourceArch: source.Spec.Arch}
	var calibration []fingerprint.IndependentModel
	for _, fm := range fleet {
		switch {
		case fm.adversary:
			continue
		case fm.calibration:
			calibration = append(calibration, fingerprint.IndependentModel{Suspect: &suspect.Local{Model: models[fm.name], Name: fm.name}, Arch: fm.arch})
			continue
		}
		if fm.surrogate {
			tm.Surrogates, tm.SurrogateIDs = append(tm.Surrogates, models[fm.name]), append(tm.SurrogateIDs, fm.name)
		} else {
			tm.References, tm.ReferenceIDs = append(tm.References, models[fm.name]), append(tm.ReferenceIDs, fm.name)
		}
	}
	startSet, err := fingerprint.StartPoints(*start, defender, test) // by default, start points no model was trained on
	if err != nil {
		return usagef("--%v", err)
	}
	var sb strings.Builder
	for _, natural := range []bool{false, true} {
		c, name := cfg, "fingerprint"
		if natural {
			if c, err = request.Extract(demoNatural(ex)); err != nil {
				return err
			}
			c.Progress, name = cfg.Progress, "natural"
		}
		fp, err := fingerprint.Extract(ctx, tm, startSet, c)
		if err != nil {
			return err
		}
		// 4. Calibrate: how often do the independent models agree with it?
		cal, err := fingerprint.Calibrate(ctx, fp, calibration, fingerprint.DefaultFPR)
		if err != nil {
			return err
		}
		fpPath, sheetPath := filepath.Join(*out, name+".safetensors"), filepath.Join(*out, name+".png")
		if err := fp.Save(fpPath); err != nil {
			return err
		}
		if err := fingerprint.WriteSheet(sheetPath, fp, 24); err != nil {
			return err
		}
		if err := cal.Save(fingerprint.CalibrationPath(fpPath)); err != nil {
			return err
		}
		say("%s: %d examples (%s) → %s, contact sheet %s", name, fp.N, demoHow(fp.Meta.Attack, fp.Meta.Candidates, fp.Meta.Eps, c.Tau), fpPath, sheetPath)
		say("calibration: %d independent models agree %.2f ± %.2f; at a false-positive rate of %g the test accuses from %.2f (θ = %.2f)",
			len(cal.Models), cal.Fit.Mean(), cal.Fit.SD(), cal.FPR, cal.Summary.Accuracy, fingerprint.DefaultThreshold)
		// 5. Verify the models the fingerprint never saw.
		var rows []demoRow
		for _, fm := range fleet {
			if !fm.adversary {
				continue
			}
			v, err := fingerprint.Verify(ctx, &suspect.Local{Model: models[fm.name], Name: fm.name}, fp, fingerprint.Rule{Calibration: cal})
			if err != nil {
				return err
			}
			rows = append(rows, demoRow{name: fm.name, surrogate: fm.surrogate, outcome: v.Outcome, accuracy: v.Accuracy, agree: v.Agree, n: v.Fingerprints, interval: v.Interval, p: v.PValue})
		}
		clock.lap(name + " (extraction, calibration, verification)")
		demoTable(&sb, demoHow(fp.Meta.Attack, fp.Meta.Candidates, fp.Meta.Eps, c.Tau), fp.N, len(cal.Models), cal.Fit.Mean(), cal.Fit.SD(), cal.Summary.Accuracy, cal.FPR, rows)
		for _, w := range cal.Warnings() {
			fmt.Fprintf(&sb, "caution: %s\n", w)
		}
	}
	e.progress.done()
	sb.WriteString(clock.String())
	_, err = fmt.Fprint(e.stdout, sb.String())
	return err
}

// demoNaturalTau is the conferrability a natural fingerprint's keys must
// reach on the demo's training models — the source's mistakes that its
// surrogates share and most references do not: the τ the held-out
// benchmark froze (docs/results/benchmark-natural).
const demoNaturalTau = 0.6

// demoNatural is the request of the demo's second fingerprint, beside
// the C-BIM one ex asks for: every test input the source misclassifies,
// kept when conferrable (τ = demoNaturalTau), from the same models. It
// takes none of C-BIM's settings (a natural extraction refuses them).
func demoNatural(ex shared.ExtractArgs) shared.ExtractArgs {
	return shared.ExtractArgs{DataArgs: ex.DataArgs, Name: "demo natural fingerprint", Source: ex.Source, Surrogates: ex.Surrogates, References: ex.References,
		Calibration: ex.Calibration, Natural: true, Tau: new(demoNaturalTau), Candidates: 1 << 20, Batch: ex.Batch, Seed: ex.Seed, Start: ex.Start}
}

// demoHow says how a fingerprint was made, in a few words.
func demoHow(attack string, candidates int, eps, tau float64) string {
	if attack == fingerprint.AttackNatural {
		return fmt.Sprintf("the source's own mistakes among %d test inputs it misclassifies, conferrability ≥ %g", candidates, tau)
	}
	return fmt.Sprintf("C-BIM from %d start points, ε = %g, conferrability ≥ %g", candidates, eps, tau)
}

// demoRow is one suspect's verdict in the demo's table.
type demoRow struct {
	name      string
	surrogate bool
	outcome   string
	accuracy  float64
	agree, n  int
	interval  [2]float64
	p         *float64
}

// demoTable writes the verdicts on the adversary's models by one
// fingerprint: each with its interval, p-value and whether it is right,
// then the margins of the lowest surrogate and the highest reference
// around the calibrated threshold.
func demoTable(w io.Writer, how string, keys, models int, mean, sd, threshold, fpr float64, rows []demoRow) {
	fmt.Fprintf(w, "\nFingerprint of %d keys (%s).\nVerdicts on the adversary's models (never seen by the fingerprint), calibrated by %d independent models (agreement %.2f ± %.2f): accusing from %.2f at a false-positive rate of %g:\n",
		keys, how, models, mean, sd, threshold, fpr)
	right := 0
	minSurr, maxRef := 1.0, 0.0
	for _, r := range rows {
		mark := "WRONG"
		if demoRight(r.surrogate, r.outcome) {
			mark = "right"
			right++
		}
		if r.surrogate {
			minSurr = min(minSurr, r.accuracy)
		} else {
			maxRef = max(maxRef, r.accuracy)
		}
		p := "–"
		if r.p != nil {
			p = fmt.Sprintf("%.2g", *r.p)
		}
		fmt.Fprintf(w, "  %-24s fingerprint accuracy %.3f (%3d/%3d, 95%% [%.2f, %.2f]), p = %s → %-13s (%s)\n", r.name, r.accuracy, r.agree, r.n, r.interval[0], r.interval[1], p, strings.ToUpper(r.outcome), mark)
	}
	fmt.Fprintf(w, "%d of %d verdicts right. Lowest surrogate %.3f, highest reference %.3f (gap %+.3f; margins: lowest surrogate %+.3f over the threshold, highest reference %+.3f under it).\n",
		right, len(rows), minSurr, maxRef, minSurr-maxRef, minSurr-threshold, threshold-maxRef)
}

// demoRight says whether a verdict's outcome is the truth about a demo
// model: a surrogate must be called derived, a reference independent
// (inconclusive is right for neither).
func demoRight(surrogate bool, outcome string) bool {
	if surrogate {
		return outcome == shared.OutcomeDerived
	}
	return outcome == shared.OutcomeIndependent
}

// stageClock times the demo's stages.
type stageClock struct {
	start, last time.Time
	laps        []string
}

func newStageClock() *stageClock {
	now := time.Now()
	return &stageClock{start: now, last: now}
}

// lap closes a stage.
func (c *stageClock) lap(stage string) {
	now := time.Now()
	c.laps = append(c.laps, fmt.Sprintf("%s %s", stage, now.Sub(c.last).Round(time.Second)))
	c.last = now
}

// String is the stages' times and the total, on one line.
func (c *stageClock) String() string {
	return fmt.Sprintf("Time: %s; total %s.\n", strings.Join(c.laps, ", "), c.last.Sub(c.start).Round(time.Second))
}
