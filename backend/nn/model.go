package nn

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
)

// Spec says what a model is: its architecture and the data it classifies.
// It travels in the model file's metadata, so a model file is
// self-describing.
type Spec struct {
	Arch    string    `json:"arch"`
	Dataset string    `json:"dataset"`
	Classes []string  `json:"classes"`
	C, H, W int64     // input channels, height, width
	Mean    []float64 `json:"mean"` // per-channel normalisation, pixel space [0,1]
	Std     []float64 `json:"std"`
	// Dropout, when positive, replaces the rate of every dropout layer of
	// an architecture that has any (cnn, mlp, widecnn, mlpdrop); 0 keeps
	// each layer's own rate. Evaluation never drops.
	Dropout float64 `json:"dropout,omitempty"`
}

func (s Spec) validate() error {
	if s.C <= 0 || s.H <= 0 || s.W <= 0 {
		return fmt.Errorf("input shape %dx%dx%d is not positive", s.C, s.H, s.W)
	}
	if len(s.Classes) < 2 {
		return fmt.Errorf("%d classes, need at least 2", len(s.Classes))
	}
	if int64(len(s.Mean)) != s.C || int64(len(s.Std)) != s.C {
		return fmt.Errorf("normalisation has %d means and %d stds for %d channels", len(s.Mean), len(s.Std), s.C)
	}
	for _, v := range s.Std {
		if v <= 0 {
			return fmt.Errorf("std %v is not positive", s.Std)
		}
	}
	if !(s.Dropout >= 0 && s.Dropout < 1) {
		return fmt.Errorf("dropout %v is not in [0,1)", s.Dropout)
	}
	return nil
}

// Model is a classifier of the zoo with its variables. Forward takes images
// in pixel space [0,1], shape (N, C, H, W), and returns logits (N, classes).
type Model struct {
	Spec Spec
	ctx  *Context
	arch Arch
}

// New builds an untrained model of the zoo with variables initialised from
// seed.
func New(spec Spec, seed uint64, d torch.Device) (m *Model, err error) {
	arch, ok := archs()[spec.Arch]
	if !ok {
		return nil, fmt.Errorf("unknown architecture %q (have %s)", spec.Arch, strings.Join(Architectures(), ", "))
	}
	return NewArch(spec, arch, seed, d)
}

// NewArch builds an untrained model of an architecture that need not be in
// the zoo (spec.Arch names it); it trains, predicts and exports like a zoo
// model, but Load and FromFile know only the zoo.
func NewArch(spec Spec, arch Arch, seed uint64, d torch.Device) (m *Model, err error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("model %s: %w", spec.Arch, err)
	}
	m = &Model{Spec: spec, ctx: NewContext(seed, d), arch: arch}
	m.ctx.s.dropout = spec.Dropout
	// Create every variable with one forward pass on a dummy batch.
	err = torch.Catch(func() {
		torch.NoGrad(func() {
			torch.Scoped(func(s *torch.Scope) {
				m.Forward(torch.Zeros(s, d, 2, spec.C, spec.H, spec.W))
			})
		})
	})
	if err != nil {
		m.ctx.Free()
		return nil, fmt.Errorf("building %s for %dx%dx%d input: %w", spec.Arch, spec.C, spec.H, spec.W, err)
	}
	m.ctx.freeze()
	return m, nil
}

// Forward returns the logits of a batch of pixel-space images.
func (m *Model) Forward(x *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	if len(s) != 4 || s[1] != m.Spec.C || s[2] != m.Spec.H || s[3] != m.Spec.W {
		panic(&torch.Error{Op: "forward", Msg: fmt.Sprintf("%s expects images of shape (N, %d, %d, %d), got %v", m.Spec.Arch, m.Spec.C, m.Spec.H, m.Spec.W, s)})
	}
	return m.forward(m.ctx, x)
}

// forward runs the normalisation and the architecture in context c (the
// model's, or a recording view of it).
func (m *Model) forward(c *Context, x *torch.Tensor) *torch.Tensor {
	x = Normalize(c.In("normalize"), x, m.Spec.Mean, m.Spec.Std)
	return m.arch(c, x, int64(len(m.Spec.Classes)))
}

// HasDropout reports whether the architecture has dropout layers, whose
// rate Spec.Dropout (or SetDropout) can change.
func (m *Model) HasDropout() bool { return m.ctx.s.hasDropout }

// SetDropout replaces the rate of every dropout layer (0: each layer's own)
// and records it in the Spec, so that a saved model keeps it. It is an
// error for an architecture without dropout to be given a positive rate.
func (m *Model) SetDropout(p float64) error {
	if !(p >= 0 && p < 1) {
		return fmt.Errorf("%s: dropout %v is not in [0,1)", m.Spec.Arch, p)
	}
	if p > 0 && !m.HasDropout() {
		return fmt.Errorf("%s has no dropout layers", m.Spec.Arch)
	}
	m.Spec.Dropout, m.ctx.s.dropout = p, p
	return nil
}

// SetTraining switches between training and evaluation mode.
func (m *Model) SetTraining(on bool) { m.ctx.SetTraining(on) }

// Training reports the mode.
func (m *Model) Training() bool { return m.ctx.Training() }

// Params returns the trainable parameters in a fixed order.
func (m *Model) Params() []*torch.Tensor { return m.ctx.Params() }

// Variables returns parameters and buffers in a fixed order.
func (m *Model) Variables() []*Variable { return m.ctx.Variables() }

// Context exposes the model's variables by name (fine-tuning reaches into
// layers through it).
func (m *Model) Context() *Context { return m.ctx }

// Device is where the model lives.
func (m *Model) Device() torch.Device { return m.ctx.Device() }

