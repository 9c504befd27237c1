package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
	epochs     int
}

// demoFleet is the story's models: training surrogates and references on
// the defender's half feed C-BIM; testing ones on the adversary's half are
// what the fingerprint never saw.
func demoFleet(epochs int) []demoModel {
	var f []demoModel
	for _, adv := range []bool{false, true} {
		side := "train"
		if adv {
			side = "test"
		}
		for _, arch := range []string{"cnn", "mlp"} {
			e := epochs
			if arch == "mlp" {
				e = 2 * epochs
			}
			f = append(f, demoModel{fmt.Sprintf("%s-surrogate-%s", side, arch), arch, adv, true, e})
			f = append(f, demoModel{fmt.Sprintf("%s-reference-%s", side, arch), arch, adv, false, e})
		}
	}
	return f
}

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	out := fs.String("out", "demo-out", "folder for the demo's models, fingerprint and pictures")
	epochs := fs.Int("epochs", 2, "training epochs per model (the source gets one more)")
	cfgOf := cbimFlags(fs)
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
	if *serve {
		c := cfgOf()
		if !flagSet(fs, "eps") {
			c.CBIM.Eps = 0.05 // as below
		}
		threads, _ := strconv.Atoi(fs.Lookup("threads").Value.String())
		return runDemoServe(ctx, e, demoServe{addr: *addr, web: *web, keep: *keep, threads: threads, out: *out, df: df, epochs: *epochs,
			extract: shared.ExtractArgs{Eps: c.CBIM.Eps, Alpha: c.CBIM.Alpha, Steps: c.CBIM.Steps, Dropout: c.CBIM.Dropout, Loss: string(c.CBIM.Loss),
				Tau: c.Tau, Candidates: c.Candidates, Batch: c.Batch, Seed: c.Seed}})
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
		return m.Save(filepath.Join(*out, name+".safetensors"), map[string]string{"demo.role": name})
	}

	// 1. The defender trains the source model.
	source, err := nn.New(train.SpecFor("cnn", defender), 1, e.device)
	if err != nil {
		return err
	}
	defer source.Free()
	if err := fit("source", source, nil, defender, *epochs+1); err != nil {
		return err
	}
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
	// 3. Extract the fingerprint with C-BIM on the training models. The
	// fingerprint study measured ε = 0.05 to separate best at this scale
	// (runs/fingerprint), so that is the demo's default.
	cfg := cfgOf()
	if !flagSet(fs, "eps") {
		cfg.CBIM.Eps = 0.05
	}
	cfg.Progress = e.progress.Report
	tm := fingerprint.Training{Source: source, SourceID: "demo source", SourceArch: source.Spec.Arch}
	for _, fm := range fleet {
		if fm.adversary {
			continue
		}
		if fm.surrogate {
			tm.Surrogates, tm.SurrogateIDs = append(tm.Surrogates, models[fm.name]), append(tm.SurrogateIDs, fm.name)
		} else {
			tm.References, tm.ReferenceIDs = append(tm.References, models[fm.name]), append(tm.ReferenceIDs, fm.name)
		}
	}
	fp, err := fingerprint.Extract(ctx, tm, test, cfg) // start points no model was trained on
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
	say("fingerprint: %d conferrable examples from %d start points (ε = %g, τ = %g) → %s, contact sheet %s", fp.N, fp.Meta.Candidates, cfg.CBIM.Eps, cfg.Tau, fpPath, sheetPath)
	// 4. Verify the models the fingerprint never saw.
	e.progress.done()
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nVerification of the adversary's models (never seen by the fingerprint), θ = %.2f:\n", fingerprint.DefaultThreshold)
	correct, total := 0, 0
	minSurr, maxRef := 1.0, 0.0
	for _, fm := range fleet {
		if !fm.adversary {
			continue
		}
		v, err := fingerprint.Verify(ctx, &suspect.Local{Model: models[fm.name], Name: fm.name}, fp, fingerprint.Rule{})
		if err != nil {
			return err
		}
		verdict := strings.ToUpper(v.Outcome)
		ok := (fm.surrogate && v.Outcome == fingerprint.Derived) || (!fm.surrogate && v.Outcome == fingerprint.Independent)
		mark := "right"
		if !ok {
			mark = "WRONG"
		} else {
			correct++
		}
		total++
		fmt.Fprintf(&sb, "  %-26s fingerprint accuracy %.3f (%3d/%3d, 95%% [%.2f, %.2f]) → %-13s (%s)\n", fm.name, v.Accuracy, v.Agree, v.Fingerprints, v.Interval[0], v.Interval[1], verdict, mark)
		if fm.surrogate {
			minSurr = min(minSurr, v.Accuracy)
		} else {
			maxRef = max(maxRef, v.Accuracy)
		}
	}
	fmt.Fprintf(&sb, "%d of %d verdicts right at θ. Ranking: lowest surrogate %.3f, highest reference %.3f (gap %+.3f; a positive gap means some threshold separates them).\n",
		correct, total, minSurr, maxRef, minSurr-maxRef)
	_, err = fmt.Fprint(e.stdout, sb.String())
	return err
}
