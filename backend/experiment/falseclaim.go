package experiment

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/attack"
	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// A false claim (issue 17, item 4): an accuser who owns no model crafts
// plain transferable adversarial examples on public models of its own —
// targeted BIM on the ensemble's mean logits, no source, no references —
// and presents them as a fingerprint, with the targets as the keys, to
// "verify" a model it did not make. Transferable examples are what any
// well-trained model answers alike, so an innocent model agrees with such
// keys; what stops the claim is the protocol around Algorithm 1, not
// Algorithm 1 itself (docs/protocol.md).

// AttackFalseClaim is the Meta.Attack of a false-claim set: targeted,
// transferable adversarial examples crafted on public models, with no
// source (Meta.SourceSHA256 and SourceArch are empty, Meta.Surrogates name
// the public models, Meta.References is empty, Loss is "ce": targeted
// cross-entropy of the public ensemble's mean logits, Tau and
// ReferenceRate are 1: every public model agrees with every key).
// Meta.Method names it by this string.
const AttackFalseClaim = "false-claim"

// FalseClaimConfig configures CraftFalseClaim.
type FalseClaimConfig struct {
	Eps, Alpha float64 // L∞ budget and step (ε = 0.05 is the fingerprints' own)
	Steps      int
	Candidates int // start points attacked
	Batch      int // start points per batch (100 when zero)
	Seed       int64
	Progress   shared.Reporter
}

// meanLogits is an ensemble that answers the mean of its members' logits
// (Liu et al. 2017's ensemble attack).
type meanLogits []attack.Model

func (e meanLogits) Forward(x *torch.Tensor) *torch.Tensor {
	sum := e[0].Forward(x)
	for _, m := range e[1:] {
		sum = sum.Add(m.Forward(x))
	}
	return sum.DivScalar(float64(len(e)))
}

