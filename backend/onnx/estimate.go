package onnx

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/conferral/conferral/backend/torch"
)

// DefaultMaxMemory is the memory budget of one forward pass when
// Options.MaxMemory is 0: 1 GiB of intermediate values.
const DefaultMaxMemory = 1 << 30

// ErrOverBudget is what a model or a pass whose memory estimate is over
// the budget (Options.MaxMemory) is refused with.
var ErrOverBudget = errors.New("over the memory budget")

// maxKnown bounds a value whose content the estimate computes (shapes,
// axes, sizes and the arithmetic on them): larger ones are tracked by shape
// only.
const maxKnown = 1 << 12

// MemoryEstimate is what a forward pass of an imported model holds in
// intermediate values, computed from shapes alone before anything runs:
// each node's outputs are inferred from its inputs' shapes (and from the
// content of the small integer tensors that shapes are made of), in the
// order the interpreter runs the nodes. Weights are not included, nor the
// scratch memory an op uses inside libtorch.
type MemoryEstimate struct {
	// Batch is the number of images.
	Batch int64
	// Peak is the most bytes alive at once when every value is freed after
	// its last reader, as an inference pass does.
	Peak int64
	// Total is the bytes of every value the pass makes: what autograd may
	// keep for a backward pass through the input.
	Total int64
}

// Bytes is the estimate that applies to a pass: Total when it records
// gradients, Peak otherwise.
func (e MemoryEstimate) Bytes(grad bool) int64 {
	if grad {
		return e.Total
	}
	return e.Peak
}

// FormatBytes writes a byte count in binary units, as the budget's flag
// takes them (1.5 GiB, 300 MiB, 12 KiB, 100 B).
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// aval is what the estimate knows of a value: its shape and element type,
// and its content when it is small and does not depend on the input's
// values (the output of Shape and the arithmetic on it, small constants).
type aval struct {
	shape []int64
	dt    torch.DType
	t     *torch.Tensor // content, or nil
}

// elemSize is the bytes of one element of dt.
func elemSize(dt torch.DType) int64 {
	switch dt {
	case torch.Int64:
		return 8
	case torch.Bool, torch.Uint8:
		return 1
	}
	return 4
}

// satMul multiplies non-negative numbers, saturating at math.MaxInt64.
func satMul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func (v *aval) numel() int64 {
	n := int64(1)
	for _, d := range v.shape {
		n = satMul(n, max(d, 0))
	}
	return n
}

func (v *aval) bytes() int64 { return satMul(v.numel(), elemSize(v.dt)) }

// avalOf describes a tensor; its content is kept when it is small.
func avalOf(t *torch.Tensor) aval {
	v := aval{shape: t.Shape(), dt: t.DType()}
	if t.Numel() <= maxKnown {
		v.t = t
	}
	return v
}

// shapeRule infers a node's outputs from what is known of its inputs (nil
// for an absent one). Like an opFunc it reports bad input by panicking
// with an *opError.
type shapeRule func(c *runCtx, n *node, in []*aval) []aval

// infer runs n's shape rule, turning a panic into an error that names the
// node.
func (c *runCtx) infer(n *node, in []*aval) (outs []aval, err error) {
	rule, ok := shapeRules[n.op]
	if !ok {
		return nil, fmt.Errorf("onnx: %v: no shape rule for op %s", n, n.op)
	}
	defer func() {
		if r := recover(); r != nil {
			outs, err = nil, nodeError(n, r)
		}
	}()
	outs = rule(c, n, in)
	for _, o := range outs {
		if len(o.shape) > maxRank {
			fail("the result has %d dimensions, more than %d", len(o.shape), maxRank)
		}
	}
	checkOutputs(n, len(outs))
	return outs, nil
}

