package experiment

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// A benchmark judges held-out suspects — derived and independent models
// that took part in no choice of the rule — by a frozen decision rule, and
// reports the error rates with their intervals.

// BenchSuspect is one held-out suspect and what it truly is.
type BenchSuspect struct {
	Suspect suspect.Suspect `json:"-"`
	Derived bool            `json:"derived"` // ground truth: made from the source
	Arch    string          `json:"arch"`    // for the report
	Recipe  string          `json:"recipe"`  // how it was trained or derived
	Via     string          `json:"via"`     // local, onnx or endpoint
}

// Benchmark is the frozen rule and its suspects.
type Benchmark struct {
	Fingerprint *fingerprint.Fingerprint
	Rule        fingerprint.Rule
	Suspects    []BenchSuspect
	// Dataset and Scale name what the report is about.
	Dataset, Scale string
	Command        string
	Seed           uint64 // of the AUC bootstrap
}

// BenchRow is one suspect's result: the full verdict, and the sequential
// one when the rule has a calibration.
type BenchRow struct {
	BenchSuspect
	Name      string               `json:"name"`
	Full, Seq *fingerprint.Verdict `json:",omitempty"`
}

// BenchResult is what the benchmark measured.
type BenchResult struct {
	RuleHash string
	// SeqRuleHash is the hash of the sequential rule each suspect is also
	// judged by (its seed set per suspect), empty without calibration.
	SeqRuleHash string
	Commitment  string
	Rows        []BenchRow
	// Error counts over the full verdicts: false positives are independent
	// models called derived, false negatives derived models not called
	// derived (inconclusive included), each with a Clopper–Pearson 95 %
	// interval; Inconclusive counts both kinds.
	FP, FN, Derived, Independent, Inconclusive int
	FPR, FNR                                   [3]float64 // rate, low, high
	// ThetaFP and ThetaFN count the errors of the paper's point rule,
	// fingerprint accuracy ≥ θ, on the same suspects, for comparison.
	ThetaFP, ThetaFN int
	AUC              float64
	AUCInterval      [2]float64 // bootstrap 95 %
	MedianQueries    float64    // sequential
}

// Run records the rule's hash before any suspect is judged, judges each,
// and writes the report into dir.
func (b *Benchmark) Run(ctx context.Context, dir report.Dir, progress shared.Reporter) (*BenchResult, error) {
	if err := b.Rule.Check(b.Fingerprint); err != nil {
		return nil, fmt.Errorf("benchmark: %w", err)
	}
	if err := dir.Create(); err != nil {
		return nil, err
	}
	hash, err := b.Rule.Hash(b.Fingerprint)
	if err != nil {
		return nil, err
	}
	com, _ := b.Fingerprint.Commitment()
	// The sequential test each suspect also gets (a calibrated rule
	// without one gets the default, seeded by the suspect's place) is
	// frozen too: its hash is the rule's with that test at seed 0.
	seqRule := b.Rule
	if seqRule.Calibration != nil && seqRule.Sequential == nil {
		seqRule.Sequential = &fingerprint.Sequential{}
	}
	seqHash := ""
	if seqRule.Sequential != nil {
		if seqHash, err = seqRule.Hash(b.Fingerprint); err != nil {
			return nil, err
		}
	}
	// The rule is frozen on disk before the first suspect is asked.
	frozen := fmt.Sprintf("rule %s\nfingerprint %s\ntheta %g\nfpr %g\ncalibrated %v\n", hash, com, b.Rule.Theta, b.Rule.FPR, b.Rule.Calibration != nil)
	if seqHash != "" {
		frozen += fmt.Sprintf("sequential %s\n", seqHash)
	}
	if err := os.WriteFile(dir.Path("RULE"), []byte(frozen), 0o644); err != nil {
		return nil, err
	}
	res := &BenchResult{RuleHash: hash, SeqRuleHash: seqHash, Commitment: com}
	for i, s := range b.Suspects {
		progress.Report(shared.Event{Kind: shared.Progress, Stage: "benchmark", Step: int64(i), Total: int64(len(b.Suspects)), Message: s.Suspect.String()})
		row := BenchRow{BenchSuspect: s, Name: s.Suspect.String()}
		full := b.Rule
		full.Sequential = nil
		if row.Full, err = fingerprint.Verify(ctx, s.Suspect, b.Fingerprint, full); err != nil {
			return nil, fmt.Errorf("benchmark: %w", err)
		}
		if b.Rule.Calibration != nil {
			seq := b.Rule
			if seq.Sequential == nil {
				seq.Sequential = &fingerprint.Sequential{Seed: int64(i + 1)}
			}
			if row.Seq, err = fingerprint.Verify(ctx, s.Suspect, b.Fingerprint, seq); err != nil {
				return nil, fmt.Errorf("benchmark: %w", err)
			}
		}
		res.Rows = append(res.Rows, row)
	}
	res.score(b.Seed, cmp.Or(b.Rule.Theta, fingerprint.DefaultThreshold))
	return res, b.write(dir, res)
}

