package experiment

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/detect"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/predict"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// The detect-and-evade study (issue 17, item 2; Hitaj et al. 2019): a
// suspect served behind a detector of fingerprint queries, which answers a
// wrong label on the queries it flags. The detector is the adversary's
// own (experiment evasion --save-detectors), its threshold set on the
// adversary's own benign inputs for a false-positive rate. Each suspect is
// served on 127.0.0.1 by predict, as `conferral serve-model --detector`
// serves it, and verified over HTTP by the fingerprint's calibrated rule,
// with and without the wrapper, and with the verifier's mitigations:
// mixing the keys among benign queries, and asking a random subset of
// them (the sequential rule).

// DESuspect is one suspect of the study.
type DESuspect struct {
	Path, Arch string
	Derived    bool // the truth: derived from the source, or independent
	Model      detect.Model
}

// DEFingerprint is a fingerprint with its calibrated rule and the
// detector the adversary picked against its kind.
type DEFingerprint struct {
	Name, Path   string
	FP           *fingerprint.Fingerprint
	Rule         fingerprint.Rule
	Detector     *detect.Detector
	DetectorPath string
}

// DetectEvadeStudy is the study, set up.
type DetectEvadeStudy struct {
	Suspects     []DESuspect
	Fingerprints []DEFingerprint
	// FPRs are the detector's false-positive rates on the adversary's own
	// benign inputs; Evasions what flagged queries get.
	FPRs     []float64
	Evasions []detect.Evasion
	// Test is the test split: the benign queries are its images that are
	// neither a detector's benign input nor a fingerprint's image or
	// original (Limit of them at most; 0: all).
	Test  *data.Dataset
	Limit int
	// Mix is the number of benign decoys per key in the mixing mitigation
	// (0: no mixing), Batch the images per request.
	Mix, Batch int
	// Sequential is the random-subset mitigation's sequential rule (nil:
	// none).
	Sequential *fingerprint.Sequential
	// Threads is libtorch's thread count on the serving threads.
	Threads  int
	Seed     int64
	Command  string
	Describe string
}

// DEResult is one suspect under one fingerprint and one setting.
type DEResult struct {
	Fingerprint, Suspect string
	Derived              bool
	// Setting is "none" (the plain model) or e.g. "1 % / random".
	Setting string
	FPR     float64
	Evasion detect.Evasion
	// Threshold is the detector's on this suspect.
	Threshold float64
	Verdict   *fingerprint.Verdict
	// KeysFlagged is how many of the keys the detector flagged.
	KeysFlagged int
	// Benign is the number of benign queries, Correct how many answers
	// were right, Flagged how many the detector flagged, Lost how many
	// the plain model answered right and the wrapped one wrong.
	Benign, Correct, Flagged, Lost int
	// Mixed is the verdict when the keys are mixed among Mix benign
	// decoys each; Seq the random-subset (sequential) verdict.
	Mixed, Seq *fingerprint.Verdict
}

// DetectEvadeResult is what the study measured.
type DetectEvadeResult struct {
	Rows   []DEResult
	Benign int
}

// PickDetector is the adversary's pick among dets for fingerprints of a
// kind: the detector set against that kind with the highest AUC on its
// own examples (what it can know), or -1.
func PickDetector(dets []*detect.Detector, fp *fingerprint.Fingerprint) int {
	best := -1
	for i, d := range dets {
		if d.Against == kindOf(fp) && (best < 0 || d.OwnAUC > dets[best].OwnAUC) {
			best = i
		}
	}
	return best
}

// endpoint serves m behind o on 127.0.0.1 and returns its KServe URL,
// the handler and a function that stops it.
func endpoint(m predict.Model, o predict.Options) (string, *predict.Handler, func(), error) {
	h, err := predict.New(m, o)
	if err != nil {
		return "", nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}
	return "http://" + ln.Addr().String() + "/v2/models/" + o.Name, h, stop, nil
}

