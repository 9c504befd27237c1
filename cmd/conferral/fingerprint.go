package main

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// loadModels loads the model files of a comma-separated list given as
// --flagName, with their sha256 as IDs (loadModelFiles).
func loadModels(e *env, flagName, list string) ([]*nn.Model, []string, error) {
	return loadModelFiles(e, flagName, list, fileSHA256)
}

// loadModelFiles loads the model files of a comma-separated list given as
// --flagName, with id's of each path. A file that is not a model, and a
// list that names none, are usage errors naming the flag.
func loadModelFiles(e *env, flagName, list string, id func(path string) (string, error)) ([]*nn.Model, []string, error) {
	var ms []*nn.Model
	var ids []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		m, _, err := nn.Load(p, e.device)
		if err != nil {
			freeAll(ms)
			return nil, nil, usagef("--%s: %s is not a model: %v", flagName, p, err)
		}
		ms = append(ms, m)
		sum, err := id(p)
		if err != nil {
			freeAll(ms)
			return nil, nil, fmt.Errorf("--%s: %w", flagName, err)
		}
		ids = append(ids, sum)
	}
	if len(ms) == 0 {
		return nil, nil, usagef("--%s names no model", flagName)
	}
	return ms, ids, nil
}

func freeAll(ms []*nn.Model) {
	for _, m := range ms {
		m.Free()
	}
}

