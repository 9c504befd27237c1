package nn

import (
	"math"

	"github.com/conferral/conferral/backend/torch"
)

// ConvOpts configures Conv2d; zero Stride means 1. Padding −1 means "same"
// for odd kernels (k/2).
type ConvOpts struct {
	Stride, Padding, Groups int64
	Bias                    bool
	// Init fills the weight; nil means KaimingNormal (fan-out, as
	// torchvision's batch-normalised networks).
	Init Initializer
}

// Conv2d is a convolution with out channels and a k×k kernel; its weight is
// "weight" (and "bias") in c.
func Conv2d(c *Context, x *torch.Tensor, out, k int64, o ConvOpts) *torch.Tensor {
	in := x.Size(1)
	g := max(o.Groups, 1)
	shape := []int64{out, in / g, k, k}
	init := o.Init
	if init == nil {
		init = KaimingNormal
	}
	w := c.Param("weight", shape, init)
	var b *torch.Tensor
	if o.Bias {
		b = c.Param("bias", []int64{out}, Uniform(1/math.Sqrt(float64(fanIn(shape)))))
	}
	pad := o.Padding
	if pad < 0 {
		pad = k / 2
	}
	stride := max(o.Stride, 1)
	y := torch.Conv2d(x, w, b, torch.ConvOpts{Stride: torch.P(stride), Padding: torch.P(pad), Groups: g})
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpConv2d, Kernel: k, Stride: stride, Padding: pad, Groups: g}, x, w, b)
	}
	return y
}

// Dense is a fully connected layer with PyTorch's default initialisation.
func Dense(c *Context, x *torch.Tensor, out int64, bias bool) *torch.Tensor {
	shape := []int64{out, x.Size(1)}
	bound := 1 / math.Sqrt(float64(x.Size(1)))
	w := c.Param("weight", shape, Uniform(bound))
	var b *torch.Tensor
	if bias {
		b = c.Param("bias", []int64{out}, Uniform(bound))
	}
	y := torch.Linear(x, w, b)
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpLinear}, x, w, b)
	}
	return y
}

// BatchNorm normalises over channels (dimension 1) with batch statistics in
// training and running statistics otherwise (momentum 0.1, ε 1e-5, as
// PyTorch).
func BatchNorm(c *Context, x *torch.Tensor) *torch.Tensor {
	ch := []int64{x.Size(1)}
	w := c.Param("weight", ch, Constant(1))
	b := c.Param("bias", ch, Constant(0))
	mean := c.Buffer("running_mean", ch, Constant(0))
	variance := c.Buffer("running_var", ch, Constant(1))
	const momentum, eps = 0.1, 1e-5
	y := torch.BatchNorm(x, w, b, mean, variance, c.Training(), momentum, eps)
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpBatchNorm, Eps: eps, Momentum: momentum}, x, w, b, mean, variance)
	}
	return y
}

// Dropout drops activations with probability p while training; a model's
// Spec.Dropout, when positive, replaces p. In evaluation it is the identity
// (and records nothing).
func Dropout(c *Context, x *torch.Tensor, p float64) *torch.Tensor {
	if !c.s.frozen {
		c.s.hasDropout = true // the building pass records the layer
	}
	if c.s.dropout > 0 {
		p = c.s.dropout
	}
	if p == 0 || !c.Training() {
		return x
	}
	return torch.Dropout(x, p, true)
}

// Normalize is the per-channel z-score (x − mean)/std with constants stored
// as buffers "mean" and "std", so a saved model carries its normalisation.
func Normalize(c *Context, x *torch.Tensor, mean, std []float64) *torch.Tensor {
	ch := int64(len(mean))
	m := c.Buffer("mean", []int64{1, ch, 1, 1}, Values(f32s(mean)))
	s := c.Buffer("std", []int64{1, ch, 1, 1}, Values(f32s(std)))
	d := Sub(c, x, m)
	out := Div(c, d, s)
	d.Free()
	return out
}

// then applies f to an intermediate result t and frees t's handle at once,
// as Python frees a temporary when its last reference goes. libtorch counts
// references, so autograd keeps what it needs; freeing early only returns
// memory sooner, which keeps inference's working set small and hot.
func then(t *torch.Tensor, f func(*torch.Tensor) *torch.Tensor) *torch.Tensor {
	out := f(t)
	t.Free()
	return out
}

