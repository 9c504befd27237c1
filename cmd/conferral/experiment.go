package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/train"
)

// floatList writes xs as a flag's comma-separated default.
func floatList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

// floats is the comma-separated numbers of the flag name's value s.
func floats(name, s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, usagef("--%s: %q is not a number", name, f)
		}
		out = append(out, v)
	}
	return out, nil
}

// subsets are the training-model levers of the fingerprint study: fewer
// and less varied training models than the main setting.
func subsets(sourceArch string, archs []string, per int) []experiment.Setting {
	var out []experiment.Setting
	for _, a := range archs {
		if a == sourceArch {
			out = append(out, experiment.Setting{Name: "one pair, source arch", Archs: []string{sourceArch}, Per: 1})
		}
	}
	if per > 1 {
		out = append(out, experiment.Setting{Name: "one pair per arch", Archs: archs, Per: 1})
	}
	if len(archs) > 1 && per > 1 { // with one model per arch this is "one pair, source arch"
		out = append(out, experiment.Setting{Name: "source arch only", Archs: []string{sourceArch}})
	}
	return out
}

func runExperiment(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "benchmark" {
		return runBenchmark(ctx, e, args[1:])
	}
	if len(args) > 0 && args[0] == "false-claim" {
		return runFalseClaim(ctx, e, args[1:])
	}
	if len(args) > 0 && args[0] == "evasion" {
		return runEvasion(ctx, e, args[1:])
	}
	if len(args) > 0 && args[0] == "detect-evade" {
		return runDetectEvade(ctx, e, args[1:])
	}
	if len(args) == 0 || (args[0] != "fingerprint" && args[0] != "conferrability" && args[0] != "robustness") {
		return usagef("want `experiment conferrability` (Table 1), `experiment fingerprint` (Table 2), `experiment robustness` (Tables 4 and 5), `experiment benchmark` (held-out suspects, frozen rule), `experiment false-claim` (an accuser's transferable adversarial examples as keys), `experiment evasion` (the non-evasiveness game of §5.1) or `experiment detect-evade` (suspects served behind the adversary's detector)")
	}
	kind := args[0]
	fs := flag.NewFlagSet("experiment "+kind, flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	modelsDir := fs.String("models", "runs/fleet", "folder of the fleet's models (trained once, reused)")
	out := fs.String("out", "runs/"+kind, "report folder")
	study := request.DefaultStudy() // the server's defaults too
	archs := fs.String("archs", strings.Join(study.Archs, ","), "architectures of surrogates and references")
	sourceArch := fs.String("source-arch", study.SourceArch, "architecture of the source model")
	per := fs.Int("per", study.Per, "surrogates and references per architecture on each half")
	epochs := fs.Int("epochs", study.Epochs, "training epochs per model (the source gets one more)")
	start := fs.String("start", fingerprint.StartTest, "where C-BIM starts (fingerprint study): test (the test split, which no fleet model was trained on) or train (the defender's half); the study also runs the other")
	labels := fs.String("surrogate-labels", experiment.HardLabels, "what surrogates learn from: hard (the source's labels, as a classification API returns them) or soft (its prediction vectors: distillation at T = 1)")
	epsList := fs.String("eps-sweep", floatList(study.Eps), "ε values to sweep")
	taus := fs.String("taus", floatList(study.Taus), "τ values to sweep (fingerprint study)")
	tauSurrs := fs.String("tau-surrs", floatList(study.TauSurrs), "τ_S values to sweep, crossed with --taus (fingerprint study)")
	points := fs.Int("points", study.Points, "start points (conferrability study)")
	focus := fs.Float64("focus", study.Focus, "ε of Table 1 and the histogram (conferrability study)")
	cfgOf := cbimFlags(fs)
	rp := experiment.DefaultRobustnessPlan() // the flags below start from it
	var transfer, transferDir string
	fpFile := fs.String("fingerprint", "", "robustness: fingerprint file of the fleet's source (default: extract one with --eps, --tau, --candidates from the fleet's training models)")
	calFile := fs.String("calibration", "", "robustness: calibration of --fingerprint (conferral calibrate) by independent models outside the fleet: calibrated verdicts and p-values")
	fs.IntVar(&rp.Epochs, "derive-epochs", rp.Epochs, "robustness: epochs of the attacks that train a new model (the paper does not say; CPU scale)")
	fs.IntVar(&rp.FineTuneEpochs, "finetune-epochs", rp.FineTuneEpochs, "robustness: epochs of fine-tuning and adversarial training")
	fs.IntVar(&rp.FineTuneExamples, "finetune-examples", rp.FineTuneExamples, "robustness: adversary's examples for fine-tuning and adversarial training (§6.3: 10,000)")
	lambdas := fs.String("lambdas", floatList(rp.Lambdas), "robustness: Noise attack weights λ (Table 4)")
	rhos := fs.String("rhos", floatList(rp.Rhos), "robustness: True Labels fractions ρ (Table 4 has 0.05 to 0.40)")
	fs.StringVar(&transfer, "transfer", "", "robustness: Knockoff's transfer set, a dataset name or an image folder (default: mnist for fashion-mnist)")
	fs.StringVar(&transferDir, "transfer-dir", "", "robustness: folder of the transfer dataset")
	srcFile := fs.String("source", "", "robustness: source model file to derive from instead of the fleet's source (needs --fingerprint extracted from it; no fleet is trained and the report has no contrast section)")
	fullStrength := fs.Bool("full", false, "robustness: full strength (issue 17): Ensemble, Papernot and pruning with fine-tuning train along epoch budgets until within 5 points of the source; fine-pruning, PGD-AT, TRADES, combined attacks and Knockoff on the adversary's half augmented join")
	describe := fs.String("describe", "", "robustness: the dataset, scale and recipes, for the report's first line (default: the dataset's name)")
	reproduce := fs.String("command", "", "robustness: the command that reproduces the report, when this one is part of a larger script (default: this command line)")
	combined := fs.String("combined", "", "robustness with --full: the combined attacks, one row per step spec, specs separated by ';', steps by ',' ("+strings.Join(train.CombinedSteps(), ", ")+"; default \""+strings.Join(experiment.DefaultRobustnessPlan().FullStrength().CombinedSteps, ";")+"\")")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	if kind != "robustness" {
		// Ignored, they would let a fleet train for another study than
		// the one asked for (the server refuses full likewise).
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"full", "combined", "source"} {
			if set[name] {
				return usagef("--%s: only the robustness study takes it (study %s)", name, kind)
			}
		}
	}
	epsV, err := floats("eps-sweep", *epsList)
	if err != nil {
		return err
	}
	tauV, err := floats("taus", *taus)
	if err != nil {
		return err
	}
	tauSurrV, err := floats("tau-surrs", *tauSurrs)
	if err != nil {
		return err
	}
	for _, v := range epsV {
		if !(v > 0 && v <= 1) { // as the server refuses eps_sweep
			return usagef("--eps-sweep takes values in (0,1], not %g", v)
		}
	}
	for _, v := range append(slices.Clone(tauV), tauSurrV...) {
		if !inUnit(v) {
			return usagef("--taus and --tau-surrs take values in [0,1], not %g", v)
		}
	}
	cfg, err := cfgOf()
	if err != nil {
		return err
	}
	// Every flag is checked before the data loads and anything trains.
	switch {
	case *per < 1 || *epochs < 1 || *points < 1:
		return usagef("--per %d, --epochs %d, --points %d: want 1 or more", *per, *epochs, *points)
	case !(*focus > 0 && *focus <= 1):
		return usagef("--focus %g: want an ε in (0,1]", *focus)
	case *labels != experiment.HardLabels && *labels != experiment.SoftLabels:
		return usagef("--surrogate-labels %q: want soft or hard", *labels)
	}
	if _, err := fingerprint.StartPoints(*start, nil, nil); err != nil {
		return usagef("--%v", err)
	}
	if kind == "robustness" {
		if rp.Lambdas, err = floats("lambdas", *lambdas); err != nil {
			return err
		}
		if rp.Rhos, err = floats("rhos", *rhos); err != nil {
			return err
		}
		rp.Seed = cfg.Seed
		if *fullStrength {
			rp = rp.FullStrength()
		}
		if *combined != "" {
			if !*fullStrength {
				return usagef("--combined needs --full")
			}
			rp.CombinedSteps = strings.Split(*combined, ";")
		}
		for _, spec := range rp.CombinedSteps {
			if _, err := train.ParseSteps(spec); err != nil {
				return usageError{err}
			}
		}
	}
	df.split = "all"
	full, test, err := df.load()
	if err != nil {
		return err
	}
	def, adv := data.Split(full, df.splitSeed)
	ds := experiment.Data{Defender: def, Adversary: adv, Test: test, Tag: fmt.Sprintf("%s/split=%d/limit=%d", full.Name, df.splitSeed, df.limit)}
	if kind == "robustness" {
		if *srcFile != "" {
			r := robustnessSource{plan: rp, source: *srcFile, fp: *fpFile, calibration: *calFile, transfer: transfer, transferDir: transferDir,
				models: *modelsDir, describe: *describe, command: cmp.Or(*reproduce, "conferral experiment "+kind+" "+strings.Join(args[1:], " ")), ds: ds, dir: report.Dir(*out)}
			if err := r.run(ctx, e); err != nil {
				return err
			}
			return emitReport(e, report.Dir(*out))
		}
	}
	plan := experiment.Plan(*sourceArch, strings.Split(*archs, ","), *per, *epochs)
	if *labels == experiment.SoftLabels {
		for _, m := range plan {
			if m.Role == experiment.Surrogate {
				m.Labels = experiment.SoftLabels
			}
		}
	}
	fleet, err := experiment.Build(ctx, *modelsDir, plan, ds, e.device, e.progress.Report)
	if err != nil {
		return err
	}
	defer fleet.Free()
	command := cmp.Or(*reproduce, "conferral experiment "+kind+" "+strings.Join(args[1:], " "))
	dir := report.Dir(*out)
	switch kind {
	case "conferrability":
		st := &experiment.ConferrabilityStudy{Eps: epsV, Focus: *focus, Points: *points, Batch: cfg.Batch, CBIM: cfg.CBIM, Command: command}
		if _, err := st.Run(ctx, fleet, test, dir, e.progress.Report); err != nil {
			return err
		}
	case "robustness":
		if rp.Transfer, err = loadTransfer(transfer, transferDir, fleet.Source().Model.Spec, adv, adv.Len(), rp.Seed); err != nil {
			return err
		}
		st, err := rp.Study(adv, command)
		if err != nil {
			return err
		}
		st.Describe = *describe
		fp, err := robustnessFingerprint(ctx, *fpFile, *modelsDir, fleet, ds, cfg, e)
		if err != nil {
			return err
		}
		if *calFile != "" {
			if st.Calibration, err = fingerprint.LoadCalibration(*calFile, fp); err != nil {
				return err
			}
		}
		if _, err := st.Run(ctx, fleet, fp, ds, filepath.Join(*modelsDir, "derived"), dir, e.progress.Report); err != nil {
			return err
		}
	case "fingerprint":
		archList := strings.Split(*archs, ",")
		st := &experiment.FingerprintStudy{
			Main: experiment.Setting{Name: "main", Eps: cfg.CBIM.Eps, Loss: cfg.CBIM.Loss, Start: *start, Best: cfg.CBIM.Best},
			Best: true,
			Eps:  epsV,
			Taus: tauV, TauSurrs: tauSurrV,
			Losses:  attack.Losses(),
			Starts:  []string{fingerprint.StartTest, fingerprint.StartTrain},
			Extract: cfg, Theta: 0.7, Command: command,
			Subsets: subsets(*sourceArch, archList, *per),
		}
		if _, err := st.Run(ctx, fleet, ds, dir, e.progress.Report); err != nil {
			return err
		}
	}
	return emitReport(e, dir)
}

