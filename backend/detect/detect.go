// Package detect holds the adversary's fingerprint detectors of the
// evasion studies (paper §5.1; Hitaj et al.'s detect-and-evade): the
// scores (feature squeezing, max softmax, entropy, a CNN trained on the
// adversary's own examples), the detector file that persists one, and a
// Guard that flags the queries a served model receives.
//
// A detector file is safetensors with the format "conferral-detector/1":
// the detector's kind and orientation, the adversary's own benign inputs
// (on which a threshold is set for a false-positive rate), and for the CNN
// its network. It never holds the defender's fingerprints: the evasion
// study sets it on the adversary's own examples.
package detect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
)

// Detector kinds: each maps an input to a score; higher means "a
// fingerprint" once oriented (Flip) on the adversary's own data.
const (
	Squeeze    = "feature squeezing"   // Xu et al.: max L1 change of the softmax under bit depth 4 and a 2×2 median filter
	MaxSoftmax = "max softmax"         // confidence
	Entropy    = "entropy"             // of the softmax
	CNN        = "CNN on own examples" // a LeNet-5 trained on the adversary's own examples vs benign inputs
)

// Format is the detector file's "conferral.format".
const Format = "conferral-detector/1"

// ErrNotDetector is wrapped by Load's error when the file is not a
// detector file (another safetensors file, a model, or not safetensors).
var ErrNotDetector = errors.New("not a Conferral detector file")

// Model is the classifier a detector guards or scores on.
type Model = nn.Classifier

// Detector is one of the adversary's detectors, set on its own data.
type Detector struct {
	Kind string
	// Flip says the raw score is negated: the adversary's own examples
	// scored lower than its benign inputs.
	Flip bool
	// Against is the kind of fingerprint it was set against ("natural",
	// "C-BIM ε 0.05"), OwnAUC its AUC on the adversary's own examples
	// against its benign inputs (in-sample), Note how it was made.
	Against string
	OwnAUC  float64
	Note    string
	// C, H, W is the image size, Benign the adversary's own benign inputs
	// (uint8 pixels, NCHW): a threshold is set on their scores.
	C, H, W int
	Benign  []uint8
	// Net is the CNN detector's network (two classes: benign,
	// fingerprint); nil for the others, which score on the model they
	// guard.
	Net *nn.Model
}

// Known says whether kind is a detector kind.
func Known(kind string) bool {
	switch kind {
	case Squeeze, MaxSoftmax, Entropy, CNN:
		return true
	}
	return false
}

// N is the number of benign inputs.
func (d *Detector) N() int { return len(d.Benign) / max(1, d.C*d.H*d.W) }

// Free releases the CNN's network.
func (d *Detector) Free() {
	if d != nil && d.Net != nil {
		d.Net.Free()
		d.Net = nil
	}
}

// Save writes the detector atomically.
func (d *Detector) Save(path string) error {
	if !Known(d.Kind) {
		return fmt.Errorf("detect: unknown detector %q", d.Kind)
	}
	if (d.Kind == CNN) != (d.Net != nil) {
		return fmt.Errorf("detect: a %s detector with network %v", d.Kind, d.Net != nil)
	}
	per := d.C * d.H * d.W
	if per <= 0 || len(d.Benign) == 0 || len(d.Benign)%per != 0 {
		return fmt.Errorf("detect: %d benign values for images of %dx%dx%d", len(d.Benign), d.C, d.H, d.W)
	}
	meta := map[string]string{
		"conferral.format": Format,
		"detector":         d.Kind,
		"flip":             strconv.FormatBool(d.Flip),
		"against":          d.Against,
		"own_auc":          strconv.FormatFloat(d.OwnAUC, 'g', -1, 64),
		"input":            fmt.Sprintf("%d,%d,%d", d.C, d.H, d.W),
		"note":             d.Note,
	}
	f := &safetensors.File{Metadata: meta, Tensors: []safetensors.Tensor{
		{Name: "benign", DType: "U8", Shape: []int64{int64(d.N()), int64(d.C), int64(d.H), int64(d.W)}, Data: d.Benign},
	}}
	if d.Net != nil {
		nf, err := d.Net.File(nil)
		if err != nil {
			return fmt.Errorf("detect: %w", err)
		}
		for k, v := range nf.Metadata {
			meta["net."+k] = v
		}
		for _, t := range nf.Tensors {
			t.Name = "net." + t.Name
			f.Tensors = append(f.Tensors, t)
		}
	}
	if err := safetensors.WriteFile(path, f); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	return nil
}