// relu, maxPool2 and avgPool2 are Relu and 2×2 pooling that free their
// input, an intermediate result, as then does. (They are functions rather
// than then with a layer function as a value: a Context passed through a
// function value escapes to the heap, an allocation per layer.)
func relu(c *Context, t *torch.Tensor) *torch.Tensor {
	out := Relu(c, t)
	t.Free()
	return out
}

func maxPool2(c *Context, t *torch.Tensor) *torch.Tensor {
	out := MaxPool(c, t, 2)
	t.Free()
	return out
}

func avgPool2(c *Context, t *torch.Tensor) *torch.Tensor {
	out := AvgPool(c, t, 2)
	t.Free()
	return out
}

// ConvBNReLU is the conv → batch norm → ReLU unit most zoo models repeat;
// its variables are "conv.*" and "bn.*" in c.
func ConvBNReLU(c *Context, x *torch.Tensor, out, k int64, o ConvOpts) *torch.Tensor {
	bn := then(Conv2d(c.In("conv"), x, out, k, o), func(t *torch.Tensor) *torch.Tensor { return BatchNorm(c.In("bn"), t) })
	return relu(c, bn)
}

// The layers below have no variables; they take a Context so that a
// recording forward pass (Model.Trace) sees them. Architectures compute
// only through layer functions.

// Relu is max(x, 0).
func Relu(c *Context, x *torch.Tensor) *torch.Tensor {
	y := x.Relu()
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpRelu}, x)
	}
	return y
}

// Relu6 is min(max(x, 0), 6).
func Relu6(c *Context, x *torch.Tensor) *torch.Tensor {
	y := x.Relu6()
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpRelu6}, x)
	}
	return y
}

// Add is x + y, broadcasting (a residual connection).
func Add(c *Context, x, y *torch.Tensor) *torch.Tensor { return binary(c, OpAdd, x.Add(y), x, y) }

// Sub is x − y, broadcasting.
func Sub(c *Context, x, y *torch.Tensor) *torch.Tensor { return binary(c, OpSub, x.Sub(y), x, y) }

// Mul is x · y elementwise, broadcasting (a learned scale, for example).
func Mul(c *Context, x, y *torch.Tensor) *torch.Tensor { return binary(c, OpMul, x.Mul(y), x, y) }

// Div is x / y elementwise, broadcasting.
func Div(c *Context, x, y *torch.Tensor) *torch.Tensor { return binary(c, OpDiv, x.Div(y), x, y) }

// binary records z = x k y when c records, and returns z: the shared tail
// of the elementwise layers above. It inlines, so it costs them nothing.
func binary(c *Context, k OpKind, z, x, y *torch.Tensor) *torch.Tensor {
	if c.s.trace != nil {
		c.s.trace.record(c, z, Op{Kind: k}, x, y)
	}
	return z
}

// Concat joins xs along dimension dim (channels: 1).
func Concat(c *Context, xs []*torch.Tensor, dim int64) *torch.Tensor {
	y := torch.Cat(xs, dim)
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpConcat, Dim: dim}, xs...)
	}
	return y
}

// Flatten reshapes (N, …) to (N, rest).
func Flatten(c *Context, x *torch.Tensor) *torch.Tensor {
	y := x.Flatten()
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpFlatten}, x)
	}
	return y
}

// GlobalAvgPool averages each channel and flattens to (N, C).
func GlobalAvgPool(c *Context, x *torch.Tensor) *torch.Tensor {
	p := torch.AdaptiveAvgPool2d(x, torch.P(1))
	if t := c.s.trace; t != nil {
		t.record(c, p, Op{Kind: OpGlobalAvgPool}, x)
	}
	out := Flatten(c, p)
	p.Free()
	return out
}

// MaxPool is k×k max pooling with stride k, rounding up so odd sizes (7×7
// after two poolings of a 28×28 input) keep their border.
func MaxPool(c *Context, x *torch.Tensor, k int64) *torch.Tensor {
	y := torch.MaxPool2d(x, torch.PoolOpts{Kernel: torch.P(k), CeilMode: true})
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpMaxPool, Kernel: k, Stride: k, CeilMode: true}, x)
	}
	return y
}

// AvgPool is k×k average pooling with stride k, rounding down.
func AvgPool(c *Context, x *torch.Tensor, k int64) *torch.Tensor {
	y := torch.AvgPool2d(x, torch.PoolOpts{Kernel: torch.P(k)})
	if t := c.s.trace; t != nil {
		t.record(c, y, Op{Kind: OpAvgPool, Kernel: k, Stride: k}, x)
	}
	return y
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