// estimate infers every value of a pass over the graph from its inputs
// (shape and type, content where known) and adds up what the pass holds.
// want are the values the pass returns (kept to its end). It returns the
// estimate and what it inferred of each value.
func (g *graph) estimate(dev torch.Device, inputs []aval, want []string) (est MemoryEstimate, vals map[string]*aval, err error) {
	if len(inputs) != len(g.inputs) {
		return est, nil, fmt.Errorf("onnx: the graph takes %d inputs, got %d", len(g.inputs), len(inputs))
	}
	c := &runCtx{opset: g.opset, dev: dev, s: torch.NewScope(), batch: 1}
	defer c.s.Close()
	if len(inputs) > 0 && len(inputs[0].shape) > 0 {
		c.batch = inputs[0].shape[0]
		est.Batch = c.batch
	}
	vals = make(map[string]*aval, len(g.used)+len(g.nodes)+len(inputs))
	for i, name := range g.used {
		v := g.usedVals[i]
		if v.numel() <= maxKnown {
			v.t = g.consts[name] // compute makes a view of it in c.s
		}
		vals[name] = &v
	}
	var live int64
	for i, in := range g.inputs {
		v := inputs[i]
		vals[in.name] = &v
		live = satAdd(live, v.bytes())
	}
	est.Peak, est.Total = live, live
	made := map[string]bool{} // values the pass makes (and frees)
	for i, n := range g.nodes {
		in := make([]*aval, len(n.in))
		known := true
		for j, name := range n.in {
			if name == "" {
				continue
			}
			v, ok := vals[name]
			if !ok {
				return est, nil, fmt.Errorf("onnx: %v: input %q has no value", n, name)
			}
			in[j] = v
			known = known && v.t != nil
		}
		outs, err := c.infer(n, in)
		if err != nil {
			return est, nil, err
		}
		small := true
		for _, o := range outs {
			small = small && o.numel() <= maxKnown && o.t == nil
		}
		if known && small && len(outs) > 0 {
			// Compute the content: these are shapes and the like, cheap
			// to compute and needed by the nodes that read them.
			if outs, err = c.compute(n, in, outs); err != nil {
				return est, nil, err
			}
		}
		var add int64
		for j, name := range n.out {
			if name == "" || j >= len(outs) {
				continue
			}
			o := outs[j]
			vals[name] = &o
			made[name] = true
			add = satAdd(add, o.bytes())
		}
		live = satAdd(live, add)
		est.Peak = max(est.Peak, live)
		est.Total = satAdd(est.Total, add)
		for _, name := range g.lastUse[i] {
			if slices.Contains(want, name) || !made[name] {
				continue
			}
			live -= vals[name].bytes()
			made[name] = false
		}
	}
	for _, name := range want {
		if _, ok := vals[name]; !ok {
			return est, nil, fmt.Errorf("onnx: value %q was not computed", name)
		}
	}
	return est, vals, nil
}

// compute runs n on the known content of its inputs and returns its
// outputs with their content (and their real shapes).
func (c *runCtx) compute(n *node, in []*aval, outs []aval) ([]aval, error) {
	vals := map[string]*torch.Tensor{}
	err := torch.Catch(func() {
		for j, name := range n.in {
			if name == "" {
				continue
			}
			if in[j].t.Scope() != c.s {
				// A graph constant: the op reads a view in the pass's
				// scope, so that what it makes joins that scope too.
				in[j].t = c.s.Add(in[j].t.Detach())
			}
			vals[name] = in[j].t
		}
	})
	if err != nil {
		return nil, fmt.Errorf("onnx: %v: %w", n, err)
	}
	ts, err := c.call(n, vals)
	if err != nil {
		return nil, err
	}
	res := make([]aval, len(outs))
	copy(res, outs)
	for j := range res {
		if j < len(ts) && ts[j] != nil {
			res[j] = aval{shape: ts[j].Shape(), dt: ts[j].DType(), t: c.s.Add(ts[j])}
		}
	}
	return res, nil
}

// estimateShape estimates a pass on a graph input of the given shape (as
// the graph takes it, after the input conversion).
func (m *Model) estimateShape(shape []int64) (MemoryEstimate, error) {
	key := fmt.Sprint(shape)
	m.estMu.Lock()
	e, ok := m.estCache[key]
	m.estMu.Unlock()
	if ok {
		return e, nil
	}
	e, _, err := m.g.estimate(m.dev, []aval{{shape: shape, dt: torch.Float32}}, []string{m.output})
	if err != nil {
		return e, err
	}
	m.estMu.Lock()
	if m.estCache == nil || len(m.estCache) >= 64 {
		m.estCache = map[string]MemoryEstimate{}
	}
	m.estCache[key] = e
	m.estMu.Unlock()
	return e, nil
}