// score counts errors and computes the AUC with a bootstrap interval.
func (r *BenchResult) score(seed uint64, theta float64) {
	var pos, neg, queries []float64
	for _, row := range r.Rows {
		v := row.Full
		if v.Outcome == fingerprint.Inconclusive {
			r.Inconclusive++
		}
		if row.Derived {
			r.Derived++
			pos = append(pos, v.Accuracy)
			if v.Outcome != fingerprint.Derived {
				r.FN++
			}
			if v.Accuracy < theta {
				r.ThetaFN++
			}
		} else {
			r.Independent++
			neg = append(neg, v.Accuracy)
			if v.Outcome == fingerprint.Derived {
				r.FP++
			}
			if v.Accuracy >= theta {
				r.ThetaFP++
			}
		}
		if row.Seq != nil {
			queries = append(queries, float64(row.Seq.Fingerprints))
		}
	}
	rate := func(k, n int) [3]float64 {
		if n == 0 {
			return [3]float64{math.NaN(), 0, 1}
		}
		lo, hi := stats.ClopperPearson(k, n, 0.95)
		return [3]float64{float64(k) / float64(n), lo, hi}
	}
	r.FPR, r.FNR = rate(r.FP, r.Independent), rate(r.FN, r.Derived)
	r.AUC = fingerprint.AUC(pos, neg)
	r.AUCInterval = [2]float64{math.NaN(), math.NaN()}
	if len(pos) > 0 && len(neg) > 0 {
		rng := rand.New(rand.NewPCG(seed, 0xb007))
		var aucs []float64
		for range 2000 {
			aucs = append(aucs, fingerprint.AUC(resample(rng, pos), resample(rng, neg)))
		}
		slices.Sort(aucs)
		r.AUCInterval = [2]float64{aucs[len(aucs)*25/1000], aucs[len(aucs)*975/1000-1]}
	}
	r.MedianQueries = math.NaN()
	if len(queries) > 0 {
		slices.Sort(queries)
		m := len(queries) / 2
		r.MedianQueries = queries[m]
		if len(queries)%2 == 0 {
			r.MedianQueries = (queries[m-1] + queries[m]) / 2
		}
	}
}

func resample(r *rand.Rand, xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i := range out {
		out[i] = xs[r.IntN(len(xs))]
	}
	return out
}

