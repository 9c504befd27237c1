package fingerprint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// A calibration records how often independent models — trained without
// the source, and taking no part in crafting the fingerprint — agree with
// its keys. It is the null hypothesis of every calibrated verdict: the
// models' raw answers, for an empirical (conformal) p-value that decides
// wherever there are enough models for the level (Test), and a
// beta-binomial fit over them (they differ from each other, which a single
// binomial rate cannot say) that decides where there are too few and drives
// the sequential test. It lives in its own file, bound to the fingerprint
// by the fingerprint's commitment.

// DefaultFPR is the false-positive rate a calibrated decision targets
// unless told otherwise.
const DefaultFPR = 0.01

// MinCalibration is the fewest independent models a calibration should
// have: below it the fit rests on too few points and the empirical
// p-value cannot go below 1/(N+1) ≈ 9 %.
const MinCalibration = 10

// The two tests a calibrated decision may use against the same null.
const (
	// TestEmpirical accuses when the empirical p-value (1 + #{models at
	// or above the suspect})/(N + 1) is at or below the level: exact for a
	// suspect exchangeable with the calibration models whatever the
	// distribution of their agreement (a conformal p-value). It needs
	// N + 1 ≥ 1/level models.
	TestEmpirical = shared.TestEmpirical
	// TestFit accuses when the beta-binomial fit's tail is at or below the
	// level and none of the models reaches the suspect (with N + 1 < 1/level
	// the level allows none): what fewer models allow. A single beta over models that
	// agree anywhere from 0 to 0.7 has a heavier upper tail than the
	// models show, so this test is conservative where they are spread out.
	TestFit = shared.TestFit
)

const calibrationFormat = "conferral-calibration/1"

// Calibration is the agreement of independent models with a fingerprint.
type Calibration struct {
	Format string `json:"format"`
	// Fingerprint is the commitment of the fingerprint it calibrates.
	Fingerprint  string             `json:"fingerprint"`
	Fingerprints int                `json:"fingerprints"`
	Dataset      string             `json:"dataset"`
	Created      time.Time          `json:"created"`
	Models       []CalibrationModel `json:"models"`
	Fit          stats.BetaBinomial `json:"fit"` // over Models' Agree, recomputed on load
	// TruthFit is the evasion check's null, a beta-binomial fit over the
	// models' true-class answers among their wrong ones (see
	// [shared.Evasion]), recomputed on load; nil when the models' Truths
	// were not recorded or the fingerprint has no true labels.
	TruthFit *stats.BetaBinomial  `json:"truth_fit,omitempty"`
	FPR      float64              `json:"fpr"` // the default target false-positive rate
	Summary  CalibrationThreshold `json:"threshold"`
}