// graphShape is the shape the graph's input has for n images of the
// model's size.
func (m *Model) graphShape(n, c, h, w int64) []int64 {
	switch {
	case m.rank == 2:
		return []int64{n, c * h * w}
	case m.layout == "nhwc":
		return []int64{n, h, w, c}
	}
	return []int64{n, c, h, w}
}

// Estimate is the memory estimate of a forward pass on batch images. It
// fails when the file leaves the image size open.
func (m *Model) Estimate(batch int) (MemoryEstimate, error) {
	if m.g == nil {
		return MemoryEstimate{}, fmt.Errorf("onnx: the model was freed")
	}
	if m.c <= 0 || m.h <= 0 || m.w <= 0 {
		return MemoryEstimate{}, fmt.Errorf("onnx: the file leaves the input size open; the estimate needs an image size")
	}
	if batch < 1 {
		return MemoryEstimate{}, fmt.Errorf("onnx: batch %d is not positive", batch)
	}
	return m.estimateShape(m.graphShape(int64(batch), int64(m.c), int64(m.h), int64(m.w)))
}

// MaxMemory is the budget a forward pass's estimate must stay within.
func (m *Model) MaxMemory() int64 { return m.maxMem }

// budgetOf is the budget that Options.MaxMemory sets: DefaultMaxMemory for
// 0, and no negative one.
func budgetOf(maxMem int64) (int64, error) {
	switch {
	case maxMem == 0:
		return DefaultMaxMemory, nil
	case maxMem < 0:
		return 0, fmt.Errorf("onnx: memory budget %d is negative", maxMem)
	}
	return maxMem, nil
}

// checkBudget fails with ErrOverBudget when need bytes are over budget;
// the error says "onnx: <who> about <need><of>, over the memory budget of
// <budget>".
func checkBudget(need, budget int64, who, of string) error {
	if need <= budget {
		return nil
	}
	return fmt.Errorf("onnx: %s about %s%s, %w of %s", who, FormatBytes(need), of, ErrOverBudget, FormatBytes(budget))
}

// checkBudget fails when the estimate of a pass (Total when it records
// gradients, Peak otherwise) is over the model's budget.
func (m *Model) checkBudget(e MemoryEstimate, grad bool) error {
	who := "one image needs"
	if e.Batch != 1 {
		who = fmt.Sprintf("a batch of %d images needs", e.Batch)
	}
	of := " of intermediate values by the importer's estimate"
	if grad {
		of = " of intermediate values kept for gradients by the importer's estimate"
	}
	return checkBudget(e.Bytes(grad), m.maxMem, who, of)
}

// Shape rules, one per supported op.

func needV(in []*aval, i int) *aval {
	if i >= len(in) || in[i] == nil {
		fail("input %d is required", i)
	}
	return in[i]
}

func argV(in []*aval, i int) *aval {
	if i < len(in) {
		return in[i]
	}
	return nil
}

// content is the known content of v; a shape that depends on the input's
// values cannot be estimated, so it fails.
func content(v *aval, what string) *torch.Tensor {
	if v.t == nil {
		fail("%s depends on the input's values (or has more than %d elements); its memory cannot be estimated", what, maxKnown)
	}
	return v.t
}

func intsOfV(v *aval, what string) []int64 { return intsOf(content(v, what), what) }

func floatsOfV(v *aval, what string) []float32 { return floatsOf(content(v, what), what) }

// same is a value of v's shape, of type dt.
func same(v *aval, dt torch.DType) []aval {
	return []aval{{shape: slices.Clone(v.shape), dt: dt}}
}

func sameRule(_ *runCtx, _ *node, in []*aval) []aval {
	x := needV(in, 0)
	return same(x, x.dt)
}

func boolRule(_ *runCtx, _ *node, in []*aval) []aval {
	x := needV(in, 0)
	return same(x, torch.Bool)
}

