package experiment

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/detect"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/report"
	"github.com/conferral/conferral/backend/stats"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// The non-evasiveness game of §5.1 (issue 17, item 1). The adversary knows
// the algorithm and holds the source (white-box). It crafts fingerprints of
// its own with the defender's algorithm from its own surrogates and
// references, sets detectors with them and with benign inputs it holds,
// and is then shown batches that are either benign (B₀) or the defender's
// real fingerprints (B₁). A fingerprint is evasive when the adversary cannot
// tell B₁ from B₀ better than chance.

// Detector names: each maps an input to a score on the adversary's model;
// higher means "a fingerprint" once oriented on the adversary's own data.
const (
	DetSqueeze    = detect.Squeeze
	DetMaxSoftmax = detect.MaxSoftmax
	DetEntropy    = detect.Entropy
	DetCNN        = detect.CNN
)

// drawMean is the mean of batch scores drawn with replacement from pool.
func drawMean(pool []float64, batch int, rng *rand.Rand) float64 {
	s := 0.0
	for range batch {
		s += pool[rng.IntN(len(pool))]
	}
	return s / float64(batch)
}

// BatchThreshold is the adversary's batch rule at false-positive rate fpr:
// the (1−fpr) quantile of the mean score of `batch` inputs drawn with
// replacement from its own benign scores (reps draws; the plain empirical
// quantile for batches of one).
func BatchThreshold(benign []float64, batch int, fpr float64, reps int, rng *rand.Rand) float64 {
	var means []float64
	if batch == 1 {
		means = slices.Clone(benign)
	} else {
		means = make([]float64, reps)
		for r := range means {
			means[r] = drawMean(benign, batch, rng)
		}
	}
	slices.Sort(means)
	return means[min(len(means)-1, int(math.Ceil((1-fpr)*float64(len(means))))-1)]
}

// BalancedThreshold is the adversary's other batch rule: the threshold on
// batch means that best separates its own examples from its own benign
// inputs — reps batches of `batch` scores drawn with replacement from each —
// by balanced accuracy (the mean of the two rates).
func BalancedThreshold(own, benign []float64, batch, reps int, rng *rand.Rand) float64 {
	type pt struct {
		v   float64
		pos bool
	}
	draw := func(pool []float64, pos bool, out []pt) []pt {
		for range reps {
			out = append(out, pt{drawMean(pool, batch, rng), pos})
		}
		return out
	}
	pts := draw(benign, false, draw(own, true, nil))
	slices.SortFunc(pts, func(a, b pt) int { return cmp.Compare(a.v, b.v) })
	// Threshold below everything: every batch called B₁.
	best, bestAcc := pts[0].v-1, 0.5
	negBelow, posBelow := 0, 0
	for i, q := range pts {
		if q.pos {
			posBelow++
		} else {
			negBelow++
		}
		if i+1 < len(pts) && pts[i+1].v == q.v {
			continue
		}
		// Threshold q.v: batches at or below it are called B₀.
		acc := (float64(negBelow) + float64(reps-posBelow)) / float64(2*reps)
		if acc > bestAcc {
			best, bestAcc = q.v, acc
		}
	}
	return best
}

// GameResult is the adversary's record over trials of the game at one
// batch size.
type GameResult struct {
	Batch, Trials, Wins int
	Lo, Hi              float64 // Clopper–Pearson 95 % interval of the win rate
	TPR, FPR            float64 // share of B₁ batches flagged, of B₀ batches flagged
}

// WinRate is Wins/Trials.
func (g GameResult) WinRate() float64 { return float64(g.Wins) / float64(g.Trials) }

// PlayGame plays the game `trials` times: a fair coin picks B₀ (`batch`
// scores drawn with replacement from benign) or B₁ (from positives); the
// adversary says B₁ when the batch's mean score exceeds thr.
func PlayGame(benign, positives []float64, batch, trials int, thr float64, rng *rand.Rand) GameResult {
	g := GameResult{Batch: batch, Trials: trials}
	var n0, n1, f0, f1 int
	for range trials {
		b1 := rng.IntN(2) == 1
		pool := benign
		if b1 {
			pool = positives
		}
		say1 := drawMean(pool, batch, rng) > thr
		if say1 == b1 {
			g.Wins++
		}
		if b1 {
			n1++
			if say1 {
				f1++
			}
		} else {
			n0++
			if say1 {
				f0++
			}
		}
	}
	g.Lo, g.Hi = stats.ClopperPearson(g.Wins, trials, 0.95)
	if n1 > 0 {
		g.TPR = float64(f1) / float64(n1)
	}
	if n0 > 0 {
		g.FPR = float64(f0) / float64(n0)
	}
	return g
}

