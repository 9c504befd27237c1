package experiment

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// Attack is one removal attack of the robustness study, with its parameters,
// as a row of the paper's Tables 4 and 5.
type Attack struct {
	Group   string // "Model extraction", "Fine-tuning", ...
	Name    string // train.Attack*
	Param   string // what distinguishes this row, e.g. "λ = 0.1"; part of the cache key
	Options train.Options
	Config  train.Config
	// Data is what the adversary trains on (its whole half when nil).
	Data *data.Dataset
	// LabelsOnly deploys the derived model so that it answers with labels
	// only: a one-hot vector instead of probabilities.
	LabelsOnly bool
	// Budget, when set, is a ladder of epochs (Config.Epochs is its first
	// rung): the attack trains afresh with each in turn until its model is
	// within the study's Margin of the source (judged on the test set,
	// which favours the adversary), and the row reports the rung it
	// stopped at and the epochs spent.
	Budget []int
	// BudgetRounds makes Budget a ladder of Papernot's substitute rounds
	// (Options.Papernot.Rounds is its first rung; each round doubles the
	// queries) instead of epochs.
	BudgetRounds bool
}

// atRung is a at rung n of its budget.
func (a Attack) atRung(n int) Attack {
	if a.BudgetRounds {
		a.Options.Papernot.Rounds = n
	} else {
		a.Config.Epochs = n
	}
	return a
}

// budgetUnit names what a's budget counts.
func (a Attack) budgetUnit() string {
	if a.BudgetRounds {
		return "rounds"
	}
	return "epochs"
}

// rung is where a's budget stands.
func (a Attack) rung() int {
	if a.BudgetRounds {
		return a.Options.Papernot.Rounds
	}
	return a.Config.Epochs
}

// Derived is the outcome of one attack: the deployed model's test accuracy and
// how the fingerprint judges it.
type Derived struct {
	Attack
	Queries  int64
	TestAcc  float64
	Verdict  *fingerprint.Verdict
	FromDisk bool
	// Seconds is what deriving the model cost (all rungs of a budget; 0
	// when loaded from a cache that did not record it).
	Seconds float64
	// Spent is the epochs trained along a budget (all rungs run).
	Spent int
	// Rungs are the test accuracies of the budget's rungs run, in order.
	Rungs []float64
}

// Within reports whether the derived model is still useful: its test accuracy
// within margin of the source's (§6.3 counts retention over those).
func (d *Derived) Within(source, margin float64) bool { return d.TestAcc >= source-margin }

// RobustnessStudy reproduces the paper's Tables 4 and 5: every removal attack
// runs on the source with the adversary's data, and the fingerprint judges
// each derived model; the fleet's testing references are the contrast.
type RobustnessStudy struct {
	Attacks []Attack
	// Describe names the dataset, the scale and the recipes, for the
	// report's first lines.
	Describe string
	Theta    float64
	// Calibration, when set, judges every model by the calibrated rule
	// (outcome and p-values); its models must not be among those scored.
	Calibration *fingerprint.Calibration
	// Margin is the accuracy loss below which §6.3 demands retention (0.05).
	Margin  float64
	Command string
	// Notes, markdown, follow the verdict summary (the plan's settings and
	// choices).
	Notes string
}

// RobustnessResult is what the study measured.
type RobustnessResult struct {
	SourceAcc  float64
	Arch       string // the source's architecture
	Derived    []*Derived
	Surrogates []*Member // the fleet's testing surrogates (Retraining, other architectures)
	References []*Member
	SurrV      []*fingerprint.Verdict
	RefV       []*fingerprint.Verdict
	// Retained counts distinct derived models within the margin at or above
	// θ; Useful counts distinct models within the margin (a labels-only row
	// deploys the model of another row: verification sees only labels, so
	// it is the same model and counted once); FalsePositives counts the
	// references at or above θ. Accused counts, under a calibration, the
	// distinct useful derived models the calibrated rule calls derived.
	Retained, Useful, FalsePositives, Accused int
}

var nonSlug = regexp.MustCompile(`[^a-z0-9.]+`)

