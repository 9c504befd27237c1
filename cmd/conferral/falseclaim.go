package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
)

// runFalseClaim is `conferral experiment false-claim` (issue 17, item 4):
// an accuser with no model crafts transferable adversarial examples on
// public models, writes them as a fingerprint file, and "verifies" victims
// with it, by θ alone and by a rule calibrated on independent models.
func runFalseClaim(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("experiment false-claim", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	public := fs.String("public", "", "comma-separated model files: the accuser's public models, white-box (required)")
	manifest := fs.String("suspects", "", "a suspects manifest (derived|independent, arch, recipe, file, tab-separated): its independent rows are the victims")
	victims := fs.String("victims", "", "comma-separated further victims (model or .onnx files)")
	owner := fs.String("source", "", "the owner's source model: a victim too, and judged by --real-fingerprint beside the accuser's models")
	calModels := fs.String("calibration-models", "", "comma-separated independent models the verifier calibrates the claimed set on (required)")
	realFP := fs.String("real-fingerprint", "", "the owner's committed fingerprint (its calibration beside it, when there is one): the accuser's public models are judged by it")
	claimOut := fs.String("claim", "runs/false-claim.safetensors", "where the crafted set is written, as a fingerprint file")
	out := fs.String("out", "runs/false-claims", "report folder")
	describe := fs.String("describe", "", "how the models were made, for the report")
	eps := fs.Float64("eps", 0.05, "L∞ budget ε")
	alpha := fs.Float64("alpha", 0.005, "BIM step")
	steps := fs.Int("steps", 50, "BIM steps")
	candidates := fs.Int("candidates", 500, "start points attacked (test split)")
	batch := fs.Int("batch", 100, "start points per batch")
	seed := fs.Int64("seed", 1, "seed of the start points' order")
	theta := unitFlag(fs, "theta", fingerprint.DefaultThreshold, "Algorithm 1's threshold θ")
	fpr := fs.Float64("fpr", fingerprint.DefaultFPR, "false-positive rate of the calibrated rule")
	remote := remoteFlags(fs)
	var of onnxFlags
	of.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *public == "" || *calModels == "" || (*manifest == "" && *victims == "" && *owner == "") {
		return usagef("--public, --calibration-models and --suspects, --victims or --source are required")
	}
	if !(*eps > 0 && *eps <= 1) || *alpha <= 0 || *steps <= 0 || *candidates <= 0 || !(*fpr > 0 && *fpr < 0.5) {
		return usagef("want ε in (0,1], positive --alpha, --steps, --candidates and --fpr in (0, 0.5)")
	}
	type entry struct{ arch, what, spec string }
	var entries []entry
	if *manifest != "" {
		all, err := readManifest(*manifest)
		if err != nil {
			return fmt.Errorf("false claim: %w", err)
		}
		for _, m := range all {
			if !m.derived && !isRemote(m.spec) {
				entries = append(entries, entry{arch: m.arch, what: "independent: " + m.recipe, spec: m.spec})
			}
		}
	}
	for _, s := range strings.Split(*victims, ",") {
		if s = strings.TrimSpace(s); s != "" {
			entries = append(entries, entry{what: "given on the command line", spec: s})
		}
	}
	if err := apply(); err != nil {
		return err
	}
	_, test, err := df.load()
	if err != nil {
		return err
	}
	pub, ids, err := loadModels(e, "public", *public)
	if err != nil {
		return err
	}
	defer freeAll(pub)
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	st := &experiment.FalseClaimStudy{ClaimPath: *claimOut, Theta: *theta, FPR: *fpr, Describe: *describe,
		Command:    "conferral experiment false-claim " + strings.Join(quoted, " "),
		Calibrated: report.Dir(*out).Path("false-claim.calibration.json")}
	// Every model and file is opened before the crafting, so that a bad
	// one fails at once; the claim's classes are the test split's.
	var frees []func()
	defer func() {
		for _, f := range frees {
			f()
		}
	}()
	open := func(spec string) (experiment.BenchSuspect, fingerprint.IndependentModel, error) {
		s, m, _, free, err := openSuspect(e, spec, remote, &of, test.Classes)
		if err != nil {
			return experiment.BenchSuspect{}, m, err
		}
		frees = append(frees, free)
		via := "local"
		if isONNX(spec) {
			via = "onnx"
		}
		return experiment.BenchSuspect{Suspect: s, Arch: m.Arch, Via: via}, m, nil
	}
	for _, en := range entries {
		v, _, err := open(en.spec)
		if err != nil {
			return err
		}
		if en.arch != "" {
			v.Arch = en.arch
		}
		v.Recipe = en.what
		st.Victims = append(st.Victims, v)
	}
	if *owner != "" {
		v, _, err := open(*owner)
		if err != nil {
			return err
		}
		v.Recipe = "the owner's source"
		st.Owner = &v
	}
	for _, spec := range strings.Split(*calModels, ",") {
		if spec = strings.TrimSpace(spec); spec == "" {
			continue
		}
		_, m, err := open(spec)
		if err != nil {
			return err
		}
		st.Calibration = append(st.Calibration, m)
	}
	if *realFP != "" {
		if st.Real, err = fingerprint.Load(*realFP); err != nil {
			return err
		}
		st.RealPath, st.RealRule = *realFP, fingerprint.Rule{Theta: *theta}
		if cp := fingerprint.CalibrationPath(*realFP); fileExists(cp) {
			if st.RealRule.Calibration, err = fingerprint.LoadCalibration(cp, st.Real); err != nil {
				return err
			}
		}
		for _, p := range strings.Split(*public, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			v, _, err := open(p)
			if err != nil {
				return err
			}
			st.Public = append(st.Public, v)
		}
	}
	if len(st.Calibration) < 2 {
		return usagef("--calibration-models: want at least two independent models, got %d", len(st.Calibration))
	}
	cfg := experiment.FalseClaimConfig{Eps: *eps, Alpha: *alpha, Steps: *steps, Candidates: *candidates, Batch: *batch, Seed: *seed, Progress: e.progress.Report}
	if st.Claim, err = experiment.CraftFalseClaim(ctx, asModels(pub), ids, test, cfg); err != nil {
		return err
	}
	if err := st.Claim.Save(*claimOut); err != nil {
		return err
	}
	res, err := st.Run(ctx, report.Dir(*out), e.progress.Report)
	if err != nil {
		return err
	}
	e.progress.done()
	c := res.Calibration
	text := fmt.Sprintf("false claim: %d keys (%s); %d of %d victims pass Algorithm 1 at θ = %g, %d are called derived calibrated; independent models agree %.2f ± %.2f, calibrated threshold %.3f\n(report: %s)\n",
		st.Claim.N, *claimOut, res.PassTheta, len(res.Rows), *theta, res.PassCalibrated, c.Fit.Mean(), c.Fit.SD(), c.Summary.Accuracy, report.Dir(*out).Path("README.md"))
	return e.emit(res, text)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
