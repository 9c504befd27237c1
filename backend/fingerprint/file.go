package fingerprint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"

	"github.com/conferral/conferral/backend/safetensors"
)

// Fingerprint is the output of Extract: the conferrable examples F, their
// verification keys vk = M(F), and everything needed to use and trust them.
type Fingerprint struct {
	// Images are the fingerprints, 8-bit, NCHW (N·C·H·W bytes).
	Images []uint8
	// Originals are the start points the fingerprints were crafted from.
	Originals  []uint8
	N, C, H, W int
	// Keys are the source model's labels of the fingerprints (vk).
	Keys []int64
	// Labels are the originals' ground-truth labels.
	Labels []int64
	// Confer is each fingerprint's conferrability on the training models.
	Confer []float64

	Meta Meta

	// Signer is the defender's ed25519 public key and Signature its
	// signature of the commitment (hex; both empty when unsigned): Sign
	// sets them, Load checks them.
	Signer, Signature string
}

// Meta describes how a fingerprint was made.
type Meta struct {
	Dataset      string    `json:"dataset"`
	Classes      []string  `json:"classes"`
	Mean         []float64 `json:"mean"`
	Std          []float64 `json:"std"`
	SourceSHA256 string    `json:"source_sha256"`
	SourceArch   string    `json:"source_arch"`
	Created      time.Time `json:"created"`
	Attack       string    `json:"attack"` // "cbim"
	Loss         string    `json:"loss"`
	Eps          float64   `json:"eps"`
	Alpha        float64   `json:"alpha"`
	Steps        int       `json:"steps"`
	Dropout      float64   `json:"dropout"`
	BestIterate  bool      `json:"best_iterate,omitempty"` // C-BIM kept each example's most conferrable iterate
	Shift        int       `json:"shift,omitempty"`        // C-BIM's input diversity: random shifts of up to this many pixels
	Noise        float64   `json:"noise,omitempty"`        // and Gaussian noise of this standard deviation
	Tau          float64   `json:"tau"`
	TauSurr      float64   `json:"tau_surr,omitempty"` // minimal Transfer to the training surrogates (τ_S)
	Surrogates   []string  `json:"surrogates"`         // training models, by sha256 or name
	References   []string  `json:"references"`
	Twins        []string  `json:"twins,omitempty"` // references of the source's own architecture and recipe (Training.Twins)
	Candidates   int       `json:"candidates"`      // start points attacked
	// ReferenceRate is the highest agreement of a training reference with
	// the keys, floored at chance (1/classes). Selection drove it down, so
	// it describes the crafting, not what an innocent model agrees on: a
	// Calibration measures that.
	ReferenceRate float64 `json:"reference_rate"`
	Seed          int64   `json:"seed"`
}

// Method says in a few words how the fingerprints were made: C-BIM with
// its loss, ε and input diversity, or natural inputs the source
// misclassifies.
func (m Meta) Method() string {
	switch m.Attack {
	case AttackNatural:
		return "natural inputs the source misclassifies"
	case AttackCBIM, "":
	default: // a study's own kind of key set, e.g. a false claim's
		return fmt.Sprintf("%s, ε = %g", m.Attack, m.Eps)
	}
	s := fmt.Sprintf("C-BIM, %s loss, ε = %g", m.Loss, m.Eps)
	if m.Shift > 0 || m.Noise > 0 {
		s += fmt.Sprintf(", input diversity (shifts ≤ %d px, noise SD %g)", m.Shift, m.Noise)
	}
	return s
}

// Append adds one example: its image and original in pixel space [0,1]
// (C·H·W values each, rounded to 8 bits), its key, its ground-truth label
// and its conferrability.
func (f *Fingerprint) Append(image, original []float32, key, label int64, confer float64) {
	f.Images = append(f.Images, toUint8(image)...)
	f.Originals = append(f.Originals, toUint8(original)...)
	f.Keys, f.Labels, f.Confer = append(f.Keys, key), append(f.Labels, label), append(f.Confer, confer)
	f.N = len(f.Keys)
}

