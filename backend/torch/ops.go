package torch

// #include "shim.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// The op codes below (C.TCH_OP_...) are the names of ops.h, which shim.cpp's
// tch_unary, tch_binary, tch_scalar and tch_reduce switch on: both sides
// spell the same names, so they cannot fall out of step.

func (t *Tensor) unary(op C.tch_unary_op, name string) *Tensor {
	var h C.tch_tensor
	check(name, C.tch_unary(op, t.ptr(name), &h))
	return newTensor(t.scope, h)
}

func (t *Tensor) Relu() *Tensor        { return t.unary(C.TCH_OP_RELU, "relu") }
func (t *Tensor) Relu6() *Tensor       { return t.unary(C.TCH_OP_RELU6, "relu6") }
func (t *Tensor) Sigmoid() *Tensor     { return t.unary(C.TCH_OP_SIGMOID, "sigmoid") }
func (t *Tensor) Tanh() *Tensor        { return t.unary(C.TCH_OP_TANH, "tanh") }
func (t *Tensor) Exp() *Tensor         { return t.unary(C.TCH_OP_EXP, "exp") }
func (t *Tensor) Log() *Tensor         { return t.unary(C.TCH_OP_LOG, "log") }
func (t *Tensor) Neg() *Tensor         { return t.unary(C.TCH_OP_NEG, "neg") }
func (t *Tensor) Abs() *Tensor         { return t.unary(C.TCH_OP_ABS, "abs") }
func (t *Tensor) Sign() *Tensor        { return t.unary(C.TCH_OP_SIGN, "sign") }
func (t *Tensor) Sqrt() *Tensor        { return t.unary(C.TCH_OP_SQRT, "sqrt") }
func (t *Tensor) Detach() *Tensor      { return t.unary(C.TCH_OP_DETACH, "detach") }
func (t *Tensor) Contiguous() *Tensor  { return t.unary(C.TCH_OP_CONTIGUOUS, "contiguous") }
func (t *Tensor) Clone() *Tensor       { return t.unary(C.TCH_OP_CLONE, "clone") }
func (t *Tensor) Square() *Tensor      { return t.unary(C.TCH_OP_SQUARE, "square") }
func (t *Tensor) HardSwish() *Tensor   { return t.unary(C.TCH_OP_HARDSWISH, "hardswish") }
func (t *Tensor) HardSigmoid() *Tensor { return t.unary(C.TCH_OP_HARDSIGMOID, "hardsigmoid") }
func (t *Tensor) Floor() *Tensor       { return t.unary(C.TCH_OP_FLOOR, "floor") }
func (t *Tensor) Round() *Tensor       { return t.unary(C.TCH_OP_ROUND, "round") }
func (t *Tensor) Log1p() *Tensor       { return t.unary(C.TCH_OP_LOG1P, "log1p") }
func (t *Tensor) Reciprocal() *Tensor  { return t.unary(C.TCH_OP_RECIPROCAL, "reciprocal") }

func (t *Tensor) binary(op C.tch_binary_op, name string, o *Tensor) *Tensor {
	var h C.tch_tensor
	check(name, C.tch_binary(op, t.ptr(name), o.ptr(name), &h))
	return newTensor(scopeOf(t, o), h)
}

// Elementwise arithmetic and comparisons broadcast as in PyTorch.
func (t *Tensor) Add(o *Tensor) *Tensor     { return t.binary(C.TCH_OP_ADD, "add", o) }
func (t *Tensor) Sub(o *Tensor) *Tensor     { return t.binary(C.TCH_OP_SUB, "sub", o) }
func (t *Tensor) Mul(o *Tensor) *Tensor     { return t.binary(C.TCH_OP_MUL, "mul", o) }
func (t *Tensor) Div(o *Tensor) *Tensor     { return t.binary(C.TCH_OP_DIV, "div", o) }
func (t *Tensor) MatMul(o *Tensor) *Tensor  { return t.binary(C.TCH_OP_MATMUL, "matmul", o) }
func (t *Tensor) Maximum(o *Tensor) *Tensor { return t.binary(C.TCH_OP_MAXIMUM, "maximum", o) }
func (t *Tensor) Minimum(o *Tensor) *Tensor { return t.binary(C.TCH_OP_MINIMUM, "minimum", o) }
func (t *Tensor) Eq(o *Tensor) *Tensor      { return t.binary(C.TCH_OP_EQ, "eq", o) }
func (t *Tensor) Gt(o *Tensor) *Tensor      { return t.binary(C.TCH_OP_GT, "gt", o) }
func (t *Tensor) Lt(o *Tensor) *Tensor      { return t.binary(C.TCH_OP_LT, "lt", o) }
func (t *Tensor) Pow(o *Tensor) *Tensor     { return t.binary(C.TCH_OP_POW, "pow", o) }
func (t *Tensor) Ge(o *Tensor) *Tensor      { return t.binary(C.TCH_OP_GE, "ge", o) }
func (t *Tensor) Le(o *Tensor) *Tensor      { return t.binary(C.TCH_OP_LE, "le", o) }
func (t *Tensor) Ne(o *Tensor) *Tensor      { return t.binary(C.TCH_OP_NE, "ne", o) }

