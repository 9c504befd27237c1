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
	return torch.Conv2d(x, w, b, torch.ConvOpts{Stride: torch.P(max(o.Stride, 1)), Padding: torch.P(pad), Groups: g})
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
	return torch.Linear(x, w, b)
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
	return torch.BatchNorm(x, w, b, mean, variance, c.Training(), 0.1, 1e-5)
}

// Dropout drops activations with probability p while training; a model's
// Spec.Dropout, when positive, replaces p.
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
	return then(x.Sub(m), func(t *torch.Tensor) *torch.Tensor { return t.Div(s) })
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

// ConvBNReLU is the conv → batch norm → ReLU unit most zoo models repeat;
// its variables are "conv.*" and "bn.*" in c.
func ConvBNReLU(c *Context, x *torch.Tensor, out, k int64, o ConvOpts) *torch.Tensor {
	bn := then(Conv2d(c.In("conv"), x, out, k, o), func(t *torch.Tensor) *torch.Tensor { return BatchNorm(c.In("bn"), t) })
	return then(bn, (*torch.Tensor).Relu)
}

// GlobalAvgPool averages each channel and flattens to (N, C).
func GlobalAvgPool(x *torch.Tensor) *torch.Tensor {
	return then(torch.AdaptiveAvgPool2d(x, torch.P(1)), (*torch.Tensor).Flatten)
}

// MaxPool is k×k max pooling with stride k, rounding up so odd sizes (7×7
// after two poolings of a 28×28 input) keep their border.
func MaxPool(x *torch.Tensor, k int64) *torch.Tensor {
	return torch.MaxPool2d(x, torch.PoolOpts{Kernel: torch.P(k), CeilMode: true})
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