func asModels(ms []*nn.Model) []fingerprint.Model {
	out := make([]fingerprint.Model, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// inUnit says whether v lies in [0,1] (NaN does not).
func inUnit(v float64) bool { return v >= 0 && v <= 1 }

// unitFlag registers a float flag that must lie in [0,1]: anything else
// (NaN included) is a usage error when the flags are parsed.
func unitFlag(fs *flag.FlagSet, name string, def float64, usage string) *float64 {
	v := def
	fs.Func(name, fmt.Sprintf("%s (default %g)", usage, def), func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !inUnit(f) {
			return fmt.Errorf("%q is not a number in [0,1]", s)
		}
		v = f
		return nil
	})
	return &v
}

// extractFlags registers C-BIM's and Extract's parameters. The function
// returned builds the extraction request the command line makes: the
// flags it set, and no others (the defaults shown are
// fingerprint.DefaultConfig's, which request.Extract applies); a zero or
// negative --eps, --alpha, --steps, --candidates or --batch is a usage
// error, where the request would read it as the default.
func extractFlags(fs *flag.FlagSet) func() (shared.ExtractArgs, error) {
	def := fingerprint.DefaultConfig()
	eps := fs.Float64("eps", def.CBIM.Eps, "L∞ radius ε of the perturbation, pixel units [0,1]")
	alpha := fs.Float64("alpha", def.CBIM.Alpha, "C-BIM step size")
	steps := fs.Int("steps", def.CBIM.Steps, "C-BIM steps")
	dropout := fs.Float64("dropout", def.CBIM.Dropout, "ensemble dropout (§6.2), in [0,1)")
	best := fs.Bool("best-iterate", false, "return each example's first most conferrable C-BIM iterate instead of the last")
	var shift int
	var noise float64
	fs.Func("shift", "input diversity: attack each C-BIM step on x′ moved by up to this many pixels (0: off)", func(v string) (err error) {
		if shift, err = strconv.Atoi(v); err != nil {
			return errors.New("want a whole number of pixels")
		}
		return attack.CheckDiversity(shift, 0)
	})
	fs.Func("noise", "input diversity: and with Gaussian noise of this standard deviation added, pixel units (0: off)", func(v string) (err error) {
		if noise, err = strconv.ParseFloat(v, 64); err != nil {
			return errors.New("want a number")
		}
		return attack.CheckDiversity(0, noise)
	})
	var loss attack.Loss
	fs.Func("loss", "C-BIM objective: linear (eq. 14), ce (the later published version) or geometric (geometric means of Surr and 1 − Ref) (default linear)", func(v string) (err error) {
		loss, err = attack.ParseLoss(v)
		return err
	})
	tau := unitFlag(fs, "tau", def.Tau, "minimal conferrability τ on the training models, in [0,1]")
	tauSurr := unitFlag(fs, "tau-surr", def.TauSurr, "minimal share τ_S of the training surrogates that must carry an example's key, in [0,1] (1: every one; 0: only τ filters)")
	natural := fs.Bool("natural", false, "candidates are natural test inputs the source misclassifies, unperturbed (its own mistakes: SAC-w), scored and selected by --tau and --tau-surr like C-BIM's; the C-BIM flags (--"+strings.Join(cbimOnlyFlags(), ", --")+") do not apply")
	cands := fs.Int("candidates", def.Candidates, "start points to attack")
	batch := fs.Int("batch", def.Batch, "start points per C-BIM batch")
	seed := fs.Int64("seed", def.Seed, "seed of start points and dropout (0 reads as the default)")
	return func() (shared.ExtractArgs, error) {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if err := positive(set, flagValue{"eps", *eps}, flagValue{"alpha", *alpha}, flagValue{"steps", float64(*steps)},
			flagValue{"candidates", float64(*cands)}, flagValue{"batch", float64(*batch)}); err != nil {
			return shared.ExtractArgs{}, err
		}
		return shared.ExtractArgs{Eps: pick(set, "eps", *eps), Alpha: pick(set, "alpha", *alpha), Steps: pick(set, "steps", *steps),
			Dropout: given(set, "dropout", *dropout), BestIterate: pick(set, "best-iterate", *best), Shift: pick(set, "shift", shift),
			Noise: pick(set, "noise", noise), Loss: string(pick(set, "loss", loss)), Tau: given(set, "tau", *tau), TauSurr: pick(set, "tau-surr", *tauSurr),
			Natural: pick(set, "natural", *natural), Candidates: pick(set, "candidates", *cands), Batch: pick(set, "batch", *batch), Seed: pick(set, "seed", *seed)}, nil
	}
}

// extractConfig is request.Extract for the command line: a setting out of
// range is a usage error, a start point's set named by its flag.
func extractConfig(a shared.ExtractArgs) (fingerprint.Config, error) {
	if _, err := fingerprint.StartPoints(a.Start, nil, nil); err != nil {
		return fingerprint.Config{}, usagef("--%v", err)
	}
	c, err := request.Extract(a)
	if err != nil {
		return c, usageError{err}
	}
	return c, nil
}

// cbimFlags registers C-BIM's and Extract's parameters (extractFlags); the
// function returned is the configuration the command line asks for, as
// request.Extract makes it of the request (a setting out of range is a
// usage error).
func cbimFlags(fs *flag.FlagSet) func() (fingerprint.Config, error) {
	args := extractFlags(fs)
	return func() (fingerprint.Config, error) {
		a, err := args()
		if err != nil {
			return fingerprint.Config{}, err
		}
		return extractConfig(a)
	}
}

// cbimOnlyFlags are the flags of extractFlags that only C-BIM uses: a
// natural extraction runs no C-BIM. They are the request's C-BIM-only
// settings (request.CBIMOnlyNames) as flags.
func cbimOnlyFlags() []string {
	var flags []string
	for _, n := range request.CBIMOnlyNames() {
		flags = append(flags, strings.ReplaceAll(n, "_", "-"))
	}
	return flags
}

// setFlags returns those of names that the command line set, as --name,
// in flag.FlagSet.Visit's (lexicographical) order.
func setFlags(fs *flag.FlagSet, names []string) []string {
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(names, f.Name) {
			set = append(set, "--"+f.Name)
		}
	})
	return set
}

type extractResult struct {
	Fingerprint   string  `json:"fingerprint"`
	Fingerprints  int     `json:"fingerprints"`
	Candidates    int     `json:"candidates"`
	Attack        string  `json:"attack"` // cbim or natural
	Eps           float64 `json:"eps"`
	Tau           float64 `json:"tau"`
	TauSurr       float64 `json:"tau_surr"`
	Loss          string  `json:"loss"`
	ReferenceRate float64 `json:"reference_rate"`
	Commitment    string  `json:"commitment"`
	Signer        string  `json:"signer,omitempty"`
	Sheet         string  `json:"sheet,omitempty"`
}

