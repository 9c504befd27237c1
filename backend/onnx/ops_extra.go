package onnx

import (
	"math"
	"slices"

	"github.com/conferral/conferral/backend/torch"
)

// Ops beyond the core list that image classifiers from Keras (tf2onnx) and
// PyTorch also use: elementwise maths, activations, reductions,
// comparisons and shape-making ops.
func init() {
	for name, f := range map[string]func(*torch.Tensor) *torch.Tensor{
		"Neg":        (*torch.Tensor).Neg,
		"Exp":        (*torch.Tensor).Exp,
		"Log":        (*torch.Tensor).Log,
		"Sqrt":       (*torch.Tensor).Sqrt,
		"Abs":        (*torch.Tensor).Abs,
		"Reciprocal": (*torch.Tensor).Reciprocal,
		"Floor":      (*torch.Tensor).Floor,
		"Round":      (*torch.Tensor).Round,
		"Sign":       (*torch.Tensor).Sign,
		"Ceil":       func(x *torch.Tensor) *torch.Tensor { return x.Neg().Floor().Neg() },
		"Softsign":   func(x *torch.Tensor) *torch.Tensor { return x.Div(x.Abs().AddScalar(1)) },
		"Softplus": func(x *torch.Tensor) *torch.Tensor { // stable log(1 + eˣ)
			return x.ClampMin(0).Add(x.Abs().Neg().Exp().Log1p())
		},
		"Not": func(x *torch.Tensor) *torch.Tensor { return x.EqScalar(0) },
	} {
		ops[name] = unary(f)
	}
	for name, f := range map[string]func(a, b *torch.Tensor) *torch.Tensor{
		"Equal":          (*torch.Tensor).Eq,
		"Greater":        (*torch.Tensor).Gt,
		"Less":           (*torch.Tensor).Lt,
		"GreaterOrEqual": (*torch.Tensor).Ge,
		"LessOrEqual":    (*torch.Tensor).Le,
	} {
		ops[name] = elementwise(f)
	}
	ops["Pow"] = opPow
	ops["Max"] = variadic((*torch.Tensor).Maximum, false)
	ops["Min"] = variadic((*torch.Tensor).Minimum, false)
	ops["Sum"] = variadic((*torch.Tensor).Add, false)
	ops["Mean"] = variadic((*torch.Tensor).Add, true)
	ops["ReduceSum"] = opReduce("sum")
	ops["ReduceMax"] = opReduce("max")
	ops["ReduceMin"] = opReduce("min")
	ops["PRelu"] = opPRelu
	ops["Elu"] = opElu
	ops["Selu"] = opSelu
	ops["Where"] = opWhere
	ops["Expand"] = opExpand
	ops["ConstantOfShape"] = opConstantOfShape
}

func opPow(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	broadcastShape(c, n, in)
	a, b := in[0], in[1]
	y := a.Pow(b)
	if y.DType() != a.DType() {
		y = y.To(a.DType(), a.Device())
	}
	return one(y)
}

// variadic folds Max, Min, Sum and Mean over their inputs.
func variadic(f func(a, b *torch.Tensor) *torch.Tensor, mean bool) opFunc {
	return func(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
		broadcastShape(c, n, in)
		ts := present(in)
		y := ts[0]
		for _, t := range ts[1:] {
			y = f(y, t)
		}
		if mean && len(ts) > 1 {
			y = y.DivScalar(float64(len(ts)))
		}
		return one(y)
	}
}

func opReduce(kind string) opFunc {
	return func(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
		x := need(in, 0)
		axes, _ := reduceShape(c, n, in)
		if len(axes) == 0 {
			return one(x)
		}
		keep := n.int("keepdims", 1) != 0
		switch kind {
		case "sum":
			return one(x.SumDims(axes, keep))
		case "max":
			return one(x.Amax(axes, keep))
		}
		return one(x.Amin(axes, keep))
	}
}

