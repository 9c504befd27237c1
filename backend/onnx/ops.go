package onnx

import (
	"math"
	"slices"
	"strings"

	"github.com/conferral/conferral/backend/torch"
)

// ops maps each supported ONNX op type onto its implementation. It is
// never written after initialisation.
var ops = map[string]opFunc{
	"Conv":               opConv,
	"ConvTranspose":      opConvTranspose,
	"BatchNormalization": opBatchNorm,
	"Relu":               unary((*torch.Tensor).Relu),
	"Sigmoid":            unary((*torch.Tensor).Sigmoid),
	"Tanh":               unary((*torch.Tensor).Tanh),
	"HardSwish":          unary((*torch.Tensor).HardSwish),
	"LeakyRelu":          opLeakyRelu,
	"HardSigmoid":        opHardSigmoid,
	"Clip":               opClip,
	"MaxPool":            opMaxPool,
	"AveragePool":        opAveragePool,
	"GlobalAveragePool":  opGlobalPool(false),
	"GlobalMaxPool":      opGlobalPool(true),
	"Gemm":               opGemm,
	"MatMul":             elementwise((*torch.Tensor).MatMul),
	"Add":                elementwise((*torch.Tensor).Add),
	"Sub":                elementwise((*torch.Tensor).Sub),
	"Mul":                elementwise((*torch.Tensor).Mul),
	"Div":                opDiv,
	"Flatten":            opFlatten,
	"Reshape":            opReshape,
	"Transpose":          opTranspose,
	"Squeeze":            opSqueeze,
	"Unsqueeze":          opUnsqueeze,
	"Concat":             opConcat,
	"Pad":                opPad,
	"Softmax":            opSoftmax(false),
	"LogSoftmax":         opSoftmax(true),
	"Dropout":            opDropout,
	"Identity":           func(_ *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor { return []*torch.Tensor{need(in, 0)} },
	"Constant":           opConstant,
	"Shape":              opShape,
	"Gather":             opGather,
	"Slice":              opSlice,
	"ReduceMean":         opReduceMean,
	"Resize":             opResize,
	"Upsample":           opResize,
	"Cast":               opCast,
}

// SupportedOps lists the op types the interpreter runs, sorted.
func SupportedOps() []string {
	var s []string
	for k := range ops {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

func one(t *torch.Tensor) []*torch.Tensor { return []*torch.Tensor{t} }

func unary(f func(*torch.Tensor) *torch.Tensor) opFunc {
	return func(_ *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor { return one(f(need(in, 0))) }
}

func elementwise(f func(a, b *torch.Tensor) *torch.Tensor) opFunc {
	return func(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
		if n.op == "MatMul" {
			matMulShape(c, in)
		} else {
			broadcastShape(c, n, in)
		}
		return one(f(in[0], in[1]))
	}
}

// broadcastShape is the output shape and type of the ops whose inputs
// broadcast as numpy's do: Add, Sub, Mul, Div, Pow and the comparisons (A
// and B of one type, but for Pow's exponent; a comparison is bool), and
// Max, Min, Sum and Mean (one input or more of one type).
func broadcastShape[V value](c *runCtx, n *node, in []V) ([]int64, torch.DType) {
	vs := present(in)
	switch n.op {
	case "Max", "Min", "Sum", "Mean":
		if len(vs) == 0 {
			fail("no inputs")
		}
	default:
		legacyBroadcast(n)
		vs = []V{need(in, 0), need(in, 1)}
	}
	out, dt := vs[0].Shape(), vs[0].DType()
	for _, v := range vs[1:] {
		if n.op != "Pow" && v.DType() != dt {
			fail("operands are %v and %v", dt, v.DType())
		}
		out = c.broadcast(out, v.Shape())
	}
	switch n.op {
	case "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual":
		dt = torch.Bool
	}
	return out, dt
}

// matMulShape is MatMul's output shape and type: numpy's matmul of A and
// B, of one type, where a vector is a matrix of one row (A) or column (B)
// whose axis the result drops.
func matMulShape[V value](c *runCtx, in []V) ([]int64, torch.DType) {
	a, b := need(in, 0), need(in, 1)
	if a.DType() != b.DType() {
		fail("operands are %v and %v", a.DType(), b.DType())
	}
	as, bs := a.Shape(), b.Shape()
	if len(as) == 0 || len(bs) == 0 {
		fail("cannot multiply scalars %v and %v", as, bs)
	}
	a2, b2 := as, bs
	if len(as) == 1 {
		a2 = []int64{1, as[0]}
	}
	if len(bs) == 1 {
		b2 = []int64{bs[0], 1}
	}
	m, k1 := a2[len(a2)-2], a2[len(a2)-1]
	k2, p := b2[len(b2)-2], b2[len(b2)-1]
	if k1 != k2 {
		fail("shapes %v and %v do not multiply", a2, b2)
	}
	out := c.broadcast(a2[:len(a2)-2], b2[:len(b2)-2])
	c.numel(append(slices.Clone(out), m, p))
	if len(as) > 1 {
		out = append(out, m)
	}
	if len(bs) > 1 {
		out = append(out, p)
	}
	return out, a.DType()
}

// legacyBroadcast refuses the broadcast and axis attributes of opsets
// before 7, whose alignment differs from numpy's.
func legacyBroadcast(n *node) {
	if n.int("broadcast", 0) != 0 || n.has("axis") {
		fail("the broadcast attribute of opsets before 7 is not supported")
	}
}

// floorDiv divides rounding towards −∞.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func opDiv(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	broadcastShape(c, n, in)
	a, b := in[0], in[1]
	if a.DType() == torch.Float32 {
		return one(a.Div(b))
	}
	// Integer division truncates towards zero in ONNX; libtorch's div is
	// true division.
	if b.EqScalar(0).Sum().Item() != 0 {
		fail("integer division by zero")
	}
	q := a.Div(b)
	return one(q.Sign().Mul(q.Abs().Floor()).To(a.DType(), a.Device()))
}

func opLeakyRelu(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	return one(need(in, 0).LeakyRelu(n.float("alpha", 0.01)))
}

func opHardSigmoid(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	a, b := n.float("alpha", 0.2), n.float("beta", 0.5)
	return one(need(in, 0).MulScalar(a).AddScalar(b).Clamp(0, 1))
}

// checkClip is Clip's check of min and max, inputs of one element each
// from opset 11 on.
func checkClip[V value](c *runCtx, in []V) {
	need(in, 0)
	if c.opset < 11 {
		return
	}
	var none V
	for i, what := range []string{"min", "max"} {
		if v := arg(in, 1+i); v != none && numelOf(v) != 1 {
			fail("%s must have one element, has shape %v", what, v.Shape())
		}
	}
}

func opClip(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	checkClip(c, in)
	x := in[0]
	lo, hi := math.Inf(-1), math.Inf(1)
	if c.opset < 11 {
		lo, hi = n.float("min", lo), n.float("max", hi)
	} else {
		if t := arg(in, 1); t != nil {
			lo = t.Item()
		}
		if t := arg(in, 2); t != nil {
			hi = t.Item()
		}
	}
	switch {
	case !math.IsInf(lo, 0) && !math.IsInf(hi, 0):
		return one(x.Clamp(lo, hi))
	case !math.IsInf(lo, 0):
		return one(x.ClampMin(lo))
	case !math.IsInf(hi, 0):
		return one(x.ClampMax(hi))
	}
	return one(x)
}

// checkConvWeight is Conv's and ConvTranspose's check of X's rank (what
// names the op's kind), W's and kernel_shape.
func checkConvWeight(n *node, xs, ws []int64, what string) {
	if len(xs) != 3 && len(xs) != 4 {
		fail("only 1-D and 2-D %s are supported, input has shape %v", what, xs)
	}
	if len(ws) != len(xs) {
		fail("weight shape %v does not match input shape %v", ws, xs)
	}
	if k := n.ints("kernel_shape"); k != nil && !slices.Equal(k, ws[2:]) {
		fail("kernel_shape %v does not match weight shape %v", k, ws)
	}
}

// convShape is Conv's check of X (shape xs), W (shape ws) and the
// attributes kernel_shape, strides, dilations, pads, auto_pad and group; it
// returns the window, the group count and Y's shape.
func convShape(c *runCtx, n *node, xs, ws []int64) (win window, g int64, out []int64) {
	checkConvWeight(n, xs, ws, "convolutions")
	win = windowOf(n, xs[2:], ws[2:])
	c.checkWindow(xs, win)
	g = n.int("group", 1)
	if g <= 0 || xs[1] != ws[1]*g || ws[0]%g != 0 {
		fail("input of %d channels, weight %v and %d groups do not fit", xs[1], ws, g)
	}
	out = append([]int64{xs[0], ws[0]}, win.outSizes(xs[2:], false)...)
	c.numel(out)
	return win, g, out
}

func opConv(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x, w, b := need(in, 0), need(in, 1), arg(in, 2)
	xs, ws := x.Shape(), w.Shape()
	win, g, _ := convShape(c, n, xs, ws)
	if len(xs) == 3 {
		w = w.Reshape(ws[0], ws[1], 1, ws[2])
	}
	o := torch.ConvOpts{Stride: pair(win.stride, 1), Dilation: pair(win.dilation, 1), Groups: g}
	return one(as2d(x, func(x *torch.Tensor) *torch.Tensor {
		if win.symmetric(func(int) int64 { return math.MaxInt64 }) {
			o.Padding = pair(win.begin, 0)
		} else {
			x = torch.Pad(x, torchPad(win.begin, win.end), torch.PadConstant, 0)
		}
		return torch.Conv2d(x, w, b, o)
	}))
}

// convTransposeShape is ConvTranspose's check of X (shape xs), W (shape
// ws) and its attributes; it returns the geometry, the group count and Y's
// shape.
func convTransposeShape(c *runCtx, n *node, xs, ws []int64) (geo tconvGeometry, g int64, out []int64) {
	checkConvWeight(n, xs, ws, "transposed convolutions")
	g = n.int("group", 1)
	if g <= 0 || xs[1] != ws[0] {
		fail("input of %d channels does not fit weight %v", xs[1], ws)
	}
	geo = convTransposeGeometry(n, xs, ws)
	out = append([]int64{xs[0], ws[1] * g}, geo.size...)
	c.numel(out)
	return geo, g, out
}

func opConvTranspose(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x, w, b := need(in, 0), need(in, 1), arg(in, 2)
	xs, ws := x.Shape(), w.Shape()
	geo, g, _ := convTransposeShape(c, n, xs, ws)
	k := len(xs) - 2
	stride, dil, outPad, begin, end := geo.stride, geo.dil, geo.outPad, geo.begin, geo.end
	if len(xs) == 3 {
		w = w.Reshape(ws[0], ws[1], 1, ws[2])
	}
	o := torch.ConvOpts{Stride: pair(stride, 1), Dilation: pair(dil, 1), Groups: g}
	fast := true
	for i := range k {
		if begin[i] != end[i] || begin[i] < 0 || outPad[i] >= max(stride[i], dil[i]) {
			fast = false
		}
	}
	return one(as2d(x, func(x *torch.Tensor) *torch.Tensor {
		if fast {
			o.Padding, o.OutputPadding = pair(begin, 0), pair(outPad, 0)
			return torch.ConvTranspose2d(x, w, b, o)
		}
		// Crop (or pad) the full output, then add the bias.
		y := torch.ConvTranspose2d(x, w, nil, o)
		nb, ne := make([]int64, k), make([]int64, k)
		for i := range k {
			nb[i], ne[i] = -begin[i], outPad[i]-end[i]
		}
		y = torch.Pad(y, torchPad(nb, ne), torch.PadConstant, 0)
		if b != nil {
			y = y.Add(b.Reshape(1, -1, 1, 1))
		}
		return y
	}))
}

// tconvGeometry is a transposed convolution's per-axis parameters and
// output size.
type tconvGeometry struct {
	stride, dil, outPad, begin, end, size []int64
}

// convTransposeGeometry reads strides, dilations, output_padding, pads,
// auto_pad and output_shape for an input of shape xs and a weight of
// shape ws.
func convTransposeGeometry(n *node, xs, ws []int64) tconvGeometry {
	k := len(xs) - 2
	ones := func() []int64 { return slices.Repeat([]int64{1}, k) }
	stride, dil := n.ints("strides"), n.ints("dilations")
	if stride == nil {
		stride = ones()
	}
	if dil == nil {
		dil = ones()
	}
	outPad := n.ints("output_padding")
	if outPad == nil {
		outPad = make([]int64, k)
	}
	if len(stride) != k || len(dil) != k || len(outPad) != k {
		fail("strides %v, dilations %v or output_padding %v do not match %d spatial dimensions", stride, dil, outPad, k)
	}
	full := make([]int64, k) // output size without padding
	for i := range k {
		if stride[i] <= 0 || dil[i] <= 0 {
			fail("strides %v and dilations %v must be positive", stride, dil)
		}
		full[i] = (xs[2+i]-1)*stride[i] + (ws[2+i]-1)*dil[i] + 1
	}
	begin, end := make([]int64, k), make([]int64, k)
	ap := n.str("auto_pad", "NOTSET")
	outShape := n.ints("output_shape")
	if len(outShape) > k {
		outShape = outShape[len(outShape)-k:]
	}
	if outShape == nil && (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
		outShape = make([]int64, k)
		for i := range k {
			outShape[i] = xs[2+i] * stride[i]
		}
	}
	switch {
	case outShape != nil:
		if len(outShape) != k {
			fail("output_shape %v does not match %d spatial dimensions", outShape, k)
		}
		for i := range k {
			total := full[i] + outPad[i] - outShape[i]
			half := floorDiv(total, 2) // Python's //, as in the spec
			if ap == "SAME_UPPER" {
				begin[i], end[i] = half, total-half
			} else {
				begin[i], end[i] = total-half, half
			}
		}
	case ap == "NOTSET" || ap == "":
		if p := n.ints("pads"); p != nil {
			if len(p) != 2*k {
				fail("pads %v do not match %d spatial dimensions", p, k)
			}
			copy(begin, p[:k])
			copy(end, p[k:])
		}
	case ap == "VALID":
	default:
		fail("auto_pad %q is not supported", ap)
	}
	size := make([]int64, k)
	for i := range k {
		size[i] = full[i] + outPad[i] - begin[i] - end[i]
		if size[i] <= 0 {
			fail("output size %d along axis %d is not positive", size[i], i+2)
		}
	}
	return tconvGeometry{stride: stride, dil: dil, outPad: outPad, begin: begin, end: end, size: size}
}

// checkBatchNorm is BatchNormalization's check: inference mode, spatial,
// and scale, B, input_mean and input_var of one value per channel.
func checkBatchNorm[V value](n *node, in []V) {
	x := need(in, 0)
	if n.int("training_mode", 0) != 0 || n.int("is_test", 1) == 0 {
		fail("training mode is not supported")
	}
	if n.int("spatial", 1) != 1 {
		fail("spatial=0 is not supported")
	}
	s := x.Shape()
	if len(s) < 2 {
		fail("input of shape %v has no channel axis", s)
	}
	for i := 1; i <= 4; i++ {
		if p := need(in, i).Shape(); len(p) != 1 || p[0] != s[1] {
			fail("input %d has shape %v, want [%d]", i, p, s[1])
		}
	}
}

func opBatchNorm(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	checkBatchNorm(n, in)
	return one(torch.BatchNorm(in[0], in[1], in[2], in[3], in[4], false, 0, n.float("epsilon", 1e-5)))
}

// poolShape is MaxPool's and AveragePool's check of X (shape xs) and the
// attributes kernel_shape, strides, dilations, pads, auto_pad, ceil_mode
// and storage_order; it returns the window and Y's shape.
func poolShape(c *runCtx, n *node, xs []int64) (window, []int64) {
	if so := n.int("storage_order", 0); n.op == "MaxPool" && so != 0 {
		fail("storage_order %d is not supported", so)
	}
	if len(xs) != 3 && len(xs) != 4 {
		fail("only 1-D and 2-D pooling is supported, input has shape %v", xs)
	}
	if n.op == "AveragePool" && n.has("dilations") {
		fail("dilations are not supported")
	}
	win := windowOf(n, xs[2:], n.ints("kernel_shape"))
	c.checkWindow(xs, win)
	out := append(slices.Clone(xs[:2]), win.outSizes(xs[2:], n.int("ceil_mode", 0) != 0)...)
	c.numel(out)
	return win, out
}

func opMaxPool(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	win, _ := poolShape(c, n, x.Shape())
	if dt := x.DType(); dt != torch.Float32 {
		// libtorch pools floats only; uint8 values are exact in float32.
		x = x.To(torch.Float32, x.Device())
		y := opMaxPool2(n, x, win)
		return one(y.To(dt, y.Device()))
	}
	return one(opMaxPool2(n, x, win))
}

func opMaxPool2(n *node, x *torch.Tensor, win window) *torch.Tensor {
	o := torch.PoolOpts{Kernel: pair(win.kernel, 1), Stride: pair(win.stride, 1), Dilation: pair(win.dilation, 1),
		CeilMode: n.int("ceil_mode", 0) != 0}
	return as2d(x, func(x *torch.Tensor) *torch.Tensor {
		if win.symmetric(func(i int) int64 { return ((win.kernel[i]-1)*win.dilation[i] + 1) / 2 }) {
			o.Padding = pair(win.begin, 0)
		} else {
			x = torch.Pad(x, torchPad(win.begin, win.end), torch.PadConstant, lowest(x))
		}
		return torch.MaxPool2d(x, o)
	})
}

func opAveragePool(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	win, _ := poolShape(c, n, x.Shape())
	include := n.int("count_include_pad", 0) != 0
	o := torch.PoolOpts{Kernel: pair(win.kernel, 1), Stride: pair(win.stride, 1), CeilMode: n.int("ceil_mode", 0) != 0,
		ExcludePad: !include}
	return one(as2d(x, func(x *torch.Tensor) *torch.Tensor {
		if win.symmetric(func(i int) int64 { return win.kernel[i] / 2 }) {
			o.Padding = pair(win.begin, 0)
			return torch.AvgPool2d(x, o)
		}
		p := torchPad(win.begin, win.end)
		y := torch.AvgPool2d(torch.Pad(x, p, torch.PadConstant, 0), o)
		if include {
			return y
		}
		// Divide by the share of real pixels under each window.
		s := x.Shape()
		ones := torch.Full(x.Scope(), []int64{1, 1, s[2], s[3]}, 1, torch.Float32, x.Device())
		share := torch.AvgPool2d(torch.Pad(ones, p, torch.PadConstant, 0), o)
		return y.Div(share)
	}))
}

// globalPoolShape is GlobalAveragePool's and GlobalMaxPool's output shape:
// the input's with every spatial axis 1.
func globalPoolShape(s []int64) []int64 {
	if len(s) < 3 {
		fail("input of shape %v has no spatial axes", s)
	}
	out := slices.Clone(s)
	for i := 2; i < len(out); i++ {
		out[i] = 1
	}
	return out
}

func opGlobalPool(isMax bool) opFunc {
	return func(_ *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
		x := need(in, 0)
		s := globalPoolShape(x.Shape())
		var dims []int64
		for d := 2; d < len(s); d++ {
			dims = append(dims, int64(d))
		}
		if isMax {
			return one(x.Amax(dims, true))
		}
		return one(x.MeanDims(dims, true))
	}
}

// gemmShape is Gemm's output shape: A (M×K, K×M when transA) times B (K×N,
// N×K when transB), to which C broadcasts.
func gemmShape[V value](c *runCtx, n *node, in []V) []int64 {
	a, b, cc := need(in, 0), need(in, 1), arg(in, 2)
	as, bs := a.Shape(), b.Shape()
	if len(as) != 2 || len(bs) != 2 {
		fail("A %v and B %v must be matrices", as, bs)
	}
	m, k1 := as[0], as[1]
	if n.int("transA", 0) != 0 {
		m, k1 = k1, m
	}
	k2, p := bs[0], bs[1]
	if n.int("transB", 0) != 0 {
		k2, p = p, k2
	}
	if k1 != k2 {
		fail("A %v and B %v do not multiply", as, bs)
	}
	out := []int64{m, p}
	var none V
	if cc != none {
		if s := cc.Shape(); !slices.Equal(c.broadcast(out, s), out) {
			fail("C %v does not broadcast to %v", s, out)
		}
	}
	c.numel(out)
	return out
}

func opGemm(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	gemmShape(c, n, in)
	a, b, cc := in[0], in[1], arg(in, 2)
	alpha, beta := n.float("alpha", 1), n.float("beta", 1)
	ta, tb := n.int("transA", 0) != 0, n.int("transB", 0) != 0
	if tb && !ta && alpha == 1 && beta == 1 && (cc == nil || cc.Dim() == 1 && cc.Size(0) == b.Size(0)) {
		return one(torch.Linear(a, b, cc))
	}
	if ta {
		a = a.Permute(1, 0)
	}
	if tb {
		b = b.Permute(1, 0)
	}
	y := a.MatMul(b)
	if alpha != 1 {
		y = y.MulScalar(alpha)
	}
	if cc != nil && beta != 0 {
		if beta != 1 {
			cc = cc.MulScalar(beta)
		}
		y = y.Add(cc)
	}
	return one(y)
}

// flatAxis is the axis at which Flatten (and Softmax before opset 13) sees
// a value of rank r as a matrix: attribute axis, 1 by default.
func flatAxis(n *node, r int) int64 {
	a := n.int("axis", 1)
	if a < 0 {
		a += int64(r)
	}
	if a < 0 || a > int64(r) {
		fail("axis %d is out of range for rank %d", n.int("axis", 1), r)
	}
	return a
}

// flattenShape is Flatten's output shape for an input of shape s.
func flattenShape(n *node, s []int64) []int64 {
	a := flatAxis(n, len(s))
	return []int64{prod(s[:a]), prod(s[a:])}
}

func opFlatten(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	return one(x.Reshape(flattenShape(n, x.Shape())...))
}

// reshapeShape is Reshape's output shape: input 1 (from opset 5) resolved
// against the input's shape.
func reshapeShape[V value](c *runCtx, n *node, in []V) []int64 {
	if c.opset < 5 {
		fail("opset %d's shape attribute is not supported", c.opset)
	}
	x := need(in, 0)
	return reshapeTarget(c, n, x.Shape(), intsIn(need(in, 1), "shape"))
}

func opReshape(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	return one(in[0].Reshape(reshapeShape(c, n, in)...))
}

// reshapeTarget resolves Reshape's shape want (0 copies an axis unless
// allowzero, one -1 is inferred) for an input of shape s.
func reshapeTarget(c *runCtx, n *node, s, want []int64) []int64 {
	allowZero := n.int("allowzero", 0) != 0
	infer := -1
	known := int64(1)
	for i, d := range want {
		switch {
		case d == 0 && !allowZero:
			if i >= len(s) {
				fail("shape %v copies axis %d of an input of rank %d", want, i, len(s))
			}
			want[i] = s[i]
		case d == -1:
			if infer >= 0 {
				fail("shape %v has more than one -1", want)
			}
			infer = i
			continue
		case d < -1:
			fail("shape %v has a negative size", want)
		}
		known = known * max(want[i], 1)
		if known > c.limit() {
			fail("shape %v is too large", want)
		}
	}
	total := prod(s)
	if infer >= 0 {
		z := slices.Contains(want, 0)
		if z || known == 0 || total%known != 0 {
			fail("cannot reshape %v into %v", s, want)
		}
		want[infer] = total / known
	}
	if c.numel(want) != total {
		fail("cannot reshape %v into %v", s, want)
	}
	return want
}

// transposePerm is Transpose's perm for an input of rank r (the axes
// reversed by default), checked and made non-negative.
func transposePerm(n *node, r int) []int64 {
	perm := n.ints("perm")
	if perm == nil {
		for i := r - 1; i >= 0; i-- {
			perm = append(perm, int64(i))
		}
	}
	if len(perm) != r {
		fail("perm %v does not fit rank %d", perm, r)
	}
	seen := make([]bool, r)
	for i, p := range perm {
		p = normAxis(p, r, "perm entry")
		if seen[p] {
			fail("perm %v is not a permutation", perm)
		}
		seen[p], perm[i] = true, p
	}
	return perm
}

func opTranspose(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	return one(x.Permute(transposePerm(n, x.Dim())...))
}

// axesOf reads the axes of Squeeze, Unsqueeze and the reductions: an
// attribute before opset inputFrom, an optional input from then on.
func axesOf[V value](c *runCtx, n *node, in []V, inputFrom int64) []int64 {
	if c.opset < inputFrom {
		return n.ints("axes")
	}
	var none V
	if v := arg(in, 1); v != none {
		return intsIn(v, "axes")
	}
	return nil
}

// squeezeShape is Squeeze's output shape: the input's without the axes
// given, or without every axis of size 1 when none are.
func squeezeShape[V value](c *runCtx, n *node, in []V) []int64 {
	s := need(in, 0).Shape()
	axes := axesOf(c, n, in, 13)
	drop := make([]bool, len(s))
	if axes == nil {
		for i, d := range s {
			drop[i] = d == 1
		}
	}
	for _, a := range axes {
		a = normAxis(a, len(s), "axis")
		if s[a] != 1 {
			fail("axis %d of shape %v is not 1", a, s)
		}
		drop[a] = true
	}
	out := []int64{}
	for i, d := range s {
		if !drop[i] {
			out = append(out, d)
		}
	}
	return out
}

func opSqueeze(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	return one(in[0].Reshape(squeezeShape(c, n, in)...))
}

// unsqueezeShape is Unsqueeze's output shape: the input's with an axis of
// size 1 at each of axes (of the output, none repeated).
func unsqueezeShape[V value](c *runCtx, n *node, in []V) []int64 {
	s := need(in, 0).Shape()
	axes := axesOf(c, n, in, 13)
	if axes == nil {
		fail("axes are required")
	}
	r := len(s) + len(axes)
	add := make([]bool, r)
	for _, a := range axes {
		a = normAxis(a, r, "axis")
		if add[a] {
			fail("axes %v repeat an axis", axes)
		}
		add[a] = true
	}
	out := make([]int64, 0, r)
	j := 0
	for i := range r {
		if add[i] {
			out = append(out, 1)
		} else {
			out = append(out, s[j])
			j++
		}
	}
	c.numel(out)
	return out
}

func opUnsqueeze(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	return one(in[0].Reshape(unsqueezeShape(c, n, in)...))
}

// concatShape is Concat's axis and output shape: inputs of one rank and
// type that agree but along axis.
func concatShape[V value](c *runCtx, n *node, in []V) (int64, []int64) {
	if !n.has("axis") {
		fail("axis is required")
	}
	vs := present(in)
	if len(vs) == 0 {
		fail("no inputs")
	}
	s0, dt := vs[0].Shape(), vs[0].DType()
	r := len(s0)
	a := normAxis(n.int("axis", 0), r, "axis")
	out := slices.Clone(s0)
	for _, v := range vs[1:] {
		s := v.Shape()
		if len(s) != r || v.DType() != dt {
			fail("inputs %v %v and %v %v do not concatenate", s0, dt, s, v.DType())
		}
		for i := range s {
			if int64(i) != a && s[i] != s0[i] {
				fail("inputs %v and %v differ off axis %d", s0, s, a)
			}
		}
		out[a] += s[a]
	}
	c.numel(out)
	return a, out
}

func opConcat(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	a, _ := concatShape(c, n, in)
	ts := present(in)
	if len(ts) == 1 {
		return one(ts[0])
	}
	return one(torch.Cat(ts, a))
}

// padShape is Pad's check of mode and pads (every axis's begin, then every
// axis's end: an attribute before opset 11, input 1 from then on) and its
// output shape.
func padShape[V value](c *runCtx, n *node, in []V) (pads, out []int64) {
	s := need(in, 0).Shape()
	if c.opset < 2 {
		fail("opset %d's paddings attribute is not supported", c.opset)
	}
	if c.opset < 11 {
		pads = n.ints("pads")
	} else {
		pads = intsIn(need(in, 1), "pads")
	}
	if len(pads) != 2*len(s) {
		fail("pads %v do not fit rank %d", pads, len(s))
	}
	mode := n.str("mode", "constant")
	if mode != "constant" && mode != "reflect" && mode != "edge" {
		fail("mode %q is not supported", mode)
	}
	out = make([]int64, len(s))
	for i := range s {
		out[i] = s[i] + pads[i] + pads[len(s)+i]
		if out[i] < 0 {
			fail("pads %v shrink shape %v below zero", pads, s)
		}
	}
	c.numel(out)
	if mode == "constant" {
		return pads, out
	}
	// reflect and edge list the padded axis's indices in Go, after
	// cropping it by any negative pad.
	for i := range s {
		b, e := pads[i], pads[len(s)+i]
		if b <= 0 && e <= 0 {
			continue
		}
		if s[i]+min(b, 0)+min(e, 0) <= 0 {
			fail("cannot %s-pad an empty axis %d", mode, i)
		}
		if out[i] > maxAxis {
			fail("padded size %d along axis %d is over the limit of %d", out[i], i, maxAxis)
		}
	}
	return pads, out
}

func opPad(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	pads, _ := padShape(c, n, in)
	r := len(pads) / 2
	value := 0.0
	if c.opset < 11 {
		value = n.float("value", 0)
	} else if t := arg(in, 2); t != nil {
		value = scalarOf(t, "constant_value")
	}
	mode := n.str("mode", "constant")
	if mode == "constant" {
		return one(torch.Pad(x, torchPad(pads[:r], pads[r:]), torch.PadConstant, value))
	}
	for i := range r {
		b, e := pads[i], pads[r+i]
		if b == 0 && e == 0 {
			continue
		}
		size := x.Size(i)
		if b < 0 {
			x, size, b = x.Narrow(int64(i), -b, size+b), size+b, 0
		}
		if e < 0 {
			x, size, e = x.Narrow(int64(i), 0, size+e), size+e, 0
		}
		if b == 0 && e == 0 {
			continue
		}
		idx := make([]int64, 0, size+b+e)
		for j := -b; j < size+e; j++ {
			k := j
			if mode == "edge" {
				k = min(max(j, 0), size-1)
			} else if size == 1 {
				k = 0
			} else {
				period := 2 * (size - 1)
				k = ((j % period) + period) % period
				if k >= size {
					k = period - k
				}
			}
			idx = append(idx, k)
		}
		x = x.IndexSelect(int64(i), c.ints(idx, int64(len(idx))))
	}
	return one(x)
}

// softmaxAxis is Softmax's and LogSoftmax's axis for an input of shape s:
// from opset 13 the one axis they normalise, before it the axis at which
// they see the input as a matrix (as Flatten does).
func softmaxAxis(c *runCtx, n *node, s []int64) int64 {
	if len(s) == 0 {
		fail("input is a scalar")
	}
	if c.opset >= 13 {
		return normAxis(n.int("axis", -1), len(s), "axis")
	}
	return flatAxis(n, len(s))
}

func opSoftmax(log bool) opFunc {
	return func(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
		x := need(in, 0)
		f := (*torch.Tensor).Softmax
		if log {
			f = (*torch.Tensor).LogSoftmax
		}
		s := x.Shape()
		a := softmaxAxis(c, n, s)
		if c.opset >= 13 {
			return one(f(x, a))
		}
		return one(f(x.Reshape(prod(s[:a]), prod(s[a:])), 1).Reshape(s...))
	}
}

// checkDropout is Dropout's check: inference only, so training_mode (input
// 2) must be false where it is given.
func checkDropout[V value](in []V) {
	need(in, 0)
	var none V
	if v := arg(in, 2); v != none && scalarOf(tensorOf(v, "training_mode"), "training_mode") != 0 {
		fail("training mode is not supported")
	}
}

func opDropout(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	checkDropout(in)
	x := in[0]
	if len(n.out) > 1 && n.out[1] != "" {
		return []*torch.Tensor{x, torch.Full(c.s, x.Shape(), 1, torch.Bool, x.Device())}
	}
	return one(x)
}

// constantOut is Constant's output shape and type, and which of its
// attributes holds its value: value (a tensor), value_float(s) or
// value_int(s).
func constantOut(n *node) (attr string, shape []int64, dt torch.DType) {
	switch {
	case n.has("value"):
		a := n.attrs["value"]
		if a.T == nil {
			fail("attribute value holds no tensor")
		}
		dt, err := dtypeOf(a.T.DataType)
		if err != nil {
			fail("%v", err)
		}
		return "value", slices.Clone(a.T.Dims), dt
	case n.has("value_float"):
		return "value_float", []int64{}, torch.Float32
	case n.has("value_floats"):
		return "value_floats", []int64{int64(len(n.floats("value_floats")))}, torch.Float32
	case n.has("value_int"):
		return "value_int", []int64{}, torch.Int64
	case n.has("value_ints"):
		return "value_ints", []int64{int64(len(n.ints("value_ints")))}, torch.Int64
	}
	fail("only tensor, float and int values are supported")
	return "", nil, 0
}

func opConstant(c *runCtx, n *node, _ []*torch.Tensor) []*torch.Tensor {
	attr, shape, _ := constantOut(n)
	var t *torch.Tensor
	switch attr {
	case "value":
		v, err := tensorFromProto(n.attrs["value"].T)
		if err != nil {
			fail("%v", err)
		}
		t = c.s.Add(v)
	case "value_float":
		t = torch.FromSlice(c.s, []float32{float32(n.float("value_float", 0))}).Reshape()
	case "value_floats":
		t = torch.FromSlice(c.s, n.floats("value_floats"), shape...)
	case "value_int":
		t = torch.FromSlice(c.s, []int64{n.int("value_int", 0)}).Reshape()
	case "value_ints":
		t = torch.FromSlice(c.s, n.ints("value_ints"), shape...)
	}
	if c.dev != torch.CPU {
		t = t.ToDevice(c.dev)
	}
	return one(t)
}

// shapeRange is Shape's output for an input of shape s: its dimensions
// from start to end (negative ones count from the end; both are clamped).
func shapeRange(n *node, s []int64) []int64 {
	r := int64(len(s))
	start, end := n.int("start", 0), n.int("end", r)
	clampAxis := func(a int64) int64 {
		if a < 0 {
			a += r
		}
		return min(max(a, 0), r)
	}
	start, end = clampAxis(start), clampAxis(end)
	if end < start {
		end = start
	}
	return s[start:end]
}

func opShape(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	s := shapeRange(n, need(in, 0).Shape())
	return one(c.ints(s, int64(len(s))))
}

// gatherShape is Gather's axis and output shape: the data's shape with
// axis replaced by the shape of the (integer) indices.
func gatherShape[V value](c *runCtx, n *node, in []V) (int64, []int64) {
	x, it := need(in, 0), need(in, 1)
	s := x.Shape()
	if len(s) == 0 {
		fail("cannot gather from a scalar")
	}
	a := normAxis(n.int("axis", 0), len(s), "axis")
	if it.DType() != torch.Int64 {
		fail("indices must be an integer tensor, got %v", it.DType())
	}
	out := append(append(slices.Clone(s[:a]), it.Shape()...), s[a+1:]...)
	c.numel(out)
	return a, out
}

func opGather(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	a, out := gatherShape(c, n, in)
	x, it := in[0], in[1]
	d := x.Size(int(a))
	idx := intsOf(it, "indices")
	for i, v := range idx {
		if v < -d || v >= d {
			fail("index %d is out of range for axis %d of size %d", v, a, d)
		}
		if v < 0 {
			idx[i] = v + d
		}
	}
	y := x.IndexSelect(a, c.ints(idx, int64(len(idx))))
	return one(y.Reshape(out...))
}

// sliceRange is one axis of a Slice, its bounds clamped as ONNX says: from
// start towards end (exclusive) by step.
type sliceRange struct{ axis, start, end, step int64 }

// sliceRanges checks a Slice's starts, ends, axes and steps against shape
// (nil axes: the first len(starts); nil steps: 1) and clamps them.
func sliceRanges(shape, starts, ends, axes, steps []int64) []sliceRange {
	if len(starts) != len(ends) {
		fail("starts %v and ends %v differ in length", starts, ends)
	}
	if axes == nil {
		for i := range starts {
			axes = append(axes, int64(i))
		}
	}
	if steps == nil {
		steps = slices.Repeat([]int64{1}, len(starts))
	}
	if len(axes) != len(starts) || len(steps) != len(starts) {
		fail("starts %v, ends %v, axes %v and steps %v differ in length", starts, ends, axes, steps)
	}
	seen := make([]bool, len(shape))
	out := make([]sliceRange, len(starts))
	for i := range starts {
		a := normAxis(axes[i], len(shape), "axis")
		if seen[a] {
			fail("axes %v repeat an axis", axes)
		}
		seen[a] = true
		d, st, en, step := shape[a], starts[i], ends[i], steps[i]
		if step == 0 {
			fail("step is 0")
		}
		if st < 0 {
			st += d
		}
		if en < 0 {
			en += d
		}
		if step > 0 {
			st, en = min(max(st, 0), d), min(max(en, 0), d)
		} else {
			st, en = min(max(st, 0), d-1), min(max(en, -1), d-1)
		}
		out[i] = sliceRange{int64(a), st, en, step}
	}
	return out
}

// count is the number of indices start, start+step, … before end, written
// so that a step near the int64 limit cannot overflow.
func (r sliceRange) count() int64 {
	switch {
	case r.step > 0 && r.end > r.start:
		return (r.end-r.start-1)/r.step + 1
	case r.step < 0 && r.start > r.end:
		return (r.start-r.end-1)/-r.step + 1
	}
	return 0
}

// sliceShape is Slice's ranges (starts, ends and axes: attributes before
// opset 10, inputs from then on, with steps) and output shape.
func sliceShape[V value](c *runCtx, n *node, in []V) ([]sliceRange, []int64) {
	s := need(in, 0).Shape()
	var starts, ends, axes, steps []int64
	if c.opset < 10 {
		starts, ends, axes = n.ints("starts"), n.ints("ends"), n.ints("axes")
	} else {
		starts, ends = intsIn(need(in, 1), "starts"), intsIn(need(in, 2), "ends")
		var none V
		if v := arg(in, 3); v != none {
			axes = intsIn(v, "axes")
		}
		if v := arg(in, 4); v != none {
			steps = intsIn(v, "steps")
		}
	}
	rs := sliceRanges(s, starts, ends, axes, steps)
	for _, r := range rs {
		s[r.axis] = r.count()
	}
	return rs, s
}

func opSlice(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	rs, _ := sliceShape(c, n, in)
	x := in[0]
	for _, r := range rs {
		a, st, en, step := r.axis, r.start, r.end, r.step
		if step == 1 {
			x = x.Narrow(a, st, max(en-st, 0))
			continue
		}
		var idx []int64
		for j := st; (step > 0 && j < en) || (step < 0 && j > en); j += step {
			idx = append(idx, j)
		}
		x = x.IndexSelect(a, c.ints(idx, int64(len(idx))))
	}
	return one(x)
}

// reduceShape is the axes and output shape of ReduceMean (of float32
// input), ReduceSum, ReduceMax and ReduceMin (of no empty axis). Their axes
// become an input at opset 13 for ReduceSum and 18 for the others; none
// given means all of them, unless noop_with_empty_axes, or the input is a
// scalar: then axes is empty and the op is the identity.
func reduceShape[V value](c *runCtx, n *node, in []V) (axes, out []int64) {
	x := need(in, 0)
	s := x.Shape()
	if n.op == "ReduceMean" && x.DType() != torch.Float32 {
		fail("input is %v, want float32", x.DType())
	}
	from := int64(18)
	if n.op == "ReduceSum" {
		from = 13
	}
	axes = axesOf(c, n, in, from)
	if len(axes) == 0 && c.opset >= from && n.int("noop_with_empty_axes", 0) != 0 {
		return nil, s
	}
	if len(axes) == 0 {
		for i := range s {
			axes = append(axes, int64(i))
		}
	}
	drop := make([]bool, len(s))
	for i, a := range axes {
		a = normAxis(a, len(s), "axis")
		if drop[a] {
			fail("axes %v repeat an axis", axes)
		}
		drop[a], axes[i] = true, a
		if (n.op == "ReduceMax" || n.op == "ReduceMin") && s[a] == 0 {
			fail("cannot take the %s of an empty axis %d", strings.ToLower(n.op[len("Reduce"):]), a)
		}
	}
	keep := n.int("keepdims", 1) != 0
	out = []int64{}
	for i, d := range s {
		switch {
		case !drop[i]:
			out = append(out, d)
		case keep:
			out = append(out, 1)
		}
	}
	return axes, out
}

func opReduceMean(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	axes, _ := reduceShape(c, n, in)
	if len(axes) == 0 {
		return one(in[0])
	}
	return one(in[0].MeanDims(axes, n.int("keepdims", 1) != 0))
}

// castType is Cast's output type: attribute to.
func castType(n *node) torch.DType {
	if !n.has("to") {
		fail("attribute to is required")
	}
	dt, err := dtypeOf(int32(n.int("to", 0)))
	if err != nil {
		fail("%v", err)
	}
	return dt
}

func opCast(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	dt := castType(n)
	if dt == x.DType() {
		return one(x)
	}
	return one(x.To(dt, x.Device()))
}