func (b *Benchmark) write(dir report.Dir, r *BenchResult) error {
	var md strings.Builder
	fp := b.Fingerprint
	fmt.Fprintf(&md, "# Held-out benchmark of suspects (%s, %s)\n\nReproduce with:\n\n    %s\n\n", b.Dataset, b.Scale, b.Command)
	fmt.Fprintf(&md, "Frozen before any suspect was judged (file `RULE`): decision rule `%s`, fingerprint commitment `%s` (%d fingerprints: %s, τ = %g, τ_S = %g).\n\n",
		r.RuleHash, r.Commitment, fp.N, fp.Meta.Method(), fp.Meta.Tau, fp.Meta.TauSurr)
	if r.SeqRuleHash != "" {
		fmt.Fprintf(&md, "Sequential rule `%s` (the same rule with Wald's test, asked in a random order seeded by each suspect's place).\n\n", r.SeqRuleHash)
	}
	if c := b.Rule.Calibration; c != nil {
		fpr := cmp.Or(b.Rule.FPR, c.FPR) // the rule's level, as Verify reads it
		fmt.Fprintf(&md, "Calibrated by %d independent models (%s), none of them among the suspects: agreement Beta(%.3g, %.3g), mean %.2f ± %.2f; the rule accuses from fingerprint accuracy %.3f at a false-positive rate of %g by the %s test (the paper's θ = %g shown beside it).\n\n",
			len(c.Models), strings.Join(c.Architectures(), ", "), c.Fit.Alpha, c.Fit.Beta, c.Fit.Mean(), c.Fit.SD(), float64(c.Critical(fpr, nil))/float64(c.Fingerprints), fpr, c.Test(fpr), b.Rule.Theta)
		for _, w := range c.WarningsAt(fpr) {
			fmt.Fprintf(&md, "**Caution:** %s.\n\n", w)
		}
	} else {
		fmt.Fprintf(&md, "**Uncalibrated:** the rule reads each suspect's 95 %% interval against θ = %g; no p-value.\n\n", b.Rule.Theta)
	}
	fmt.Fprintf(&md, "## Result\n\n")
	fmt.Fprintf(&md, "- %d distinct suspects: %d derived, %d independent.\n", len(r.Rows), r.Derived, r.Independent)
	fmt.Fprintf(&md, "- **False-positive rate %s** (%d of %d independent models called derived; 95%% interval %.3f–%.3f).\n", ratio(r.FPR), r.FP, r.Independent, r.FPR[1], r.FPR[2])
	fmt.Fprintf(&md, "- **False-negative rate %s** (%d of %d derived models not called derived; 95%% interval %.3f–%.3f).\n", ratio(r.FNR), r.FN, r.Derived, r.FNR[1], r.FNR[2])
	fmt.Fprintf(&md, "- Inconclusive verdicts: %d of %d.\n", r.Inconclusive, len(r.Rows))
	theta := cmp.Or(b.Rule.Theta, fingerprint.DefaultThreshold)
	fmt.Fprintf(&md, "- For comparison, the paper's point rule (fingerprint accuracy ≥ θ = %g) on the same suspects: %d of %d independent models accused, %d of %d derived models missed.\n",
		theta, r.ThetaFP, r.Independent, r.ThetaFN, r.Derived)
	fmt.Fprintf(&md, "- ROC AUC of fingerprint accuracy %.3f (bootstrap 95%% interval %.3f–%.3f).\n", r.AUC, r.AUCInterval[0], r.AUCInterval[1])
	if !math.IsNaN(r.MedianQueries) {
		fmt.Fprintf(&md, "- Sequential test: median %.0f answers to a decision, of %d fingerprints.\n", r.MedianQueries, fp.N)
	}
	fmt.Fprintf(&md, "\n## Suspects\n\n")
	var rows [][]string
	for _, row := range r.Rows {
		truth := "independent"
		if row.Derived {
			truth = "derived"
		}
		p, seq := "–", "–"
		if row.Full.PValue != nil {
			p = fmt.Sprintf("%.2g / %.2g", *row.Full.PValue, *row.Full.EmpiricalP)
		}
		if row.Seq != nil {
			seq = fmt.Sprintf("%s after %d", row.Seq.Outcome, row.Seq.Fingerprints)
		}
		mark := "right"
		if (row.Derived && row.Full.Outcome != fingerprint.Derived) || (!row.Derived && row.Full.Outcome == fingerprint.Derived) {
			mark = "**wrong**"
		}
		rows = append(rows, []string{row.Suspect.String(), truth, row.Arch, row.Recipe, row.Via,
			fmt.Sprintf("%.3f [%.2f, %.2f]", row.Full.Accuracy, row.Full.Interval[0], row.Full.Interval[1]), p, row.Full.Outcome, mark, seq})
	}
	report.Table(&md, []string{"suspect", "truth", "arch", "recipe", "via", "fingerprint accuracy [95%]", "p (fit / empirical)", "verdict", "", "sequential"}, rows)
	var groups []report.Series
	for _, g := range []bool{true, false} {
		s := report.Series{Name: map[bool]string{true: "derived", false: "independent"}[g]}
		for _, row := range r.Rows {
			if row.Derived == g {
				s.Y = append(s.Y, row.Full.Accuracy)
			}
		}
		groups = append(groups, s)
	}
	title := fmt.Sprintf("Fingerprint accuracy: θ = %g", b.Rule.Theta)
	if c := b.Rule.Calibration; c != nil {
		title += fmt.Sprintf(", calibrated threshold %.2f", c.Summary.Accuracy)
	}
	if err := report.Histogram(dir.Path("histogram.png"), title, "fingerprint accuracy", "fraction of models", groups, 20); err != nil {
		return err
	}
	fmt.Fprintf(&md, "\n![derived and independent agreement](histogram.png)\n")
	return os.WriteFile(dir.Path("README.md"), []byte(md.String()), 0o644)
}

