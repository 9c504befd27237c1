// Package nn holds layers, as plain functions over a Context in the style of
// GoMLX's layers, and the model zoo of the paper: a small CNN, ResNet-20/56,
// VGG-16/19, a small DenseNet-BC and MobileNetV2, CIFAR-style and also
// taking 28×28×1 inputs. Models take pixel-space images in [0,1]: per-channel
// z-score normalisation is their first layer.
package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/conferral/conferral/backend/torch"
)

// Variable is a named model tensor: a trainable parameter or a buffer such
// as batch norm's running statistics.
type Variable struct {
	Name      string
	T         *torch.Tensor
	Trainable bool
}

// store holds a model's variables; Contexts are views of it under a name
// prefix.
type store struct {
	vars     map[string]*Variable
	order    []*Variable
	rng      *rand.Rand
	device   torch.Device
	training bool
	frozen   bool // no new variables after the model is built
	// dropout, when positive, replaces every dropout layer's rate;
	// hasDropout records that the architecture has such layers.
	dropout    float64
	hasDropout bool
	// trace, when set, records every layer call (Model.Trace); nil
	// otherwise.
	trace *Trace
}

// Context gives layers their variables by scoped name ("block1.conv.weight")
// and says whether the model is training. Layers create their variables on
// first use; after the model is built, the set of variables is fixed.
type Context struct {
	prefix string
	s      *store
}

// NewContext returns an empty context whose variables are initialised from
// seed and live on device d.
func NewContext(seed uint64, d torch.Device) *Context {
	return &Context{s: &store{
		vars:   map[string]*Variable{},
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		device: d,
	}}
}

// In returns a sub-context whose names are prefixed by name.
func (c *Context) In(name string) *Context {
	if c.prefix == "" {
		return &Context{prefix: name, s: c.s}
	}
	return &Context{prefix: c.prefix + "." + name, s: c.s}
}

// Inf returns a sub-context named by a format.
func (c *Context) Inf(format string, args ...any) *Context { return c.In(fmt.Sprintf(format, args...)) }

// Training reports whether layers run in training mode (batch statistics,
// dropout).
func (c *Context) Training() bool { return c.s.training }

// SetTraining switches between training and evaluation mode.
func (c *Context) SetTraining(on bool) { c.s.training = on }

// Device is where the context's variables live.
func (c *Context) Device() torch.Device { return c.s.device }

// Initializer fills a new variable of the given shape.
type Initializer func(rng *rand.Rand, shape []int64) []float32

// Param returns the trainable variable name in this context, creating it
// with init on first use.
func (c *Context) Param(name string, shape []int64, init Initializer) *torch.Tensor {
	return c.variable(name, shape, init, true)
}

// Buffer returns the non-trainable variable name, creating it on first use.
func (c *Context) Buffer(name string, shape []int64, init Initializer) *torch.Tensor {
	return c.variable(name, shape, init, false)
}

func (c *Context) variable(name string, shape []int64, init Initializer, trainable bool) *torch.Tensor {
	full := name
	if c.prefix != "" {
		full = c.prefix + "." + name
	}
	if v, ok := c.s.vars[full]; ok {
		return v.T
	}
	if c.s.frozen {
		panic(&torch.Error{Op: "nn", Msg: "variable " + full + " does not exist in the built model"})
	}
	t := torch.FromSlice(nil, init(c.s.rng, shape), shape...)
	if c.s.device != torch.CPU {
		cpu := t
		t = t.ToDevice(c.s.device)
		cpu.Free()
	}
	if trainable {
		t.SetRequiresGrad(true)
	}
	v := &Variable{Name: full, T: t, Trainable: trainable}
	c.s.vars[full] = v
	c.s.order = append(c.s.order, v)
	return t
}

// Variables returns every variable in creation order.
func (c *Context) Variables() []*Variable { return c.s.order }

// Params returns the trainable parameters in creation order.
func (c *Context) Params() []*torch.Tensor {
	var ps []*torch.Tensor
	for _, v := range c.s.order {
		if v.Trainable {
			ps = append(ps, v.T)
		}
	}
	return ps
}

// Variable returns the variable with the given full name.
func (c *Context) Variable(name string) (*Variable, bool) {
	v, ok := c.s.vars[name]
	return v, ok
}

// freeze fixes the set of variables.
func (c *Context) freeze() { c.s.frozen = true }

// Free releases every variable.
func (c *Context) Free() {
	for _, v := range c.s.order {
		v.T.Free()
	}
}

// Initializers.

// Constant fills with v.
func Constant(v float32) Initializer {
	return func(_ *rand.Rand, shape []int64) []float32 {
		out := make([]float32, numel(shape))
		for i := range out {
			out[i] = v
		}
		return out
	}
}

// Values uses the given values.
func Values(vs []float32) Initializer {
	return func(_ *rand.Rand, shape []int64) []float32 {
		if int64(len(vs)) != numel(shape) {
			panic(&torch.Error{Op: "nn", Msg: fmt.Sprintf("%d values for shape %v", len(vs), shape)})
		}
		return append([]float32(nil), vs...)
	}
}

// KaimingNormal is He initialisation for ReLU networks with fan-out mode,
// as torchvision initialises convolutions.
func KaimingNormal(rng *rand.Rand, shape []int64) []float32 {
	fanOut := shape[0]
	for _, d := range shape[2:] {
		fanOut *= d
	}
	std := math.Sqrt(2 / float64(fanOut))
	out := make([]float32, numel(shape))
	for i := range out {
		out[i] = float32(rng.NormFloat64() * std)
	}
	return out
}

// KaimingNormalFanIn is He initialisation in fan-in mode: N(0, 2/fan_in),
// which keeps the activations' scale from layer to layer through ReLUs —
// what a network without normalisation needs (fan-out mode shrinks the
// signal by out/in channels at every widening, 16× at a first 3×3 layer
// of 16 channels on one input channel).
func KaimingNormalFanIn(rng *rand.Rand, shape []int64) []float32 {
	std := math.Sqrt(2 / float64(fanIn(shape)))
	out := make([]float32, numel(shape))
	for i := range out {
		out[i] = float32(rng.NormFloat64() * std)
	}
	return out
}

// Uniform returns U(−bound, bound).
func Uniform(bound float64) Initializer {
	return func(rng *rand.Rand, shape []int64) []float32 {
		out := make([]float32, numel(shape))
		for i := range out {
			out[i] = float32((2*rng.Float64() - 1) * bound)
		}
		return out
	}
}

// fanIn is the number of inputs feeding one output of a weight.
func fanIn(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape[1:] {
		n *= d
	}
	return n
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// joinName builds a dotted name.
func joinName(parts ...string) string { return strings.Join(parts, ".") }