// preluShape is PRelu's output shape: X's, to which slope broadcasts.
func preluShape[V value](c *runCtx, in []V) []int64 {
	x, slope := need(in, 0), need(in, 1)
	xs, ss := x.Shape(), slope.Shape()
	if !slices.Equal(c.broadcast(xs, ss), xs) {
		fail("slope %v does not broadcast to input %v", ss, xs)
	}
	return xs
}

func opPRelu(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	preluShape(c, in)
	x, slope := in[0], in[1]
	return one(torch.Where(x.LtScalar(0), x.Mul(slope), x))
}

// elu is x for x ≥ 0 and α(eˣ − 1) below, with eˣ taken of min(x, 0) so
// that the branch not taken has a finite gradient.
func elu(x *torch.Tensor, alpha float64) *torch.Tensor {
	neg := x.ClampMax(0).Exp().SubScalar(1).MulScalar(alpha)
	return torch.Where(x.LtScalar(0), neg, x)
}

func opElu(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	return one(elu(need(in, 0), n.float("alpha", 1)))
}

func opSelu(_ *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	alpha := n.float("alpha", 1.67326319217681884765625)
	gamma := n.float("gamma", 1.05070102214813232421875)
	return one(elu(need(in, 0), alpha).MulScalar(gamma))
}

// whereShape is Where's output shape and type: condition (bool), X and Y
// (of one type) broadcast together.
func whereShape[V value](c *runCtx, in []V) ([]int64, torch.DType) {
	cond, a, b := need(in, 0), need(in, 1), need(in, 2)
	if cond.DType() != torch.Bool {
		fail("condition is %v, want bool", cond.DType())
	}
	if a.DType() != b.DType() {
		fail("operands are %v and %v", a.DType(), b.DType())
	}
	return c.broadcast(c.broadcast(cond.Shape(), a.Shape()), b.Shape()), a.DType()
}

func opWhere(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	whereShape(c, in)
	return one(torch.Where(in[0], in[1], in[2]))
}

// expandShape is Expand's output shape: the input's broadcast with input
// shape.
func expandShape[V value](c *runCtx, in []V) []int64 {
	x := need(in, 0)
	shape := intsIn(need(in, 1), "shape")
	for _, d := range shape {
		if d < 0 {
			fail("shape %v has a negative size", shape)
		}
	}
	return c.broadcast(x.Shape(), shape)
}

func opExpand(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	out := expandShape(c, in)
	x := in[0]
	s := x.Shape()
	for len(s) < len(out) {
		s = append([]int64{1}, s...)
	}
	return one(x.Reshape(s...).Expand(out...).Contiguous())
}

// constantOfShapeOut is ConstantOfShape's output shape (input 0) and type:
// that of attribute value, a tensor of one element (0 of float32 by
// default).
func constantOfShapeOut[V value](c *runCtx, n *node, in []V) ([]int64, torch.DType) {
	shape := intsIn(need(in, 0), "shape")
	c.numel(shape)
	a := n.attrs["value"]
	if a == nil {
		return shape, torch.Float32
	}
	if a.T == nil {
		fail("attribute value holds no tensor")
	}
	if k := prod(a.T.Dims); k != 1 {
		fail("value has %d elements, want 1", k)
	}
	dt, err := dtypeOf(a.T.DataType)
	if err != nil {
		fail("%v", err)
	}
	return shape, dt
}

func opConstantOfShape(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	shape, dt := constantOfShapeOut(c, n, in)
	v := 0.0
	if a := n.attrs["value"]; a != nil {
		t, err := tensorFromProto(a.T)
		if err != nil {
			fail("%v", err)
		}
		v = c.s.Add(t).Item()
		if dt == torch.Int64 && math.Abs(v) > 1<<53 {
			fail("value %v does not survive conversion", v)
		}
	}
	return one(torch.Full(c.s, shape, v, dt, c.dev))
}
