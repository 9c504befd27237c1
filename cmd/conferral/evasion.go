package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/experiment"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/report"
)

// runEvasion is `conferral experiment evasion` (issue 17, item 1): the
// non-evasiveness game of §5.1. Every file is loaded, and every flag
// checked, before the adversary crafts anything.
func runEvasion(ctx context.Context, e *env, args []string) error {
	if len(args) > 0 && args[0] == "detect-evade" {
		return runDetectEvade(ctx, e, args[1:])
	}
	fs := flag.NewFlagSet("experiment evasion", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	source := fs.String("source", "", "the source model, which the adversary holds (white-box); required")
	surr := fs.String("surrogates", "", "comma-separated adversary's surrogates (trained on the source's labels, on its half); required")
	refs := fs.String("references", "", "comma-separated adversary's references (trained on ground truth, on its half); required")
	scorer := fs.String("detector-model", "", "the model the detectors score on (default: --source)")
	var groups []experiment.EvasionGroup
	fs.Func("fingerprints", "[NAME=]comma-separated fingerprint files of the defender, judged as one group (repeat for more groups; NAME defaults to the first file's method); at least one", func(v string) error {
		name, list, ok := strings.Cut(v, "=")
		if !ok {
			name, list = "", v
		}
		g := experiment.EvasionGroup{Name: name}
		for _, p := range strings.Split(list, ",") {
			if p = strings.TrimSpace(p); p != "" {
				g.Paths = append(g.Paths, p)
			}
		}
		if len(g.Paths) == 0 {
			return fmt.Errorf("%q names no file", v)
		}
		groups = append(groups, g)
		return nil
	})
	out := fs.String("out", "runs/evasion", "report folder")
	describe := fs.String("describe", "", "how the models were made, for the report")
	batches := fs.String("batches", "1,10,100", "batch sizes of the game")
	trials := fs.Int("trials", 1000, "games per batch size")
	fpr := fs.Float64("fpr", 0.05, "false-positive rate of the batch rule on the adversary's benign inputs")
	boot := fs.Int("bootstrap", 1000, "bootstrap resamples of each AUC")
	cnnEpochs := fs.Int("cnn-epochs", 10, "epochs of the CNN detector on the adversary's own examples (0: no CNN detector)")
	saveDets := fs.String("save-detectors", "", "folder to save every detector in, once per kind of fingerprint, for `serve-model --detector` (set on the adversary's own examples only)")
	cfgOf := cbimFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *source == "" || *surr == "" || *refs == "" || len(groups) == 0 {
		return usagef("--source, --surrogates, --references and --fingerprints are required")
	}
	var bs []int
	for _, f := range strings.Split(*batches, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return usagef("--batches: %q is not a positive whole number", f)
		}
		bs = append(bs, n)
	}
	if *trials < 1 || !(*fpr > 0 && *fpr < 0.5) || *boot < 0 || *cnnEpochs < 0 {
		return usagef("want positive --trials, --fpr in (0, 0.5), --bootstrap ≥ 0 and --cnn-epochs ≥ 0")
	}
	cfg, err := cfgOf()
	if err != nil {
		return err
	}
	if cfg.Natural {
		return usagef("--natural does not apply: each group's fingerprints say what they are, and the adversary imitates each kind")
	}
	if setFlags(fs, []string{"eps"}) != nil {
		return usagef("--eps does not apply: the adversary crafts at the ε of each group of C-BIM fingerprints it faces (the algorithm is public)")
	}
	if cfg.CBIM.Steps <= 0 || cfg.Candidates <= 0 {
		return usagef("want positive --steps and --candidates")
	}
	if err := apply(); err != nil {
		return err
	}
	load := func(flagName, list string) ([]*nn.Model, []string, error) {
		return loadModelFiles(e, flagName, list, func(p string) (string, error) { return p, nil }) // the paths name them in the report
	}
	var scm []*nn.Model
	if *scorer != "" { // first: the file a user is likeliest to get wrong
		var err error
		if scm, _, err = load("detector-model", *scorer); err != nil {
			return err
		}
		defer freeAll(scm)
	}
	src, _, err := load("source", *source)
	if err != nil {
		return err
	}
	defer freeAll(src)
	ss, sids, err := load("surrogates", *surr)
	if err != nil {
		return err
	}
	defer freeAll(ss)
	rs, rids, err := load("references", *refs)
	if err != nil {
		return err
	}
	defer freeAll(rs)
	sc, scName := src[0], *source
	if scm != nil {
		sc, scName = scm[0], *scorer
	}
	for i := range groups {
		g := &groups[i]
		for _, p := range g.Paths {
			fp, err := fingerprint.Load(p)
			if err != nil {
				return usagef("--fingerprints: %s is not a fingerprint file: %v", p, err)
			}
			if len(g.FPs) > 0 && (fp.Meta.Attack != g.FPs[0].Meta.Attack || fp.Meta.Eps != g.FPs[0].Meta.Eps) {
				return usagef("--fingerprints: %s is %s, the group's first file %s: one kind and ε per group", p, fp.Meta.Method(), g.FPs[0].Meta.Method())
			}
			g.FPs = append(g.FPs, fp)
		}
		if g.Name == "" {
			g.Name = g.FPs[0].Meta.Method()
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
	st := &experiment.EvasionStudy{
		Adversary: fingerprint.Training{Source: src[0], Surrogates: asModels(ss), References: asModels(rs),
			SurrogateIDs: sids, ReferenceIDs: rids, SourceID: *source, SourceArch: src[0].Spec.Arch},
		Scorer: sc, ScorerName: scName, Test: test, Groups: groups, Craft: cfg, CNNEpochs: *cnnEpochs,
		Batches: bs, Trials: *trials, FPR: *fpr, Boot: *boot, Seed: cfg.Seed, Describe: *describe,
		Command:       "conferral experiment evasion " + strings.Join(quoted, " "),
		SaveDetectors: *saveDets,
	}
	res, err := st.Run(ctx, report.Dir(*out), e.progress.Report)
	if err != nil {
		return err
	}
	e.progress.done()
	var b strings.Builder
	for _, r := range res.Rows {
		g := r.Games[len(r.Games)-1]
		fmt.Fprintf(&b, "%s / %s: AUC %.3f [%.3f, %.3f], win rate at batch %d %.3f [%.3f, %.3f]\n", r.Group, r.Detector, r.AUC, r.AUCLo, r.AUCHi, g.Batch, g.WinRate(), g.Lo, g.Hi)
	}
	for _, f := range res.Saved {
		fmt.Fprintf(&b, "saved detector %s\n", f)
	}
	fmt.Fprintf(&b, "(report: %s)\n", report.Dir(*out).Path("README.md"))
	return e.emit(res, b.String())
}