// broadcastRule is the numpy broadcast of every present input, of the
// first input's type (or bool).
func broadcastRule(cmp bool) shapeRule {
	return func(c *runCtx, n *node, in []*aval) []aval {
		var out []int64
		var dt torch.DType
		first := true
		for _, v := range in {
			if v == nil {
				continue
			}
			if first {
				out, dt, first = slices.Clone(v.shape), v.dt, false
				continue
			}
			out = c.broadcast(out, v.shape)
		}
		if first {
			fail("no inputs")
		}
		if cmp {
			dt = torch.Bool
		}
		return []aval{{shape: out, dt: dt}}
	}
}

func whereRule(c *runCtx, _ *node, in []*aval) []aval {
	cond, a, b := needV(in, 0), needV(in, 1), needV(in, 2)
	return []aval{{shape: c.broadcast(c.broadcast(cond.shape, a.shape), b.shape), dt: a.dt}}
}

func matMulRule(c *runCtx, _ *node, in []*aval) []aval {
	a, b := needV(in, 0), needV(in, 1)
	c.checkMatMul(a.shape, b.shape)
	as, bs := a.shape, b.shape
	var out []int64
	switch {
	case len(as) == 1 && len(bs) == 1:
		out = []int64{}
	case len(as) == 1:
		out = append(slices.Clone(bs[:len(bs)-2]), bs[len(bs)-1])
	case len(bs) == 1:
		out = slices.Clone(as[:len(as)-1])
	default:
		out = append(c.broadcast(as[:len(as)-2], bs[:len(bs)-2]), as[len(as)-2], bs[len(bs)-1])
	}
	return []aval{{shape: out, dt: a.dt}}
}

func gemmRule(c *runCtx, n *node, in []*aval) []aval {
	a, b, cc := needV(in, 0), needV(in, 1), argV(in, 2)
	if len(a.shape) != 2 || len(b.shape) != 2 {
		fail("A %v and B %v must be matrices", a.shape, b.shape)
	}
	m, k1 := a.shape[0], a.shape[1]
	if n.int("transA", 0) != 0 {
		m, k1 = k1, m
	}
	k2, p := b.shape[0], b.shape[1]
	if n.int("transB", 0) != 0 {
		k2, p = p, k2
	}
	if k1 != k2 {
		fail("A %v and B %v do not multiply", a.shape, b.shape)
	}
	out := []int64{m, p}
	if cc != nil {
		out = c.broadcast(out, cc.shape)
	}
	return []aval{{shape: out, dt: a.dt}}
}

func convRule(c *runCtx, n *node, in []*aval) []aval {
	x, w := needV(in, 0), needV(in, 1)
	_, _, out := convShape(c, n, x.shape, w.shape)
	return []aval{{shape: out, dt: x.dt}}
}

func convTransposeRule(c *runCtx, n *node, in []*aval) []aval {
	x, w := needV(in, 0), needV(in, 1)
	_, _, out := convTransposeShape(c, n, x.shape, w.shape)
	return []aval{{shape: out, dt: x.dt}}
}

func poolRule(c *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	_, out := poolShape(c, n, x.shape)
	return []aval{{shape: out, dt: x.dt}}
}

func globalPoolRule(_ *runCtx, _ *node, in []*aval) []aval {
	x := needV(in, 0)
	if len(x.shape) < 3 {
		fail("input of shape %v has no spatial axes", x.shape)
	}
	out := slices.Clone(x.shape)
	for i := 2; i < len(out); i++ {
		out[i] = 1
	}
	return []aval{{shape: out, dt: x.dt}}
}

func flattenRule(_ *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	s := x.shape
	a := n.int("axis", 1)
	if a < 0 {
		a += int64(len(s))
	}
	if a < 0 || a > int64(len(s)) {
		fail("axis %d is out of range for rank %d", n.int("axis", 1), len(s))
	}
	return []aval{{shape: []int64{prod(s[:a]), prod(s[a:])}, dt: x.dt}}
}

func reshapeRule(c *runCtx, n *node, in []*aval) []aval {
	if c.opset < 5 {
		fail("opset %d's shape attribute is not supported", c.opset)
	}
	x := needV(in, 0)
	want := reshapeTarget(c, n, x.shape, intsOfV(needV(in, 1), "shape"))
	return []aval{{shape: want, dt: x.dt}}
}