func toUint8(x []float32) []uint8 {
	out := make([]uint8, len(x))
	for i, v := range x {
		out[i] = uint8(math.Round(float64(v) * 255))
	}
	return out
}

// ImageSize is C·H·W.
func (f *Fingerprint) ImageSize() int { return f.C * f.H * f.W }

// Float32 returns the fingerprints in pixel space [0,1].
func (f *Fingerprint) Float32() []float32 { return toFloat(f.Images) }

// ImageFloat32 returns fingerprint i in pixel space [0,1].
func (f *Fingerprint) ImageFloat32(i int) []float32 {
	per := f.ImageSize()
	return toFloat(f.Images[i*per : (i+1)*per])
}

// OriginalsFloat32 returns the start points in pixel space [0,1].
func (f *Fingerprint) OriginalsFloat32() []float32 { return toFloat(f.Originals) }

func toFloat(b []uint8) []float32 {
	out := make([]float32, len(b))
	for i, v := range b {
		out[i] = float32(v) / 255
	}
	return out
}

const (
	fileFormat    = "conferral-fingerprint/1"
	keyFormat     = "conferral.format"
	keyMeta       = "fingerprint"
	keyCommitment = "commitment"
	keySigner     = "signer"
	keySignature  = "signature"
)

// metaJSON is the description as the commitment covers it.
func (f *Fingerprint) metaJSON() (string, error) {
	mb, err := json.Marshal(f.Meta)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	return string(mb), nil
}

// file is the safetensors form of f, with its commitment and signature.
func (f *Fingerprint) file() (*safetensors.File, error) {
	mj, err := f.metaJSON()
	if err != nil {
		return nil, err
	}
	ts := f.tensors()
	md := map[string]string{keyFormat: fileFormat, keyMeta: mj, keyCommitment: commitment(mj, ts)}
	if f.Signer != "" || f.Signature != "" {
		md[keySigner], md[keySignature] = f.Signer, f.Signature
	}
	return &safetensors.File{Metadata: md, Tensors: ts}, nil
}

func (f *Fingerprint) validate() error {
	n, s := f.N, f.ImageSize()
	switch {
	case n < 0 || s <= 0:
		return fmt.Errorf("fingerprint: bad shape %dx%dx%dx%d", n, f.C, f.H, f.W)
	case len(f.Images) != n*s || len(f.Originals) != n*s:
		return fmt.Errorf("fingerprint: %d image and %d original bytes for %d examples of %d", len(f.Images), len(f.Originals), n, s)
	case len(f.Keys) != n || len(f.Labels) != n || len(f.Confer) != n:
		return fmt.Errorf("fingerprint: %d keys, %d labels, %d scores for %d examples", len(f.Keys), len(f.Labels), len(f.Confer), n)
	}
	for _, k := range append(slices.Clone(f.Keys), f.Labels...) {
		if k < 0 || int(k) >= len(f.Meta.Classes) {
			return fmt.Errorf("fingerprint: label %d outside the %d classes", k, len(f.Meta.Classes))
		}
	}
	return nil
}

func (f *Fingerprint) tensors() []safetensors.Tensor {
	shape := []int64{int64(f.N), int64(f.C), int64(f.H), int64(f.W)}
	conf := make([]float32, len(f.Confer))
	for i, v := range f.Confer {
		conf[i] = float32(v)
	}
	return []safetensors.Tensor{
		{Name: "images", DType: "U8", Shape: shape, Data: f.Images},
		{Name: "originals", DType: "U8", Shape: shape, Data: f.Originals},
		safetensors.I64("keys", []int64{int64(f.N)}, f.Keys),
		safetensors.I64("labels", []int64{int64(f.N)}, f.Labels),
		safetensors.F32("confer", []int64{int64(f.N)}, conf),
	}
}