// CraftFalseClaim crafts a false claimant's "fingerprint" from public
// models: it takes up to cfg.Candidates inputs of d that every public
// model labels correctly, picks for each the target the ensemble finds
// most likely after the true class, runs targeted BIM on the ensemble's
// mean logits inside the L∞ ε-ball, rounds to 8 bits, and keeps the
// examples every public model labels as the target. The keys are the
// targets; Confer is 1 for every kept example (the public ensemble's
// agreement). ids name the public models (sha256 or path).
func CraftFalseClaim(ctx context.Context, public []fingerprint.Model, ids []string, d *data.Dataset, cfg FalseClaimConfig) (*fingerprint.Fingerprint, error) {
	if len(public) == 0 {
		return nil, errors.New("false claim: needs at least one public model")
	}
	if len(ids) != len(public) {
		return nil, fmt.Errorf("false claim: %d names for %d public models", len(ids), len(public))
	}
	if !(cfg.Eps > 0 && cfg.Eps <= 1) || cfg.Alpha <= 0 || cfg.Steps <= 0 || cfg.Candidates <= 0 {
		return nil, fmt.Errorf("false claim: want ε in (0,1], a positive step, steps and candidates, not ε %g, α %g, %d steps, %d candidates", cfg.Eps, cfg.Alpha, cfg.Steps, cfg.Candidates)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	runtime.LockOSThread() // libtorch's thread pool belongs to the OS thread
	defer runtime.UnlockOSThread()
	ens := make(meanLogits, len(public))
	for i, m := range public {
		if t, ok := m.(interface{ SetTraining(bool) }); ok {
			t.SetTraining(false)
		}
		ens[i] = m
	}
	imgs := func(x []float32, n int) suspect.Images { return suspect.Images{X: x, N: n, C: d.C, H: d.H, W: d.W} }
	// Start points: inputs every public model labels correctly, in an
	// order fixed by the seed.
	order := rand.New(rand.NewPCG(uint64(cfg.Seed), 17)).Perm(d.Len())
	var start []int
	for i := 0; i < len(order) && len(start) < cfg.Candidates; i += cfg.Batch {
		idx := order[i:min(i+cfg.Batch, len(order))]
		labels, err := fingerprint.Labels(ctx, public, imgs(d.Float32(idx), len(idx)))
		if err != nil {
			return nil, fmt.Errorf("false claim: start points: %w", err)
		}
		truth := make([]int64, len(idx))
		for j, k := range idx {
			truth[j] = d.Labels[k]
		}
		all := fingerprint.Transfer(labels, truth) // every public model right: 1
		for j, k := range idx {
			if all[j] == 1 && len(start) < cfg.Candidates {
				start = append(start, k)
			}
		}
	}
	if len(start) == 0 {
		return nil, errors.New("false claim: the public models agree with the ground truth on no input")
	}
	mean, std := d.Stats()
	fp := &fingerprint.Fingerprint{C: d.C, H: d.H, W: d.W, Meta: fingerprint.Meta{
		Dataset: d.Name, Classes: d.Classes, Mean: mean, Std: std, Created: time.Now().UTC(),
		Attack: AttackFalseClaim, Loss: "ce", Eps: cfg.Eps, Alpha: cfg.Alpha, Steps: cfg.Steps, Tau: 1,
		Surrogates: ids, Candidates: len(start), Seed: cfg.Seed, ReferenceRate: 1,
	}}
	per := d.ImageSize()
	bim := attack.Config{Eps: cfg.Eps, Alpha: cfg.Alpha, Steps: cfg.Steps, Norm: attack.LInf, Targeted: true}
	dev := public[0].Device()
	k := int64(len(d.Classes))
	tried := 0
	for bt := range d.Subset(start).Batches(data.BatchOpts{Size: cfg.Batch}) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("false claim: %w", err)
		}
		n, x, y := bt.N, bt.X, bt.Y
		tried += n
		var adv []float32
		var target []int64
		err := torch.Catch(func() {
			torch.Scoped(func(s *torch.Scope) {
				xt := torch.FromSlice(s, x, int64(n), int64(d.C), int64(d.H), int64(d.W)).ToDevice(dev)
				yt := torch.FromSlice(s, y, int64(n)).ToDevice(dev)
				var tt *torch.Tensor
				torch.NoGrad(func() { // the ensemble's runner-up class: the easiest target
					mask := yt.OneHot(k).To(torch.Float32, dev).MulScalar(-1e9)
					tt = ens.Forward(xt).Add(mask).Argmax(1, false)
				})
				xa := attack.Quantize(attack.BIM(ens, xt, tt, bim), xt, cfg.Eps)
				adv = xa.ToDevice(torch.CPU).Float32s()
				target = tt.ToDevice(torch.CPU).Int64s()
			})
		})
		if err != nil {
			return nil, fmt.Errorf("false claim: BIM: %w", err)
		}
		labels, err := fingerprint.Labels(ctx, public, imgs(adv, n))
		if err != nil {
			return nil, fmt.Errorf("false claim: %w", err)
		}
		fooled := fingerprint.Transfer(labels, target)
		for i := range n {
			if fooled[i] != 1 {
				continue
			}
			fp.Append(adv[i*per:(i+1)*per], x[i*per:(i+1)*per], target[i], y[i], 1)
		}
		cfg.Progress.Report(shared.Event{Kind: shared.Log, Stage: "false claim", Message: fmt.Sprintf("%d of %d start points fool every public model so far", fp.N, tried)})
	}
	if fp.N == 0 {
		return nil, fmt.Errorf("false claim: %w: no example of %d fools every public model at ε = %g", fingerprint.ErrNoFingerprint, len(start), cfg.Eps)
	}
	return fp, nil
}

// FalseClaimStudy judges victims — models the accuser did not make — with
// a false-claim set, first by Algorithm 1's θ alone, then by the rule a
// verifier calibrates on independent models of its own choosing.
type FalseClaimStudy struct {
	Claim *fingerprint.Fingerprint
	// ClaimPath is where the set lies (for the report).
	ClaimPath string
	Victims   []BenchSuspect // Derived marks none; Recipe says what each is
	// Calibration are the verifier's independent models.
	Calibration []fingerprint.IndependentModel
	Theta, FPR  float64
	// Real, when set, is the owner's committed fingerprint with its
	// calibration: the accuser's public models are judged by it.
	Real     *fingerprint.Fingerprint
	RealRule fingerprint.Rule
	RealPath string
	Public   []BenchSuspect
	// Owner, when set, is the owner's source: a victim like the others,
	// and judged by Real beside the accuser's models.
	Owner      *BenchSuspect
	Command    string
	Describe   string
	Calibrated string // where the claim's calibration is written (for the report)
}

// FalseClaimRow is one victim's two verdicts.
type FalseClaimRow struct {
	BenchSuspect
	Name              string
	Plain, Calibrated *fingerprint.Verdict
	PassesTheta       bool // fingerprint accuracy ≥ θ: Algorithm 1 accuses
	AccusedCalibrated bool
	AccusedInterval   bool // the interval reading of θ: derived
}