func transposeRule(_ *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	r := len(x.shape)
	perm := n.ints("perm")
	if perm == nil {
		for i := r - 1; i >= 0; i-- {
			perm = append(perm, int64(i))
		}
	}
	if len(perm) != r {
		fail("perm %v does not fit rank %d", perm, r)
	}
	out := make([]int64, r)
	seen := make([]bool, r)
	for i, p := range perm {
		p = normAxis(p, r, "perm entry")
		if seen[p] {
			fail("perm %v is not a permutation", perm)
		}
		seen[p] = true
		out[i] = x.shape[p]
	}
	return []aval{{shape: out, dt: x.dt}}
}

// axesOfV reads axes as axesOf does.
func axesOfV(c *runCtx, n *node, in []*aval, inputFrom int64) []int64 {
	if c.opset < inputFrom {
		return n.ints("axes")
	}
	if v := argV(in, 1); v != nil {
		return intsOfV(v, "axes")
	}
	return nil
}

func squeezeRule(c *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	s := x.shape
	axes := axesOfV(c, n, in, 13)
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
	return []aval{{shape: out, dt: x.dt}}
}

func unsqueezeRule(c *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	axes := axesOfV(c, n, in, 13)
	if axes == nil {
		fail("axes are required")
	}
	r := len(x.shape) + len(axes)
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
			out = append(out, x.shape[j])
			j++
		}
	}
	return []aval{{shape: out, dt: x.dt}}
}

func concatRule(c *runCtx, n *node, in []*aval) []aval {
	if !n.has("axis") {
		fail("axis is required")
	}
	var vs []*aval
	for _, v := range in {
		if v != nil {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		fail("no inputs")
	}
	r := len(vs[0].shape)
	a := normAxis(n.int("axis", 0), r, "axis")
	out := slices.Clone(vs[0].shape)
	for _, v := range vs[1:] {
		if len(v.shape) != r || v.dt != vs[0].dt {
			fail("inputs %v %v and %v %v do not concatenate", vs[0].shape, vs[0].dt, v.shape, v.dt)
		}
		for i := range v.shape {
			if int64(i) != a && v.shape[i] != out[i] {
				fail("inputs %v and %v differ off axis %d", vs[0].shape, v.shape, a)
			}
		}
		out[a] += v.shape[a]
	}
	c.numel(out)
	return []aval{{shape: out, dt: vs[0].dt}}
}

func padRule(c *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	s := x.shape
	if c.opset < 2 {
		fail("opset %d's paddings attribute is not supported", c.opset)
	}
	var pads []int64
	if c.opset < 11 {
		pads = n.ints("pads")
	} else {
		pads = intsOfV(needV(in, 1), "pads")
	}
	if len(pads) != 2*len(s) {
		fail("pads %v do not fit rank %d", pads, len(s))
	}
	out := make([]int64, len(s))
	for i := range s {
		out[i] = s[i] + pads[i] + pads[len(s)+i]
		if out[i] < 0 {
			fail("pads %v shrink shape %v below zero", pads, s)
		}
	}
	c.numel(out)
	return []aval{{shape: out, dt: x.dt}}
}

func dropoutRule(_ *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	outs := same(x, x.dt)
	if len(n.out) > 1 && n.out[1] != "" {
		outs = append(outs, aval{shape: slices.Clone(x.shape), dt: torch.Bool})
	}
	return outs
}

func constantRule(_ *runCtx, n *node, _ []*aval) []aval {
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
		return []aval{{shape: slices.Clone(a.T.Dims), dt: dt}}
	case n.has("value_float"):
		return []aval{{shape: []int64{}, dt: torch.Float32}}
	case n.has("value_floats"):
		return []aval{{shape: []int64{int64(len(n.floats("value_floats")))}, dt: torch.Float32}}
	case n.has("value_int"):
		return []aval{{shape: []int64{}, dt: torch.Int64}}
	case n.has("value_ints"):
		return []aval{{shape: []int64{int64(len(n.ints("value_ints")))}, dt: torch.Int64}}
	}
	fail("only tensor, float and int values are supported")
	return nil
}