func runExtract(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("extract", flag.ContinueOnError)
	apply := common(fs, e)
	var df dataFlags
	df.register(fs)
	source := fs.String("source", "", "source model M, a model file or an .onnx file; required")
	surr := fs.String("surrogates", "", "comma-separated training surrogates S; required")
	refs := fs.String("references", "", "comma-separated training references R; required")
	twins := fs.String("twins", "", "comma-separated twins: independent models of the source's own architecture and recipe, other seeds (train --like SOURCE); a key must be rare among them as among R: Confer = Surr·(1 − max(Ref, Twin))")
	calib := fs.String("calibration", "", "comma-separated held-out references (trained independently, not in --references): calibrate the fingerprint with them into OUT.calibration.json")
	out := fs.String("out", "", "fingerprint file to write; required")
	sign := fs.String("sign", "", "sign the fingerprint's commitment with this ed25519 key (conferral keygen)")
	sheet := fs.String("sheet", "", "also write a contact sheet PNG here")
	start := fs.String("start", fingerprint.StartTest, "where C-BIM starts: test (the dataset's test split, which no model was trained on; separates testing models better, docs/results/fingerprint) or train (the --split data, as Algorithm 2 prints it)")
	argsOf := extractFlags(fs)
	var of onnxFlags
	of.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *source == "" || *surr == "" || *refs == "" || *out == "" {
		return usagef("--source, --surrogates, --references and --out are required")
	}
	req, err := argsOf()
	if err != nil {
		return err
	}
	req.Start = *start
	if set := setFlags(fs, cbimOnlyFlags()); req.Natural && len(set) > 0 {
		return usagef("--natural: C-BIM's flags do not apply (a natural fingerprint runs no C-BIM: its examples are the source's own mistakes, unperturbed); drop %s", strings.Join(set, ", "))
	}
	cfg, err := extractConfig(req)
	if err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	var key ed25519.PrivateKey
	if *sign != "" { // before the extraction, so that a wrong key path costs nothing
		var err error
		if key, err = fingerprint.ReadKey(*sign); err != nil {
			return err
		}
	}
	cfg.Progress = e.progress.Report
	d, test, err := df.load()
	if err != nil {
		return err
	}
	if d, err = fingerprint.StartPoints(*start, d, test); err != nil {
		return usagef("--%v", err)
	}
	src, srcID, srcArch, freeSrc, err := loadSource(e, *source, &of)
	if err != nil {
		return err
	}
	defer freeSrc()
	ss, sids, err := loadModels(e, "surrogates", *surr)
	if err != nil {
		return err
	}
	defer freeAll(ss)
	rs, rids, err := loadModels(e, "references", *refs)
	if err != nil {
		return err
	}
	defer freeAll(rs)
	var ts []*nn.Model
	var tids []string
	if *twins != "" {
		if ts, tids, err = loadModels(e, "twins", *twins); err != nil {
			return err
		}
		defer freeAll(ts)
		// A twin in another role would drive its keys' conferrability to 0, or weaken them.
		if err := request.CheckTwins(shared.ExtractArgs{Source: srcID, Surrogates: sids, References: rids, Twins: tids}); err != nil {
			return usagef("--twins: %v", err)
		}
	}
	tm := fingerprint.Training{Source: src, Surrogates: asModels(ss), References: asModels(rs), Twins: asModels(ts),
		SurrogateIDs: sids, ReferenceIDs: rids, TwinIDs: tids, SourceID: srcID, SourceArch: srcArch}
	fp, err := fingerprint.Extract(ctx, tm, d, cfg)
	if err != nil {
		return err
	}
	if key != nil {
		if err := fp.Sign(key); err != nil {
			return err
		}
	}
	if err := fp.Save(*out); err != nil {
		return err
	}
	// A calibration beside OUT belonged to the file just replaced.
	if err := os.Remove(fingerprint.CalibrationPath(*out)); err != nil && !os.IsNotExist(err) {
		return err
	}
	calNote := ""
	if *calib != "" {
		var ms []fingerprint.IndependentModel
		cs, ids, err := loadModels(e, "calibration", *calib)
		if err != nil {
			return err
		}
		for i, m := range cs {
			ms = append(ms, fingerprint.IndependentModel{Suspect: &suspect.Local{Model: m, Name: ids[i]}, Arch: m.Spec.Arch, SHA256: ids[i]})
		}
		c, err := fingerprint.Calibrate(ctx, fp, ms, fingerprint.DefaultFPR)
		freeAll(cs)
		if err != nil {
			return err
		}
		if err := c.Save(fingerprint.CalibrationPath(*out)); err != nil {
			return err
		}
		calNote = fmt.Sprintf("calibrated by %d independent models (%s), agreement %.2f ± %.2f: accusing from %.3f at a false-positive rate of %g → %s\n",
			len(c.Models), strings.Join(c.Architectures(), ", "), c.Fit.Mean(), c.Fit.SD(), c.Summary.Accuracy, c.FPR, fingerprint.CalibrationPath(*out))
		for _, w := range c.Warnings() {
			calNote += "warning: " + w + "\n"
		}
	}
	if *sheet != "" {
		if err := fingerprint.WriteSheet(*sheet, fp, 32); err != nil {
			return err
		}
	}
	com, _ := fp.Commitment()
	r := extractResult{Fingerprint: *out, Fingerprints: fp.N, Candidates: fp.Meta.Candidates, Attack: fp.Meta.Attack, Eps: fp.Meta.Eps, Tau: cfg.Tau,
		TauSurr: cfg.TauSurr, Loss: fp.Meta.Loss, ReferenceRate: fp.Meta.ReferenceRate, Commitment: com, Sheet: *sheet}
	r.Signer = fp.Signer
	signed := "unsigned"
	if fp.Signer != "" {
		signed = "signed by " + fp.Signer
	}
	return e.emit(r, fmt.Sprintf("%s: %d fingerprints from %d start points (%s, τ = %g, τ_S = %g), commitment %s, %s\n%s",
		*out, fp.N, fp.Meta.Candidates, fp.Meta.Method(), cfg.Tau, cfg.TauSurr, com, signed, calNote))
}