// slug names the derived model's file: the labels-only row shares its
// model with the row of the same attack and parameters.
func (a Attack) slug() string {
	s := strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(a.Name+"-"+a.Param), "-"), "-")
	if len(a.Budget) > 0 { // each rung of a budget is a model of its own
		s += fmt.Sprintf("-%c%d", a.budgetUnit()[0], a.rung())
	}
	return s
}

// attackName is the attack as the report names it.
func (a Attack) attackName() string {
	if a.LabelsOnly {
		return a.Name + " (labels only)"
	}
	return a.Name
}

// String names the deployed suspect.
func (a Attack) String() string {
	if a.LabelsOnly {
		return a.slug() + " (labels only)"
	}
	return a.slug()
}

// StudySource is the model a robustness study derives from: its model and
// a key that names it in the derived models' cache.
type StudySource struct {
	Model *nn.Model
	Key   string
}

// derive runs a, or loads its model from dir when an earlier run with the
// same key saved it there.
func (a Attack) derive(ctx context.Context, src StudySource, ds Data, dir string, progress shared.Reporter) (train.Deployed, *Derived, error) {
	path := filepath.Join(dir, "derived-"+a.slug()+".safetensors")
	c := a.Config
	key := fmt.Sprintf("%s|%s|epochs=%d|lr=%g|batch=%d|seed=%d|%s|source=%s", a.Name, a.Param, c.Epochs, c.LR, c.BatchSize, c.Seed, ds.Tag, src.Key)
	if a.BudgetRounds {
		key += fmt.Sprintf("|rounds=%d", a.Options.Papernot.Rounds)
	}
	d := a.Data
	if d == nil {
		d = ds.Adversary
	}
	key += fmt.Sprintf("|examples=%d", d.Len())
	out := &Derived{Attack: a}
	if m, meta, err := train.LoadDeployed(path, src.Model.Device()); err == nil && meta["robustness.key"] == key {
		out.FromDisk = true
		fmt.Sscan(meta["test_accuracy"], &out.TestAcc)
		fmt.Sscan(meta["derive.queries"], &out.Queries)
		fmt.Sscan(meta["derive.seconds"], &out.Seconds)
		return m, out, nil
	} else if m != nil {
		m.Free()
	}
	c.Test, c.Progress, c.Stage = ds.Test, progress, fmt.Sprintf("derive %s %s", a.Name, a.Param)
	m, der, err := train.Derive(ctx, a.Name, src.Model, d, a.Options, c)
	if err != nil {
		return nil, nil, fmt.Errorf("robustness: %s %s: %w", a.Name, a.Param, err)
	}
	out.TestAcc, out.Queries, out.Seconds = der.TestAccuracy, der.Queries, der.Seconds
	meta := map[string]string{"robustness.key": key, "test_accuracy": fmt.Sprint(der.TestAccuracy), "derive.queries": fmt.Sprint(der.Queries), "derive.attack": a.Name,
		"derive.seconds": fmt.Sprintf("%.1f", der.Seconds)}
	if err := m.Save(path, meta); err != nil {
		m.Free()
		return nil, nil, fmt.Errorf("robustness: saving %s: %w", path, err)
	}
	return m, out, nil
}

// Run derives every attack's model from the fleet's source (cached in
// modelsDir), verifies it and the fleet's testing models with fp, and writes
// the report into dir.
func (st *RobustnessStudy) Run(ctx context.Context, f *Fleet, fp *fingerprint.Fingerprint, ds Data, modelsDir string, dir report.Dir, progress shared.Reporter) (*RobustnessResult, error) {
	src := f.Source()
	return st.RunSource(ctx, StudySource{Model: src.Model, Key: fmt.Sprintf("%s/%d/%d", src.Arch, src.Epochs, src.Seed)}, f, fp, ds, modelsDir, dir, progress)
}