func (t *Tensor) scalar(op C.tch_scalar_op, name string, s float64) *Tensor {
	var h C.tch_tensor
	check(name, C.tch_scalar(op, t.ptr(name), C.double(s), &h))
	return newTensor(t.scope, h)
}

func (t *Tensor) AddScalar(s float64) *Tensor { return t.scalar(C.TCH_OP_ADD_SCALAR, "add", s) }
func (t *Tensor) SubScalar(s float64) *Tensor { return t.scalar(C.TCH_OP_SUB_SCALAR, "sub", s) }
func (t *Tensor) MulScalar(s float64) *Tensor { return t.scalar(C.TCH_OP_MUL_SCALAR, "mul", s) }
func (t *Tensor) DivScalar(s float64) *Tensor { return t.scalar(C.TCH_OP_DIV_SCALAR, "div", s) }
func (t *Tensor) PowScalar(s float64) *Tensor { return t.scalar(C.TCH_OP_POW_SCALAR, "pow", s) }
func (t *Tensor) EqScalar(s float64) *Tensor  { return t.scalar(C.TCH_OP_EQ_SCALAR, "eq", s) }
func (t *Tensor) GtScalar(s float64) *Tensor  { return t.scalar(C.TCH_OP_GT_SCALAR, "gt", s) }
func (t *Tensor) LtScalar(s float64) *Tensor  { return t.scalar(C.TCH_OP_LT_SCALAR, "lt", s) }
func (t *Tensor) GeScalar(s float64) *Tensor  { return t.scalar(C.TCH_OP_GE_SCALAR, "ge", s) }
func (t *Tensor) LeScalar(s float64) *Tensor  { return t.scalar(C.TCH_OP_LE_SCALAR, "le", s) }
func (t *Tensor) LeakyRelu(slope float64) *Tensor {
	return t.scalar(C.TCH_OP_LEAKY_RELU, "leaky_relu", slope)
}

// RSubScalar returns s − t.
func (t *Tensor) RSubScalar(s float64) *Tensor { return t.scalar(C.TCH_OP_RSUB_SCALAR, "rsub", s) }

func (t *Tensor) reduce(op C.tch_reduce_op, name string, dims []int64, keep bool) *Tensor {
	d, n := cints(dims)
	k := C.int(0)
	if keep {
		k = 1
	}
	var h C.tch_tensor
	check(name, C.tch_reduce(op, t.ptr(name), d, n, k, &h))
	return newTensor(t.scope, h)
}

// Sum of all elements.
func (t *Tensor) Sum() *Tensor { return t.reduce(C.TCH_OP_SUM, "sum", nil, false) }

// SumDims sums over dims.
func (t *Tensor) SumDims(dims []int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_SUM, "sum", dims, keep)
}

// Mean of all elements.
func (t *Tensor) Mean() *Tensor { return t.reduce(C.TCH_OP_MEAN, "mean", nil, false) }

// MeanDims averages over dims.
func (t *Tensor) MeanDims(dims []int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_MEAN, "mean", dims, keep)
}

// Amax is the maximum over dims.
func (t *Tensor) Amax(dims []int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_AMAX, "amax", dims, keep)
}

// Amin is the minimum over dims.
func (t *Tensor) Amin(dims []int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_AMIN, "amin", dims, keep)
}

// Argmax is the index of the maximum along dim.
func (t *Tensor) Argmax(dim int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_ARGMAX, "argmax", []int64{dim}, keep)
}

// Argmin is the index of the minimum along dim.
func (t *Tensor) Argmin(dim int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_ARGMIN, "argmin", []int64{dim}, keep)
}