// openSuspect opens a suspect named on the command line: a prediction
// endpoint's URL, an .onnx file, or a Conferral model or deployed
// ensemble. note describes what querying it cost (for endpoints);
// free releases it.
func openSuspect(e *env, spec string, remote func() (suspect.RemoteOptions, error), of *onnxFlags, classes []string) (s suspect.Suspect, m fingerprint.IndependentModel, note func() string, free func(), err error) {
	spec = strings.TrimSpace(spec)
	none := func() string { return "" }
	if isRemote(spec) {
		o, err := remote()
		if err != nil {
			return nil, m, nil, nil, err
		}
		o.Classes = classes
		r, err := suspect.NewRemote(spec, o)
		if err != nil {
			return nil, m, nil, nil, err
		}
		budget := "no budget"
		if o.Budget > 0 {
			budget = fmt.Sprintf("budget %d", o.Budget)
		}
		note = func() string {
			return fmt.Sprintf("%-40s %d images sent to the %s endpoint (%s)\n", "", r.Queries(), r.Protocol(), budget)
		}
		return r, fingerprint.IndependentModel{Suspect: r, Arch: "endpoint"}, note, func() {}, nil
	}
	l, err := loadLocal(e, spec, of)
	if err != nil {
		return nil, m, nil, nil, err
	}
	arch := "onnx"
	switch d := l.(type) {
	case *nn.Model:
		arch = d.Spec.Arch
	case *train.Ensemble:
		arch = "ensemble"
	}
	sum, _ := fileSHA256(spec)
	ls := &suspect.Local{Model: l, Name: spec}
	return ls, fingerprint.IndependentModel{Suspect: ls, Arch: arch, SHA256: sum}, none, l.Free, nil
}

