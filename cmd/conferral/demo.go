package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
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

// The demo's source and fleet architectures: the zoo's cheapest that still
// learn Fashion-MNIST in a few epochs on two cores.
const demoSourceArch = "lenet"

var demoArchs = [...]string{"lenet", "mlp", "mlpdrop"}

// demoFleet is the story's models: 8 training surrogates and 8 references
// on the defender's half feed C-BIM; 10 calibration models, also the
// defender's, calibrate the verdicts; 4 surrogates and 4 references on the
// adversary's half are the suspects the fingerprint never saw. MLPs train
// twice as many epochs (they are ~5× cheaper per epoch).
func demoFleet(epochs int) []demoModel {
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
	add(10, "calibration", false, false, true)
	add(4, "test-surrogate", true, true, false)
	add(4, "test-reference", true, false, false)
	return f
}

// demoCBIM sets the extraction settings that separated best in the
// fingerprint study (docs/results/fingerprint-4x2-taus) wherever the
// command line left them alone.
func demoCBIM(fs *flag.FlagSet, c fingerprint.Config) fingerprint.Config {
	set := func(name string, apply func()) {
		if !flagSet(fs, name) {
			apply()
		}
	}
	set("eps", func() { c.CBIM.Eps = 0.05 })
	set("steps", func() { c.CBIM.Steps = 50 })
	set("loss", func() { c.CBIM.Loss = attack.LossGeometric })
	set("best-iterate", func() { c.CBIM.Best = true })
	set("tau", func() { c.Tau = 0.5 })
	set("tau-surr", func() { c.TauSurr = 1 })
	set("candidates", func() { c.Candidates = 600 })
	return c
}

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	out := fs.String("out", "demo-out", "folder for the demo's models, fingerprint and pictures")
	epochs := fs.Int("epochs", 2, "training epochs per model (the source gets one more)")
	cfgOf := cbimFlags(fs)
	start := fs.String("start", fingerprint.StartTest, "where C-BIM starts: test (held-out images) or train (the defender's half)")
	serve := fs.Bool("serve", false, "run the story as jobs of `conferral serve` (in OUT/server), watchable in the browser")
	addr := fs.String("addr", "127.0.0.1:8080", "with --serve: where the server listens")
	web := fs.String("web", "bin/web", "with --serve: folder of the browser app's app.wasm (`make web`)")
	keep := fs.Bool("keep", true, "with --serve: serve on after the story until Ctrl-C")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	cfg := demoCBIM(fs, cfgOf())
	if *serve {
		threads, _ := strconv.Atoi(fs.Lookup("threads").Value.String())
		return runDemoServe(ctx, e, demoServe{addr: *addr, web: *web, keep: *keep, threads: threads, out: *out, df: df, epochs: *epochs,
			extract: shared.ExtractArgs{Eps: cfg.CBIM.Eps, Alpha: cfg.CBIM.Alpha, Steps: cfg.CBIM.Steps, Dropout: &cfg.CBIM.Dropout, Loss: string(cfg.CBIM.Loss),
				BestIterate: cfg.CBIM.Best, Tau: &cfg.Tau, TauSurr: cfg.TauSurr, Candidates: cfg.Candidates, Batch: cfg.Batch, Seed: cfg.Seed, Start: *start}})
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

	fit := func(name string, m *nn.Model, teacher *nn.Model, d *data.Dataset, ep int) error {
		cfg := train.Defaults(ep)
		cfg.Test, cfg.Progress, cfg.Stage = test, e.progress.Report, "train "+name
		var res *train.Result
		var err error
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
	if err := fit("source", source, nil, defender, *epochs+1); err != nil {
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
	fleet := demoFleet(*epochs)
	for i, fm := range fleet {
		d := defender
		if fm.adversary {
			d = adversary
		}
		m, err := nn.New(train.SpecFor(fm.arch, d), uint64(100+i), e.device)
		if err != nil {
			return err
		}
		models[fm.name] = m
		var teacher *nn.Model
		if fm.surrogate {
			teacher = source
		}
		if err := fit(fm.name, m, teacher, d, fm.epochs); err != nil {
			return err
		}
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
	fp, err := fingerprint.Extract(ctx, tm, startSet, cfg)
	if err != nil {
		return err
	}
	clock.lap("C-BIM")
	// 4. Calibrate: how often do the independent models agree with it?
	cal, err := fingerprint.Calibrate(ctx, fp, calibration, fingerprint.DefaultFPR)
	if err != nil {
		return err
	}
	fpPath, sheetPath := filepath.Join(*out, "fingerprint.safetensors"), filepath.Join(*out, "fingerprint.png")
	if err := fp.Save(fpPath); err != nil {
		return err
	}
	if err := fingerprint.WriteSheet(sheetPath, fp, 24); err != nil {
		return err
	}
	if err := cal.Save(fingerprint.CalibrationPath(fpPath)); err != nil {
		return err
	}
	say("fingerprint: %d conferrable examples from %d start points (ε = %g, τ = %g) → %s, contact sheet %s", fp.N, fp.Meta.Candidates, cfg.CBIM.Eps, cfg.Tau, fpPath, sheetPath)
	say("calibration: %d independent models agree %.2f ± %.2f; at a false-positive rate of %g the test accuses from %.2f (θ = %.2f)",
		len(cal.Models), cal.Fit.Mean(), cal.Fit.SD(), cal.FPR, cal.Summary.Accuracy, fingerprint.DefaultThreshold)
	// 5. Verify the models the fingerprint never saw.
	e.progress.done()
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nVerification of the adversary's models (never seen by the fingerprint), calibrated by %d independent models: accusing from %.2f at a false-positive rate of %g:\n",
		len(cal.Models), cal.Summary.Accuracy, cal.FPR)
	correct, total := 0, 0
	minSurr, maxRef := 1.0, 0.0
	for _, fm := range fleet {
		if !fm.adversary {
			continue
		}
		v, err := fingerprint.Verify(ctx, &suspect.Local{Model: models[fm.name], Name: fm.name}, fp, fingerprint.Rule{Calibration: cal})
		if err != nil {
			return err
		}
		verdict := strings.ToUpper(v.Outcome)
		ok := demoRight(fm.surrogate, v.Outcome)
		mark := "right"
		if !ok {
			mark = "WRONG"
		} else {
			correct++
		}
		total++
		fmt.Fprintf(&sb, "  %-24s fingerprint accuracy %.3f (%3d/%3d, 95%% [%.2f, %.2f]), p = %.2g → %-13s (%s)\n", fm.name, v.Accuracy, v.Agree, v.Fingerprints, v.Interval[0], v.Interval[1], *v.PValue, verdict, mark)
		if fm.surrogate {
			minSurr = min(minSurr, v.Accuracy)
		} else {
			maxRef = max(maxRef, v.Accuracy)
		}
	}
	fmt.Fprintf(&sb, "%d of %d verdicts right. Lowest surrogate %.3f, highest reference %.3f (gap %+.3f; margins: lowest surrogate %+.3f over the threshold, highest reference %+.3f under it).\n",
		correct, total, minSurr, maxRef, minSurr-maxRef, minSurr-cal.Summary.Accuracy, cal.Summary.Accuracy-maxRef)
	for _, w := range cal.Warnings() {
		fmt.Fprintf(&sb, "caution: %s\n", w)
	}
	clock.lap("calibration and verification")
	sb.WriteString(clock.String())
	_, err = fmt.Fprint(e.stdout, sb.String())
	return err
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