// CalibrationModel is one independent model's answers.
type CalibrationModel struct {
	Name   string `json:"name"`
	Arch   string `json:"arch,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Agree  int    `json:"agree"`
	// Matches says, key by key, whether the model agreed ('1') or not
	// ('0'): an empirical p-value on any subset of the keys (sequential
	// verification) needs them.
	Matches string `json:"matches"`
	// Truths says, key by key, whether the model named the image's true
	// class ('1') or not ('0'): what the evasion check compares a suspect's
	// wrong answers with. Empty in calibrations made before it.
	Truths string `json:"truths,omitempty"`
}

// CalibrationThreshold is the decision threshold at the calibration's own
// false-positive rate, by the test its models allow there (Test), for
// readers of the file; it is recomputed on load.
type CalibrationThreshold struct {
	FPR      float64 `json:"fpr"`
	Agree    int     `json:"agree"`    // fewest agreements that accuse
	Accuracy float64 `json:"accuracy"` // Agree / Fingerprints
}

// IndependentModel is a model to calibrate with: any suspect (a model file, an
// ONNX file, an endpoint) and what it is, for the report.
type IndependentModel struct {
	Suspect suspect.Suspect
	Arch    string
	SHA256  string
}

// Calibrate queries each independent model with the fingerprints and
// records its agreement with the keys. The models must be distinct (by
// name and, where known, by sha256) and at least two.
func Calibrate(ctx context.Context, fp *Fingerprint, models []IndependentModel, fpr float64) (*Calibration, error) {
	com, err := fp.Commitment()
	if err != nil {
		return nil, fmt.Errorf("calibrate: %w", err)
	}
	c := &Calibration{Format: calibrationFormat, Fingerprint: com, Fingerprints: fp.N, Dataset: fp.Meta.Dataset,
		Created: time.Now().UTC().Truncate(time.Second), FPR: fpr}
	images := suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W}
	for _, m := range models {
		labels, err := m.Suspect.Classify(ctx, images)
		if err != nil {
			return nil, fmt.Errorf("calibrate with %s: %w", m.Suspect, err)
		}
		if len(labels) != fp.N {
			return nil, fmt.Errorf("calibrate with %s: %d answers to %d queries", m.Suspect, len(labels), fp.N)
		}
		cm := CalibrationModel{Name: m.Suspect.String(), Arch: m.Arch, SHA256: m.SHA256}
		cm.Matches = flags(labels, fp.Keys)
		cm.Agree = strings.Count(cm.Matches, "1")
		if len(fp.Labels) == fp.N {
			cm.Truths = flags(labels, fp.Labels)
		}
		c.Models = append(c.Models, cm)
	}
	if err := c.complete(fp); err != nil {
		return nil, err
	}
	return c, nil
}

// flags is '1' where labels[i] == want[i], '0' elsewhere.
func flags(labels, want []int64) string {
	b := make([]byte, len(labels))
	for i, l := range labels {
		b[i] = '0'
		if l == want[i] {
			b[i] = '1'
		}
	}
	return string(b)
}

// complete checks the record made for fp and derives the fits and the
// threshold from the models' answers.
func (c *Calibration) complete(fp *Fingerprint) error {
	if c.Format != calibrationFormat {
		return fmt.Errorf("calibration: format %q, want %q", c.Format, calibrationFormat)
	}
	if !(c.FPR > 0 && c.FPR < 0.5) {
		return fmt.Errorf("calibration: false-positive rate %g outside (0, 0.5)", c.FPR)
	}
	seen := map[string]string{}
	counts := make([]int, len(c.Models))
	for i, m := range c.Models {
		if len(m.Matches) != c.Fingerprints || strings.Trim(m.Matches, "01") != "" || strings.Count(m.Matches, "1") != m.Agree {
			return fmt.Errorf("calibration: model %q has %d answers (%d agreeing) for %d fingerprints", m.Name, len(m.Matches), m.Agree, c.Fingerprints)
		}
		if m.Truths != "" && (len(m.Truths) != c.Fingerprints || strings.Trim(m.Truths, "01") != "") {
			return fmt.Errorf("calibration: model %q has %d true-class flags for %d fingerprints", m.Name, len(m.Truths), c.Fingerprints)
		}
		for _, id := range []string{"name " + m.Name, "sha256 " + m.SHA256} {
			if id == "sha256 " {
				continue
			}
			if other, dup := seen[id]; dup {
				return fmt.Errorf("calibration: %q and %q are the same model (%s): count distinct models only", other, m.Name, id)
			}
			seen[id] = m.Name
		}
		counts[i] = m.Agree
	}
	fit, err := stats.FitBetaBinomial(counts, c.Fingerprints)
	if err != nil {
		return fmt.Errorf("calibration of %d models: %w", len(c.Models), err)
	}
	c.Fit = fit
	c.TruthFit = nil
	if truth, wrong, ok := c.truthCounts(fp); ok {
		// Models that answered every key with its label have no wrong
		// answers to weigh; the fit needs two with some.
		var ks, ns []int
		for j := range truth {
			if wrong[j] > 0 {
				ks, ns = append(ks, truth[j]), append(ns, wrong[j])
			}
		}
		if len(ks) >= 2 {
			tf, err := stats.FitBetaBinomialTrials(ks, ns)
			if err != nil {
				return fmt.Errorf("calibration: the evasion check's fit: %w", err)
			}
			c.TruthFit = &tf
		}
	}
	k := c.Critical(c.FPR, nil)
	c.Summary = CalibrationThreshold{FPR: c.FPR, Agree: k, Accuracy: float64(k) / float64(c.Fingerprints)}
	return nil
}

// truthCounts is, for each model, how many of its answers name the true
// class (truth) among its answers other than the key (wrong), on the keys
// of fp whose label is not the true class; ok is false when fp has no
// true labels or a model's Truths were not recorded.
func (c *Calibration) truthCounts(fp *Fingerprint) (truth, wrong []int, ok bool) {
	if len(fp.Labels) != fp.N || len(c.Models) == 0 {
		return nil, nil, false
	}
	truth, wrong = make([]int, len(c.Models)), make([]int, len(c.Models))
	for j, m := range c.Models {
		if m.Truths == "" {
			return nil, nil, false
		}
		for i := range fp.N {
			if fp.Keys[i] == fp.Labels[i] || m.Matches[i] == '1' {
				continue
			}
			wrong[j]++
			if m.Truths[i] == '1' {
				truth[j]++
			}
		}
	}
	return truth, wrong, true
}

// EvasionFloor is the evasion check's terms for fp, with no suspect yet:
// the calibration models' true-class share (Mean), a random wrapper's
// (Random) and the Floor a suspect is tested against; ok is false where the
// calibration cannot make the check: with no true-class answers, with two
// classes (a wrapper's other label is the true one), or where the models
// name the true class no more often than a random wrapper, when a floor
// between the two would lie above the models themselves.
func (c *Calibration) EvasionFloor(fp *Fingerprint) (e shared.Evasion, ok bool) {
	classes := len(fp.Meta.Classes)
	if c.TruthFit == nil || len(fp.Labels) != fp.N || classes < 3 {
		return e, false
	}
	e = shared.Evasion{Mean: c.TruthFit.Mean(), Random: 1 / float64(classes-1), PValue: 1}
	if !(e.Mean > e.Random) {
		return shared.Evasion{}, false
	}
	// Halfway between a random wrapper and the calibration models: recipes
	// other than theirs name the true class less often (down to 0.33 of wrong
	// answers for the held-out zoos' independent models, against 0.81 for
	// the calibration's, on the natural keys), and the test must not flag
	// them.
	e.Floor = (e.Random + e.Mean) / 2
	return e, true
}

// Evasion is the evasion check of a suspect that answered labels[i] to the
// keys order[i] of fp (nil when the calibration cannot check): among its
// answers other than the key, on keys whose label is not the true class,
// how many name the true class, tested at level alpha against the floor.
func (c *Calibration) Evasion(fp *Fingerprint, order []int, labels []int64, alpha float64) *shared.Evasion {
	e, ok := c.EvasionFloor(fp)
	if !ok {
		return nil
	}
	for j, i := range order {
		if fp.Keys[i] == fp.Labels[i] || labels[j] == fp.Keys[i] {
			continue
		}
		e.Wrong++
		if labels[j] == fp.Labels[i] {
			e.Truth++
		}
	}
	if e.Wrong > 0 {
		e.Share = float64(e.Truth) / float64(e.Wrong)
		e.PValue = stats.BinomialLower(e.Truth, e.Wrong, e.Floor)
	}
	e.Evasive = e.PValue <= alpha
	return &e
}

// Architectures lists the calibration models' architectures, each once.
func (c *Calibration) Architectures() []string {
	var out []string
	for _, m := range c.Models {
		a := m.Arch
		if a == "" {
			a = "unknown"
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// Test is the test a decision at level fpr uses: TestEmpirical where the
// calibration has enough models for its p-value to reach fpr, else TestFit.
func (c *Calibration) Test(fpr float64) string {
	if c.allowed(fpr) >= 0 {
		return TestEmpirical
	}
	return TestFit
}

// allowed is the most calibration models that may agree at least as much
// as a suspect the empirical test accuses at level fpr: the largest a with
// (1 + a)/(N + 1) ≤ fpr, compared exactly as Empirical's p-value is, so
// that Test, Critical and refuted never disagree with the p-value a
// verdict reports (a product fpr·(N + 1) with a tolerance would, for an
// fpr just below a multiple of 1/(N + 1)). It is −1 when even a suspect
// above every model is not accused.
func (c *Calibration) allowed(fpr float64) int {
	n := len(c.Models)
	n1 := float64(n + 1)
	a := min(max(int(fpr*n1)-1, -1), n)
	for a >= 0 && float64(1+a)/n1 > fpr {
		a--
	}
	for a < n && float64(2+a)/n1 <= fpr {
		a++
	}
	return a
}

// exactModels is the fewest calibration models with which the empirical
// test can accuse at level fpr: the smallest N with 1/(N + 1) ≤ fpr.
func exactModels(fpr float64) int {
	n := max(int(math.Ceil(1/fpr))-1, 0)
	for n > 0 && 1/float64(n) <= fpr {
		n--
	}
	for 1/float64(n+1) > fpr {
		n++
	}
	return n
}

// Critical is the fewest agreements on the keys in subset (all keys when
// nil) that accuse at level fpr by Test(fpr).
func (c *Calibration) Critical(fpr float64, subset []int) int {
	n := c.Fingerprints
	if subset != nil {
		n = len(subset)
	}
	return c.critical(fpr, n, c.agreements(subset))
}

// critical is Critical on n keys on which the calibration models agree
// agree[j] times: counted once by the caller (or kept up to date key by
// key), not once per candidate count.
func (c *Calibration) critical(fpr float64, n int, agree []int) int {
	if c.Test(fpr) == TestFit {
		k := c.Fit.Critical(n, fpr)
		for k <= n && c.refuted(k, agree, fpr) {
			k++
		}
		return k
	}
	// (1 + above)/(N + 1) ≤ fpr allows `allowed` models at or above the
	// suspect: it must agree more than the (allowed+1)-th most agreeing.
	allowed := c.allowed(fpr)
	if allowed >= len(c.Models) {
		return 0 // every model may reach the suspect: fpr ≥ 1 accuses all
	}
	sorted := slices.Clone(agree)
	slices.SortFunc(sorted, func(a, b int) int { return b - a })
	return sorted[allowed] + 1
}

// refuted says whether more of the calibration's own models, agreeing
// models[j] times on the keys in question, reach agree agreements than
// level fpr tolerates: an accusation the models seen refute, whatever a
// fit says.
func (c *Calibration) refuted(agree int, models []int, fpr float64) bool {
	above := atLeast(models, agree)
	if c.Test(fpr) == TestEmpirical {
		return empirical(above, len(c.Models)) > fpr
	}
	return above > int(fpr*float64(len(c.Models)))
}

// Warnings says what limits the calibration's evidence at its own level.
func (c *Calibration) Warnings() []string { return c.WarningsAt(c.FPR) }

// WarningsAt says what limits the calibration's evidence for decisions at
// level fpr: a verdict's rule may test at another level than the
// calibration's own, and which test decides depends on it.
func (c *Calibration) WarningsAt(fpr float64) []string {
	var w []string
	if n := len(c.Models); n < MinCalibration {
		w = append(w, fmt.Sprintf("only %d independent models calibrate this fingerprint (at least %d advised): the fitted tail rests on few points, and the empirical p-value cannot go below 1/(N+1) = %.3f",
			n, MinCalibration, 1/float64(n+1)))
	} else if c.Test(fpr) == TestFit {
		w = append(w, fmt.Sprintf("with %d independent models the empirical p-value cannot go below 1/(N+1) = %.3f, so decisions at a false-positive rate of %g rest on the beta-binomial fit's tail (conservative where the models are spread out); %d models make the test exact",
			n, 1/float64(n+1), fpr, exactModels(fpr)))
	}
	if c.Critical(fpr, nil) > c.Fingerprints {
		w = append(w, fmt.Sprintf("independent models agree so often that no fingerprint accuracy reaches a false-positive rate of %g: no verdict can accuse", fpr))
	}
	return w
}

// Empirical is the empirical p-value (1 + #{models at or above})/(N + 1)
// of agree agreements over the keys in subset (all keys when nil).
func (c *Calibration) Empirical(agree int, subset []int) float64 {
	return empirical(atLeast(c.agreements(subset), agree), len(c.Models))
}

// empirical is the p-value with above of n models at or above the suspect:
// the one expression Empirical and refuted compare against the level.
func empirical(above, n int) float64 { return float64(1+above) / float64(n+1) }

// atLeast counts the agreements in models that reach agree.
func atLeast(models []int, agree int) int {
	n := 0
	for _, a := range models {
		if a >= agree {
			n++
		}
	}
	return n
}

// agreements is each calibration model's agreement on the keys in subset
// (all when nil).
func (c *Calibration) agreements(subset []int) []int {
	out := make([]int, len(c.Models))
	for i, m := range c.Models {
		if subset == nil {
			out[i] = m.Agree
			continue
		}
		for _, k := range subset {
			if m.Matches[k] == '1' {
				out[i]++
			}
		}
	}
	return out
}

// Digest is the sha256 of the calibration's canonical encoding: what a
// decision rule's hash binds.
func (c *Calibration) Digest() string {
	b, _ := json.Marshal(c) // fixed field order; cannot fail on these types
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Save writes the calibration as indented JSON, atomically.
func (c *Calibration) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("saving calibration: %w", err)
	}
	return safetensors.WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// ErrOtherFingerprint says a calibration belongs to another fingerprint.
var ErrOtherFingerprint = errors.New("the calibration belongs to another fingerprint")

// LoadCalibration reads a calibration and refuses it unless it was made
// for fp; the fit and threshold are recomputed from the models' answers.
func LoadCalibration(path string, fp *Fingerprint) (*Calibration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading calibration: %w", err)
	}
	c := &Calibration{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("loading calibration %s: %w", path, err)
	}
	if err := c.For(fp); err != nil {
		return nil, fmt.Errorf("loading calibration %s: %w", path, err)
	}
	return c, nil
}

// For checks that c calibrates fp and derives its fit from the models'
// answers.
func (c *Calibration) For(fp *Fingerprint) error {
	if err := c.belongsTo(fp); err != nil {
		return err
	}
	return c.complete(fp)
}

// belongsTo checks, without changing c, that c was made for fp.
func (c *Calibration) belongsTo(fp *Fingerprint) error {
	com, err := fp.Commitment()
	if err != nil {
		return err
	}
	if c.Fingerprint != com {
		return fmt.Errorf("%w (made for %.16s…, this one is %.16s…)", ErrOtherFingerprint, c.Fingerprint, com)
	}
	if c.Fingerprints != fp.N {
		return fmt.Errorf("calibration of %d fingerprints for a fingerprint of %d", c.Fingerprints, fp.N)
	}
	return nil
}

// CalibrationPath is where a fingerprint's calibration is looked for by
// default: beside it, with the extension .calibration.json.
func CalibrationPath(fingerprintPath string) string {
	return strings.TrimSuffix(fingerprintPath, ".safetensors") + ".calibration.json"
}
