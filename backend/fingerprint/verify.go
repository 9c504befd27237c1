package fingerprint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// DefaultThreshold is θ of §5.2.
const DefaultThreshold = 0.7

// DefaultConfidence is the confidence of a verdict's interval.
const DefaultConfidence = 0.95

// The three outcomes of a verdict.
const (
	Derived      = shared.OutcomeDerived
	Independent  = shared.OutcomeIndependent
	Inconclusive = shared.OutcomeInconclusive
)

// Rule is the decision rule a suspect is judged by. Without a Calibration
// it is Algorithm 1's θ, read with the interval of the fingerprint
// accuracy: derived when the whole interval is at or above θ, independent
// when it is below, inconclusive otherwise; no p-value is given. With one,
// a suspect is derived when the calibrated test rejects independence at
// the false-positive rate FPR, independent when even the upper end of its
// interval stays below both the accuracy that test needs and θ (a derived
// model's agreement), and inconclusive in between.
type Rule struct {
	Theta       float64
	Calibration *Calibration
	// FPR is the calibrated test's level: the share of independent models
	// it may accuse (DefaultFPR, or the calibration's own, when zero).
	FPR float64
	// Confidence is the interval's (DefaultConfidence when zero).
	Confidence float64
	// Sequential, when set with a Calibration, queries the fingerprints in
	// a random order and stops as soon as Wald's SPRT decides.
	Sequential *Sequential
}

// Sequential configures sequential verification.
type Sequential struct {
	// DerivedRate is H₁: the agreement rate of a derived model (θ when
	// zero).
	DerivedRate float64 `json:"derived_rate"`
	// Miss is β, the rate of clearing a model that agrees at DerivedRate
	// (0.05 when zero); the rate of accusing an independent one is the
	// rule's FPR.
	Miss float64 `json:"miss"`
	// Batch is how many fingerprints are sent per query (10 when zero).
	Batch int   `json:"batch"`
	Seed  int64 `json:"seed"`
}

// withDefaults fills in the zero fields.
func (r Rule) withDefaults() Rule {
	if r.Theta <= 0 {
		r.Theta = DefaultThreshold
	}
	if r.FPR <= 0 {
		r.FPR = DefaultFPR
		if r.Calibration != nil {
			r.FPR = r.Calibration.FPR
		}
	}
	if r.Confidence <= 0 {
		r.Confidence = DefaultConfidence
	}
	if s := r.Sequential; s != nil {
		c := *s
		if c.DerivedRate <= 0 {
			c.DerivedRate = r.Theta
		}
		if c.Miss <= 0 {
			c.Miss = 0.05
		}
		if c.Batch <= 0 {
			c.Batch = 10
		}
		r.Sequential = &c
	}
	return r
}

// Check says whether the rule can judge suspects of fp.
func (r Rule) Check(fp *Fingerprint) error {
	r = r.withDefaults()
	switch {
	case !(r.Theta > 0 && r.Theta <= 1):
		return fmt.Errorf("rule: θ = %g outside (0, 1]", r.Theta)
	case !(r.FPR > 0 && r.FPR < 0.5):
		return fmt.Errorf("rule: false-positive rate %g outside (0, 0.5)", r.FPR)
	case !(r.Confidence > 0 && r.Confidence < 1):
		return fmt.Errorf("rule: confidence %g outside (0, 1)", r.Confidence)
	}
	if r.Calibration != nil {
		// Calibrate and LoadCalibration derived its fit; a rule only
		// reads it, so one calibration may judge many suspects at once.
		if err := r.Calibration.belongsTo(fp); err != nil {
			return err
		}
		if !(r.Calibration.Fit.Alpha > 0 && r.Calibration.Fit.Beta > 0) {
			return fmt.Errorf("rule: the calibration has no fit: make it with Calibrate or LoadCalibration")
		}
	}
	if r.Sequential != nil {
		if r.Calibration == nil {
			return fmt.Errorf("rule: sequential verification tests against a calibrated null: calibrate the fingerprint first (conferral calibrate)")
		}
		return r.sprt().Check()
	}
	return nil
}