// LogSumExp over dims.
func (t *Tensor) LogSumExp(dims []int64, keep bool) *Tensor {
	return t.reduce(C.TCH_OP_LOGSUMEXP, "logsumexp", dims, keep)
}

// Clamp limits values to [lo, hi].
func (t *Tensor) Clamp(lo, hi float64) *Tensor { return t.clamp(lo, hi, true, true) }

// ClampMin limits values from below.
func (t *Tensor) ClampMin(lo float64) *Tensor { return t.clamp(lo, 0, true, false) }

// ClampMax limits values from above.
func (t *Tensor) ClampMax(hi float64) *Tensor { return t.clamp(0, hi, false, true) }

func (t *Tensor) clamp(lo, hi float64, hasLo, hasHi bool) *Tensor {
	b := func(v bool) C.int {
		if v {
			return 1
		}
		return 0
	}
	var h C.tch_tensor
	check("clamp", C.tch_clamp(t.ptr("clamp"), C.double(lo), C.double(hi), b(hasLo), b(hasHi), &h))
	return newTensor(t.scope, h)
}

// ClampTensor limits values elementwise to [lo, hi]; either bound may be nil.
func (t *Tensor) ClampTensor(lo, hi *Tensor) *Tensor {
	var h C.tch_tensor
	check("clamp", C.tch_clamp_t(t.ptr("clamp"), lo.ptr("clamp"), hi.ptr("clamp"), &h))
	return newTensor(scopeOf(t, lo, hi), h)
}

// Where picks a where cond holds and b elsewhere.
func Where(cond, a, b *Tensor) *Tensor {
	var h C.tch_tensor
	check("where", C.tch_where(cond.ptr("where"), a.ptr("where"), b.ptr("where"), &h))
	return newTensor(scopeOf(cond, a, b), h)
}

// Reshape returns t with a new shape (one size may be -1).
func (t *Tensor) Reshape(shape ...int64) *Tensor {
	d, n := cints(shape)
	var h C.tch_tensor
	check("reshape", C.tch_reshape(t.ptr("reshape"), d, n, &h))
	return newTensor(t.scope, h)
}

// Flatten keeps the first dimension and flattens the rest.
func (t *Tensor) Flatten() *Tensor { return t.Reshape(t.Size(0), -1) }

// Permute reorders dimensions.
func (t *Tensor) Permute(dims ...int64) *Tensor {
	d, n := cints(dims)
	var h C.tch_tensor
	check("permute", C.tch_permute(t.ptr("permute"), d, n, &h))
	return newTensor(t.scope, h)
}

// Expand broadcasts t to shape (-1 keeps a size).
func (t *Tensor) Expand(shape ...int64) *Tensor {
	d, n := cints(shape)
	var h C.tch_tensor
	check("expand", C.tch_expand(t.ptr("expand"), d, n, &h))
	return newTensor(t.scope, h)
}

// Narrow returns length elements of dimension dim from start (a view).
func (t *Tensor) Narrow(dim, start, length int64) *Tensor {
	var h C.tch_tensor
	check("narrow", C.tch_narrow(t.ptr("narrow"), C.int64_t(dim), C.int64_t(start), C.int64_t(length), &h))
	return newTensor(t.scope, h)
}

// IndexSelect picks entries of dimension dim by an int64 index tensor.
func (t *Tensor) IndexSelect(dim int64, index *Tensor) *Tensor {
	var h C.tch_tensor
	check("index_select", C.tch_index_select(t.ptr("index_select"), C.int64_t(dim), index.ptr("index_select"), &h))
	return newTensor(scopeOf(t, index), h)
}

// Gather picks t[i][index[i][j]] along dim.
func (t *Tensor) Gather(dim int64, index *Tensor) *Tensor {
	var h C.tch_tensor
	check("gather", C.tch_gather(t.ptr("gather"), C.int64_t(dim), index.ptr("gather"), &h))
	return newTensor(scopeOf(t, index), h)
}

// Cat concatenates tensors along dim.
func Cat(ts []*Tensor, dim int64) *Tensor {
	if len(ts) == 0 {
		panic(&Error{Op: "cat", Msg: "no tensors to concatenate"})
	}
	hs := handles("cat", ts)
	var h C.tch_tensor
	check("cat", C.tch_cat(&hs[0], C.int(len(hs)), C.int64_t(dim), &h))
	return newTensor(scopeOf(ts...), h)
}