// ruleFlags registers the flags of a decision rule; the function returned
// builds the rule for a fingerprint loaded from fpPath.
// ruleFlags registers the decision rule's flags. After parsing, the
// function it returns checks them (a usage error, before any fingerprint
// loads) and gives the rule's calibration by fingerprint: the rule with
// the fingerprint's calibration (--calibration, or the one beside it)
// and the calibration's path.
func ruleFlags(fs *flag.FlagSet) func() (func(fp *fingerprint.Fingerprint, fpPath string) (fingerprint.Rule, string, error), error) {
	theta := unitFlag(fs, "theta", fingerprint.DefaultThreshold, "the paper's threshold θ on fingerprint accuracy: the uncalibrated rule, shown beside the calibrated one")
	calib := fs.String("calibration", "", "calibration file of the fingerprint (conferral calibrate); default: FINGERPRINT.calibration.json when it exists")
	fpr := fs.Float64("fpr", 0, "false-positive rate of the calibrated test (default: the calibration's own, 0.01)")
	seq := fs.Bool("sequential", false, "query the fingerprints in a random order and stop when Wald's SPRT decides (needs a calibration)")
	miss := fs.Float64("miss", 0, "sequential: β, the rate of clearing a model that agrees at --derived-rate (default 0.05)")
	derived := fs.Float64("derived-rate", 0, "sequential: a derived model's agreement rate, H₁ (default θ)")
	batch := fs.Int("batch", 0, "sequential: fingerprints per query (default 10)")
	seed := fs.Int64("order-seed", request.DefaultOrderSeed, "sequential: the seed of the order the fingerprints are asked in")
	return func() (func(fp *fingerprint.Fingerprint, fpPath string) (fingerprint.Rule, string, error), error) {
		a := shared.VerifyArgs{Theta: *theta, FPR: *fpr, Sequential: *seq, Miss: *miss, DerivedRate: *derived, Batch: *batch}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "order-seed" {
				a.OrderSeed = seed
			}
		})
		base, err := request.Verify(a)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return func(fp *fingerprint.Fingerprint, fpPath string) (fingerprint.Rule, string, error) {
			r := base
			if q := base.Sequential; q != nil { // each rule its own, as Check may fill in defaults
				cp := *q
				r.Sequential = &cp
			}
			path := *calib
			if path == "" {
				if _, err := os.Stat(fingerprint.CalibrationPath(fpPath)); err == nil {
					path = fingerprint.CalibrationPath(fpPath)
				}
			}
			if path != "" {
				c, err := fingerprint.LoadCalibration(path, fp)
				if err != nil {
					return r, "", err
				}
				r.Calibration = c
			}
			if err := r.Check(fp); err != nil {
				return r, "", usagef("%v", err)
			}
			return r, path, nil
		}, nil
	}
}

type calibrateResult struct {
	Calibration  string                         `json:"calibration"`
	Fingerprint  string                         `json:"fingerprint"`
	Models       []fingerprint.CalibrationModel `json:"models"`
	Fit          stats.BetaBinomial             `json:"fit"`
	Mean         float64                        `json:"mean"`
	SD           float64                        `json:"sd"`
	FPR          float64                        `json:"fpr"`
	Test         string                         `json:"test"` // empirical or beta-binomial
	Threshold    float64                        `json:"threshold"`
	Theta        float64                        `json:"theta"`
	ThetaFPR     float64                        `json:"theta_fpr"` // the fit's false-positive rate at θ
	Warnings     []string                       `json:"warnings,omitempty"`
	Fingerprints int                            `json:"fingerprints"`
	// Evasion is the evasion check's terms (its Mean, Random and Floor),
	// absent where the calibration cannot make it.
	Evasion *shared.Evasion `json:"evasion,omitempty"`
}