// sequentialTest is a sequential test of agreements s and disagreements f.
type sequentialTest interface {
	Decide(s, f int) stats.Decision
	Check() error
}

// sprt is the rule's sequential test: against the calibration models
// themselves, with derived rates uniform above the accusing line, where
// the empirical test decides (enough models); else against the fit, with
// one derived rate.
func (r Rule) sprt() sequentialTest {
	c := r.Calibration
	if c.Test(r.FPR) == TestEmpirical {
		return stats.ModelsSPRT{Agree: c.agreements(nil), Keys: c.Fingerprints, Line: float64(c.Critical(r.FPR, nil)) / float64(c.Fingerprints), Alpha: r.FPR, Beta: r.Sequential.Miss}
	}
	return stats.SPRT{Null: c.Fit, P1: r.Sequential.DerivedRate, Alpha: r.FPR, Beta: r.Sequential.Miss}
}

// Hash is the sha256 of the whole rule for fp — the fingerprint's
// commitment, θ, the level, the interval's confidence, the calibration, the
// test it uses and the sequential test — recorded before any suspect is judged so that the
// rule cannot move afterwards.
func (r Rule) Hash(fp *Fingerprint) (string, error) {
	r = r.withDefaults()
	com, err := fp.Commitment()
	if err != nil {
		return "", err
	}
	frozen := struct {
		Fingerprint string      `json:"fingerprint"`
		Theta       float64     `json:"theta"`
		FPR         float64     `json:"fpr"`
		Confidence  float64     `json:"confidence"`
		Calibration string      `json:"calibration,omitempty"`
		Test        string      `json:"test,omitempty"`
		Sequential  *Sequential `json:"sequential,omitempty"`
		// SequentialNull is what the sequential test's H₀ is: the
		// calibration "models" themselves or the beta-binomial "fit".
		SequentialNull string `json:"sequential_null,omitempty"`
		// Evasion names the evasion check, where the calibration makes it.
		Evasion string `json:"evasion,omitempty"`
	}{com, r.Theta, r.FPR, r.Confidence, "", "", r.Sequential, "", ""}
	if r.Calibration != nil {
		frozen.Calibration, frozen.Test = r.Calibration.Digest(), r.Calibration.Test(r.FPR)
		if _, ok := r.Calibration.EvasionFloor(fp); ok {
			frozen.Evasion = "true-class share of wrong answers, lower beta-binomial tail at the level"
		}
		if r.Sequential != nil {
			frozen.SequentialNull = "fit"
			if frozen.Test == TestEmpirical {
				frozen.SequentialNull = "models"
			}
		}
	}
	b, err := json.Marshal(frozen)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// Verdict is Verify's answer with the evidence behind it.
type Verdict struct {
	Suspect string `json:"suspect"`
	// Fingerprints is the number of fingerprints the suspect answered
	// (all of them, or fewer when a sequential test stopped early), Agree
	// how many answers equal their key.
	Fingerprints int     `json:"fingerprints"`
	Agree        int     `json:"agree"`
	Accuracy     float64 `json:"fingerprint_accuracy"`
	// Interval is the Clopper–Pearson interval of the fingerprint accuracy
	// at Confidence.
	Interval   [2]float64 `json:"interval"`
	Confidence float64    `json:"confidence"`
	Outcome    string     `json:"outcome"` // derived, independent or inconclusive
	// Surrogate is Outcome == Derived: the suspect is accused.
	Surrogate bool    `json:"surrogate"`
	Theta     float64 `json:"theta"`
	// Threshold is the fingerprint accuracy the decision needs: θ, or the
	// calibrated test's critical accuracy.
	Threshold  float64 `json:"threshold"`
	Calibrated bool    `json:"calibrated"`
	// PValue is P[X ≥ Agree] under the calibrated null (a beta-binomial
	// fit over independent models), EmpiricalP the share of them at or
	// above the suspect, (1 + #{≥})/(N + 1); both nil when uncalibrated.
	PValue     *float64     `json:"p_value,omitempty"`
	EmpiricalP *float64     `json:"empirical_p,omitempty"`
	Null       *shared.Null `json:"null,omitempty"`
	// Commitment is the fingerprint's, Signer the public key that signed
	// it (empty: unsigned), Rule the decision rule's hash.
	Commitment string `json:"commitment"`
	Signer     string `json:"signer,omitempty"`
	Rule       string `json:"rule"`
	// Sequential reports a sequential verification.
	Sequential *shared.Sequential `json:"sequential,omitempty"`
	// Evasion is the calibrated verdict's check for answers chosen to
	// miss the keys; nil when the calibration cannot make it.
	Evasion *shared.Evasion `json:"evasion,omitempty"`
	// Order is the fingerprints' indices in the order they were asked;
	// Labels and Matches follow it.
	Order   []int   `json:"order"`
	Labels  []int64 `json:"labels"`
	Matches []bool  `json:"matches"`
	// Queries is the number of images the suspect was sent: Fingerprints,
	// or more for a remote suspect that had to retry or a sequential test
	// that asked a whole batch.
	Queries int `json:"queries"`
}

// Verify is Algorithm 1 judged by a rule: it queries the suspect with the
// fingerprints — all at once, or in a random order until a sequential test
// decides — and gives the verdict with its evidence.
func Verify(ctx context.Context, s suspect.Suspect, fp *Fingerprint, r Rule) (*Verdict, error) {
	return VerifyWatched(ctx, s, fp, r, nil)
}

// VerifyWatched is Verify that reports each batch of answers (the
// agreement so far and its interval) to rep.
func VerifyWatched(ctx context.Context, s suspect.Suspect, fp *Fingerprint, r Rule, rep shared.Reporter) (*Verdict, error) {
	if fp.N == 0 {
		return nil, fmt.Errorf("verify: the fingerprint is empty")
	}
	r = r.withDefaults()
	if err := r.Check(fp); err != nil {
		return nil, fmt.Errorf("verify %s: %w", s, err)
	}
	hash, err := r.Hash(fp)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s, err)
	}
	com, _ := fp.Commitment()
	q, counts := s.(suspect.Counter)
	before := 0
	if counts {
		before = q.Queries()
	}
	v := &Verdict{Suspect: s.String(), Theta: r.Theta, Confidence: r.Confidence, Commitment: com, Signer: fp.Signer, Rule: hash}
	order := make([]int, fp.N)
	for i := range order {
		order[i] = i
	}
	batch := fp.N
	var test sequentialTest
	// asked is each calibration model's agreement on the keys asked so
	// far, kept up to date key by key for the sequential checks.
	var asked []int
	decision := stats.Continue
	if sq := r.Sequential; sq != nil {
		rand.New(rand.NewPCG(uint64(sq.Seed), 0x5eed)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		batch, test = sq.Batch, r.sprt()
		asked = make([]int, len(r.Calibration.Models))
	}
	per := fp.ImageSize()
	sent := 0
	for start := 0; start < fp.N && decision == stats.Continue; start += batch {
		idx := order[start:min(start+batch, fp.N)]
		x := make([]uint8, 0, len(idx)*per)
		for _, i := range idx {
			x = append(x, fp.Images[i*per:(i+1)*per]...)
		}
		labels, err := s.Classify(ctx, suspect.Images{X: toFloat(x), N: len(idx), C: fp.C, H: fp.H, W: fp.W})
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", s, err)
		}
		if len(labels) != len(idx) {
			return nil, fmt.Errorf("verify %s: %d answers to %d queries", s, len(labels), len(idx))
		}
		sent += len(idx)
		for j, l := range labels {
			i := idx[j]
			v.Order, v.Labels = append(v.Order, i), append(v.Labels, l)
			v.Matches = append(v.Matches, l == fp.Keys[i])
			if l == fp.Keys[i] {
				v.Agree++
			}
			if r.Sequential != nil {
				for m, cm := range r.Calibration.Models {
					if cm.Matches[i] == '1' {
						asked[m]++
					}
				}
				decision = test.Decide(v.Agree, len(v.Order)-v.Agree)
				// An accusation also needs the calibration's own models
				// not to contradict it on the keys asked so far: the
				// verdict's empirical p-value on them at or below the level.
				if decision == stats.RejectNull && r.Calibration.refuted(v.Agree, asked, r.FPR) {
					decision = stats.Continue
				}
				// And clearing needs what the fixed-size rule's does on
				// them: the interval below the accusing line and θ. H₁ is
				// one rate, and against a null spread out enough to put
				// mass near 1 a suspect agreeing far above that rate —
				// even on every key — looks likelier independent.
				if decision == stats.AcceptNull && !r.clears(v.Agree, len(v.Order), asked) {
					decision = stats.Continue
				}
				// Nor does it clear a suspect before its wrong answers
				// show it honest: on a few keys a detect-and-evade wrapper
				// looks like anyone.
				if decision == stats.AcceptNull {
					if e := r.Calibration.Evasion(fp, v.Order, v.Labels, r.FPR); e != nil && !honestShown(e, r.FPR) {
						decision = stats.Continue
					}
				}
				if decision != stats.Continue {
					break // the rest of the batch was asked but is not needed
				}
			}
		}
		if rep != nil && fp.N > batch {
			lo, hi := stats.ClopperPearson(v.Agree, len(v.Order), r.Confidence)
			rep.Report(shared.Event{Kind: shared.Progress, Stage: "verify", Step: int64(len(v.Order)), Total: int64(fp.N),
				Metrics: map[string]float64{"agree": float64(v.Agree), "accuracy": float64(v.Agree) / float64(len(v.Order)), "lo": lo, "hi": hi},
				Message: fmt.Sprintf("%d of %d fingerprints answered, agreement %.2f [%.2f, %.2f]", len(v.Order), fp.N, float64(v.Agree)/float64(len(v.Order)), lo, hi)})
		}
	}
	v.Fingerprints = len(v.Order)
	v.Queries = sent
	if counts {
		v.Queries = q.Queries() - before
	}
	r.judge(fp, v, decision)
	return v, nil
}