// mixer is a suspect that hides the keys it is asked among benign decoys:
// each call sends the keys and Mix decoys per key, shuffled, and returns
// the keys' answers.
type mixer struct {
	inner  suspect.Suspect
	decoys []float32 // pixel space, NCHW
	per    int
	mix    int
	rng    *rand.Rand
}

func (m *mixer) String() string { return m.inner.String() + " (keys among benign queries)" }

func (m *mixer) Classify(ctx context.Context, b suspect.Images) ([]int64, error) {
	nd := len(m.decoys) / m.per
	total := b.N * (1 + m.mix)
	src := make([]int, total) // ≥ 0: key i; < 0: decoy −1−j
	for i := range b.N {
		src[i] = i
	}
	for i := b.N; i < total; i++ {
		src[i] = -1 - m.rng.IntN(nd)
	}
	m.rng.Shuffle(total, func(i, j int) { src[i], src[j] = src[j], src[i] })
	x := make([]float32, 0, total*m.per)
	for _, s := range src {
		if s >= 0 {
			x = append(x, b.X[s*m.per:(s+1)*m.per]...)
		} else {
			j := -1 - s
			x = append(x, m.decoys[j*m.per:(j+1)*m.per]...)
		}
	}
	got, err := m.inner.Classify(ctx, suspect.Images{X: x, N: total, C: b.C, H: b.H, W: b.W})
	if err != nil {
		return nil, err
	}
	out := make([]int64, b.N)
	for p, s := range src {
		if s >= 0 {
			out[s] = got[p]
		}
	}
	return out, nil
}