func runCalibrate(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("calibrate", flag.ContinueOnError)
	apply := common(fs, e)
	fpPath := fs.String("fingerprint", "", "fingerprint file; required")
	models := fs.String("models", "", "comma-separated independent models — trained without the source and taking no part in the extraction: model files, .onnx files or prediction endpoint URLs; required")
	fpr := fs.Float64("fpr", fingerprint.DefaultFPR, "target false-positive rate of the calibrated decision")
	out := fs.String("out", "", "calibration file to write (default: FINGERPRINT.calibration.json)")
	remote := remoteFlags(fs)
	var of onnxFlags
	of.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *fpPath == "" || *models == "" {
		return usagef("--fingerprint and --models are required")
	}
	if !(*fpr > 0 && *fpr < 0.5) {
		return usagef("--fpr %g outside (0, 0.5)", *fpr)
	}
	if err := apply(); err != nil {
		return err
	}
	fp, err := fingerprint.Load(*fpPath)
	if err != nil {
		return err
	}
	var ms []fingerprint.IndependentModel
	for _, spec := range strings.Split(*models, ",") {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		_, m, _, free, err := openSuspect(e, spec, remote, &of, fp.Meta.Classes)
		if err != nil {
			return err
		}
		defer free()
		ms = append(ms, m)
	}
	c, err := fingerprint.Calibrate(ctx, fp, ms, *fpr)
	if err != nil {
		return err
	}
	path := cmp.Or(*out, fingerprint.CalibrationPath(*fpPath))
	if err := c.Save(path); err != nil {
		return err
	}
	theta := fingerprint.DefaultThreshold
	thetaK := int(math.Ceil(theta*float64(fp.N) - 1e-9))
	r := calibrateResult{Calibration: path, Fingerprint: c.Fingerprint, Models: c.Models, Fit: c.Fit, Mean: c.Fit.Mean(), SD: c.Fit.SD(),
		FPR: c.FPR, Test: c.Test(c.FPR), Threshold: c.Summary.Accuracy, Theta: theta, ThetaFPR: c.Fit.Tail(thetaK, fp.N), Warnings: c.Warnings(), Fingerprints: fp.N}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %d independent models (%s) on %d fingerprints\n", path, len(c.Models), strings.Join(c.Architectures(), ", "), fp.N)
	for _, m := range c.Models {
		fmt.Fprintf(&sb, "  %-40s %-10s agrees %3d/%d (%.2f)\n", m.Name, m.Arch, m.Agree, fp.N, float64(m.Agree)/float64(fp.N))
	}
	fmt.Fprintf(&sb, "agreement of independent models: beta-binomial Beta(%.3g, %.3g), mean %.2f ± %.2f\n", c.Fit.Alpha, c.Fit.Beta, r.Mean, r.SD)
	fmt.Fprintf(&sb, "decision threshold at a false-positive rate of %g (%s test): fingerprint accuracy ≥ %.3f (%d/%d); the paper's θ = %.2f has a fitted false-positive rate of %.2g\n",
		c.FPR, r.Test, c.Summary.Accuracy, c.Summary.Agree, fp.N, theta, r.ThetaFPR)
	if ev, ok := c.EvasionFloor(fp); ok {
		r.Evasion = &ev
		fmt.Fprintf(&sb, "evasion check: the models' answers other than the key name the true class %.0f%% of the time, a wrapper's random labels %.0f%%; a suspect naming it significantly less often than %.0f%% is not cleared\n",
			100*ev.Mean, 100*ev.Random, 100*ev.Floor)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&sb, "warning: %s\n", w)
	}
	return e.emit(r, sb.String())
}

type verifyResult struct {
	Fingerprint string                 `json:"fingerprint"`
	Commitment  string                 `json:"commitment"`
	Signer      string                 `json:"signer,omitempty"`
	Rule        string                 `json:"rule"`
	Calibration string                 `json:"calibration,omitempty"`
	Verdicts    []*fingerprint.Verdict `json:"verdicts"`
}