// OneHot encodes an int64 tensor of class indices.
func (t *Tensor) OneHot(classes int64) *Tensor {
	var h C.tch_tensor
	check("one_hot", C.tch_one_hot(t.ptr("one_hot"), C.int64_t(classes), &h))
	return newTensor(t.scope, h)
}

// TopK returns the k largest values along dim and their indices.
func (t *Tensor) TopK(k, dim int64) (values, indices *Tensor) {
	var v, i C.tch_tensor
	check("topk", C.tch_topk(t.ptr("topk"), C.int64_t(k), C.int64_t(dim), &v, &i))
	return newTensor(t.scope, v), newTensor(t.scope, i)
}

// Pair is a two-dimensional size, stride or padding (height, width).
type Pair [2]int64

// P returns the square pair (n, n).
func P(n int64) Pair { return Pair{n, n} }

func (p *Pair) c() *C.int64_t { return (*C.int64_t)(unsafe.Pointer(&p[0])) }

// ConvOpts are conv2d's hyper-parameters; zero Stride and Dilation mean 1
// and zero Groups means 1.
type ConvOpts struct {
	Stride, Padding, Dilation, OutputPadding Pair
	Groups                                   int64
}

func (o ConvOpts) norm() ConvOpts {
	for i := range 2 {
		if o.Stride[i] == 0 {
			o.Stride[i] = 1
		}
		if o.Dilation[i] == 0 {
			o.Dilation[i] = 1
		}
	}
	if o.Groups == 0 {
		o.Groups = 1
	}
	return o
}

// Conv2d is a 2-D convolution of x (N,C,H,W) with w (O,C/g,kH,kW) and an
// optional bias b.
func Conv2d(x, w, b *Tensor, o ConvOpts) *Tensor {
	o = o.norm()
	var h C.tch_tensor
	check("conv2d", C.tch_conv2d(x.ptr("conv2d"), w.ptr("conv2d"), b.ptr("conv2d"),
		o.Stride.c(), o.Padding.c(), o.Dilation.c(), C.int64_t(o.Groups), &h))
	return newTensor(scopeOf(x, w, b), h)
}

// ConvTranspose2d is the transposed 2-D convolution; w is (C,O/g,kH,kW).
func ConvTranspose2d(x, w, b *Tensor, o ConvOpts) *Tensor {
	o = o.norm()
	var h C.tch_tensor
	check("conv_transpose2d", C.tch_conv_transpose2d(x.ptr("conv_transpose2d"), w.ptr("conv_transpose2d"),
		b.ptr("conv_transpose2d"), o.Stride.c(), o.Padding.c(), o.OutputPadding.c(), o.Dilation.c(),
		C.int64_t(o.Groups), &h))
	return newTensor(scopeOf(x, w, b), h)
}

// BatchNorm normalises x per channel. In training it uses batch statistics
// and updates runningMean and runningVar in place with the given momentum;
// in evaluation it uses the running statistics.
func BatchNorm(x, weight, bias, runningMean, runningVar *Tensor, training bool, momentum, eps float64) *Tensor {
	tr := C.int(0)
	if training {
		tr = 1
	}
	var h C.tch_tensor
	check("batch_norm", C.tch_batch_norm(x.ptr("batch_norm"), weight.ptr("batch_norm"), bias.ptr("batch_norm"),
		runningMean.ptr("batch_norm"), runningVar.ptr("batch_norm"), tr, C.double(momentum), C.double(eps), &h))
	runtime.KeepAlive(runningMean)
	runtime.KeepAlive(runningVar)
	return newTensor(scopeOf(x, weight, bias), h)
}

// Linear is x·wᵀ + b with an optional bias.
func Linear(x, w, b *Tensor) *Tensor {
	var h C.tch_tensor
	check("linear", C.tch_linear(x.ptr("linear"), w.ptr("linear"), b.ptr("linear"), &h))
	return newTensor(scopeOf(x, w, b), h)
}

// PoolOpts are pooling hyper-parameters; a zero Stride means Kernel.
type PoolOpts struct {
	Kernel, Stride, Padding, Dilation Pair
	CeilMode                          bool
	ExcludePad                        bool // average pooling: count_include_pad=False
}

