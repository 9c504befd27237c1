package onnx

import (
	"math"

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

func opPow(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	a, b := need(in, 0), need(in, 1)
	c.broadcast(a.Shape(), b.Shape())
	y := a.Pow(b)
	if y.DType() != a.DType() {
		y = y.To(a.DType(), a.Device())
	}
	return one(y)
}

// variadic folds Max, Min, Sum and Mean over their inputs.
func variadic(f func(a, b *torch.Tensor) *torch.Tensor, mean bool) opFunc {
	return func(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
		var y *torch.Tensor
		n := 0
		for _, t := range in {
			if t == nil {
				continue
			}
			n++
			if y == nil {
				y = t
				continue
			}
			if y.DType() != t.DType() {
				fail("operands are %v and %v", y.DType(), t.DType())
			}
			c.broadcast(y.Shape(), t.Shape())
			y = f(y, t)
		}
		if y == nil {
			fail("no inputs")
		}
		if mean && n > 1 {
			y = y.DivScalar(float64(n))
		}
		return one(y)
	}
}

func opReduce(kind string) opFunc {
	return func(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
		x := need(in, 0)
		from := int64(18)
		if kind == "sum" {
			from = 13
		}
		axes := axesOf(c, n, in, from)
		if len(axes) == 0 && c.opset >= from && n.int("noop_with_empty_axes", 0) != 0 {
			return one(x)
		}
		keep := n.int("keepdims", 1) != 0
		r := x.Dim()
		if len(axes) == 0 { // none given: all of them
			for i := range r {
				axes = append(axes, int64(i))
			}
		}
		seen := map[int64]bool{}
		for i, a := range axes {
			axes[i] = normAxis(a, r, "axis")
			if seen[axes[i]] {
				fail("axes %v repeat an axis", axes)
			}
			seen[axes[i]] = true
		}
		if len(axes) == 0 { // a scalar
			return one(x)
		}
		for _, a := range axes {
			if kind != "sum" && x.Size(int(a)) == 0 {
				fail("cannot take the %s of an empty axis %d", kind, a)
			}
		}
		switch kind {
		case "sum":
			return one(x.SumDims(axes, keep))
		case "max":
			return one(x.Amax(axes, keep))
		}
		return one(x.Amin(axes, keep))
	}
}

func opPRelu(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	x, slope := need(in, 0), need(in, 1)
	if got := c.broadcast(x.Shape(), slope.Shape()); len(got) != x.Dim() {
		fail("slope %v does not broadcast to input %v", slope.Shape(), x.Shape())
	}
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

func opWhere(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	cond, a, b := need(in, 0), need(in, 1), need(in, 2)
	if cond.DType() != torch.Bool {
		fail("condition is %v, want bool", cond.DType())
	}
	if a.DType() != b.DType() {
		fail("operands are %v and %v", a.DType(), b.DType())
	}
	c.broadcast(c.broadcast(cond.Shape(), a.Shape()), b.Shape())
	return one(torch.Where(cond, a, b))
}

func opExpand(c *runCtx, _ *node, in []*torch.Tensor) []*torch.Tensor {
	x := need(in, 0)
	shape := intsOf(need(in, 1), "shape")
	for _, d := range shape {
		if d < 0 {
			fail("shape %v has a negative size", shape)
		}
	}
	out := c.broadcast(x.Shape(), shape)
	s := x.Shape()
	for len(s) < len(out) {
		s = append([]int64{1}, s...)
	}
	return one(x.Reshape(s...).Expand(out...).Contiguous())
}

func opConstantOfShape(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor {
	shape := intsOf(need(in, 0), "shape")
	c.numel(shape)
	v, dt := 0.0, torch.Float32
	if a := n.attrs["value"]; a != nil {
		if a.T == nil {
			fail("attribute value holds no tensor")
		}
		t, err := tensorFromProto(a.T)
		if err != nil {
			fail("%v", err)
		}
		c.s.Add(t)
		if t.Numel() != 1 {
			fail("value has %d elements, want 1", t.Numel())
		}
		dt = t.DType()
		v = t.Item()
		if dt == torch.Int64 && math.Abs(v) > 1<<53 {
			fail("value %v does not survive conversion", v)
		}
	}
	return one(torch.Full(c.s, shape, v, dt, c.dev))
}
