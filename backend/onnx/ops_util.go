package onnx

import (
	"fmt"
	"math"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// value is what the checks and shape rules that the interpreter and the
// estimate share read of a node's input: a *torch.Tensor when a node runs,
// an *aval when the estimate infers its outputs.
type value interface {
	comparable
	Shape() []int64
	DType() torch.DType
}

// arg returns input i, or nil when it is absent.
func arg[V comparable](in []V, i int) V {
	var none V
	if i < len(in) {
		return in[i]
	}
	return none
}

// need returns input i and fails when it is absent.
func need[V comparable](in []V, i int) V {
	v := arg(in, i)
	var none V
	if v == none {
		fail("input %d is required", i)
	}
	return v
}

// present lists the inputs that are there.
func present[V comparable](in []V) []V {
	var none V
	var vs []V
	for _, v := range in {
		if v != none {
			vs = append(vs, v)
		}
	}
	return vs
}

// tensorOf is v's content: the tensor itself, or the aval's known content
// (failing when the estimate does not know it).
func tensorOf[V value](v V, what string) *torch.Tensor {
	switch v := any(v).(type) {
	case *torch.Tensor:
		return v
	case *aval:
		return content(v, what)
	}
	panic(fmt.Sprintf("onnx: value of type %T", v))
}

// intsIn reads an integer input (shapes, axes, pads) into Go.
func intsIn[V value](v V, what string) []int64 { return intsOf(tensorOf(v, what), what) }

// floatsIn reads a float input (scales) into Go.
func floatsIn[V value](v V, what string) []float32 { return floatsOf(tensorOf(v, what), what) }

// numelOf is the element count of v.
func numelOf[V value](v V) int64 { return prod(v.Shape()) }

func (n *node) attr(name string, want pb.AttributeProto_AttributeType) *pb.AttributeProto {
	a := n.attrs[name]
	if a == nil {
		return nil
	}
	if a.Type != want && a.Type != pb.AttributeProto_UNDEFINED {
		fail("attribute %s is %s, want %s", name, a.Type, want)
	}
	return a
}

func (n *node) has(name string) bool { return n.attrs[name] != nil }

func (n *node) int(name string, def int64) int64 {
	if a := n.attr(name, pb.AttributeProto_INT); a != nil {
		return a.I
	}
	return def
}

func (n *node) float(name string, def float64) float64 {
	if a := n.attr(name, pb.AttributeProto_FLOAT); a != nil {
		return float64(a.F)
	}
	return def
}

func (n *node) str(name, def string) string {
	if a := n.attr(name, pb.AttributeProto_STRING); a != nil {
		return string(a.S)
	}
	return def
}

// ints returns a list attribute, or nil when it is absent.
func (n *node) ints(name string) []int64 {
	if a := n.attr(name, pb.AttributeProto_INTS); a != nil {
		return append([]int64{}, a.Ints...)
	}
	return nil
}

func (n *node) floats(name string) []float32 {
	if a := n.attr(name, pb.AttributeProto_FLOATS); a != nil {
		return a.Floats
	}
	return nil
}

// intsOf reads an integer tensor (shapes, axes, indices) into Go.
func intsOf(t *torch.Tensor, what string) []int64 {
	if t.DType() != torch.Int64 {
		fail("%s must be an integer tensor, got %v", what, t.DType())
	}
	if t.Numel() > maxElems {
		fail("%s has %d elements", what, t.Numel())
	}
	return t.Int64s()
}

// floatsOf reads a float tensor into Go.
func floatsOf(t *torch.Tensor, what string) []float32 {
	if t.DType() != torch.Float32 {
		fail("%s must be a float tensor, got %v", what, t.DType())
	}
	if t.Numel() > maxElems {
		fail("%s has %d elements", what, t.Numel())
	}
	return t.Float32s()
}

// scalarOf reads a one-element tensor.
func scalarOf(t *torch.Tensor, what string) float64 {
	if t.Numel() != 1 {
		fail("%s must have one element, has shape %v", what, t.Shape())
	}
	return t.Item()
}

// ints makes an int64 tensor on the run's device, owned by the run.
func (c *runCtx) ints(v []int64, shape ...int64) *torch.Tensor {
	t := torch.FromSlice(c.s, v, shape...)
	if c.dev != torch.CPU {
		t = t.ToDevice(c.dev)
	}
	return t
}

// floats makes a float32 tensor on the run's device, owned by the run.
func (c *runCtx) floats(v []float32, shape ...int64) *torch.Tensor {
	t := torch.FromSlice(c.s, v, shape...)
	if c.dev != torch.CPU {
		t = t.ToDevice(c.dev)
	}
	return t
}

// normAxis maps a possibly negative axis into [0, rank).
func normAxis(a int64, rank int, what string) int64 {
	if a < -int64(rank) || a >= int64(rank) {
		fail("%s %d is out of range for rank %d", what, a, rank)
	}
	if a < 0 {
		a += int64(rank)
	}
	return a
}

// limit is the most elements a tensor computed by an op may have:
// maxElems per example of the run's batch.
func (c *runCtx) limit() int64 {
	return maxElems * min(max(c.batch, 1), 1<<20)
}

// numel multiplies sizes, failing past the run's limit.
func (c *runCtx) numel(shape []int64) int64 {
	if len(shape) > maxRank {
		fail("shape %v has more than %d dimensions", shape, maxRank)
	}
	lim := c.limit()
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			fail("negative dimension in %v", shape)
		}
		if d > 0 && n > lim/d {
			fail("shape %v has more than %d elements", shape, lim)
		}
		n *= d
	}
	return n
}