// RunSource is Run from a source of its own: contrast, when not nil, is
// the fleet whose testing models the report shows for contrast (none when
// nil).
func (st *RobustnessStudy) RunSource(ctx context.Context, src StudySource, contrast *Fleet, fp *fingerprint.Fingerprint, ds Data, modelsDir string, dir report.Dir, progress shared.Reporter) (*RobustnessResult, error) {
	if err := dir.Create(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(modelsDir, 0o755); err != nil {
		return nil, err
	}
	srcAcc, err := train.Accuracy(ctx, src.Model, ds.Test, nil)
	if err != nil {
		return nil, err
	}
	res := &RobustnessResult{SourceAcc: srcAcc, Arch: src.Model.Spec.Arch}
	if m := src.Model; !train.CanFinePrune(m) {
		// Fine-pruning prunes a convolution's channels: left out, and
		// said so, for a source that has none (an MLP).
		kept := slices.DeleteFunc(slices.Clone(st.Attacks), func(a Attack) bool { return a.Name == train.AttackFinePrune })
		if len(kept) < len(st.Attacks) {
			study := *st
			study.Attacks = kept
			study.Notes = strings.TrimSpace(study.Notes + "\n\nFine-pruning is left out: the source (" + m.Spec.Arch + ") has no convolutional layer to prune.")
			st = &study
		}
	}
	for i, a := range st.Attacks {
		progress.Report(shared.Event{Kind: shared.Progress, Stage: "robustness", Step: int64(i), Total: int64(len(st.Attacks)), Message: a.Name + " " + a.Param})
		m, d, err := a.deriveWithin(ctx, src, ds, modelsDir, srcAcc-st.Margin, progress)
		if err != nil {
			return nil, err
		}
		m.SetTraining(false)
		var s suspect.Suspect = &suspect.Local{Model: m, Name: a.String()}
		if a.LabelsOnly {
			s = &suspect.Local{Model: train.LabelsOnly{Model: m}, Name: a.String()}
		}
		d.Verdict, err = fingerprint.Verify(ctx, s, fp, st.rule())
		m.Free()
		if err != nil {
			return nil, err
		}
		res.Derived = append(res.Derived, d)
		if d.Within(srcAcc, st.Margin) && !a.LabelsOnly {
			res.Useful++
			if atTheta(d.Verdict) {
				res.Retained++
			}
			if d.Verdict.Calibrated && d.Verdict.Surrogate {
				res.Accused++
			}
		}
		progress.Report(shared.Event{Kind: shared.Log, Stage: "robustness", Message: fmt.Sprintf("%-12s %-10s test accuracy %.4f, fingerprint accuracy %.2f", a.Name, a.Param, d.TestAcc, d.Verdict.Accuracy)})
	}
	if contrast != nil {
		res.Surrogates, res.References = contrast.Select(Surrogate, true), contrast.Select(Reference, true)
		if res.SurrV, err = verifyAll(ctx, fp, res.Surrogates, st.rule()); err != nil {
			return nil, err
		}
		if res.RefV, err = verifyAll(ctx, fp, res.References, st.rule()); err != nil {
			return nil, err
		}
	}
	for _, v := range res.RefV {
		if atTheta(v) {
			res.FalsePositives++
		}
	}
	progress.Report(shared.Event{Kind: shared.Done, Stage: "robustness", Step: int64(len(st.Attacks)), Total: int64(len(st.Attacks))})
	return res, st.write(dir, fp, res)
}

// deriveWithin derives a, along its budget when it has one: each rung in
// turn until a model's test accuracy reaches floor; the last rung's model
// otherwise. The result's Seconds and Spent add up every rung run.
func (a Attack) deriveWithin(ctx context.Context, src StudySource, ds Data, dir string, floor float64, progress shared.Reporter) (train.Deployed, *Derived, error) {
	if len(a.Budget) == 0 {
		m, d, err := a.derive(ctx, src, ds, dir, progress)
		if d != nil {
			d.Spent = a.Config.Epochs
		}
		return m, d, err
	}
	var seconds float64
	var rungs []float64
	spent := 0
	for k, e := range a.Budget {
		m, d, err := a.atRung(e).derive(ctx, src, ds, dir, progress)
		if err != nil {
			return nil, nil, err
		}
		seconds += d.Seconds
		spent += e
		rungs = append(rungs, d.TestAcc)
		if d.TestAcc >= floor || k == len(a.Budget)-1 {
			d.Seconds, d.Spent, d.Rungs = seconds, spent, rungs
			return m, d, nil
		}
		m.Free()
	}
	return nil, nil, fmt.Errorf("robustness: %s %s: empty budget", a.Name, a.Param) // unreachable
}

// rule is the decision rule every model is judged by.
func (st *RobustnessStudy) rule() fingerprint.Rule {
	return fingerprint.Rule{Theta: st.Theta, Calibration: st.Calibration}
}

func (st *RobustnessStudy) write(dir report.Dir, fp *fingerprint.Fingerprint, r *RobustnessResult) error {
	var md strings.Builder
	fmt.Fprintf(&md, "# Robustness of the fingerprint to removal attacks (the paper's Tables 4 and 5 at CPU scale)\n\n")
	if st.Describe != "" {
		fmt.Fprintf(&md, "%s\n\n", st.Describe)
	} else {
		fmt.Fprintf(&md, "Dataset: %s.\n\n", cmp.Or(fp.Meta.Dataset, "unnamed"))
	}
	fmt.Fprintf(&md, "Reproduce with:\n\n    %s\n\n", st.Command)
	fmt.Fprintf(&md, "Fingerprint: %d keys of the source (%s, test accuracy %.4f) on %s, %s, τ = %g, τ_S = %g, "+
		"crafted with %d training surrogates and %d training references of the defender's half; "+
		"every attack below runs on the adversary's half (or, for Knockoff, a transfer set), which the fingerprint never saw. θ = %g.\n\n",
		fp.N, cmp.Or(fp.Meta.SourceArch, r.Arch), r.SourceAcc, cmp.Or(fp.Meta.Dataset, "the source's dataset"), fp.Meta.Method(), fp.Meta.Tau, fp.Meta.TauSurr, len(fp.Meta.Surrogates), len(fp.Meta.References), st.Theta)
	verdict := func(v *fingerprint.Verdict) string {
		if atTheta(v) {
			return "surrogate"
		}
		return "not a surrogate"
	}
	pvalue := func(v *fingerprint.Verdict) string {
		if v.PValue == nil {
			return "–"
		}
		return fmt.Sprintf("%.2g", *v.PValue)
	}
	fmt.Fprintf(&md, "**Retention: %d of %d distinct derived models within %.0f points of the source's accuracy are at or above θ = %g.", r.Retained, r.Useful, 100*st.Margin, st.Theta)
	if r.RefV != nil {
		fmt.Fprintf(&md, " References at or above θ: %d of %d.", r.FalsePositives, len(r.References))
	}
	fmt.Fprintf(&md, "**\n\n")
	fmt.Fprintf(&md, "Distinct models: %d rows, %d distinct models (a labels-only row deploys the model of the row of the same attack behind a labels-only API; verification reads only labels, so it is the same model: it is listed, and counted once).\n\n",
		len(r.Derived), len(r.Derived)-countLabelsOnly(r.Derived))
	if c := st.Calibration; c != nil {
		fmt.Fprintf(&md, "Calibrated verdicts: %d independent models (%s), none of them scored below, fit agreement Beta(%.2f, %.2f) (mean %.2f); at a false-positive rate of %g the calibrated rule accuses from %.2f. "+
			"It calls **%d of %d** distinct useful derived models derived. p-values are that fit's beta-binomial tails; the outcome column is the calibrated verdict (derived, independent or inconclusive), beside Algorithm 1's at θ.\n\n",
			len(c.Models), strings.Join(c.Architectures(), ", "), c.Fit.Alpha, c.Fit.Beta, c.Fit.Mean(), c.FPR, c.Summary.Accuracy, r.Accused, r.Useful)
	} else {
		fmt.Fprintf(&md, "No calibration was given (`--calibration`), so no p-value is printed: the verdicts are Algorithm 1's at θ.\n\n")
	}
	if st.Notes != "" {
		fmt.Fprintf(&md, "%s\n\n", st.Notes)
	}
	st.writeFailures(&md, r)
	var total float64
	for _, d := range r.Derived {
		if !d.LabelsOnly {
			total += d.Seconds
		}
	}
	if total > 0 {
		fmt.Fprintf(&md, "Cost: %.0f s (%.1f min) of training and deriving over the distinct models, as recorded when each was made (a model loaded from the cache keeps the cost of the run that made it).\n\n", total, total/60)
	}
	var rows [][]string
	group := ""
	for _, d := range r.Derived {
		g := ""
		if d.Group != group {
			g, group = d.Group, d.Group
		}
		within := "yes"
		if !d.Within(r.SourceAcc, st.Margin) {
			within = "no"
		}
		rows = append(rows, []string{g, d.attackName(), d.Param, d.epochs(), fmt.Sprint(d.Queries), fmt.Sprintf("%.4f", d.TestAcc), fmt.Sprintf("%+.1f", 100*(d.TestAcc-r.SourceAcc)), within,
			fmt.Sprintf("%.2f", d.Verdict.Accuracy), pvalue(d.Verdict), verdict(d.Verdict), cmp.Or(d.Verdict.Outcome, "–"), d.cost()})
	}
	fmt.Fprintf(&md, "## Derived models\n\n")
	report.Table(&md, []string{"group", "attack", "parameters", "epochs", "queries", "test accuracy", "Δ points", fmt.Sprintf("within %.0f points", 100*st.Margin), "fingerprint accuracy", "p-value", "at θ", "outcome", "cost (s)"}, rows)
	rows = nil
	for _, g := range []struct {
		ms []*Member
		vs []*fingerprint.Verdict
	}{{r.Surrogates, r.SurrV}, {r.References, r.RefV}} {
		for i, m := range g.ms {
			rows = append(rows, []string{m.Name, string(m.Role), m.Arch, fmt.Sprintf("%.4f", m.TestAcc), fmt.Sprintf("%.2f", g.vs[i].Accuracy), pvalue(g.vs[i]), verdict(g.vs[i]), g.vs[i].Outcome})
		}
	}
	if len(rows) > 0 {
		fmt.Fprintf(&md, "\n## For contrast: the fleet's testing models (adversary's half, never seen by the fingerprint)\n\n")
		report.Table(&md, []string{"model", "role", "arch", "test accuracy", "fingerprint accuracy", "p-value", "at θ", "outcome"}, rows)
	}
	var series []report.Series
	index := map[string]int{}
	for _, d := range r.Derived {
		i, ok := index[d.Group]
		if !ok {
			i = len(series)
			index[d.Group] = i
			series = append(series, report.Series{Name: d.Group})
		}
		series[i].X, series[i].Y = append(series[i].X, d.TestAcc), append(series[i].Y, d.Verdict.Accuracy)
	}
	for _, g := range []struct {
		name string
		ms   []*Member
		vs   []*fingerprint.Verdict
	}{{"fleet surrogates (Retraining)", r.Surrogates, r.SurrV}, {"references", r.References, r.RefV}} {
		if len(g.ms) == 0 {
			continue
		}
		s := report.Series{Name: g.name}
		for i, m := range g.ms {
			s.X, s.Y = append(s.X, m.TestAcc), append(s.Y, g.vs[i].Accuracy)
		}
		series = append(series, s)
	}
	if err := report.Scatter(dir.Path("robustness.png"), "Derived models: fingerprint accuracy against test accuracy", "test accuracy", "fingerprint accuracy", series, st.Theta, "θ"); err != nil {
		return err
	}
	fmt.Fprintf(&md, "\n## Plot\n\n![fingerprint accuracy against test accuracy](robustness.png)\n")
	return os.WriteFile(dir.Path("README.md"), []byte(md.String()), 0o644)
}

// countLabelsOnly counts the rows that deploy another row's model.
func countLabelsOnly(ds []*Derived) int {
	n := 0
	for _, d := range ds {
		if d.LabelsOnly {
			n++
		}
	}
	return n
}

// epochs says how long the row trained: its epochs (per member for
// Ensemble, per round for Papernot), and along a budget the rung it
// stopped at, the ladder and the epochs spent.
func (d *Derived) epochs() string {
	a, err := train.ParseAttack(d.Name)
	if err != nil || !a.Trains {
		return "–"
	}
	switch {
	case len(d.Budget) == 0:
		return fmt.Sprint(d.Config.Epochs)
	case d.BudgetRounds:
		return fmt.Sprintf("%d per round, %d rounds (budget %s rounds; %d spent%s)", d.Config.Epochs, d.Options.Papernot.Rounds, joinInts(d.Budget), d.Spent, d.rungs())
	}
	return fmt.Sprintf("%d (budget %s; %d spent%s)", d.Config.Epochs, joinInts(d.Budget), d.Spent, d.rungs())
}

// rungs lists the test accuracy of every rung run before the last.
func (d *Derived) rungs() string {
	if len(d.Rungs) < 2 {
		return ""
	}
	parts := make([]string, len(d.Rungs)-1)
	for i, acc := range d.Rungs[:len(d.Rungs)-1] {
		parts[i] = fmt.Sprintf("%d: %.4f", d.Budget[i], acc)
	}
	return "; earlier rungs " + strings.Join(parts, ", ")
}

// cost is the row's recorded cost in seconds.
func (d *Derived) cost() string {
	if d.LabelsOnly || d.Seconds == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", d.Seconds)
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}

// writeFailures lists plainly what did not work: attacks that lost more
// than the margin (and, along a budget, what the budget bought), derived
// models that kept their accuracy but fell below θ or that the calibrated
// rule did not call derived, and accused references.
func (st *RobustnessStudy) writeFailures(md *strings.Builder, r *RobustnessResult) {
	var lines []string
	for _, d := range r.Derived {
		if d.LabelsOnly {
			continue
		}
		gap := 100 * (r.SourceAcc - st.Margin - d.TestAcc)
		switch {
		case !d.Within(r.SourceAcc, st.Margin) && len(d.Budget) > 0:
			lines = append(lines, fmt.Sprintf("- **%s** did not come within %.0f points of the source in its budget: %d %s spent over rungs of %s (%.0f s, the last rung %d queries), test accuracy %.4f, %.1f points short of the margin.",
				strings.TrimSpace(d.attackName()+" "+d.Param), 100*st.Margin, d.Spent, d.budgetUnit(), joinInts(d.Budget), d.Seconds, d.Queries, d.TestAcc, gap))
		case !d.Within(r.SourceAcc, st.Margin):
			lines = append(lines, fmt.Sprintf("- **%s** lost more than %.0f points (test accuracy %.4f, %.1f points short of the margin): the attack does not make a useful copy at this setting, so retention does not count it.",
				strings.TrimSpace(d.attackName()+" "+d.Param), 100*st.Margin, d.TestAcc, gap))
		case !atTheta(d.Verdict):
			lines = append(lines, fmt.Sprintf("- **%s** kept its accuracy (%.4f) but its fingerprint accuracy %.2f is below θ = %g: the fingerprint **fails** retention on it.",
				strings.TrimSpace(d.attackName()+" "+d.Param), d.TestAcc, d.Verdict.Accuracy, st.Theta))
		}
		if d.Within(r.SourceAcc, st.Margin) && d.Verdict.Calibrated && !d.Verdict.Surrogate {
			lines = append(lines, fmt.Sprintf("- **%s** kept its accuracy but the calibrated rule calls it %s (fingerprint accuracy %.2f).", strings.TrimSpace(d.attackName()+" "+d.Param), cmp.Or(d.Verdict.Outcome, "not derived"), d.Verdict.Accuracy))
		}
	}
	if r.FalsePositives > 0 {
		lines = append(lines, fmt.Sprintf("- The fingerprint **wrongly accuses** %d reference model(s) at θ.", r.FalsePositives))
	}
	if len(lines) == 0 {
		fmt.Fprintf(md, "Failures: none.\n\n")
		return
	}
	fmt.Fprintf(md, "## Failures\n\n%s\n\n", strings.Join(lines, "\n"))
}