// shapeRuleOp is Shape: its output is known whatever the input's values.
func shapeRuleOp(c *runCtx, n *node, in []*aval) []aval {
	s := needV(in, 0).shape
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
	s = s[start:end]
	return []aval{{shape: []int64{int64(len(s))}, dt: torch.Int64, t: c.ints(s, int64(len(s)))}}
}

func gatherRule(c *runCtx, n *node, in []*aval) []aval {
	x, it := needV(in, 0), needV(in, 1)
	s := x.shape
	if len(s) == 0 {
		fail("cannot gather from a scalar")
	}
	a := normAxis(n.int("axis", 0), len(s), "axis")
	if it.dt != torch.Int64 {
		fail("indices must be an integer tensor, got %v", it.dt)
	}
	out := append(append(append([]int64{}, s[:a]...), it.shape...), s[a+1:]...)
	c.numel(out)
	return []aval{{shape: out, dt: x.dt}}
}

func sliceRule(c *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	s := slices.Clone(x.shape)
	var starts, ends, axes, steps []int64
	if c.opset < 10 {
		starts, ends, axes = n.ints("starts"), n.ints("ends"), n.ints("axes")
	} else {
		starts, ends = intsOfV(needV(in, 1), "starts"), intsOfV(needV(in, 2), "ends")
		if v := argV(in, 3); v != nil {
			axes = intsOfV(v, "axes")
		}
		if v := argV(in, 4); v != nil {
			steps = intsOfV(v, "steps")
		}
	}
	for _, r := range sliceRanges(s, starts, ends, axes, steps) {
		// The count of start, start+step, … before end, written so that a
		// step near the int64 limit cannot overflow.
		switch {
		case r.step > 0 && r.end > r.start:
			s[r.axis] = (r.end-r.start-1)/r.step + 1
		case r.step < 0 && r.start > r.end:
			s[r.axis] = (r.start-r.end-1)/-r.step + 1
		default:
			s[r.axis] = 0
		}
	}
	return []aval{{shape: s, dt: x.dt}}
}

// reduceRule is ReduceMean, ReduceSum, ReduceMax and ReduceMin, whose axes
// become an input at opset from; noop says whether noop_with_empty_axes is
// read.
func reduceRule(from int64, noop bool) shapeRule {
	return func(c *runCtx, n *node, in []*aval) []aval {
		x := needV(in, 0)
		axes := axesOfV(c, n, in, from)
		if noop && len(axes) == 0 && c.opset >= from && n.int("noop_with_empty_axes", 0) != 0 {
			return same(x, x.dt)
		}
		keep := n.int("keepdims", 1) != 0
		r := len(x.shape)
		if len(axes) == 0 {
			for i := range r {
				axes = append(axes, int64(i))
			}
		}
		drop := make([]bool, r)
		for _, a := range axes {
			drop[normAxis(a, r, "axis")] = true
		}
		out := []int64{}
		for i, d := range x.shape {
			switch {
			case !drop[i]:
				out = append(out, d)
			case keep:
				out = append(out, 1)
			}
		}
		return []aval{{shape: out, dt: x.dt}}
	}
}

func resizeRule(c *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	s := x.shape
	r := len(s)
	var scales []float32
	var sizes []int64
	if n.op == "Upsample" && c.opset < 7 {
		fail("opset %d's Upsample is not supported", c.opset)
	}
	switch {
	case n.op == "Upsample" && c.opset < 9:
		scales = n.floats("scales")
	case n.op == "Upsample" || c.opset < 11:
		scales = floatsOfV(needV(in, 1), "scales")
	default:
		if v := argV(in, 2); v != nil && v.numel() > 0 {
			scales = floatsOfV(v, "scales")
		}
		if v := argV(in, 3); v != nil && v.numel() > 0 {
			sizes = intsOfV(v, "sizes")
		}
	}
	if (scales == nil) == (sizes == nil) {
		fail("exactly one of scales and sizes must be given")
	}
	out := make([]int64, r)
	switch {
	case sizes != nil:
		if len(sizes) != r {
			fail("sizes %v do not fit rank %d", sizes, r)
		}
		for i := range r {
			if sizes[i] <= 0 {
				fail("sizes %v must be positive", sizes)
			}
			out[i] = sizes[i]
		}
	default:
		if len(scales) != r {
			fail("scales %v do not fit rank %d", scales, r)
		}
		for i := range r {
			if !(scales[i] > 0) || math.IsInf(float64(scales[i]), 0) {
				fail("scales %v must be positive", scales)
			}
			o := math.Floor(float64(s[i]) * float64(scales[i]))
			if o < 1 || o > maxElems {
				fail("scales %v give an output size of %v along axis %d", scales, o, i)
			}
			out[i] = int64(o)
		}
	}
	c.numel(out)
	return []aval{{shape: out, dt: x.dt}}
}