// runBenchmark judges held-out suspects of known truth by a frozen rule
// (the fingerprint, its calibration, θ, the level) and writes the error
// rates with their intervals.
func runBenchmark(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("experiment benchmark", flag.ContinueOnError)
	apply := common(fs, e)
	fpPath := fs.String("fingerprint", "", "fingerprint file; required")
	derived := fs.String("derived", "", "comma-separated suspects derived from the source: model files, .onnx files or endpoint URLs")
	independent := fs.String("independent", "", "comma-separated suspects trained without the source")
	manifest := fs.String("suspects", "", "a manifest of suspects, one per line, tab-separated: derived|independent, architecture, recipe, file or URL")
	out := fs.String("out", "runs/benchmark", "report folder")
	scale := fs.String("describe", "", "the scale and recipes of the models, for the report (e.g. \"Fashion-MNIST adversary half, 2 epochs\"); required")
	seed := fs.Uint64("seed", 1, "seed of the AUC bootstrap")
	reproduce := fs.String("command", "", "the command that reproduces the report, when this one is part of a larger script (default: this command line)")
	ruleOf := ruleFlags(fs)
	remote := remoteFlags(fs)
	var of onnxFlags
	of.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *fpPath == "" || (*derived == "" && *independent == "" && *manifest == "") || *scale == "" {
		return usagef("--fingerprint, --describe and --suspects, --derived or --independent are required")
	}
	var entries []manifestEntry
	for _, g := range []struct {
		list    string
		derived bool
	}{{*derived, true}, {*independent, false}} {
		for _, spec := range strings.Split(g.list, ",") {
			if spec = strings.TrimSpace(spec); spec != "" {
				entries = append(entries, manifestEntry{derived: g.derived, spec: spec})
			}
		}
	}
	if *manifest != "" {
		m, err := readManifest(*manifest)
		if err != nil {
			return err
		}
		entries = append(entries, m...)
	}
	if nd := len(slices.DeleteFunc(slices.Clone(entries), func(e manifestEntry) bool { return !e.derived })); nd == 0 || nd == len(entries) {
		return usagef("a benchmark needs derived and independent suspects (--derived, --independent or --suspects): got %d derived and %d independent; error rates and AUC need both", nd, len(entries)-nd)
	}
	calibrated, err := ruleOf()
	if err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	paths := strings.Split(*fpPath, ",")
	var suspects []experiment.BenchSuspect
	var names []string
	var results []*experiment.BenchResult
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	command := cmp.Or(*reproduce, "conferral experiment benchmark "+strings.Join(quoted, " "))
	for _, p := range paths {
		fp, err := fingerprint.Load(p)
		if err != nil {
			return err
		}
		rule, _, err := calibrated(fp, p)
		if err != nil {
			return err
		}
		if suspects == nil {
			for _, en := range entries {
				s, m, _, free, err := openSuspect(e, en.spec, remote, &of, fp.Meta.Classes)
				if err != nil {
					return err
				}
				defer free()
				via := "local"
				switch {
				case isRemote(en.spec):
					via = "endpoint"
				case isONNX(en.spec):
					via = "onnx"
				}
				suspects = append(suspects, experiment.BenchSuspect{Suspect: s, Derived: en.derived, Arch: cmp.Or(en.arch, m.Arch), Recipe: en.recipe, Via: via})
			}
		}
		b := &experiment.Benchmark{Fingerprint: fp, Rule: rule, Dataset: fp.Meta.Dataset, Scale: *scale, Seed: *seed, Command: command, Suspects: suspects}
		dir := report.Dir(*out)
		name := strings.TrimSuffix(filepath.Base(p), ".safetensors")
		if len(paths) > 1 {
			dir = report.Dir(filepath.Join(*out, name))
		}
		res, err := b.Run(ctx, dir, e.progress.Report)
		if err != nil {
			return err
		}
		names, results = append(names, name), append(results, res)
		fmt.Fprintf(e.stderr, "%s: rule %.16s…, %d suspects: false-positive rate %.3f (%d/%d, 95%% ≤ %.3f), false-negative rate %.3f (%d/%d, 95%% ≤ %.3f), AUC %.3f, %d inconclusive\n",
			dir, res.RuleHash, len(res.Rows), res.FPR[0], res.FP, res.Independent, res.FPR[2], res.FNR[0], res.FN, res.Derived, res.FNR[2], res.AUC, res.Inconclusive)
	}
	if len(paths) > 1 {
		if err := experiment.WriteSummary(report.Dir(*out), *scale, command, names, results); err != nil {
			return err
		}
	}
	return e.emit(results, fmt.Sprintf("report in %s\n", *out))
}

// shellQuote quotes a for a POSIX shell when it needs it, so that a
// report's command can be pasted back.
func shellQuote(a string) string {
	if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./,=:@+%") == "" {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}