func (o PoolOpts) norm() PoolOpts {
	for i := range 2 {
		if o.Stride[i] == 0 {
			o.Stride[i] = o.Kernel[i]
		}
		if o.Dilation[i] == 0 {
			o.Dilation[i] = 1
		}
	}
	return o
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// MaxPool2d is 2-D max pooling.
func MaxPool2d(x *Tensor, o PoolOpts) *Tensor {
	o = o.norm()
	var h C.tch_tensor
	check("max_pool2d", C.tch_max_pool2d(x.ptr("max_pool2d"), o.Kernel.c(), o.Stride.c(), o.Padding.c(),
		o.Dilation.c(), cbool(o.CeilMode), &h))
	return newTensor(x.scope, h)
}

// AvgPool2d is 2-D average pooling.
func AvgPool2d(x *Tensor, o PoolOpts) *Tensor {
	o = o.norm()
	var h C.tch_tensor
	check("avg_pool2d", C.tch_avg_pool2d(x.ptr("avg_pool2d"), o.Kernel.c(), o.Stride.c(), o.Padding.c(),
		cbool(o.CeilMode), cbool(!o.ExcludePad), &h))
	return newTensor(x.scope, h)
}

// AdaptiveAvgPool2d pools to an output of the given size.
func AdaptiveAvgPool2d(x *Tensor, size Pair) *Tensor {
	var h C.tch_tensor
	check("adaptive_avg_pool2d", C.tch_adaptive_avg_pool2d(x.ptr("adaptive_avg_pool2d"), size.c(), &h))
	return newTensor(x.scope, h)
}

// Dropout zeroes elements with probability p in training and scales the
// rest by 1/(1−p); it is the identity otherwise. The mask comes from the
// thread's generator (SetGenerator; libtorch's global one by default).
func Dropout(x *Tensor, p float64, training bool) *Tensor {
	var h C.tch_tensor
	check("dropout", C.tch_dropout(x.ptr("dropout"), C.double(p), cbool(training), &h))
	return newTensor(x.scope, h)
}

// Softmax along dim.
func (t *Tensor) Softmax(dim int64) *Tensor {
	var h C.tch_tensor
	check("softmax", C.tch_softmax(t.ptr("softmax"), C.int64_t(dim), 0, &h))
	return newTensor(t.scope, h)
}

// LogSoftmax along dim.
func (t *Tensor) LogSoftmax(dim int64) *Tensor {
	var h C.tch_tensor
	check("log_softmax", C.tch_softmax(t.ptr("log_softmax"), C.int64_t(dim), 1, &h))
	return newTensor(t.scope, h)
}

// Reduction says how a loss combines its per-example values.
type Reduction int

const (
	ReduceNone Reduction = C.TCH_REDUCTION_NONE
	ReduceMean Reduction = C.TCH_REDUCTION_MEAN
	ReduceSum  Reduction = C.TCH_REDUCTION_SUM
)

// CrossEntropy of logits (N,K) against int64 class targets (N) or soft
// float32 probability targets (N,K), as torch.nn.functional.cross_entropy.
func CrossEntropy(logits, target *Tensor, r Reduction) *Tensor {
	var h C.tch_tensor
	check("cross_entropy", C.tch_cross_entropy(logits.ptr("cross_entropy"), target.ptr("cross_entropy"), C.tch_reduction(r), 0, &h))
	return newTensor(scopeOf(logits, target), h)
}

// KLDiv is KL(target ‖ exp(logp)) with logp given as log-probabilities, as
// torch.nn.functional.kl_div; logTarget says target holds log-probabilities.
func KLDiv(logp, target *Tensor, r Reduction, logTarget bool) *Tensor {
	var h C.tch_tensor
	check("kl_div", C.tch_kl_div(logp.ptr("kl_div"), target.ptr("kl_div"), C.tch_reduction(r), cbool(logTarget), &h))
	return newTensor(scopeOf(logp, target), h)
}

// PadMode is how Pad fills the border.
type PadMode int

const (
	PadConstant  PadMode = C.TCH_PAD_CONSTANT
	PadReflect   PadMode = C.TCH_PAD_REFLECT
	PadReplicate PadMode = C.TCH_PAD_REPLICATE
)

// Pad pads the last dimensions: pad lists (before, after) pairs starting
// from the last dimension, as torch.nn.functional.pad.
func Pad(x *Tensor, pad []int64, mode PadMode, value float64) *Tensor {
	p, n := cints(pad)
	var h C.tch_tensor
	check("pad", C.tch_pad(x.ptr("pad"), p, n, C.tch_pad_mode(mode), C.double(value), &h))
	return newTensor(x.scope, h)
}
