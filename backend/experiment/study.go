package experiment

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// Setting is one extraction of the fingerprint study: one lever moved away
// from the main setting.
type Setting struct {
	Name  string
	Eps   float64
	Loss  attack.Loss
	Archs []string // architectures of the training models (all when empty)
	Per   int      // training models per architecture and role (all when 0)
	Start string   // where C-BIM starts: fingerprint.StartTest (when empty) or StartTrain
	Best  bool     // C-BIM keeps each example's most conferrable iterate
}

// StartPoints returns the inputs C-BIM starts from in setting s: the test
// split, which no model of the fleet was trained on, so that the training
// models judge them as the suspects will; or the defender's half.
func (ds Data) StartPoints(s Setting) (*data.Dataset, error) {
	return fingerprint.StartPoints(s.Start, ds.Defender, ds.Test)
}

// FingerprintStudy configures the study of Table 2.
type FingerprintStudy struct {
	Main Setting
	Eps  []float64 // ε sweep
	Taus []float64 // τ sweep (filters one attack, no re-run)
	// TauSurrs is the τ_S sweep, crossed with the τ sweep (filters one
	// attack too).
	TauSurrs []float64
	Subsets  []Setting // training-model sweep
	Losses   []attack.Loss
	Starts   []string // start-point sweep (fingerprint.StartTest, StartTrain)
	Best     bool     // also run C-BIM keeping each example's best iterate
	Extract  fingerprint.Config
	Theta    float64
	Command  string
}

// Outcome is how one fingerprint separates the testing models.
type Outcome struct {
	Setting       string
	Eps, Tau      float64
	TauSurr       float64 // τ_S: minimal Transfer to the training surrogates
	Loss          string
	Training      string // training models
	Start         string // where C-BIM started
	Fingerprints  int
	AUC, Gap      float64 // gap = lowest surrogate − highest reference
	MinSurr       float64
	MaxRef        float64
	Correct, Of   int // right verdicts at θ among testing models
	SurrAcc       map[string]float64
	RefAcc        map[string]float64
	fp            *fingerprint.Fingerprint
	surrV, refV   []*fingerprint.Verdict
	trainV        []*fingerprint.Verdict
	trainMembers  []*Member
	testSurr, tRf []*Member
}

func models(ms []*Member) []fingerprint.Model {
	out := make([]fingerprint.Model, len(ms))
	for i, m := range ms {
		out[i] = m.Model
	}
	return out
}