func castRule(_ *runCtx, n *node, in []*aval) []aval {
	x := needV(in, 0)
	if !n.has("to") {
		fail("attribute to is required")
	}
	dt, err := dtypeOf(int32(n.int("to", 0)))
	if err != nil {
		fail("%v", err)
	}
	return []aval{{shape: slices.Clone(x.shape), dt: dt}}
}

func expandRule(c *runCtx, _ *node, in []*aval) []aval {
	x := needV(in, 0)
	shape := intsOfV(needV(in, 1), "shape")
	for _, d := range shape {
		if d < 0 {
			fail("shape %v has a negative size", shape)
		}
	}
	return []aval{{shape: c.broadcast(x.shape, shape), dt: x.dt}}
}

func constantOfShapeRule(c *runCtx, n *node, in []*aval) []aval {
	shape := intsOfV(needV(in, 0), "shape")
	c.numel(shape)
	dt := torch.Float32
	if a := n.attrs["value"]; a != nil && a.T != nil {
		var err error
		if dt, err = dtypeOf(a.T.DataType); err != nil {
			fail("%v", err)
		}
	}
	return []aval{{shape: shape, dt: dt}}
}

// shapeRules maps each supported op onto its shape rule. It is never
// written after initialisation.
var shapeRules = map[string]shapeRule{}

func init() {
	for _, op := range []string{"Relu", "Sigmoid", "Tanh", "HardSwish", "LeakyRelu", "HardSigmoid", "Clip",
		"BatchNormalization", "Softmax", "LogSoftmax", "Identity", "Neg", "Exp", "Log", "Sqrt", "Abs",
		"Reciprocal", "Floor", "Round", "Sign", "Ceil", "Softsign", "Softplus", "Elu", "Selu", "PRelu"} {
		shapeRules[op] = sameRule
	}
	for _, op := range []string{"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"} {
		shapeRules[op] = broadcastRule(false)
	}
	for _, op := range []string{"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"} {
		shapeRules[op] = broadcastRule(true)
	}
	for op, r := range map[string]shapeRule{
		"Not":               boolRule,
		"Where":             whereRule,
		"MatMul":            matMulRule,
		"Gemm":              gemmRule,
		"Conv":              convRule,
		"ConvTranspose":     convTransposeRule,
		"MaxPool":           poolRule,
		"AveragePool":       poolRule,
		"GlobalAveragePool": globalPoolRule,
		"GlobalMaxPool":     globalPoolRule,
		"Flatten":           flattenRule,
		"Reshape":           reshapeRule,
		"Transpose":         transposeRule,
		"Squeeze":           squeezeRule,
		"Unsqueeze":         unsqueezeRule,
		"Concat":            concatRule,
		"Pad":               padRule,
		"Dropout":           dropoutRule,
		"Constant":          constantRule,
		"Shape":             shapeRuleOp,
		"Gather":            gatherRule,
		"Slice":             sliceRule,
		"ReduceMean":        reduceRule(18, false),
		"ReduceSum":         reduceRule(13, true),
		"ReduceMax":         reduceRule(18, true),
		"ReduceMin":         reduceRule(18, true),
		"Resize":            resizeRule,
		"Upsample":          resizeRule,
		"Cast":              castRule,
		"Expand":            expandRule,
		"ConstantOfShape":   constantOfShapeRule,
	} {
		shapeRules[op] = r
	}
}