// Load reads a detector file; its CNN, if any, goes to device dev. A file
// that is not a detector gives an error wrapping ErrNotDetector.
func Load(path string, dev torch.Device) (*Detector, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrNotDetector, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w: %s", path, ErrNotDetector, fmt.Sprintf(format, a...))
	}
	m := f.Metadata
	if m["conferral.format"] != Format {
		what := "no format"
		if v := m["conferral.format"]; v != "" {
			what = "format " + strconv.Quote(v)
		}
		return nil, bad("%s, want %q (make one with `conferral experiment evasion --save-detectors DIR`)", what, Format)
	}
	d := &Detector{Kind: m["detector"], Against: m["against"], Note: m["note"]}
	if !Known(d.Kind) {
		return nil, bad("unknown detector %q", d.Kind)
	}
	if d.Flip, err = strconv.ParseBool(m["flip"]); err != nil {
		return nil, bad("flip %q", m["flip"])
	}
	if v := m["own_auc"]; v != "" {
		if d.OwnAUC, err = strconv.ParseFloat(v, 64); err != nil {
			return nil, bad("own_auc %q", v)
		}
	}
	dims := strings.Split(m["input"], ",")
	var v [3]int
	if len(dims) != 3 {
		return nil, bad("input %q: want C,H,W", m["input"])
	}
	for i, s := range dims {
		if v[i], err = strconv.Atoi(s); err != nil || v[i] <= 0 {
			return nil, bad("input %q: want C,H,W", m["input"])
		}
	}
	d.C, d.H, d.W = v[0], v[1], v[2]
	b, ok := f.Get("benign")
	per := d.C * d.H * d.W
	if !ok || b.DType != "U8" || len(b.Data) == 0 || len(b.Data)%per != 0 {
		return nil, bad("no benign inputs of %dx%dx%d (a U8 tensor \"benign\")", d.C, d.H, d.W)
	}
	d.Benign = b.Data
	if d.Kind == CNN {
		nf := &safetensors.File{Metadata: map[string]string{}}
		for k, val := range m {
			if s, ok := strings.CutPrefix(k, "net."); ok {
				nf.Metadata[s] = val
			}
		}
		for _, t := range f.Tensors {
			if s, ok := strings.CutPrefix(t.Name, "net."); ok {
				t.Name = s
				nf.Tensors = append(nf.Tensors, t)
			}
		}
		net, err := nn.FromFile(nf, dev)
		if err != nil {
			return nil, bad("its network: %v", err)
		}
		if net.Spec.C != int64(d.C) || net.Spec.H != int64(d.H) || net.Spec.W != int64(d.W) || len(net.Spec.Classes) != 2 {
			net.Free()
			return nil, bad("its network takes %dx%dx%d into %d classes, want %dx%dx%d into 2", net.Spec.C, net.Spec.H, net.Spec.W, len(net.Spec.Classes), d.C, d.H, d.W)
		}
		net.SetTraining(false)
		d.Net = net
	}
	return d, nil
}