// BootstrapAUC is the ROC AUC of pos against neg with a 95 % percentile
// bootstrap interval over reps resamples of both groups.
func BootstrapAUC(pos, neg []float64, reps int, rng *rand.Rand) (auc, lo, hi float64) {
	auc = fingerprint.AUC(pos, neg)
	if reps <= 0 {
		return auc, auc, auc
	}
	a := make([]float64, reps)
	p, q := make([]float64, len(pos)), make([]float64, len(neg))
	for r := range a {
		for i := range p {
			p[i] = pos[rng.IntN(len(pos))]
		}
		for i := range q {
			q[i] = neg[rng.IntN(len(neg))]
		}
		a[r] = fingerprint.AUC(p, q)
	}
	slices.Sort(a)
	return auc, a[int(0.025*float64(reps))], a[min(reps-1, int(0.975*float64(reps)))]
}

// EvasionGroup is a set of the defender's fingerprint files judged
// together (e.g. three C-BIM extractions at one ε).
type EvasionGroup struct {
	Name  string
	Paths []string
	FPs   []*fingerprint.Fingerprint
}

// kind is what the adversary must imitate: the group's Meta.Attack, and
// for C-BIM its ε.
func (g EvasionGroup) kind() string { return kindOf(g.FPs[0]) }

func kindOf(f *fingerprint.Fingerprint) string {
	if f.Meta.Attack == fingerprint.AttackNatural {
		return "natural"
	}
	return fmt.Sprintf("%s ε %g", f.Meta.Attack, f.Meta.Eps)
}

// EvasionStudy is the game, set up.
type EvasionStudy struct {
	// Adversary are the adversary's models: the source it holds, its
	// surrogates and references (on its own half of the data).
	Adversary fingerprint.Training
	// Scorer is the model the detectors score on (the source by default),
	// ScorerName its name for the report.
	Scorer     fingerprint.Model
	ScorerName string
	// Test is the test split: the adversary's half (start points and
	// benign data) and the held-out half (benign data for the scores) are
	// drawn from it, without any fingerprint's original or image.
	Test   *data.Dataset
	Groups []EvasionGroup
	// Craft is the adversary's C-BIM extraction (the defender's settings).
	Craft fingerprint.Config
	// CNN trains the CNN detector (0 epochs: no CNN detector).
	CNNEpochs int
	Batches   []int
	Trials    int
	FPR       float64
	Boot      int
	Seed      int64
	Command   string
	Describe  string
	// SaveDetectors, when set, is a folder where every detector is saved,
	// once per kind of fingerprint, as a detector file (detect.Load) that
	// `serve-model --detector` loads: set on the adversary's own examples
	// and holding its own benign threshold inputs, never the defender's
	// fingerprints.
	SaveDetectors string
}

// EvasionRow is one detector against one group.
type EvasionRow struct {
	Group, Detector string
	// Flip says the detector's raw score was negated: the adversary's own
	// examples scored lower than its benign inputs.
	Flip bool
	// OwnAUC is the AUC of the adversary's own examples against its own
	// benign inputs (in-sample: what it set the detector on).
	OwnAUC            float64
	AUC, AUCLo, AUCHi float64      // the defender's fingerprints against held-out benign inputs
	Games             []GameResult // the 5 % false-positive rule
	// Balanced are the games under the balanced rule (BalancedThreshold
	// on the adversary's own examples and benign inputs).
	Balanced []GameResult
}

// EvasionResult is what the study measured.
type EvasionResult struct {
	Rows []EvasionRow
	// Own counts the adversary's own examples per kind, Crafted the
	// outputs its attack made (before selection).
	Own, Crafted          map[string]int
	Positives             map[string]int // the defender's fingerprints per group
	AdvBenign, HeldBenign int
	// Saved are the detector files written (SaveDetectors).
	Saved []string
}