func ratio(r [3]float64) string {
	if math.IsNaN(r[0]) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", r[0])
}

// WriteSummary writes dir/README.md over benchmarks of the same suspects
// by several fingerprints (extraction seeds): each fingerprint's error
// rates, and each suspect's agreement spread across them.
func WriteSummary(dir report.Dir, describe, command string, names []string, rs []*BenchResult) error {
	if len(rs) == 0 {
		return fmt.Errorf("benchmark summary: no results")
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Held-out benchmark over %d fingerprints (%s)\n\nReproduce with:\n\n    %s\n\n", len(rs), describe, command)
	fmt.Fprintf(&md, "Each fingerprint was extracted with its own seed and calibrated on its own; its decision rule was frozen (hash below, and `RULE` in its folder) before any suspect was judged. "+
		"The same %d distinct suspects (%d derived, %d independent) are judged by each.\n\n", len(rs[0].Rows), rs[0].Derived, rs[0].Independent)
	var rows [][]string
	var fps, fns, n0, n1 int
	for i, r := range rs {
		q := "–"
		if !math.IsNaN(r.MedianQueries) {
			q = fmt.Sprintf("%.0f", r.MedianQueries)
		}
		rows = append(rows, []string{fmt.Sprintf("[%s](%s/README.md)", names[i], names[i]), fmt.Sprintf("`%.16s…`", r.RuleHash),
			fmt.Sprintf("%d/%d = %.3f (≤ %.3f)", r.FP, r.Independent, r.FPR[0], r.FPR[2]), fmt.Sprintf("%d/%d = %.3f (≤ %.3f)", r.FN, r.Derived, r.FNR[0], r.FNR[2]),
			fmt.Sprint(r.Inconclusive), fmt.Sprintf("%d / %d", r.ThetaFP, r.ThetaFN), fmt.Sprintf("%.3f [%.3f, %.3f]", r.AUC, r.AUCInterval[0], r.AUCInterval[1]), q})
		fps, fns, n0, n1 = fps+r.FP, fns+r.FN, n0+r.Independent, n1+r.Derived
	}
	report.Table(&md, []string{"fingerprint", "rule", "false positives (95% upper)", "false negatives (95% upper)", "inconclusive", "at θ: false positives / negatives", "AUC [bootstrap 95%]", "median queries (SPRT)"}, rows)
	lo, hi := stats.ClopperPearson(fps, n0, 0.95)
	flo, fhi := stats.ClopperPearson(fns, n1, 0.95)
	fmt.Fprintf(&md, "\nOver all %d verdicts on independent models: false-positive rate %d/%d (95%% interval %.3f–%.3f); on derived models: false-negative rate %d/%d (95%% interval %.3f–%.3f). "+
		"The verdicts of one suspect under different fingerprints are not independent, so these pooled intervals are narrower than the evidence; the per-fingerprint rows are the honest ones.\n\n",
		n0+n1, fps, n0, lo, hi, fns, n1, flo, fhi)
	fmt.Fprintf(&md, "## Each suspect across fingerprints\n\n")
	rows = nil
	for j, row := range rs[0].Rows {
		truth := "independent"
		if row.Derived {
			truth = "derived"
		}
		var accs []float64
		var verdicts []string
		for _, r := range rs {
			accs = append(accs, r.Rows[j].Full.Accuracy)
			verdicts = append(verdicts, r.Rows[j].Full.Outcome)
		}
		rows = append(rows, []string{row.Name, truth, row.Arch, row.Recipe, row.Via, fmt.Sprintf("%.2f–%.2f", slices.Min(accs), slices.Max(accs)), strings.Join(verdicts, ", ")})
	}
	report.Table(&md, []string{"suspect", "truth", "arch", "recipe", "via", "fingerprint accuracy (min–max)", "verdicts"}, rows)
	return os.WriteFile(dir.Path("README.md"), []byte(md.String()), 0o644)
}