// Run measures every fingerprint, suspect and setting and writes
// dir/README.md.
func (st *DetectEvadeStudy) Run(ctx context.Context, dir report.Dir, progress shared.Reporter) (*DetectEvadeResult, error) {
	if len(st.Suspects) == 0 || len(st.Fingerprints) == 0 || st.Test == nil {
		return nil, errors.New("detect-evade: needs suspects, fingerprints with their detectors and the test split")
	}
	if st.Batch <= 0 {
		st.Batch = 256
	}
	c, h, w := st.Test.C, st.Test.H, st.Test.W
	per := c * h * w
	for _, f := range st.Fingerprints {
		if f.Detector == nil || f.FP == nil {
			return nil, fmt.Errorf("detect-evade: %s has no detector", f.Name)
		}
		if f.FP.C != c || f.FP.H != h || f.FP.W != w || f.Detector.C != c || f.Detector.H != h || f.Detector.W != w {
			return nil, fmt.Errorf("detect-evade: %s, its detector and the test images differ in size", f.Name)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	log := func(format string, a ...any) {
		progress.Report(shared.Event{Kind: shared.Log, Stage: "detect-evade", Message: fmt.Sprintf(format, a...)})
	}
	// Benign queries: test images no detector was set on and no
	// fingerprint holds.
	seen := map[string]bool{}
	for _, f := range st.Fingerprints {
		for i := range f.FP.N {
			seen[string(f.FP.Images[i*per:(i+1)*per])] = true
			seen[string(f.FP.Originals[i*per:(i+1)*per])] = true
		}
		for i := range f.Detector.N() {
			seen[string(f.Detector.Benign[i*per:(i+1)*per])] = true
		}
	}
	var idx []int
	for i := range st.Test.Len() {
		if !seen[string(st.Test.Image(i))] {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, errors.New("detect-evade: no test image is left for benign queries (every one is a fingerprint's or a detector's)")
	}
	rng := rand.New(rand.NewPCG(uint64(st.Seed), 0xde7ec7))
	if st.Limit > 0 && len(idx) > st.Limit {
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		idx = idx[:st.Limit]
		slices.Sort(idx)
	}
	benign := st.Test.Subset(idx)
	bx := benign.Float32(seq(benign.Len()))
	res := &DetectEvadeResult{Benign: benign.Len()}
	classes := st.Test.Classes
	remote := func(url string) (*suspect.Remote, error) {
		return suspect.NewRemote(url, suspect.RemoteOptions{AllowPrivate: true, Batch: st.Batch, Classes: classes, Timeout: 2 * time.Minute})
	}
	type setting struct {
		name string
		fpr  float64
		ev   detect.Evasion
	}
	settings := []setting{{name: "none"}}
	for _, f := range st.FPRs {
		for _, e := range st.Evasions {
			settings = append(settings, setting{fmt.Sprintf("%g %% / %s", 100*f, e), f, e})
		}
	}
	// A detector's benign scores on a suspect, computed once: fingerprints
	// of one kind share their detector.
	type pair struct {
		d *detect.Detector
		s int
	}
	benignOf := map[pair][]float64{}
	for _, f := range st.Fingerprints {
		for si, s := range st.Suspects {
			benignScores, ok := benignOf[pair{f.Detector, si}]
			if !ok {
				var err error
				if benignScores, err = f.Detector.BenignScores(s.Model); err != nil {
					return nil, fmt.Errorf("detect-evade: %s on %s: %w", f.Detector.Kind, s.Path, err)
				}
				benignOf[pair{f.Detector, si}] = benignScores
			}
			var plain []int64 // the plain model's benign answers
			for _, set := range settings {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				o := predict.Options{Name: "suspect", Classes: classes, C: c, H: h, W: w, Answer: predict.Index, MaxBatch: st.Batch, Threads: st.Threads}
				row := DEResult{Fingerprint: f.Name, Suspect: s.Path, Derived: s.Derived, Setting: set.name, FPR: set.fpr, Evasion: set.ev}
				if set.fpr > 0 {
					row.Threshold = detect.Quantile(benignScores, 1-set.fpr)
					o.Guard, o.Evade = &detect.Guard{D: f.Detector, M: s.Model, Threshold: row.Threshold}, set.ev
				}
				url, hd, stop, err := endpoint(s.Model, o)
				if err != nil {
					return nil, fmt.Errorf("detect-evade: serving %s: %w", s.Path, err)
				}
				err = func() error {
					defer stop()
					r, err := remote(url)
					if err != nil {
						return err
					}
					if row.Verdict, err = fingerprint.Verify(ctx, r, f.FP, f.Rule); err != nil {
						return err
					}
					row.KeysFlagged = hd.Flagged()
					labels, err := r.Classify(ctx, suspect.Images{X: bx, N: benign.Len(), C: c, H: h, W: w})
					if err != nil {
						return err
					}
					row.Flagged = hd.Flagged() - row.KeysFlagged
					row.Benign = benign.Len()
					for i, l := range labels {
						if l == benign.Labels[i] {
							row.Correct++
						}
					}
					if plain == nil {
						plain = labels
					}
					for i, l := range labels {
						if plain[i] == benign.Labels[i] && l != benign.Labels[i] {
							row.Lost++
						}
					}
					if st.Mix > 0 {
						m := &mixer{inner: r, decoys: bx, per: per, mix: st.Mix, rng: rand.New(rand.NewPCG(uint64(st.Seed), 0x313))}
						if row.Mixed, err = fingerprint.Verify(ctx, m, f.FP, f.Rule); err != nil {
							return err
						}
					}
					if st.Sequential != nil && f.Rule.Calibration != nil {
						rule := f.Rule
						rule.Sequential = st.Sequential
						if row.Seq, err = fingerprint.Verify(ctx, r, f.FP, rule); err != nil {
							return err
						}
					}
					return nil
				}()
				if err != nil {
					return nil, fmt.Errorf("detect-evade: %s, %s, %s: %w", f.Name, s.Path, set.name, err)
				}
				res.Rows = append(res.Rows, row)
				log("%s / %s / %s: %s, fingerprint accuracy %.3f, keys flagged %d/%d, benign accuracy %.4f (flagged %d/%d)", f.Name, s.Path, set.name,
					row.Verdict.Outcome, row.Verdict.Accuracy, row.KeysFlagged, f.FP.N, float64(row.Correct)/float64(row.Benign), row.Flagged, row.Benign)
			}
		}
	}
	if err := st.write(dir, res); err != nil {
		return nil, err
	}
	return res, nil
}

func cp(k, n int) string {
	lo, hi := stats.ClopperPearson(k, n, 0.95)
	return fmt.Sprintf("%.3f [%.3f, %.3f]", float64(k)/float64(max(1, n)), lo, hi)
}

func outcome(v *fingerprint.Verdict) string {
	if v == nil {
		return "—"
	}
	return v.Outcome
}

func (st *DetectEvadeStudy) write(dir report.Dir, r *DetectEvadeResult) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Detect and evade (Hitaj et al.)\n\n")
	p("A suspect served behind the adversary's own detector of fingerprint queries answers a wrong label on the queries it flags. ")
	p("Each suspect is served on 127.0.0.1 (KServe v2, labels only) by the same code as `conferral serve-model --detector`, and verified over HTTP by each fingerprint's frozen, calibrated rule.\n\n")
	if st.Describe != "" {
		p("%s\n\n", st.Describe)
	}
	p("```\n%s\n```\n\n", st.Command)
	p("## Setup\n\n")
	for _, f := range st.Fingerprints {
		cal := "uncalibrated"
		if c := f.Rule.Calibration; c != nil {
			fpr := f.Rule.FPR
			if fpr == 0 {
				fpr = c.FPR
			}
			cal = fmt.Sprintf("calibrated on %d independent models, test at %g %% false positives", len(c.Models), 100*fpr)
		}
		p("- **%s** (`%s`, %d keys, %s). The adversary's pick against %s fingerprints (highest AUC on its own examples, %.3f): **%s** (`%s`; flipped %v), set on its own examples; its threshold is the (1 − FPR) quantile of its scores, on the suspect it guards, of its %d own benign inputs.\n",
			f.Name, f.Path, f.FP.N, cal, f.Detector.Against, f.Detector.OwnAUC, f.Detector.Kind, f.DetectorPath, f.Detector.Flip, f.Detector.N())
	}
	nd, ni := 0, 0
	for _, s := range st.Suspects {
		if s.Derived {
			nd++
		} else {
			ni++
		}
	}
	p("- Suspects: %d distinct models (%d derived, %d independent).\n", len(st.Suspects), nd, ni)
	p("- Benign queries: %d test images that are neither a detector's benign input nor a fingerprint's image or original. **Benign accuracy** is the share answered right; **lost** the share the plain model answers right and the wrapped one wrong (the evasion's cost to the adversary's users).\n", r.Benign)
	p("- A flagged query gets **random** (another label than the model's, the same for the same input, so asking again does not average it away) or **second** (the second-best label).\n")
	if st.Mix > 0 {
		p("- Mitigation **mixed**: each key is sent among %d benign decoys (test images of the benign set), shuffled, %d images a request.\n", st.Mix, st.Batch)
	}
	if st.Sequential != nil {
		p("- Mitigation **random subset**: the sequential rule (`verify --sequential`) asks the keys in a random order, %d a request, and stops as soon as Wald's SPRT decides.\n", st.Sequential.Batch)
	}
	p("- Intervals are Clopper–Pearson 95 %%.\n\n")
	p("## Every suspect\n\n")
	p("| fingerprint | suspect | truth | wrapper | keys flagged | fingerprint accuracy | verdict | p (empirical) | evasion check: true class / wrong answers (p) | mixed: accuracy, verdict | random subset: verdict (keys asked) | benign accuracy | benign flagged | lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		v := row.Verdict
		truth := "independent"
		if row.Derived {
			truth = "derived"
		}
		pv := "—"
		if v.EmpiricalP != nil {
			pv = fmt.Sprintf("%.2g", *v.EmpiricalP)
		}
		mixed, sq, ev := "—", "—", "—"
		if e := v.Evasion; e != nil {
			ev = fmt.Sprintf("%d/%d (%.2g)", e.Truth, e.Wrong, e.PValue)
			if e.Evasive {
				ev = "**evasive** " + ev
			}
		}
		if row.Mixed != nil {
			mixed = fmt.Sprintf("%.3f, %s", row.Mixed.Accuracy, row.Mixed.Outcome)
		}
		if row.Seq != nil {
			sq = fmt.Sprintf("%s (%d)", row.Seq.Outcome, row.Seq.Fingerprints)
		}
		p("| %s | `%s` | %s | %s | %d/%d | %.3f [%.3f, %.3f] | **%s** | %s | %s | %s | %s | %s | %s | %s |\n", row.Fingerprint, shortPath(row.Suspect), truth, row.Setting,
			row.KeysFlagged, v.Fingerprints, v.Accuracy, v.Interval[0], v.Interval[1], v.Outcome, pv, ev, mixed, sq,
			cp(row.Correct, row.Benign), cp(row.Flagged, row.Benign), cp(row.Lost, row.Benign))
	}
	p("\n## Summary\n\n")
	p("Per fingerprint and wrapper, over the derived suspects (then the independent ones): how many the rule accuses, plainly, with the keys mixed among benign queries and with a random subset; how many it clears (calls independent); how many it found evasive (the evasion check, where the calibration makes it: not cleared, whatever the agreement); the keys flagged; the mean fingerprint accuracy; the adversary's cost on benign queries (pooled over the suspects).\n\n")
	p("| fingerprint | suspects | wrapper | accused | accused, mixed | accused, random subset | cleared | found evasive | keys flagged | mean fingerprint accuracy | benign flagged | lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	type key struct {
		fp, set string
		derived bool
	}
	var order []key
	agg := map[key]*[10]int{}
	accSum := map[key]float64{}
	for _, f := range st.Fingerprints {
		for _, derived := range []bool{true, false} {
			for _, row := range r.Rows {
				if row.Derived != derived || row.Fingerprint != f.Name {
					continue
				}
				k := key{row.Fingerprint, row.Setting, row.Derived}
				a, ok := agg[k]
				if !ok {
					a = &[10]int{}
					agg[k] = a
					order = append(order, k)
				}
				a[0]++
				if row.Verdict.Surrogate {
					a[1]++
				}
				if row.Mixed != nil && row.Mixed.Surrogate {
					a[2]++
				}
				if row.Seq != nil && row.Seq.Surrogate {
					a[3]++
				}
				a[4] += row.KeysFlagged
				a[5] += row.Verdict.Fingerprints
				a[6] += row.Flagged
				a[7] += row.Lost
				if row.Verdict.Outcome == fingerprint.Independent {
					a[8]++
				}
				if e := row.Verdict.Evasion; e != nil && e.Evasive {
					a[9]++
				}
				accSum[k] += row.Verdict.Accuracy
			}
		}
	}
	for _, k := range order {
		a := agg[k]
		nb := a[0] * r.Benign
		truth := "independent"
		if k.derived {
			truth = "derived"
		}
		p("| %s | %d %s | %s | %s | %s | %s | %s | %s | %s | %.3f | %s | %s |\n", k.fp, a[0], truth, k.set, cp(a[1], a[0]), cp(a[2], a[0]), cp(a[3], a[0]), cp(a[8], a[0]), cp(a[9], a[0]), cp(a[4], a[5]), accSum[k]/float64(a[0]), cp(a[6], nb), cp(a[7], nb))
	}
	p("\n")
	if err := dir.Create(); err != nil {
		return fmt.Errorf("detect-evade: %w", err)
	}
	if err := os.WriteFile(dir.Path("README.md"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("detect-evade: %w", err)
	}
	return nil
}

// shortPath is p's last two elements.
func shortPath(p string) string {
	parts := strings.Split(p, "/")
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return strings.Join(parts, "/")
}