// Run plays the game for every group and detector and writes dir/README.md.
func (st *EvasionStudy) Run(ctx context.Context, dir report.Dir, progress shared.Reporter) (*EvasionResult, error) {
	if st.Scorer == nil || st.Test == nil || len(st.Groups) == 0 {
		return nil, errors.New("evasion: needs a scoring model, the test split and at least one group of fingerprints")
	}
	for _, g := range st.Groups {
		if len(g.FPs) == 0 {
			return nil, fmt.Errorf("evasion: group %q has no fingerprints", g.Name)
		}
		for _, f := range g.FPs {
			if kindOf(f) != g.kind() {
				return nil, fmt.Errorf("evasion: group %q mixes %s and %s fingerprints", g.Name, g.kind(), kindOf(f))
			}
			if f.C != st.Test.C || f.H != st.Test.H || f.W != st.Test.W {
				return nil, fmt.Errorf("evasion: group %q: fingerprints of %dx%dx%d, test images of %dx%dx%d", g.Name, f.C, f.H, f.W, st.Test.C, st.Test.H, st.Test.W)
			}
		}
	}
	if st.Trials <= 0 {
		st.Trials = 1000
	}
	if st.FPR <= 0 {
		st.FPR = 0.05
	}
	if len(st.Batches) == 0 {
		st.Batches = []int{1, 10, 100}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if t, ok := st.Scorer.(interface{ SetTraining(bool) }); ok {
		t.SetTraining(false)
	}
	rng := rand.New(rand.NewPCG(uint64(st.Seed), 1751))
	// Benign data: the test split without any fingerprint's image or
	// original, split in two by the seed.
	seen := map[string]bool{}
	for _, g := range st.Groups {
		for _, f := range g.FPs {
			per := f.ImageSize()
			for i := range f.N {
				seen[string(f.Images[i*per:(i+1)*per])] = true
				seen[string(f.Originals[i*per:(i+1)*per])] = true
			}
		}
	}
	var clean []int
	for i := range st.Test.Len() {
		if !seen[string(st.Test.Image(i))] {
			clean = append(clean, i)
		}
	}
	rng.Shuffle(len(clean), func(i, j int) { clean[i], clean[j] = clean[j], clean[i] })
	advIdx, heldIdx := clean[:len(clean)/2], clean[len(clean)/2:]
	slices.Sort(advIdx)
	advSet, held := st.Test.Subset(advIdx), st.Test.Subset(heldIdx)
	res := &EvasionResult{Own: map[string]int{}, Crafted: map[string]int{}, Positives: map[string]int{}, AdvBenign: advSet.Len(), HeldBenign: held.Len()}
	c, h, w := st.Test.C, st.Test.H, st.Test.W
	log := func(format string, a ...any) {
		progress.Report(shared.Event{Kind: shared.Log, Stage: "evasion", Message: fmt.Sprintf(format, a...)})
	}
	// The adversary's own examples, per kind of fingerprint it faces.
	own := map[string][]float32{}  // selected: what the defender's algorithm keeps
	wide := map[string][]float32{} // every output (the CNN's positives)
	for _, g := range st.Groups {
		kind := g.kind()
		if _, ok := own[kind]; ok {
			continue
		}
		cfg := st.Craft
		cfg.Natural = g.FPs[0].Meta.Attack == fingerprint.AttackNatural
		if !cfg.Natural { // the algorithm is public: it crafts at the ε it faces
			cfg.CBIM.Eps = g.FPs[0].Meta.Eps
		}
		cfg.Progress = progress
		crafted, err := fingerprint.Craft(ctx, st.Adversary, advSet, cfg)
		if err != nil {
			return nil, fmt.Errorf("evasion: the adversary's own %s examples: %w", kind, err)
		}
		sel := crafted.Select(cfg.Tau, cfg.TauSurr)
		all := crafted.All
		// The outputs that changed the source's label: the attack's
		// successes (with Natural: every candidate). Those not selected
		// train the CNN, so that the selected ones, on which every
		// detector is oriented and the balanced rule set, are new to it.
		picked := map[string]bool{}
		per := all.ImageSize()
		for i := range sel.N {
			picked[string(sel.Images[i*per:(i+1)*per])] = true
		}
		var changed, rest []float32
		for i := range all.N {
			if all.Keys[i] != all.Labels[i] {
				changed = append(changed, all.ImageFloat32(i)...)
				if !picked[string(all.Images[i*per:(i+1)*per])] {
					rest = append(rest, all.ImageFloat32(i)...)
				}
			}
		}
		own[kind], wide[kind] = sel.Float32(), rest
		res.Own[kind], res.Crafted[kind] = sel.N, len(changed)/per
		log("the adversary's own %s examples: %d selected of %d that changed the source's label", kind, sel.N, len(changed)/per)
		if sel.N == 0 || len(rest) == 0 { // nothing selected: all of them, in-sample for the CNN
			own[kind], wide[kind] = changed, changed
			res.Own[kind] = len(changed) / per
		}
		if len(own[kind]) == 0 {
			return nil, fmt.Errorf("evasion: the adversary made no %s example of its own", kind)
		}
	}
	// Scores of a set of images under every detector.
	type scored map[string][]float64
	// The scorer's scores depend on the images only: each set's are
	// computed once (the benign sets are scored for every group, a kind's
	// own examples for each of its groups), on one softmax pass shared by
	// the squeezing and confidence detectors.
	baseOf := map[string]scored{}
	withCNN := map[string]scored{} // by set and kind: the CNN is a kind's
	score := func(set string, x []float32, cnn map[string]*nn.Model, kind string) (scored, error) {
		if out, ok := withCNN[set+"\x00"+kind]; ok {
			return out, nil
		}
		n := len(x) / (c * h * w)
		if n == 0 {
			return nil, fmt.Errorf("no images to score (%s)", set)
		}
		base, ok := baseOf[set]
		if !ok {
			p0, err := detect.Softmaxes(st.Scorer, x, n, c, h, w)
			if err != nil {
				return nil, err
			}
			sq, err := detect.SqueezeScoresOf(st.Scorer, x, p0, n, c, h, w)
			if err != nil {
				return nil, err
			}
			mp, ent := detect.Confidence(p0, n)
			base = scored{DetSqueeze: sq, DetMaxSoftmax: mp, DetEntropy: ent}
			baseOf[set] = base
		}
		out := maps.Clone(base)
		if m := cnn[kind]; m != nil {
			p, err := detect.Softmaxes(m, x, n, c, h, w)
			if err != nil {
				return nil, err
			}
			s := make([]float64, n)
			for i := range n {
				s[i] = float64(p[2*i+1])
			}
			out[DetCNN] = s
		}
		withCNN[set+"\x00"+kind] = out
		return out, nil
	}
	dets := []string{DetSqueeze, DetMaxSoftmax, DetEntropy}
	cnn := map[string]*nn.Model{}
	defer func() {
		for _, m := range cnn {
			m.Free()
		}
	}()
	// The adversary's benign inputs: half for the CNN's training, half to
	// set thresholds on (the whole half when there is no CNN).
	advX := advSet.Float32(seq(advSet.Len()))
	per := c * h * w
	thrX := advX
	if st.CNNEpochs > 0 {
		dets = append(dets, DetCNN)
		half := advSet.Len() / 2
		trainBenign := advX[:half*per]
		for kind, pos := range wide {
			m, err := trainDetector(ctx, pos, trainBenign, advSet, st.CNNEpochs, st.Seed)
			if err != nil {
				return nil, fmt.Errorf("evasion: CNN detector (%s): %w", kind, err)
			}
			cnn[kind] = m
			log("CNN detector for %s trained on %d own examples and %d benign inputs", kind, len(pos)/per, min(half, len(pos)/per))
		}
		thrX = advX[half*per:]
	}
	heldX := held.Float32(seq(held.Len()))
	saved := map[string]bool{}
	for gi, g := range st.Groups {
		kind := g.kind()
		var pos []float32
		for _, f := range g.FPs {
			pos = append(pos, f.Float32()...)
		}
		res.Positives[g.Name] = len(pos) / per
		sOwn, err := score("own "+kind, own[kind], cnn, kind)
		if err != nil {
			return nil, fmt.Errorf("evasion: %w", err)
		}
		sAdvBenign, err := score("the adversary's benign inputs", thrX, cnn, kind)
		if err != nil {
			return nil, fmt.Errorf("evasion: %w", err)
		}
		sHeld, err := score("the held-out benign inputs", heldX, cnn, kind)
		if err != nil {
			return nil, fmt.Errorf("evasion: %w", err)
		}
		sPos, err := score(fmt.Sprintf("group %d (%s)", gi, g.Name), pos, cnn, kind)
		if err != nil {
			return nil, fmt.Errorf("evasion: %w", err)
		}
		for _, d := range dets {
			row := EvasionRow{Group: g.Name, Detector: d}
			ob, bb, hb, pb := slices.Clone(sOwn[d]), slices.Clone(sAdvBenign[d]), slices.Clone(sHeld[d]), slices.Clone(sPos[d])
			if mean(ob) < mean(bb) { // orient on the adversary's own data only
				row.Flip = true
				for _, s := range [][]float64{ob, bb, hb, pb} {
					for i := range s {
						s[i] = -s[i]
					}
				}
			}
			row.OwnAUC = fingerprint.AUC(ob, bb)
			row.AUC, row.AUCLo, row.AUCHi = BootstrapAUC(pb, hb, st.Boot, rng)
			for _, b := range st.Batches {
				thr := BatchThreshold(bb, b, st.FPR, 4000, rng)
				row.Games = append(row.Games, PlayGame(hb, pb, b, st.Trials, thr, rng))
				bal := BalancedThreshold(ob, bb, b, 2000, rng)
				row.Balanced = append(row.Balanced, PlayGame(hb, pb, b, st.Trials, bal, rng))
			}
			res.Rows = append(res.Rows, row)
			if st.SaveDetectors != "" && !saved[kind+"\x00"+d] {
				saved[kind+"\x00"+d] = true
				path, err := st.saveDetector(kind, d, row, thrX, cnn[kind])
				if err != nil {
					return nil, err
				}
				res.Saved = append(res.Saved, path)
				log("saved the %s detector for %s: %s", d, kind, path)
			}
			log("%s / %s: AUC %.3f (own %.3f), win rate %s", g.Name, d, row.AUC, row.OwnAUC, winRates(row.Games))
		}
	}
	if err := st.write(dir, res); err != nil {
		return nil, err
	}
	return res, nil
}

// saveDetector writes the detector d for fingerprints of the kind, as
// oriented and scored in row, with benign, the adversary's threshold
// inputs, to SaveDetectors/KIND-DETECTOR.safetensors.
func (st *EvasionStudy) saveDetector(kind, d string, row EvasionRow, benign []float32, net *nn.Model) (string, error) {
	det := &detect.Detector{Kind: d, Flip: row.Flip, Against: kind, OwnAUC: row.OwnAUC, C: st.Test.C, H: st.Test.H, W: st.Test.W,
		Note: fmt.Sprintf("set by the adversary of `conferral experiment evasion` (seed %d) on its own %s examples and %d benign test inputs of its half; scores on the model it guards", st.Seed, kind, len(benign)/st.Test.ImageSize())}
	det.Benign = make([]uint8, len(benign))
	for i, v := range benign {
		det.Benign[i] = uint8(math.Round(float64(v) * 255))
	}
	if d == DetCNN {
		det.Note = fmt.Sprintf("set by the adversary of `conferral experiment evasion` (seed %d): a LeNet-5 trained on its own %s attack outputs against benign inputs of its half; %d other benign inputs of its half to set thresholds on", st.Seed, kind, len(benign)/st.Test.ImageSize())
		det.Net = net
	}
	if err := os.MkdirAll(st.SaveDetectors, 0o755); err != nil {
		return "", fmt.Errorf("evasion: %w", err)
	}
	path := filepath.Join(st.SaveDetectors, slug(kind)+"-"+slug(d)+".safetensors")
	if err := det.Save(path); err != nil {
		return "", fmt.Errorf("evasion: %w", err)
	}
	return path, nil
}

// slug is s in lower case with ε spelled eps and every run of other
// characters than letters, digits and dots a dash.
func slug(s string) string {
	s = strings.ReplaceAll(strings.ToLower(s), "ε", "eps")
	var b strings.Builder
	dash := false
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '.' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

func winRates(gs []GameResult) string {
	var s []string
	for _, g := range gs {
		s = append(s, fmt.Sprintf("%d: %.3f", g.Batch, g.WinRate()))
	}
	return strings.Join(s, ", ")
}

func mean(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s / float64(max(1, len(x)))
}

// trainDetector trains a LeNet-5 to tell pos (label 1) from benign (label
// 0), balanced: as many benign inputs as positives, or all it has.
func trainDetector(ctx context.Context, pos, benign []float32, like *data.Dataset, epochs int, seed int64) (*nn.Model, error) {
	c, h, w := like.C, like.H, like.W
	per := c * h * w
	np, nb := len(pos)/per, min(len(benign)/per, len(pos)/per)
	d := &data.Dataset{Name: like.Name, Part: "detector", C: c, H: h, W: w, N: np + nb, Classes: []string{"benign", "fingerprint"}, NoFlip: true}
	toU8 := func(x []float32) {
		for _, v := range x {
			d.Images = append(d.Images, uint8(math.Round(float64(v)*255)))
		}
	}
	toU8(pos)
	toU8(benign[:nb*per])
	for i := range np + nb {
		d.Labels = append(d.Labels, int64(min(1, max(0, np-i))))
	}
	mean, std := d.Stats()
	m, err := nn.New(nn.Spec{Arch: "lenet", Classes: d.Classes, C: int64(c), H: int64(h), W: int64(w), Mean: mean, Std: std}, uint64(seed), torch.CPU)
	if err != nil {
		return nil, err
	}
	cfg := train.Config{Epochs: epochs, BatchSize: 64, Optimizer: train.OptAdam, LR: 0.001, Schedule: train.SchedCosine, Seed: seed}
	if _, err := train.Train(ctx, m, d, cfg); err != nil {
		m.Free()
		return nil, err
	}
	m.SetTraining(false)
	return m, nil
}

func (st *EvasionStudy) write(dir report.Dir, r *EvasionResult) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# The non-evasiveness game (§5.1)\n\n")
	p("The adversary knows the algorithm and holds the source (white-box). It crafts fingerprints of its own with the defender's algorithm ")
	cb := st.Craft.CBIM
	p("(C-BIM: %s loss, at the ε of the fingerprints it faces, %d steps of %g, best iterate %v; τ = %g, τ_S = %g; %d start points) ", cb.Loss, cb.Steps, cb.Alpha, cb.Best, st.Craft.Tau, st.Craft.TauSurr, st.Craft.Candidates)
	p("from the source and its own %d surrogates and %d references, sets its detectors with them and with benign inputs it holds, ", len(st.Adversary.Surrogates), len(st.Adversary.References))
	p("and is then shown batches of benign inputs (B₀) or of the defender's real fingerprints (B₁). The defender's fingerprints are only scored, never used to set a detector.\n\n")
	if st.Describe != "" {
		p("%s\n\n", st.Describe)
	}
	p("```\n%s\n```\n\n", st.Command)
	p("## Setup\n\n")
	p("- Detectors score on `%s`. **Feature squeezing** (Xu et al. 2018): the larger L1 distance between the softmax of an input and of its squeezed versions (bit depth 4; 2×2 median filter). ", st.ScorerName)
	p("**Max softmax** and **entropy**: the confidence of the softmax. ")
	if st.CNNEpochs > 0 {
		p("**CNN on own examples**: a LeNet-5 trained (%d epochs, Adam) on the adversary's own attack outputs that changed the source's label but were not selected (so the selected ones, on which it is oriented and the balanced rule set, are new to it) against as many benign inputs of its half; its score is the probability it gives to \"fingerprint\". ", st.CNNEpochs)
	}
	p("Each detector's direction is set on the adversary's own data: when its own examples score lower than its benign inputs on average, the score is negated (column \"flipped\").\n")
	p("- Benign inputs: the test split without any fingerprint's image or start point, halved by the seed: the adversary's half (%d: its C-BIM start points, the CNN's benign inputs and thresholds) and a held-out half (%d: B₀ and the AUC's negatives).\n", r.AdvBenign, r.HeldBenign)
	p("- The adversary's own examples per kind of fingerprint it faces:")
	for k, n := range r.Own {
		p(" %s: %d selected (of %d outputs that changed the source's label);", k, n, r.Crafted[k])
	}
	p(" for natural fingerprints it imitates the algorithm too: test inputs of its half the source misclassifies, selected by τ and τ_S on its own models.\n")
	p("- The batch rule: say B₁ when the batch's mean score exceeds a threshold set at %g %% false positives on the adversary's own benign inputs (the 95th percentile of means of batches drawn from them). ", st.FPR*100)
	p("Each game is %d trials: a fair coin picks B₀ (inputs drawn with replacement from the held-out benign half) or B₁ (drawn with replacement from the group's fingerprints). ", st.Trials)
	p("Intervals on win rates are Clopper–Pearson 95 %%; they treat trials as independent, which holds given these fingerprint sets (a new extraction varies more). AUC intervals are a %d-resample percentile bootstrap.\n\n", st.Boot)
	p("## Detectors' ROC AUC: the defender's fingerprints vs held-out benign inputs\n\n")
	p("| fingerprints | n | detector | flipped | AUC on own examples (in-sample) | AUC on the defender's | 95 %% interval |\n|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		p("| %s | %d | %s | %s | %.3f | **%.3f** | [%.3f, %.3f] |\n", row.Group, r.Positives[row.Group], row.Detector, yes(row.Flip), row.OwnAUC, row.AUC, row.AUCLo, row.AUCHi)
	}
	p("\n## The game: win rate at telling B₁ from B₀ (0.5 is chance)\n\n")
	p("Two batch rules, both fixed from the adversary's own data before it sees a batch: **5 %% FP** (say B₁ when the batch's mean score exceeds the 95th percentile of its own benign batches' means) ")
	p("and **balanced** (the threshold on batch means that best separates batches of its own examples from batches of its own benign inputs). ")
	p("Cells: win rate [95 %% interval] (share of B₁ batches flagged / share of B₀ batches flagged). The 5 %% rule cannot win more than about 0.975.\n\n")
	head := "| fingerprints | detector | rule |"
	sep := "|---|---|---|"
	for _, bs := range st.Batches {
		head += fmt.Sprintf(" batch %d |", bs)
		sep += "---|"
	}
	p("%s\n%s\n", head, sep)
	for _, row := range r.Rows {
		for k, games := range [][]GameResult{row.Games, row.Balanced} {
			p("| %s | %s | %s |", row.Group, row.Detector, []string{"5 % FP", "balanced"}[k])
			for _, g := range games {
				p(" %.3f [%.3f, %.3f] (%.2f / %.2f) |", g.WinRate(), g.Lo, g.Hi, g.TPR, g.FPR)
			}
			p("\n")
		}
	}
	p("\n## Verdict\n\n")
	p("The adversary picks its detector on its own data: the one with the highest AUC on its own examples (in-sample). ")
	p("At a batch size the fingerprints are called **evasive** when that detector's win rate has a 95 %% interval that reaches 0.5 under both rules, and **detected** otherwise. ")
	p("The best detector in hindsight (highest win rate over both rules, chosen after seeing the defender's fingerprints, so optimistic for the adversary) is given beside it.\n\n")
	p("| fingerprints | adversary's pick (own AUC) | batch | win rate, 5 %% FP | win rate, balanced | verdict | best in hindsight |\n|---|---|---|---|---|---|---|\n")
	for _, g := range st.Groups {
		var rows []EvasionRow
		for _, row := range r.Rows {
			if row.Group == g.Name {
				rows = append(rows, row)
			}
		}
		pick := rows[0]
		for _, row := range rows[1:] {
			if row.OwnAUC > pick.OwnAUC {
				pick = row
			}
		}
		for i, b := range st.Batches {
			a, c := pick.Games[i], pick.Balanced[i]
			verdict := "**evasive**"
			if a.Lo > 0.5 || c.Lo > 0.5 {
				verdict = "**detected**"
			}
			bestName, best := "", GameResult{}
			for _, row := range rows {
				for _, gr := range []GameResult{row.Games[i], row.Balanced[i]} {
					if bestName == "" || gr.WinRate() > best.WinRate() {
						bestName, best = row.Detector, gr
					}
				}
			}
			p("| %s | %s (%.3f) | %d | %.3f [%.3f, %.3f] | %.3f [%.3f, %.3f] | %s | %s: %.3f [%.3f, %.3f] |\n", g.Name, pick.Detector, pick.OwnAUC, b,
				a.WinRate(), a.Lo, a.Hi, c.WinRate(), c.Lo, c.Hi, verdict, bestName, best.WinRate(), best.Lo, best.Hi)
		}
	}
	p("\n")
	if len(r.Saved) > 0 {
		p("## Saved detectors\n\n")
		p("Every detector was saved, once per kind of fingerprint, for `conferral serve-model --detector FILE` (a suspect that detects and evades); each holds its orientation and the adversary's own benign threshold inputs, never the defender's fingerprints:\n\n")
		for _, f := range r.Saved {
			p("- `%s`\n", f)
		}
		p("\n")
	}
	if err := dir.Create(); err != nil {
		return fmt.Errorf("evasion: %w", err)
	}
	if err := os.WriteFile(dir.Path("README.md"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("evasion: %w", err)
	}
	return nil
}