func prod(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// lowest is the smallest value of t's dtype, for padding before a max.
func lowest(t *torch.Tensor) float64 {
	switch t.DType() {
	case torch.Float32:
		return math.Inf(-1)
	case torch.Int64:
		return math.MinInt64
	}
	return 0
}

// window holds a pooling or convolution's per-axis parameters.
type window struct {
	kernel, stride, dilation, begin, end []int64
}

// windowOf reads kernel_shape, strides, dilations, pads and auto_pad for
// the spatial sizes in, with kernel the kernel's sizes.
func windowOf(n *node, in, kernel []int64) window {
	k := len(in)
	w := window{kernel: kernel, stride: n.ints("strides"), dilation: n.ints("dilations")}
	if len(kernel) != k {
		fail("kernel_shape %v does not match %d spatial dimensions", kernel, k)
	}
	ones := func() []int64 {
		o := make([]int64, k)
		for i := range o {
			o[i] = 1
		}
		return o
	}
	if w.stride == nil {
		w.stride = ones()
	}
	if w.dilation == nil {
		w.dilation = ones()
	}
	if len(w.stride) != k || len(w.dilation) != k {
		fail("strides %v or dilations %v do not match %d spatial dimensions", w.stride, w.dilation, k)
	}
	for i := range k {
		if w.stride[i] <= 0 || w.dilation[i] <= 0 || kernel[i] <= 0 {
			fail("kernel %v, strides %v and dilations %v must be positive", kernel, w.stride, w.dilation)
		}
	}
	w.begin, w.end = make([]int64, k), make([]int64, k)
	switch ap := n.str("auto_pad", "NOTSET"); ap {
	case "NOTSET", "":
		if p := n.ints("pads"); p != nil {
			if len(p) != 2*k {
				fail("pads %v do not match %d spatial dimensions", p, k)
			}
			copy(w.begin, p[:k])
			copy(w.end, p[k:])
		}
	case "VALID":
	case "SAME_UPPER", "SAME_LOWER":
		for i := range k {
			out := (in[i] + w.stride[i] - 1) / w.stride[i]
			total := max(0, (out-1)*w.stride[i]+(kernel[i]-1)*w.dilation[i]+1-in[i])
			if ap == "SAME_UPPER" {
				w.begin[i], w.end[i] = total/2, total-total/2
			} else {
				w.begin[i], w.end[i] = total-total/2, total/2
			}
		}
	default:
		fail("auto_pad %q is not supported", ap)
	}
	for i := range k {
		if w.begin[i] < 0 || w.end[i] < 0 {
			fail("negative pads %v %v", w.begin, w.end)
		}
	}
	return w
}

// outSizes is the window's output size along each spatial axis of sizes
// in: floor (or ceil) of (in + pads − span)/stride + 1, where a last window
// that would start in the end padding is dropped in ceil mode.
func (w window) outSizes(in []int64, ceil bool) []int64 {
	out := make([]int64, len(w.kernel))
	for i := range out {
		span := (w.kernel[i]-1)*w.dilation[i] + 1
		room := in[i] + w.begin[i] + w.end[i] - span
		if room < 0 {
			fail("the window of %d does not fit an axis of %d padded by %d and %d", span, in[i], w.begin[i], w.end[i])
		}
		out[i] = room/w.stride[i] + 1
		if ceil && room%w.stride[i] != 0 {
			out[i]++
			if (out[i]-1)*w.stride[i] >= in[i]+w.begin[i] {
				out[i]--
			}
		}
	}
	return out
}

// symmetric reports whether every axis pads the same on both sides, by at
// most limit(i).
func (w window) symmetric(limit func(i int) int64) bool {
	for i := range w.begin {
		if w.begin[i] != w.end[i] || w.begin[i] > limit(i) {
			return false
		}
	}
	return true
}

// torchPad lists (begin, end) pairs from the last axis back, as torch.Pad
// wants them, for the trailing len(begin) axes.
func torchPad(begin, end []int64) []int64 {
	p := make([]int64, 0, 2*len(begin))
	for i := len(begin) - 1; i >= 0; i-- {
		p = append(p, begin[i], end[i])
	}
	return p
}

// pair turns a 1- or 2-element list into a torch.Pair (1-D ops run as 2-D
// ones of height 1).
func pair(v []int64, fill int64) torch.Pair {
	if len(v) == 1 {
		return torch.Pair{fill, v[0]}
	}
	return torch.Pair{v[0], v[1]}
}

// as2d runs f on x seen as (N, C, H, W): a 1-D input (N, C, L) gets a
// height of 1 and loses it again afterwards.
func as2d(x *torch.Tensor, f func(x *torch.Tensor) *torch.Tensor) *torch.Tensor {
	switch x.Dim() {
	case 4:
		return f(x)
	case 3:
		s := x.Shape()
		y := f(x.Reshape(s[0], s[1], 1, s[2]))
		ys := y.Shape()
		return y.Reshape(ys[0], ys[1], ys[3])
	}
	fail("only 1-D and 2-D spatial inputs are supported, got shape %v", x.Shape())
	return nil
}

// broadcast returns the numpy broadcast of shapes a and b, failing when
// they do not broadcast or the result is too large.
func (c *runCtx) broadcast(a, b []int64) []int64 {
	r := max(len(a), len(b))
	out := make([]int64, r)
	for i := range r {
		da, db := int64(1), int64(1)
		if j := len(a) - r + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - r + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db, db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			fail("shapes %v and %v do not broadcast", a, b)
		}
	}
	c.numel(out)
	return out
}

// checkWindow fails when padding the spatial sizes in of an (N, C, …)
// input by w would make it too large.
func (c *runCtx) checkWindow(x []int64, w window) {
	s := append([]int64{}, x...)
	for i := range w.begin {
		s[2+i] += w.begin[i] + w.end[i]
	}
	c.numel(s)
}