// honestShown says whether a suspect's wrong answers show it honest: not
// evasive, and naming the true class more often than a wrapper answering a
// random other label would (e.Random of the time), at level alpha. (The
// check is made only where the calibration models themselves do.)
func honestShown(e *shared.Evasion, alpha float64) bool {
	return !e.Evasive && stats.BinomialTail(e.Truth, e.Wrong, e.Random) <= alpha
}

// clears says whether agree agreements on n keys clear a suspect by the
// calibrated rule: the upper end of the interval below both the calibrated
// test's accusing line on those keys, on which the calibration models
// agree models[j] times, and θ.
func (r Rule) clears(agree, n int, models []int) bool {
	_, hi := stats.ClopperPearson(agree, n, r.Confidence)
	return hi < min(float64(r.Calibration.critical(r.FPR, n, models))/float64(n), r.Theta)
}

// judge fills in the verdict's statistics and outcome from its answers to
// the keys of fp.
func (r Rule) judge(fp *Fingerprint, v *Verdict, decision stats.Decision) {
	k, n := v.Agree, v.Fingerprints
	v.Accuracy = float64(k) / float64(n)
	lo, hi := stats.ClopperPearson(k, n, r.Confidence)
	v.Interval = [2]float64{lo, hi}
	c := r.Calibration
	if c == nil {
		v.Threshold = r.Theta
		switch {
		case lo >= r.Theta:
			v.Outcome = Derived
		case hi < r.Theta:
			v.Outcome = Independent
		default:
			v.Outcome = Inconclusive
		}
		v.Surrogate = v.Outcome == Derived
		return
	}
	v.Calibrated = true
	var subset []int
	if n < c.Fingerprints {
		subset = v.Order
	}
	p, emp := c.Fit.Tail(k, n), c.Empirical(k, subset)
	v.PValue, v.EmpiricalP = &p, &emp
	// Accusing needs the suspect at or above the test's critical count:
	// the empirical p-value at or below the level where the calibration
	// has the models for it, else the fit's tail with no more of its
	// models at or above the suspect than the level allows.
	crit := c.Critical(r.FPR, subset)
	v.Threshold = float64(crit) / float64(n)
	v.Null = &shared.Null{Models: len(c.Models), Architectures: c.Architectures(), Alpha: c.Fit.Alpha, Beta: c.Fit.Beta,
		Mean: c.Fit.Mean(), SD: c.Fit.SD(), FPR: r.FPR, Test: c.Test(r.FPR), Threshold: v.Threshold, Calibration: c.Digest(), Warnings: c.WarningsAt(r.FPR)}
	switch {
	case k >= crit:
		v.Outcome = Derived
	case hi < min(v.Threshold, r.Theta):
		// Clearing needs the whole interval below the accusing line and
		// below θ, the agreement of a derived model: a suspect the test
		// cannot accuse only because independent models are so spread
		// out is not thereby shown independent.
		v.Outcome = Independent
	default:
		v.Outcome = Inconclusive
	}
	if sq := r.Sequential; sq != nil {
		seq := &shared.Sequential{Used: n, DerivedRate: sq.DerivedRate, Miss: sq.Miss, FPR: r.FPR, Decision: "none"}
		if c.Test(r.FPR) == TestEmpirical {
			// H₁ is every rate from the accusing line up.
			seq.DerivedRate = float64(c.Critical(r.FPR, nil)) / float64(c.Fingerprints)
			seq.Above = true
		}
		switch decision {
		case stats.RejectNull:
			seq.Decision = Derived
			v.Outcome = Derived
		case stats.AcceptNull:
			seq.Decision = Independent
			v.Outcome = Independent
		}
		v.Sequential = seq
	}
	// A suspect whose wrong answers do not look like an honest
	// classifier's is not cleared (detect-and-evade): the check never
	// accuses, it only withholds a clearing the answers cannot support.
	if v.Evasion = c.Evasion(fp, v.Order, v.Labels, r.FPR); v.Evasion != nil && v.Evasion.Evasive && v.Outcome == Independent {
		v.Outcome = Inconclusive
	}
	v.Surrogate = v.Outcome == Derived
}

