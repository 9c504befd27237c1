package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/detect"
	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
)

// runDetectEvade is `conferral experiment evasion detect-evade` (issue 17,
// item 2; Hitaj et al.): suspects served on 127.0.0.1 behind the
// adversary's own detector, answering a wrong label on flagged queries,
// verified over HTTP with and without the wrapper and the verifier's
// mitigations. Every file is loaded, and every flag checked, before
// anything is served.
func runDetectEvade(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("experiment evasion detect-evade", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	type fpFlag struct{ name, path string }
	var fps []fpFlag
	fs.Func("fingerprint", "[NAME=]fingerprint file, verified by its calibration (FILE.calibration.json); repeat for more; at least one", func(v string) error {
		name, path, ok := strings.Cut(v, "=")
		if !ok {
			name, path = "", v
		}
		if path = strings.TrimSpace(path); path == "" {
			return fmt.Errorf("%q names no file", v)
		}
		fps = append(fps, fpFlag{name, path})
		return nil
	})
	dets := fs.String("detectors", "", "comma-separated detector files or folders of them (experiment evasion --save-detectors); for each fingerprint the adversary picks the one set against its kind with the highest AUC on its own examples; required")
	derived := fs.String("derived", "", "comma-separated suspects derived from the source (model files); required")
	indep := fs.String("independent", "", "comma-separated independent suspects (model files)")
	fprs := fs.String("flag-fprs", "0.01,0.05", "the detector's false-positive rates on the adversary's own benign inputs")
	evades := fs.String("evade", "random,second", "what flagged queries get: random, second or both")
	mix := fs.Int("mix", 4, "mitigation: benign decoys sent per key (0: none)")
	seqOn := fs.Bool("subset", true, "mitigation: also verify with the sequential rule (a random subset of the keys, until decided)")
	seqBatch := fs.Int("subset-batch", 10, "keys per request of the random-subset mitigation")
	batch := fs.Int("batch", 256, "images per request")
	limit := fs.Int("limit-benign", 0, "benign queries at most (0: every test image no detector or fingerprint holds)")
	seed := fs.Int64("seed", 1, "seed of the mixing, the subset's order and the benign subset")
	out := fs.String("out", "runs/detect-evade", "report folder")
	describe := fs.String("describe", "", "how the models were made, for the report")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(fps) == 0 || *dets == "" || *derived == "" {
		return usagef("--fingerprint, --detectors and --derived are required")
	}
	var rates []float64
	for _, f := range strings.Split(*fprs, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(v > 0 && v < 1) {
			return usagef("--flag-fprs: %q is not a rate in (0, 1)", f)
		}
		rates = append(rates, v)
	}
	var evs []detect.Evasion
	for _, f := range strings.Split(*evades, ",") {
		ev, err := detect.ParseEvasion(f)
		if err != nil {
			return usagef("--evade: %v", err)
		}
		evs = append(evs, ev)
	}
	if *mix < 0 || *batch <= 0 || *seqBatch <= 0 || *limit < 0 {
		return usagef("want --mix, --limit-benign ≥ 0 and positive --batch, --subset-batch")
	}
	if err := apply(); err != nil {
		return err
	}
	// The detectors first: the files a user is likeliest to get wrong.
	var files []string
	for _, p := range strings.Split(*dets, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			m, _ := filepath.Glob(filepath.Join(p, "*.safetensors"))
			files = append(files, m...)
			continue
		}
		files = append(files, p)
	}
	if len(files) == 0 {
		return usagef("--detectors names no detector file")
	}
	var loaded []*detect.Detector
	defer func() {
		for _, d := range loaded {
			d.Free()
		}
	}()
	for _, p := range files {
		d, err := detect.Load(p, e.device)
		if err != nil {
			return usagef("--detectors: %v", err)
		}
		loaded = append(loaded, d)
	}
	var fset []experiment.DEFingerprint
	for _, f := range fps {
		fp, err := fingerprint.Load(f.path)
		if err != nil {
			return usagef("--fingerprint: %s is not a fingerprint file: %v", f.path, err)
		}
		cal := fingerprint.CalibrationPath(f.path)
		c, err := fingerprint.LoadCalibration(cal, fp)
		if err != nil {
			return usagef("--fingerprint %s: its calibration %s: %v (run `conferral calibrate` first)", f.path, cal, err)
		}
		rule := fingerprint.Rule{Theta: fingerprint.DefaultThreshold, Calibration: c}
		if err := rule.Check(fp); err != nil {
			return usagef("--fingerprint %s: %v", f.path, err)
		}
		i := experiment.PickDetector(loaded, fp)
		if i < 0 {
			return usagef("--detectors: none was set against %s fingerprints (%s)", fp.Meta.Method(), f.path)
		}
		name := f.name
		if name == "" {
			name = filepath.Base(filepath.Dir(f.path)) + "/" + filepath.Base(f.path)
		}
		fset = append(fset, experiment.DEFingerprint{Name: name, Path: f.path, FP: fp, Rule: rule, Detector: loaded[i], DetectorPath: files[i]})
	}
	var sus []experiment.DESuspect
	defer func() {
		for _, s := range sus {
			s.Model.(served).Free()
		}
	}()
	for k, list := range []string{*derived, *indep} {
		for _, p := range strings.Split(list, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			m, spec, err := loadServed(e, p, "", 0)
			if err != nil {
				return usagef("--%s: %s: %v", []string{"derived", "independent"}[k], p, err)
			}
			sus = append(sus, experiment.DESuspect{Path: p, Arch: spec.Arch, Derived: k == 0, Model: m})
		}
	}
	_, test, err := df.load()
	if err != nil {
		return err
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	st := &experiment.DetectEvadeStudy{Suspects: sus, Fingerprints: fset, FPRs: rates, Evasions: evs, Test: test, Limit: *limit,
		Mix: *mix, Batch: *batch, Threads: threadsFlag(fs), Seed: *seed, Describe: *describe,
		Command: "conferral experiment evasion detect-evade " + strings.Join(quoted, " ")}
	if *seqOn {
		st.Sequential = &fingerprint.Sequential{Batch: *seqBatch, Seed: *seed}
	}
	res, err := st.Run(ctx, report.Dir(*out), e.progress.Report)
	if err != nil {
		return err
	}
	e.progress.done()
	var b strings.Builder
	for _, r := range res.Rows {
		fmt.Fprintf(&b, "%s / %s / %s: %s (fingerprint accuracy %.3f, %d keys flagged), benign accuracy %.4f\n", r.Fingerprint, r.Suspect, r.Setting,
			r.Verdict.Outcome, r.Verdict.Accuracy, r.KeysFlagged, float64(r.Correct)/float64(max(1, r.Benign)))
	}
	fmt.Fprintf(&b, "(report: %s)\n", report.Dir(*out).Path("README.md"))
	return e.emit(res, b.String())
}