// NumParams counts trainable scalars.
func (m *Model) NumParams() int64 {
	var n int64
	for _, p := range m.Params() {
		n += p.Numel()
	}
	return n
}

// Free releases the model's variables.
func (m *Model) Free() { m.ctx.Free() }

// Metadata keys of a model file.
const (
	metaFormat  = "conferral.format"
	modelFormat = "conferral-model/1"
)

// Save writes the model as safetensors with its Spec (and extra, e.g.
// training provenance) in the metadata. The write is atomic.
func (m *Model) Save(path string, extra map[string]string) error {
	f, err := m.File(extra)
	if err != nil {
		return err
	}
	return safetensors.WriteFile(path, f)
}

// File encodes the model as safetensors content.
func (m *Model) File(extra map[string]string) (f *safetensors.File, err error) {
	meta := map[string]string{}
	for k, v := range extra {
		meta[k] = v
	}
	classes, _ := json.Marshal(m.Spec.Classes)
	mean, _ := json.Marshal(m.Spec.Mean)
	std, _ := json.Marshal(m.Spec.Std)
	meta[metaFormat] = modelFormat
	meta["arch"] = m.Spec.Arch
	meta["dataset"] = m.Spec.Dataset
	meta["classes"] = string(classes)
	meta["input"] = fmt.Sprintf("%d,%d,%d", m.Spec.C, m.Spec.H, m.Spec.W)
	meta["mean"] = string(mean)
	meta["std"] = string(std)
	if m.Spec.Dropout > 0 {
		meta["dropout"] = strconv.FormatFloat(m.Spec.Dropout, 'g', -1, 64)
	}
	f = &safetensors.File{Metadata: meta}
	err = torch.Catch(func() {
		for _, v := range m.Variables() {
			f.Tensors = append(f.Tensors, safetensors.F32(v.Name, v.T.Shape(), v.T.Float32s()))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("encoding model: %w", err)
	}
	return f, nil
}

// SpecOf reads the Spec from a model file's metadata.
func SpecOf(meta map[string]string) (Spec, error) {
	if meta[metaFormat] != modelFormat {
		return Spec{}, fmt.Errorf("not a Conferral model (format %q, want %q)", meta[metaFormat], modelFormat)
	}
	s := Spec{Arch: meta["arch"], Dataset: meta["dataset"]}
	if err := json.Unmarshal([]byte(meta["classes"]), &s.Classes); err != nil {
		return s, fmt.Errorf("classes: %w", err)
	}
	if err := json.Unmarshal([]byte(meta["mean"]), &s.Mean); err != nil {
		return s, fmt.Errorf("mean: %w", err)
	}
	if err := json.Unmarshal([]byte(meta["std"]), &s.Std); err != nil {
		return s, fmt.Errorf("std: %w", err)
	}
	dims := strings.Split(meta["input"], ",")
	if len(dims) != 3 {
		return s, fmt.Errorf("input %q: want C,H,W", meta["input"])
	}
	var v [3]int64
	for i, d := range dims {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil {
			return s, fmt.Errorf("input %q: %w", meta["input"], err)
		}
		v[i] = n
	}
	s.C, s.H, s.W = v[0], v[1], v[2]
	if p, ok := meta["dropout"]; ok {
		d, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return s, fmt.Errorf("dropout %q: %w", p, err)
		}
		s.Dropout = d
	}
	return s, s.validate()
}

// Load reads a model file written by Save onto device d.
func Load(path string, d torch.Device) (*Model, map[string]string, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading model: %w", err)
	}
	m, err := FromFile(f, d)
	if err != nil {
		return nil, nil, fmt.Errorf("loading model %s: %w", path, err)
	}
	return m, f.Metadata, nil
}

// FromFile builds a model from safetensors content.
func FromFile(f *safetensors.File, d torch.Device) (*Model, error) {
	spec, err := SpecOf(f.Metadata)
	if err != nil {
		return nil, err
	}
	m, err := New(spec, 0, d)
	if err != nil {
		return nil, err
	}
	if err := m.LoadTensors(f.Tensors); err != nil {
		m.Free()
		return nil, err
	}
	return m, nil
}

// LoadTensors copies values into the model's variables by name. Every
// variable must be present with its shape, and nothing else.
func (m *Model) LoadTensors(ts []safetensors.Tensor) error {
	byName := map[string]safetensors.Tensor{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	vars := m.Variables()
	if len(byName) != len(vars) {
		return fmt.Errorf("file has %d tensors, %s has %d variables", len(byName), m.Spec.Arch, len(vars))
	}
	return torch.Catch(func() {
		for _, v := range vars {
			t, ok := byName[v.Name]
			if !ok {
				panic(&torch.Error{Op: "load", Msg: "missing variable " + v.Name})
			}
			vals, err := t.Float32s()
			if err != nil {
				panic(&torch.Error{Op: "load", Msg: err.Error()})
			}
			if fmt.Sprint(t.Shape) != fmt.Sprint(v.T.Shape()) {
				panic(&torch.Error{Op: "load", Msg: fmt.Sprintf("variable %s has shape %v in the file, %v in the model", v.Name, t.Shape, v.T.Shape())})
			}
			src := torch.FromSlice(nil, vals, t.Shape...)
			v.T.CopyFrom(src)
			src.Free()
		}
	})
}

// Clone returns an independent copy of m on device d.
func (m *Model) Clone(d torch.Device) (*Model, error) {
	f, err := m.File(nil)
	if err != nil {
		return nil, err
	}
	c, err := NewArch(m.Spec, m.arch, 0, d)
	if err != nil {
		return nil, err
	}
	if err := c.LoadTensors(f.Tensors); err != nil {
		c.Free()
		return nil, err
	}
	return c, nil
}