// FalseClaimResult is what the study measured.
type FalseClaimResult struct {
	Rows        []FalseClaimRow
	Calibration *fingerprint.Calibration
	// PassTheta counts victims at or above θ, PassCalibrated those the
	// calibrated rule calls derived.
	PassTheta, PassInterval, PassCalibrated int
	// Public are the accuser's models judged by the owner's fingerprint,
	// Owner the owner's source (nil without one).
	Public []*fingerprint.Verdict
	Owner  *fingerprint.Verdict
}

// Run judges every victim, calibrates the claim on the independent
// models, judges again and writes dir/README.md and the calibration.
func (st *FalseClaimStudy) Run(ctx context.Context, dir report.Dir, progress shared.Reporter) (*FalseClaimResult, error) {
	if st.Claim == nil || len(st.Victims) == 0 || len(st.Calibration) < 2 {
		return nil, errors.New("false claim study: needs the claim, victims and at least two independent models")
	}
	theta := st.Theta
	if theta <= 0 {
		theta = fingerprint.DefaultThreshold
	}
	fpr := st.FPR
	if fpr <= 0 {
		fpr = fingerprint.DefaultFPR
	}
	res := &FalseClaimResult{}
	cal, err := fingerprint.Calibrate(ctx, st.Claim, st.Calibration, fpr)
	if err != nil {
		return nil, fmt.Errorf("false claim study: %w", err)
	}
	res.Calibration = cal
	plain := fingerprint.Rule{Theta: theta}
	calibrated := fingerprint.Rule{Theta: theta, Calibration: cal, FPR: fpr}
	victims := st.Victims
	if st.Owner != nil {
		victims = append(slices.Clone(victims), *st.Owner)
	}
	for _, v := range victims {
		row := FalseClaimRow{BenchSuspect: v, Name: v.Suspect.String()}
		if row.Plain, err = fingerprint.Verify(ctx, v.Suspect, st.Claim, plain); err != nil {
			return nil, fmt.Errorf("false claim study: %w", err)
		}
		if row.Calibrated, err = fingerprint.Verify(ctx, v.Suspect, st.Claim, calibrated); err != nil {
			return nil, fmt.Errorf("false claim study: %w", err)
		}
		row.PassesTheta = row.Plain.Accuracy >= theta
		row.AccusedInterval = row.Plain.Outcome == fingerprint.Derived
		row.AccusedCalibrated = row.Calibrated.Outcome == fingerprint.Derived
		if row.PassesTheta {
			res.PassTheta++
		}
		if row.AccusedInterval {
			res.PassInterval++
		}
		if row.AccusedCalibrated {
			res.PassCalibrated++
		}
		res.Rows = append(res.Rows, row)
		progress.Report(shared.Event{Kind: shared.Log, Stage: "false claim", Message: fmt.Sprintf("%s: %.3f, %s / %s", row.Name, row.Plain.Accuracy, row.Plain.Outcome, row.Calibrated.Outcome)})
	}
	if st.Real != nil {
		for _, p := range st.Public {
			v, err := fingerprint.Verify(ctx, p.Suspect, st.Real, st.RealRule)
			if err != nil {
				return nil, fmt.Errorf("false claim study: %w", err)
			}
			res.Public = append(res.Public, v)
		}
		if st.Owner != nil {
			if res.Owner, err = fingerprint.Verify(ctx, st.Owner.Suspect, st.Real, st.RealRule); err != nil {
				return nil, fmt.Errorf("false claim study: %w", err)
			}
		}
	}
	if st.Calibrated != "" {
		if err := cal.Save(st.Calibrated); err != nil {
			return nil, fmt.Errorf("false claim study: %w", err)
		}
	}
	if err := st.write(dir, res, theta, fpr); err != nil {
		return nil, err
	}
	return res, nil
}