func runVerify(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	apply := common(fs, e)
	fpPath := fs.String("fingerprint", "", "fingerprint file; required")
	suspects := fs.String("suspect", "", "comma-separated suspect model files or prediction endpoint URLs (http://host:port/v2/models/NAME, http://host:port/v1/models/NAME); required")
	ruleOf := ruleFlags(fs)
	expect := fs.String("expect-commitment", "", "refuse the fingerprint unless its commitment is this one (the value the defender published)")
	pubkey := fs.String("pubkey", "", "refuse the fingerprint unless it is signed by this ed25519 public key (hex, or a .pub file)")
	remote := remoteFlags(fs)
	var of onnxFlags
	of.register(fs) // after remoteFlags: shares its --layout and --scale
	if err := parse(fs, args); err != nil {
		return err
	}
	if *fpPath == "" || *suspects == "" {
		return usagef("--fingerprint and --suspect are required")
	}
	wantSigner := ""
	if *pubkey != "" {
		var err error
		if wantSigner, err = fingerprint.ParsePublicKey(*pubkey); err != nil {
			return usagef("--pubkey: %v", err)
		}
	}
	calibrated, err := ruleOf()
	if err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	fp, err := fingerprint.Load(*fpPath)
	if err != nil {
		return err
	}
	rule, calPath, err := calibrated(fp, *fpPath)
	if err != nil {
		return err
	}
	res := verifyResult{Fingerprint: *fpPath, Calibration: calPath, Signer: fp.Signer}
	res.Commitment, _ = fp.Commitment()
	res.Rule, _ = rule.Hash(fp)
	if *expect != "" && !strings.EqualFold(strings.TrimSpace(*expect), res.Commitment) {
		return fmt.Errorf("verify: %s has commitment %s, not the expected %s: it is not the fingerprint that was published", *fpPath, res.Commitment, *expect)
	}
	if wantSigner != "" && fp.Signer != wantSigner {
		who := "nobody"
		if fp.Signer != "" {
			who = fp.Signer
		}
		return fmt.Errorf("verify: %s is signed by %s, not by the expected key %s", *fpPath, who, wantSigner)
	}
	signed := "unsigned (conferral keygen, then extract --sign)"
	if fp.Signer != "" {
		signed = "signed by " + fp.Signer
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "fingerprint %s: %d keys, commitment %s, %s; decision rule %.16s…\n", *fpPath, fp.N, res.Commitment, signed, res.Rule)
	if c := rule.Calibration; c != nil {
		fmt.Fprintf(&sb, "calibrated by %s: %d independent models (%s), agreement %.2f ± %.2f\n", calPath, len(c.Models), strings.Join(c.Architectures(), ", "), c.Fit.Mean(), c.Fit.SD())
		for _, w := range c.Warnings() {
			fmt.Fprintf(&sb, "warning: %s\n", w)
		}
	}
	for _, p := range strings.Split(*suspects, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		s, _, note, free, err := openSuspect(e, p, remote, &of, fp.Meta.Classes)
		if err != nil {
			return err
		}
		v, err := fingerprint.VerifyWatched(ctx, s, fp, rule, e.progress.Report)
		free()
		if err != nil {
			return err
		}
		res.Verdicts = append(res.Verdicts, v)
		fmt.Fprintf(&sb, "%-40s %-13s fingerprint accuracy %.3f (%d/%d, 95%% [%.2f, %.2f]), needs %.2f", strings.TrimSpace(p), strings.ToUpper(v.Outcome),
			v.Accuracy, v.Agree, v.Fingerprints, v.Interval[0], v.Interval[1], v.Threshold)
		if v.Calibrated {
			fmt.Fprintf(&sb, ", p = %.2g (fit), %.2g (empirical)", *v.PValue, *v.EmpiricalP)
		}
		if q := v.Sequential; q != nil {
			fmt.Fprintf(&sb, ", sequential: %s after %d answers", q.Decision, q.Used)
		}
		sb.WriteString("\n")
		sb.WriteString(note())
	}
	if rule.Calibration == nil {
		fmt.Fprintf(&sb, "(uncalibrated: verdicts read the interval against θ = %.2f and give no p-value; run `conferral calibrate --fingerprint %s --models ...` with independently trained models for a calibrated test)\n", rule.Theta, *fpPath)
	}
	return e.emit(res, sb.String())
}

func runKeygen(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	out := fs.String("out", "", "private key file to create (mode 0600); the public key goes to OUT.pub; required")
	fs.BoolVar(&e.json, "json", false, "print a machine-readable result on stdout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out is required")
	}
	pub, err := fingerprint.GenerateKey(*out)
	if err != nil {
		return err
	}
	h := hex.EncodeToString(pub)
	return e.emit(map[string]string{"key": *out, "public_key": h, "public_key_file": *out + ".pub"},
		fmt.Sprintf("%s: ed25519 key (keep it private); public key %s in %s.pub — publish it, and sign fingerprints with `conferral extract --sign %s`\n", *out, h, *out, *out))
}