// Scores are the detector's oriented scores of the n images x (pixel
// space, NCHW): higher is likelier a fingerprint. m is the model it
// guards (the squeezing and confidence detectors score on it), p0 m's
// softmaxes of x when already known (nil: computed here).
func (d *Detector) Scores(m Model, x, p0 []float32, n int) ([]float64, error) {
	if len(x) != n*d.C*d.H*d.W {
		return nil, fmt.Errorf("detect: %d values for %d images of %dx%dx%d", len(x), n, d.C, d.H, d.W)
	}
	var s []float64
	var err error
	if d.Kind == CNN {
		p, err := Softmaxes(d.Net, x, n, d.C, d.H, d.W)
		if err != nil {
			return nil, err
		}
		s = make([]float64, n)
		for i := range n {
			s[i] = float64(p[2*i+1])
		}
	} else {
		if p0 == nil {
			if p0, err = Softmaxes(m, x, n, d.C, d.H, d.W); err != nil {
				return nil, err
			}
		}
		switch d.Kind {
		case Squeeze:
			if s, err = SqueezeScoresOf(m, x, p0, n, d.C, d.H, d.W); err != nil {
				return nil, err
			}
		case MaxSoftmax:
			s, _ = Confidence(p0, n)
		case Entropy:
			_, s = Confidence(p0, n)
		}
	}
	if d.Flip {
		for i := range s {
			s[i] = -s[i]
		}
	}
	return s, nil
}

// BenignScores are the oriented scores of the detector's benign inputs
// on m.
func (d *Detector) BenignScores(m Model) ([]float64, error) {
	x := make([]float32, len(d.Benign))
	for i, v := range d.Benign {
		x[i] = float32(v) / 255
	}
	return d.Scores(m, x, nil, d.N())
}

// Threshold is the score above which an input is flagged so that a share
// fpr of the detector's benign inputs is flagged on m: their (1−fpr)
// empirical quantile.
func (d *Detector) Threshold(m Model, fpr float64) (float64, error) {
	if !(fpr > 0 && fpr < 1) {
		return 0, fmt.Errorf("detect: false-positive rate %g outside (0, 1)", fpr)
	}
	s, err := d.BenignScores(m)
	if err != nil {
		return 0, err
	}
	return Quantile(s, 1-fpr), nil
}

// Quantile is the empirical q-quantile of s: the smallest value with at
// least a share q of s at or below it.
func Quantile(s []float64, q float64) float64 {
	v := slices.Clone(s)
	slices.Sort(v)
	return v[min(len(v)-1, max(0, int(math.Ceil(q*float64(len(v))))-1))]
}

// Guard is a detector bound to the model it guards at a threshold: it
// flags inputs scoring above Threshold. It implements predict.Guard.
type Guard struct {
	D         *Detector
	M         Model
	Threshold float64
}

// Flag says which of the n images x (pixel space, NCHW) are flagged,
// given the guarded model's softmaxes p.
func (g *Guard) Flag(x, p []float32, n int) ([]bool, error) {
	s, err := g.D.Scores(g.M, x, p, n)
	if err != nil {
		return nil, err
	}
	out := make([]bool, n)
	for i, v := range s {
		out[i] = v > g.Threshold
	}
	return out, nil
}

// Evasion is what a guarded model answers on a flagged input.
type Evasion string

// The evasions.
const (
	// Random answers a label drawn uniformly from the classes other than
	// the model's own, the same one for the same input (a hash of it), so
	// that asking again does not average the evasion away.
	Random Evasion = "random"
	// Second answers the model's second-best class.
	Second Evasion = "second"
)

// ParseEvasion reads random or second.
func ParseEvasion(s string) (Evasion, error) {
	switch e := Evasion(strings.ToLower(strings.TrimSpace(s))); e {
	case Random, Second:
		return e, nil
	}
	return "", fmt.Errorf("unknown evasion %q (random or second)", s)
}

// Evade rewrites the answer to a flagged image: given its pixels x and
// the model's softmax p (k classes), it returns the label to answer and
// swaps p's top class with it, so the probabilities still look like the
// model's.
func (e Evasion) Evade(x, p []float32) int64 {
	k := len(p)
	top := 0
	for j := range k {
		if p[j] > p[top] {
			top = j
		}
	}
	var alt int
	switch e {
	case Second:
		alt = -1
		for j := range k {
			if j != top && (alt < 0 || p[j] > p[alt]) {
				alt = j
			}
		}
	default:
		b := make([]byte, 0, 4*len(x))
		for _, v := range x {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		h := fnv.New64a()
		h.Write(b)
		alt = int(h.Sum64() % uint64(k-1))
		if alt >= top {
			alt++
		}
	}
	p[top], p[alt] = p[alt], p[top]
	return int64(alt)
}