func (st *FalseClaimStudy) write(dir report.Dir, r *FalseClaimResult, theta, fpr float64) error {
	fp, c := st.Claim, r.Calibration
	com, err := fp.Commitment()
	if err != nil {
		return err
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# False claims: transferable adversarial examples as a \"fingerprint\"\n\n")
	p("An accuser who owns no model crafts targeted, transferable adversarial examples on public models of its own ")
	p("(BIM on the mean logits of %d models, L∞ ε = %g, %d steps of %g, 8-bit), keeps those every public model labels as the target, ", len(fp.Meta.Surrogates), fp.Meta.Eps, fp.Meta.Steps, fp.Meta.Alpha)
	p("and presents them as a fingerprint whose keys are the targets (`Meta.Attack = %q`). It then \"verifies\" models it did not make. ", AttackFalseClaim)
	p("See [docs/protocol.md](../../protocol.md) for what stops it.\n\n")
	p("%s\n\n", st.Describe)
	p("```\n%s\n```\n\n", st.Command)
	p("The set: %d keys kept of %d start points (test split, every public model right on the original); commitment `%s`", fp.N, fp.Meta.Candidates, com)
	if st.ClaimPath != "" {
		p(", file `%s`", st.ClaimPath)
	}
	p(".\n\n")
	p("## Algorithm 1 alone (θ = %g, uncalibrated)\n\n", theta)
	p("| victim | what it is | arch | agreement with the false keys | 95 %% interval | ≥ θ (Algorithm 1) | verdict (interval vs θ) | calibrated verdict |\n|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		v := row.Plain
		p("| `%s` | %s | %s | %.3f (%d/%d) | [%.2f, %.2f] | %s | %s | %s |\n", row.Name, row.Recipe, row.Arch, v.Accuracy, v.Agree, v.Fingerprints, v.Interval[0], v.Interval[1], yes(row.PassesTheta), v.Outcome, row.Calibrated.Outcome)
	}
	n := len(r.Rows)
	p("\n**%d of %d victims pass Algorithm 1 at θ = %g** (agreement ≥ θ; %d of %d are called derived when the whole 95 %% interval must clear θ). ", r.PassTheta, n, theta, r.PassInterval, n)
	p("That is the false claim's success rate against a verifier that applies the paper's rule without calibration.\n\n")
	p("## Calibrated on independent models\n\n")
	p("The verifier queries %d independent models of its own (trained without any claimant's model) with the claimed set:\n\n", len(c.Models))
	p("| independent model | arch | agreement |\n|---|---|---|\n")
	agrees := make([]float64, len(c.Models))
	for i, m := range c.Models {
		agrees[i] = float64(m.Agree) / float64(fp.N)
		p("| `%s` | %s | %.3f (%d/%d) |\n", m.Name, m.Arch, agrees[i], m.Agree, fp.N)
	}
	lo, hi := slices.Min(agrees), slices.Max(agrees)
	thr := "unreachable: no agreement rejects independence at this level"
	if c.Summary.Agree <= fp.N {
		thr = fmt.Sprintf("%.3f (%d/%d)", c.Summary.Accuracy, c.Summary.Agree, fp.N)
	}
	p("\nIndependent models agree with the false keys at %.3f ± %.3f (beta-binomial fit; range %.3f–%.3f). ", c.Fit.Mean(), c.Fit.SD(), lo, hi)
	p("Agreement this high among models that share nothing but the task says the keys are not any one model's: ")
	p("the set is a set of transferable adversarial examples, and the calibrated threshold at a false-positive rate of %g is %s", fpr, thr)
	if st.Real != nil && st.RealRule.Calibration != nil {
		rc := st.RealRule.Calibration
		p(" (the owner's committed fingerprint `%s`, calibrated on the same kind of models: %.3f ± %.3f, threshold %.3f)", st.RealPath, rc.Fit.Mean(), rc.Fit.SD(), rc.Summary.Accuracy)
	}
	p(".\n\n")
	p("**%d of %d victims are called derived by the calibrated rule.**", r.PassCalibrated, n)
	if st.Calibrated != "" {
		p(" The calibration is `%s`.", st.Calibrated)
	}
	p("\n\n")
	if st.Real != nil && len(r.Public) > 0 {
		rc, _ := st.Real.Commitment()
		p("## The owner's keys\n\n")
		cal := "uncalibrated"
		if st.RealRule.Calibration != nil {
			cal = "calibrated"
		}
		p("The owner's fingerprint (`%s`, commitment `%.16s…`, %d keys, %s) was committed with the source's own labels as keys. ", st.RealPath, rc, st.Real.N, cal)
		p("An accuser claiming the owner's model must show a model of its own that carries those keys; its public models, and the owner's source, judged by it:\n\n")
		p("| model | whose | agreement with the owner's keys | verdict |\n|---|---|---|---|\n")
		for i, v := range r.Public {
			p("| `%s` | the accuser's | %.3f (%d/%d) | %s |\n", st.Public[i].Suspect.String(), v.Accuracy, v.Agree, v.Fingerprints, v.Outcome)
		}
		if v := r.Owner; v != nil {
			p("| `%s` | the owner's source | %.3f (%d/%d) | %s |\n", st.Owner.Suspect.String(), v.Accuracy, v.Agree, v.Fingerprints, v.Outcome)
		}
		p("\n")
	}
	if err := dir.Create(); err != nil {
		return fmt.Errorf("false claim study: %w", err)
	}
	if err := os.WriteFile(dir.Path("README.md"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("false claim study: %w", err)
	}
	return nil
}

func yes(b bool) string {
	if b {
		return "**yes**"
	}
	return "no"
}