// commitment is sha256 over the metadata and every tensor, each
// length-prefixed, in a fixed order.
func commitment(meta string, ts []safetensors.Tensor) string {
	h := sha256.New()
	put := func(b []byte) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put([]byte(fileFormat))
	put([]byte(meta))
	for _, t := range ts {
		put([]byte(t.Name))
		put([]byte(t.DType))
		put([]byte(fmt.Sprint(t.Shape)))
		put(t.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Save writes the fingerprint as safetensors, atomically, with its
// description and a sha256 commitment over all of it in the metadata.
func (f *Fingerprint) Save(path string) error {
	if err := f.validate(); err != nil {
		return err
	}
	if f.Signature != "" {
		if err := f.checkSignature(); err != nil {
			return fmt.Errorf("fingerprint: %w (sign it again after changing it)", err)
		}
	}
	file, err := f.file()
	if err != nil {
		return err
	}
	return safetensors.WriteFile(path, file)
}

// Commitment returns the file commitment of f as Save would write it.
func (f *Fingerprint) Commitment() (string, error) {
	mj, err := f.metaJSON()
	if err != nil {
		return "", err
	}
	return commitment(mj, f.tensors()), nil
}

// Load reads a fingerprint file and refuses it unless its commitment
// matches its content, a signature (when there is one) is the signer's
// over that commitment, and the file is in canonical form: the bytes Save
// writes for that content, so that nothing outside the commitment can
// change either.
func Load(path string) (*Fingerprint, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loading fingerprint: %w", err)
	}
	file, err := safetensors.Read(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return nil, fmt.Errorf("loading fingerprint %s: %w", path, err)
	}
	if file.Metadata[keyFormat] != fileFormat {
		return nil, fmt.Errorf("loading fingerprint %s: not a Conferral fingerprint (format %q)", path, file.Metadata[keyFormat])
	}
	get := func(name string) (safetensors.Tensor, error) {
		t, ok := file.Get(name)
		if !ok {
			return t, fmt.Errorf("loading fingerprint %s: no %q tensor", path, name)
		}
		return t, nil
	}
	f := &Fingerprint{}
	if err := json.Unmarshal([]byte(file.Metadata[keyMeta]), &f.Meta); err != nil {
		return nil, fmt.Errorf("loading fingerprint %s: description: %w", path, err)
	}
	img, err := get("images")
	if err != nil {
		return nil, err
	}
	if len(img.Shape) != 4 || img.DType != "U8" {
		return nil, fmt.Errorf("loading fingerprint %s: images must be U8 NCHW, are %s %v", path, img.DType, img.Shape)
	}
	f.N, f.C, f.H, f.W = int(img.Shape[0]), int(img.Shape[1]), int(img.Shape[2]), int(img.Shape[3])
	f.Images = img.Data
	orig, err := get("originals")
	if err != nil {
		return nil, err
	}
	f.Originals = orig.Data
	for _, name := range []string{"keys", "labels"} {
		t, err := get(name)
		if err != nil {
			return nil, err
		}
		v, err := t.Int64s()
		if err != nil {
			return nil, fmt.Errorf("loading fingerprint %s: %w", path, err)
		}
		if name == "keys" {
			f.Keys = v
		} else {
			f.Labels = v
		}
	}
	ct, err := get("confer")
	if err != nil {
		return nil, err
	}
	cv, err := ct.Float32s()
	if err != nil {
		return nil, fmt.Errorf("loading fingerprint %s: %w", path, err)
	}
	for _, v := range cv {
		f.Confer = append(f.Confer, float64(v))
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("loading fingerprint %s: %w", path, err)
	}
	ts := f.tensors()
	if got := commitment(file.Metadata[keyMeta], ts); got != file.Metadata[keyCommitment] {
		return nil, fmt.Errorf("loading fingerprint %s: commitment mismatch (file says %.16s…, content hashes to %.16s…): the file was altered", path, file.Metadata[keyCommitment], got)
	}
	f.Signer, f.Signature = file.Metadata[keySigner], file.Metadata[keySignature]
	if f.Signer != "" || f.Signature != "" {
		if err := f.checkSignature(); err != nil {
			return nil, fmt.Errorf("loading fingerprint %s: %w", path, err)
		}
	}
	canon, err := f.file()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, canon); err != nil {
		return nil, err
	}
	if !bytes.Equal(buf.Bytes(), raw) {
		return nil, fmt.Errorf("loading fingerprint %s: not in canonical form (bytes outside the committed content differ from what Conferral writes): the file was altered", path)
	}
	return f, nil
}