// Explain says what a verdict means in plain words, naming the evidence
// and what it was tested against.
func (v *Verdict) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s agrees with the source on %d of %d fingerprints (%.0f%%; %.0f%% interval %.0f–%.0f%%). ",
		v.Suspect, v.Agree, v.Fingerprints, 100*v.Accuracy, 100*v.Confidence, 100*v.Interval[0], 100*v.Interval[1])
	if !v.Calibrated {
		switch v.Outcome {
		case Derived:
			fmt.Fprintf(&b, "Even the low end of that interval reaches the paper's θ = %.0f%%: by Algorithm 1 it is derived from the source. ", 100*v.Theta)
		case Independent:
			fmt.Fprintf(&b, "Even the high end of that interval stays below θ = %.0f%%: by Algorithm 1 it is not a surrogate. ", 100*v.Theta)
		default:
			fmt.Fprintf(&b, "The interval straddles θ = %.0f%%: the fingerprints cannot decide (inconclusive). ", 100*v.Theta)
		}
		b.WriteString("This verdict is uncalibrated: nobody measured how often independent models agree with this fingerprint, so no p-value or error rate can be given. Run `conferral calibrate` with independently trained models to get one.")
		return b.String()
	}
	nl := v.Null
	null := fmt.Sprintf("%d independent models (%s) agreed %.0f%% ± %.0f%% on average", nl.Models, strings.Join(nl.Architectures, ", "), 100*nl.Mean, 100*nl.SD)
	switch v.Outcome {
	case Derived:
		if nl.Test == TestEmpirical {
			// EmpiricalP is (1 + as much)/(N + 1): name the count itself.
			asMuch := "none"
			if a := int(math.Round(*v.EmpiricalP*float64(nl.Models+1))) - 1; a > 0 {
				asMuch = fmt.Sprint(a)
			}
			exact := "exact for a model like them"
			if v.Sequential != nil {
				exact = fmt.Sprintf("on the %d keys asked", v.Fingerprints)
			}
			fmt.Fprintf(&b, "The %s; %s of them agreed as much as the suspect (empirical p = %.2g, %s; the beta-binomial fit says %.2g). At a false-positive rate of %g the empirical test accuses from %.0f%% on: it is derived from the source.",
				null, asMuch, *v.EmpiricalP, exact, *v.PValue, nl.FPR, 100*v.Threshold)
			break
		}
		fmt.Fprintf(&b, "The %s; a model like them would agree this often with probability %.2g (fitted), and %.2g of them did (empirical). At a false-positive rate of %g the test accuses from %.0f%% on: it is derived from the source.",
			null, *v.PValue, *v.EmpiricalP, nl.FPR, 100*v.Threshold)
	case Independent:
		fmt.Fprintf(&b, "The %s; accusing needs %.0f%% at a false-positive rate of %g, and a derived model agrees about θ = %.0f%%: the whole interval is below both, no evidence that it was derived from the source.",
			null, 100*v.Threshold, nl.FPR, 100*v.Theta)
	default:
		if e := v.Evasion; e != nil && e.Evasive && v.Interval[1] < min(v.Threshold, v.Theta) {
			fmt.Fprintf(&b, "The %s; the whole interval is below %.0f%%, which would clear it, but its wrong answers look chosen to miss the keys (below), so it is not cleared: inconclusive.",
				null, 100*min(v.Threshold, v.Theta))
			break
		}
		fmt.Fprintf(&b, "The %s; accusing needs %.0f%% at a false-positive rate of %g by the %s test (p = %.2g fitted, %.2g empirical), and clearing needs the whole interval below %.0f%%. The suspect falls short of the one and its interval reaches the other, so the fingerprints cannot decide: inconclusive.",
			null, 100*v.Threshold, nl.FPR, nl.Test, *v.PValue, *v.EmpiricalP, 100*min(v.Threshold, v.Theta))
	}
	if e := v.Evasion; e != nil && e.Evasive {
		fmt.Fprintf(&b, " Evasion check: of the %d keys it answered with another label than the key, only %d named the image's true class (%.0f%%). The calibration's independent models name it on %.0f%% of theirs, a wrapper answering random labels on %.0f%%; %d of %d is below the halfway mark of %.0f%% at p = %.2g: answers like a detector's random replies to flagged queries, not an honest classifier's. This check never accuses; it withholds a clearing.",
			e.Wrong, e.Truth, 100*e.Share, 100*e.Mean, 100*e.Random, e.Truth, e.Wrong, 100*e.Floor, e.PValue)
	}
	if s := v.Sequential; s != nil {
		against := fmt.Sprintf("a derived model agreeing %.0f%%", 100*s.DerivedRate)
		if s.Above {
			against = fmt.Sprintf("the independent models themselves, derived models agreeing anywhere from %.0f%% up", 100*s.DerivedRate)
		}
		fmt.Fprintf(&b, " Sequential test (SPRT against %s, β = %g): decided %s after %d answers.", against, s.Miss, s.Decision, s.Used)
	}
	for _, w := range nl.Warnings {
		b.WriteString(" Caution: " + w + ".")
	}
	return b.String()
}