func names(ms []*Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func firstN(ms []*Member, per int, archs []string) []*Member {
	if per <= 0 {
		return ms
	}
	count := map[string]int{}
	var out []*Member
	for _, m := range ms {
		if count[m.Arch] < per {
			out = append(out, m)
			count[m.Arch]++
		}
	}
	return out
}

// verifyAll verifies each member by rule r.
func verifyAll(ctx context.Context, fp *fingerprint.Fingerprint, ms []*Member, r fingerprint.Rule) ([]*fingerprint.Verdict, error) {
	var out []*fingerprint.Verdict
	for _, m := range ms {
		v, err := fingerprint.Verify(ctx, &suspect.Local{Model: m.Model, Name: m.Name}, fp, r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// atTheta is Algorithm 1's decision as the paper states it: fingerprint
// accuracy at or above θ, with no interval. The studies report it to
// compare with the paper's tables; verdicts for a suspect use the rule's
// outcome instead.
func atTheta(v *fingerprint.Verdict) bool { return v.Accuracy >= v.Theta }

// filter is one of Algorithm 2's line-8 thresholds: Confer ≥ Tau and
// Transfer to the training surrogates ≥ TauSurr.
type filter struct{ Tau, TauSurr float64 }

// evaluate crafts once for a setting and scores every filter.
func (st *FingerprintStudy) evaluate(ctx context.Context, f *Fleet, ds Data, s Setting, filters []filter, progress shared.Reporter) ([]*Outcome, error) {
	src := f.Source()
	tm, surr, refs := f.training(s)
	testS, testR := f.Select(Surrogate, true), f.Select(Reference, true)
	cfg := st.Extract
	cfg.CBIM.Eps, cfg.CBIM.Loss, cfg.CBIM.Best, cfg.Progress = s.Eps, s.Loss, s.Best, progress
	progress.Report(shared.Event{Kind: shared.Log, Stage: "study", Message: fmt.Sprintf("setting %s: ε = %g, loss %s, %d training surrogates, %d training references", s.Name, s.Eps, s.Loss, len(surr), len(refs))})
	start, err := ds.StartPoints(s)
	if err != nil {
		return nil, err
	}
	crafted, err := fingerprint.Craft(ctx, tm, start, cfg)
	if err != nil {
		return nil, err
	}
	training := fmt.Sprintf("%d+%d (%s)", len(surr), len(refs), strings.Join(uniqueArchs(surr), ", "))
	var out []*Outcome
	for _, fl := range filters {
		fp := crafted.Select(fl.Tau, fl.TauSurr)
		o := &Outcome{Setting: s.Name, Eps: s.Eps, Tau: fl.Tau, TauSurr: fl.TauSurr, Loss: string(s.Loss), Training: training, Start: cmp.Or(s.Start, fingerprint.StartTest), Fingerprints: fp.N, fp: fp,
			SurrAcc: map[string]float64{}, RefAcc: map[string]float64{}, trainMembers: append(append([]*Member{src}, surr...), refs...), testSurr: testS, tRf: testR}
		if fp.N > 0 {
			if o.surrV, err = verifyAll(ctx, fp, testS, fingerprint.Rule{Theta: st.Theta}); err != nil {
				return nil, err
			}
			if o.refV, err = verifyAll(ctx, fp, testR, fingerprint.Rule{Theta: st.Theta}); err != nil {
				return nil, err
			}
			if o.trainV, err = verifyAll(ctx, fp, o.trainMembers, fingerprint.Rule{Theta: st.Theta}); err != nil {
				return nil, err
			}
		}
		var ps, rs []float64
		for i, v := range o.surrV {
			ps = append(ps, v.Accuracy)
			o.SurrAcc[testS[i].Name] = v.Accuracy
			if atTheta(v) {
				o.Correct++
			}
		}
		for i, v := range o.refV {
			rs = append(rs, v.Accuracy)
			o.RefAcc[testR[i].Name] = v.Accuracy
			if !atTheta(v) {
				o.Correct++
			}
		}
		o.Of = len(testS) + len(testR)
		if len(ps) > 0 && len(rs) > 0 {
			o.AUC, o.MinSurr, o.MaxRef = fingerprint.AUC(ps, rs), slices.Min(ps), slices.Max(rs)
			o.Gap = o.MinSurr - o.MaxRef
		} else {
			o.AUC, o.Gap = math.NaN(), math.NaN()
		}
		out = append(out, o)
	}
	return out, nil
}

// training returns the defender's training models of setting s: the source
// and the training surrogates and references of its architectures.
func (f *Fleet) training(s Setting) (tm fingerprint.Training, surr, refs []*Member) {
	src := f.Source()
	surr = firstN(f.Select(Surrogate, false, s.Archs...), s.Per, s.Archs)
	refs = firstN(f.Select(Reference, false, s.Archs...), s.Per, s.Archs)
	return fingerprint.Training{Source: src.Model, Surrogates: models(surr), References: models(refs),
		SurrogateIDs: names(surr), ReferenceIDs: names(refs), SourceID: src.Name, SourceArch: src.Arch}, surr, refs
}

// Extract crafts a fingerprint of the fleet's source with the training
// models of setting s (Algorithm 2).
func (f *Fleet) Extract(ctx context.Context, ds Data, s Setting, cfg fingerprint.Config) (*fingerprint.Fingerprint, error) {
	tm, _, _ := f.training(s)
	cfg.CBIM.Eps, cfg.CBIM.Loss, cfg.CBIM.Best = s.Eps, s.Loss, s.Best
	start, err := ds.StartPoints(s)
	if err != nil {
		return nil, err
	}
	return fingerprint.Extract(ctx, tm, start, cfg)
}

func uniqueArchs(ms []*Member) []string {
	var out []string
	for _, m := range ms {
		if !slices.Contains(out, m.Arch) {
			out = append(out, m.Arch)
		}
	}
	return out
}

// Run executes the study and writes its report into dir.
func (st *FingerprintStudy) Run(ctx context.Context, f *Fleet, ds Data, dir report.Dir, progress shared.Reporter) ([]*Outcome, error) {
	if err := dir.Create(); err != nil {
		return nil, err
	}
	var all []*Outcome
	mainF := filter{st.Extract.Tau, st.Extract.TauSurr}
	var filters []filter // mainF first: the cross product starts with it
	for _, tau := range append([]float64{mainF.Tau}, st.Taus...) {
		for _, ts := range append([]float64{mainF.TauSurr}, st.TauSurrs...) {
			filters = append(filters, filter{tau, ts})
		}
	}
	filters = uniq(filters)
	main, err := st.evaluate(ctx, f, ds, st.Main, filters, progress)
	if err != nil {
		return nil, err
	}
	all = append(all, main...)
	mainO := main[0] // filters[0] is mainF
	var settings []Setting
	for _, e := range st.Eps {
		if e != st.Main.Eps {
			s := st.Main
			s.Name, s.Eps = fmt.Sprintf("eps=%g", e), e
			settings = append(settings, s)
		}
	}
	for _, l := range st.Losses {
		if l != st.Main.Loss {
			s := st.Main
			s.Name, s.Loss = "loss="+string(l), l
			settings = append(settings, s)
		}
	}
	for _, start := range st.Starts {
		if start != cmp.Or(st.Main.Start, fingerprint.StartTest) {
			s := st.Main
			s.Name, s.Start = "start="+start, start
			settings = append(settings, s)
		}
	}
	if st.Best && !st.Main.Best {
		s := st.Main
		s.Name, s.Best = "best iterate", true
		settings = append(settings, s)
	}
	for _, sub := range st.Subsets {
		s := st.Main
		s.Name, s.Archs, s.Per = sub.Name, sub.Archs, sub.Per
		settings = append(settings, s)
	}
	for _, s := range settings {
		os, err := st.evaluate(ctx, f, ds, s, []filter{mainF}, progress)
		if err != nil {
			return nil, err
		}
		all = append(all, os...)
	}
	return all, st.write(dir, f, mainO, all)
}

// uniq returns fs without repeats, in their first order.
func uniq(fs []filter) []filter {
	var out []filter
	for _, f := range fs {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func (o *Outcome) filter() filter { return filter{o.Tau, o.TauSurr} }

// mainOrEps says whether o belongs on the ε plots: the main setting's own
// filter, or another ε.
func (o *Outcome) mainOrEps(mainO *Outcome) bool {
	return o.Setting == mainO.Setting && o.filter() == mainO.filter() || strings.HasPrefix(o.Setting, "eps=")
}

func startText(start string) string {
	if start == fingerprint.StartTrain {
		return "correctly classified inputs of the defender's half, the data the training models were fit on (Algorithm 2 as printed)"
	}
	return "correctly classified inputs of the test split, which no model of the fleet was trained on"
}

func pct(v float64) string { return fmt.Sprintf("%.2f", v) }

func (st *FingerprintStudy) write(dir report.Dir, f *Fleet, mainO *Outcome, all []*Outcome) error {
	var md strings.Builder
	fmt.Fprintf(&md, "# Fingerprint study (the paper's Table 2 at CPU scale)\n\nReproduce with:\n\n    %s\n\n", st.Command)
	fmt.Fprintf(&md, "Main setting: C-BIM (%s loss), ε = %g (L∞), %d steps of %g, ensemble dropout %g, %d start points, τ = %g, τ_S = %g, θ = %g, seed %d. "+
		"Training models live on the defender's half of the training set, testing models on the adversary's half; no testing model took part in the extraction. "+
		"C-BIM starts from %s.\n\n",
		mainO.Loss, mainO.Eps, st.Extract.CBIM.Steps, st.Extract.CBIM.Alpha, st.Extract.CBIM.Dropout, mainO.fp.Meta.Candidates, mainO.Tau, mainO.TauSurr, st.Theta, st.Extract.Seed, startText(mainO.Start))
	fmt.Fprintf(&md, "**%d fingerprints. ROC AUC %.3f, gap (lowest testing surrogate − highest testing reference) %+.3f, %d of %d testing models verified correctly at θ.**\n\n", mainO.Fingerprints, mainO.AUC, mainO.Gap, mainO.Correct, mainO.Of)
	// Table 2.
	var rows [][]string
	add := func(ms []*Member, vs []*fingerprint.Verdict) {
		for i, m := range ms {
			fa, verdict := "–", "–"
			if i < len(vs) {
				fa = pct(vs[i].Accuracy)
				verdict = "not a surrogate"
				if atTheta(vs[i]) {
					verdict = "surrogate"
				}
			}
			rows = append(rows, []string{m.Name, m.Side(), string(m.Role), m.Arch, fmt.Sprintf("%.4f", m.TestAcc), fa, verdict})
		}
	}
	add(mainO.trainMembers, mainO.trainV)
	add(mainO.testSurr, mainO.surrV)
	add(mainO.tRf, mainO.refV)
	fmt.Fprintf(&md, "## Models\n\n")
	report.Table(&md, []string{"model", "side", "role", "arch", "test accuracy", "fingerprint accuracy", "verdict at θ"}, rows)
	// Sweep.
	rows = nil
	for _, o := range all {
		rows = append(rows, []string{o.Setting, fmt.Sprint(o.Eps), fmt.Sprint(o.Tau), fmt.Sprint(o.TauSurr), o.Loss, o.Training, o.Start, fmt.Sprint(o.Fingerprints),
			fmt.Sprintf("%.3f", o.AUC), fmt.Sprintf("%+.3f", o.Gap), pct(o.MinSurr), pct(o.MaxRef), fmt.Sprintf("%d/%d", o.Correct, o.Of)})
	}
	fmt.Fprintf(&md, "## Levers: AUC and gap as ε, τ, τ_S, the loss, the training models and the start points change\n\n")
	report.Table(&md, []string{"setting", "ε", "τ", "τ_S", "loss", "training models", "start points", "fingerprints", "AUC", "gap", "min surrogate", "max reference", "right at θ"}, rows)
	// Plots.
	var rocs []report.Series
	for _, o := range all {
		if o.mainOrEps(mainO) {
			var ps, rs []float64
			for _, v := range o.SurrAcc {
				ps = append(ps, v)
			}
			for _, v := range o.RefAcc {
				rs = append(rs, v)
			}
			if len(ps) > 0 && len(rs) > 0 {
				fx, fy := fingerprint.ROC(ps, rs)
				rocs = append(rocs, report.Series{Name: fmt.Sprintf("ε = %g (AUC %.2f)", o.Eps, o.AUC), X: fx, Y: fy})
			}
		}
	}
	if err := report.ROC(dir.Path("roc.png"), "ROC of fingerprint accuracy: testing surrogates vs references", rocs); err != nil {
		return err
	}
	var groups []report.Series
	for _, g := range []struct {
		name string
		ms   []*Member
		vs   []*fingerprint.Verdict
	}{{"testing surrogates", mainO.testSurr, mainO.surrV}, {"testing references", mainO.tRf, mainO.refV}, {"training models", mainO.trainMembers, mainO.trainV}} {
		s := report.Series{Name: g.name}
		for i, m := range g.ms {
			if i < len(g.vs) {
				s.X, s.Y = append(s.X, m.TestAcc), append(s.Y, g.vs[i].Accuracy)
			}
		}
		groups = append(groups, s)
	}
	if err := report.Scatter(dir.Path("fingerprint_accuracy.png"), "Fingerprint accuracy against test accuracy", "test accuracy", "fingerprint accuracy", groups, st.Theta, "θ"); err != nil {
		return err
	}
	var auc, gap report.Series
	auc.Name, gap.Name = "ROC AUC", "gap (min surrogate − max reference)"
	for _, o := range all {
		if o.mainOrEps(mainO) {
			auc.X, auc.Y = append(auc.X, o.Eps), append(auc.Y, o.AUC)
			gap.X, gap.Y = append(gap.X, o.Eps), append(gap.Y, o.Gap)
		}
	}
	sortSeries(&auc)
	sortSeries(&gap)
	if err := report.Lines(dir.Path("auc_vs_eps.png"), "Separation against ε", "ε (L∞)", "", []report.Series{auc, gap}); err != nil {
		return err
	}
	if err := report.Lines(dir.Path("auc_vs_tau.png"), "Separation against τ", "τ", "", tauSeries(all, mainO)); err != nil {
		return err
	}
	if mainO.fp.N > 0 {
		if err := fingerprint.WriteSheet(dir.Path("fingerprints.png"), mainO.fp, 16); err != nil {
			return err
		}
		if err := mainO.fp.Save(dir.Path("fingerprint.safetensors")); err != nil {
			return err
		}
	}
	fmt.Fprintf(&md, "## Plots\n\n![ROC](roc.png)\n\n![fingerprint accuracy](fingerprint_accuracy.png)\n\n![AUC against ε](auc_vs_eps.png)\n\n![AUC against τ](auc_vs_tau.png)\n\n![fingerprints](fingerprints.png)\n")
	return os.WriteFile(dir.Path("README.md"), []byte(md.String()), 0o644)
}

// tauSeries returns AUC and gap against τ for the main setting at its τ_S,
// in the order of τ.
func tauSeries(all []*Outcome, mainO *Outcome) []report.Series {
	auc, gap := report.Series{Name: "ROC AUC"}, report.Series{Name: "gap"}
	for _, o := range all {
		if o.Setting == mainO.Setting && o.TauSurr == mainO.TauSurr {
			auc.X, auc.Y = append(auc.X, o.Tau), append(auc.Y, o.AUC)
			gap.X, gap.Y = append(gap.X, o.Tau), append(gap.Y, o.Gap)
		}
	}
	sortSeries(&auc)
	sortSeries(&gap)
	return []report.Series{auc, gap}
}

func sortSeries(s *report.Series) {
	idx := make([]int, len(s.X))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if s.X[a] < s.X[b] {
			return -1
		}
		if s.X[a] > s.X[b] {
			return 1
		}
		return 0
	})
	x, y := make([]float64, len(idx)), make([]float64, len(idx))
	for i, j := range idx {
		x[i], y[i] = s.X[j], s.Y[j]
	}
	s.X, s.Y = x, y
}
