package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/suspect"
)

// loadModels loads a comma-separated list of model files.
func loadModels(e *env, list string) ([]*nn.Model, []string, error) {
	var ms []*nn.Model
	var ids []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		m, _, err := nn.Load(p, e.device)
		if err != nil {
			freeAll(ms)
			return nil, nil, err
		}
		sum, err := fileSHA256(p)
		if err != nil {
			freeAll(ms)
			return nil, nil, err
		}
		ms = append(ms, m)
		ids = append(ids, sum)
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

// cbimFlags registers C-BIM's and Extract's parameters.
func cbimFlags(fs *flag.FlagSet) func() fingerprint.Config {
	def := fingerprint.DefaultConfig()
	eps := fs.Float64("eps", def.CBIM.Eps, "L∞ radius ε of the perturbation, pixel units [0,1]")
	alpha := fs.Float64("alpha", def.CBIM.Alpha, "C-BIM step size")
	steps := fs.Int("steps", def.CBIM.Steps, "C-BIM steps")
	dropout := fs.Float64("dropout", def.CBIM.Dropout, "ensemble dropout (§6.2)")
	best := fs.Bool("best-iterate", false, "return each example's first most conferrable C-BIM iterate instead of the last")
	loss := def.CBIM.Loss
	fs.Func("loss", "C-BIM objective: linear (eq. 14), ce (the later published version) or geometric (geometric means of Surr and 1 − Ref) (default linear)", func(v string) (err error) {
		loss, err = attack.ParseLoss(v)
		return err
	})
	tau := unitFlag(fs, "tau", def.Tau, "minimal conferrability τ on the training models, in [0,1]")
	tauSurr := unitFlag(fs, "tau-surr", def.TauSurr, "minimal share τ_S of the training surrogates that must carry an example's key, in [0,1] (1: every one; 0: only τ filters)")
	cands := fs.Int("candidates", def.Candidates, "start points to attack")
	batch := fs.Int("batch", def.Batch, "start points per C-BIM batch")
	seed := fs.Int64("seed", def.Seed, "seed of start points and dropout")
	return func() fingerprint.Config {
		c := def
		c.CBIM.Eps, c.CBIM.Alpha, c.CBIM.Steps, c.CBIM.Dropout, c.CBIM.Loss, c.CBIM.Best = *eps, *alpha, *steps, *dropout, loss, *best
		c.Tau, c.TauSurr, c.Candidates, c.Batch, c.Seed = *tau, *tauSurr, *cands, *batch, *seed
		return c
	}
}

type extractResult struct {
	Fingerprint   string  `json:"fingerprint"`
	Fingerprints  int     `json:"fingerprints"`
	Candidates    int     `json:"candidates"`
	Eps           float64 `json:"eps"`
	Tau           float64 `json:"tau"`
	TauSurr       float64 `json:"tau_surr"`
	Loss          string  `json:"loss"`
	ReferenceRate float64 `json:"reference_rate"`
	Commitment    string  `json:"commitment"`
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
	calib := fs.String("calibration", "", "comma-separated held-out references (trained independently, not in --references) that measure the p-value's base rate")
	out := fs.String("out", "", "fingerprint file to write; required")
	sheet := fs.String("sheet", "", "also write a contact sheet PNG here")
	start := fs.String("start", fingerprint.StartTest, "where C-BIM starts: test (the dataset's test split, which no model was trained on; separates testing models better, docs/results/fingerprint) or train (the --split data, as Algorithm 2 prints it)")
	cfgOf := cbimFlags(fs)
	var of onnxFlags
	of.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *source == "" || *surr == "" || *refs == "" || *out == "" {
		return usagef("--source, --surrogates, --references and --out are required")
	}
	if err := apply(); err != nil {
		return err
	}
	cfg := cfgOf()
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
	ss, sids, err := loadModels(e, *surr)
	if err != nil {
		return err
	}
	defer freeAll(ss)
	rs, rids, err := loadModels(e, *refs)
	if err != nil {
		return err
	}
	defer freeAll(rs)
	tm := fingerprint.Training{Source: src, Surrogates: asModels(ss), References: asModels(rs),
		SurrogateIDs: sids, ReferenceIDs: rids, SourceID: srcID, SourceArch: srcArch}
	fp, err := fingerprint.Extract(ctx, tm, d, cfg)
	if err != nil {
		return err
	}
	if *calib != "" {
		cs, _, err := loadModels(e, *calib)
		if err != nil {
			return err
		}
		err = fingerprint.Calibrate(ctx, fp, asModels(cs))
		freeAll(cs)
		if err != nil {
			return err
		}
	}
	if err := fp.Save(*out); err != nil {
		return err
	}
	if *sheet != "" {
		if err := fingerprint.WriteSheet(*sheet, fp, 32); err != nil {
			return err
		}
	}
	com, _ := fp.Commitment()
	r := extractResult{Fingerprint: *out, Fingerprints: fp.N, Candidates: fp.Meta.Candidates, Eps: cfg.CBIM.Eps, Tau: cfg.Tau,
		TauSurr: cfg.TauSurr, Loss: fp.Meta.Loss, ReferenceRate: fp.Meta.ReferenceRate, Commitment: com, Sheet: *sheet}
	return e.emit(r, fmt.Sprintf("%s: %d fingerprints from %d start points (%s loss, ε = %g, τ = %g, τ_S = %g), commitment %s\n",
		*out, fp.N, fp.Meta.Candidates, fp.Meta.Loss, cfg.CBIM.Eps, cfg.Tau, cfg.TauSurr, com))
}

func runVerify(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	apply := common(fs, e)
	fpPath := fs.String("fingerprint", "", "fingerprint file; required")
	suspects := fs.String("suspect", "", "comma-separated suspect model files or prediction endpoint URLs (http://host:port/v2/models/NAME, http://host:port/v1/models/NAME); required")
	theta := fs.Float64("theta", fingerprint.DefaultThreshold, "verification threshold θ on fingerprint accuracy")
	base := fs.Float64("base-rate", 0, "agreement rate of independent models for the p-value (default: the fingerprint's reference rate)")
	remote := remoteFlags(fs)
	var of onnxFlags
	of.register(fs) // after remoteFlags: shares its --layout and --scale
	if err := parse(fs, args); err != nil {
		return err
	}
	if *fpPath == "" || *suspects == "" {
		return usagef("--fingerprint and --suspect are required")
	}
	if err := apply(); err != nil {
		return err
	}
	fp, err := fingerprint.Load(*fpPath)
	if err != nil {
		return err
	}
	var verdicts []*fingerprint.Verdict
	var sb strings.Builder
	for _, p := range strings.Split(*suspects, ",") {
		var v *fingerprint.Verdict
		note := ""
		if isRemote(p) { // a prediction endpoint
			if v, note, err = verifyRemote(ctx, remote, strings.TrimSpace(p), fp, *theta, *base); err != nil {
				return err
			}
		} else {
			m, err := loadLocal(e, p, &of) // an .onnx file, a model or a deployed ensemble
			if err != nil {
				return err
			}
			v, err = fingerprint.Verify(ctx, &suspect.Local{Model: m, Name: p}, fp, *theta, *base)
			m.Free()
			if err != nil {
				return err
			}
		}
		verdicts = append(verdicts, v)
		word := "NOT a surrogate"
		if v.Surrogate {
			word = "SURROGATE"
		}
		fmt.Fprintf(&sb, "%-40s %-15s fingerprint accuracy %.3f (%d/%d), θ = %.2f, p = %.2g\n", p, word, v.Accuracy, v.Agree, v.Fingerprints, v.Threshold, v.PValue)
		sb.WriteString(note)
	}
	if len(verdicts) > 0 && !verdicts[0].Calibrated {
		fmt.Fprintf(&sb, "(p-values test against the training references' agreement, %.2f, which C-BIM drives down, so they overstate the evidence; "+
			"extract with --calibration, or give --base-rate, for a held-out base rate)\n", fp.Meta.ReferenceRate)
	}
	return e.emit(verdicts, sb.String())
}
