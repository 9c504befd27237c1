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

// content is the known content of v; a shape that depends on the input's
// values cannot be estimated, so it fails.
func content(v *aval, what string) *torch.Tensor {
	if v.t == nil {
		fail("%s depends on the input's values (or has more than %d elements); its memory cannot be estimated", what, maxKnown)
	}
	return v.t
}

// Shape and DType read an aval as the shared checks read a tensor.
func (v *aval) Shape() []int64 { return slices.Clone(v.shape) }

func (v *aval) DType() torch.DType { return v.dt }

// same is a value of v's shape, of type dt.
func same(v *aval, dt torch.DType) []aval {
	return []aval{{shape: slices.Clone(v.shape), dt: dt}}
}

func sameRule(_ *runCtx, _ *node, in []*aval) []aval {
	x := need(in, 0)
	return same(x, x.dt)
}

func boolRule(_ *runCtx, _ *node, in []*aval) []aval {
	x := need(in, 0)
	return same(x, torch.Bool)
}

// broadcastRule is Add, Sub, Mul, Div, Pow, the comparisons, Max, Min, Sum
// and Mean.
func broadcastRule(c *runCtx, n *node, in []*aval) []aval {
	out, dt := broadcastShape(c, n, in)
	return []aval{{shape: out, dt: dt}}
}

// batchNormRule is BatchNormalization.
func batchNormRule(_ *runCtx, n *node, in []*aval) []aval {
	checkBatchNorm(n, in)
	return sameRule(nil, n, in)
}

// softmaxRule is Softmax and LogSoftmax.
func softmaxRule(c *runCtx, n *node, in []*aval) []aval {
	x := need(in, 0)
	softmaxAxis(c, n, x.shape)
	return same(x, x.dt)
}

// clipRule is Clip.
func clipRule(c *runCtx, n *node, in []*aval) []aval {
	checkClip(c, in)
	return sameRule(c, n, in)
}

// preluRule is PRelu.
func preluRule(c *runCtx, _ *node, in []*aval) []aval {
	return []aval{{shape: preluShape(c, in), dt: need(in, 0).dt}}
}

func whereRule(c *runCtx, _ *node, in []*aval) []aval {
	out, dt := whereShape(c, in)
	return []aval{{shape: out, dt: dt}}
}

func matMulRule(c *runCtx, _ *node, in []*aval) []aval {
	out, dt := matMulShape(c, in)
	return []aval{{shape: out, dt: dt}}
}

func gemmRule(c *runCtx, n *node, in []*aval) []aval {
	return []aval{{shape: gemmShape(c, n, in), dt: need(in, 0).dt}}
}

func convRule(c *runCtx, n *node, in []*aval) []aval {
	x, w := need(in, 0), need(in, 1)
	_, _, out := convShape(c, n, x.shape, w.shape)
	return []aval{{shape: out, dt: x.dt}}
}

func convTransposeRule(c *runCtx, n *node, in []*aval) []aval {
	x, w := need(in, 0), need(in, 1)
	_, _, out := convTransposeShape(c, n, x.shape, w.shape)
	return []aval{{shape: out, dt: x.dt}}
}

func poolRule(c *runCtx, n *node, in []*aval) []aval {
	x := need(in, 0)
	_, out := poolShape(c, n, x.shape)
	return []aval{{shape: out, dt: x.dt}}
}

func globalPoolRule(_ *runCtx, _ *node, in []*aval) []aval {
	x := need(in, 0)
	return []aval{{shape: globalPoolShape(x.shape), dt: x.dt}}
}

func flattenRule(_ *runCtx, n *node, in []*aval) []aval {
	x := need(in, 0)
	return []aval{{shape: flattenShape(n, x.shape), dt: x.dt}}
}

func reshapeRule(c *runCtx, n *node, in []*aval) []aval {
	return []aval{{shape: reshapeShape(c, n, in), dt: need(in, 0).dt}}
}

func transposeRule(_ *runCtx, n *node, in []*aval) []aval {
	x := need(in, 0)
	perm := transposePerm(n, len(x.shape))
	out := make([]int64, len(perm))
	for i, p := range perm {
		out[i] = x.shape[p]
	}
	return []aval{{shape: out, dt: x.dt}}
}

func squeezeRule(c *runCtx, n *node, in []*aval) []aval {
	return []aval{{shape: squeezeShape(c, n, in), dt: need(in, 0).dt}}
}

func unsqueezeRule(c *runCtx, n *node, in []*aval) []aval {
	return []aval{{shape: unsqueezeShape(c, n, in), dt: need(in, 0).dt}}
}

func concatRule(c *runCtx, n *node, in []*aval) []aval {
	_, out := concatShape(c, n, in)
	return []aval{{shape: out, dt: present(in)[0].dt}}
}

func padRule(c *runCtx, n *node, in []*aval) []aval {
	_, out := padShape(c, n, in)
	return []aval{{shape: out, dt: need(in, 0).dt}}
}

func dropoutRule(_ *runCtx, n *node, in []*aval) []aval {
	checkDropout(in)
	x := need(in, 0)
	outs := same(x, x.dt)
	if len(n.out) > 1 && n.out[1] != "" {
		outs = append(outs, aval{shape: slices.Clone(x.shape), dt: torch.Bool})
	}
	return outs
}

func constantRule(_ *runCtx, n *node, _ []*aval) []aval {
	_, shape, dt := constantOut(n)
	return []aval{{shape: shape, dt: dt}}
}

// shapeRuleOp is Shape: its output is known whatever the input's values.
func shapeRuleOp(c *runCtx, n *node, in []*aval) []aval {
	s := shapeRange(n, need(in, 0).Shape())
	return []aval{{shape: []int64{int64(len(s))}, dt: torch.Int64, t: c.ints(s, int64(len(s)))}}
}

func gatherRule(c *runCtx, n *node, in []*aval) []aval {
	_, out := gatherShape(c, n, in)
	return []aval{{shape: out, dt: need(in, 0).dt}}
}

func sliceRule(c *runCtx, n *node, in []*aval) []aval {
	_, out := sliceShape(c, n, in)
	return []aval{{shape: out, dt: need(in, 0).dt}}
}

// reduceRule is ReduceMean, ReduceSum, ReduceMax and ReduceMin.
func reduceRule(c *runCtx, n *node, in []*aval) []aval {
	_, out := reduceShape(c, n, in)
	return []aval{{shape: out, dt: need(in, 0).dt}}
}

// resizeRule is Resize and Upsample.
func resizeRule(c *runCtx, n *node, in []*aval) []aval {
	_, out, _ := resizeShape(c, n, in)
	return []aval{{shape: out, dt: need(in, 0).dt}}
}

func castRule(_ *runCtx, n *node, in []*aval) []aval {
	return same(need(in, 0), castType(n))
}

func expandRule(c *runCtx, _ *node, in []*aval) []aval {
	return []aval{{shape: expandShape(c, in), dt: need(in, 0).dt}}
}

func constantOfShapeRule(c *runCtx, n *node, in []*aval) []aval {
	shape, dt := constantOfShapeOut(c, n, in)
	return []aval{{shape: shape, dt: dt}}
}

// shapeRules maps each supported op onto its shape rule. It is never
// written after initialisation.
var shapeRules = map[string]shapeRule{}

func init() {
	for _, op := range []string{"Relu", "Sigmoid", "Tanh", "HardSwish", "LeakyRelu", "HardSigmoid",
		"Identity", "Neg", "Exp", "Log", "Sqrt", "Abs", "Reciprocal", "Floor", "Round", "Sign", "Ceil",
		"Softsign", "Softplus", "Elu", "Selu"} {
		shapeRules[op] = sameRule
	}
	for _, op := range []string{"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
		"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"} {
		shapeRules[op] = broadcastRule
	}
	for op, r := range map[string]shapeRule{
		"Not":                boolRule,
		"BatchNormalization": batchNormRule,
		"Softmax":            softmaxRule,
		"LogSoftmax":         softmaxRule,
		"PRelu":              preluRule,
		"Clip":               clipRule,
		"Where":              whereRule,
		"MatMul":             matMulRule,
		"Gemm":               gemmRule,
		"Conv":               convRule,
		"ConvTranspose":      convTransposeRule,
		"MaxPool":            poolRule,
		"AveragePool":        poolRule,
		"GlobalAveragePool":  globalPoolRule,
		"GlobalMaxPool":      globalPoolRule,
		"Flatten":            flattenRule,
		"Reshape":            reshapeRule,
		"Transpose":          transposeRule,
		"Squeeze":            squeezeRule,
		"Unsqueeze":          unsqueezeRule,
		"Concat":             concatRule,
		"Pad":                padRule,
		"Dropout":            dropoutRule,
		"Constant":           constantRule,
		"Shape":              shapeRuleOp,
		"Gather":             gatherRule,
		"Slice":              sliceRule,
		"ReduceMean":         reduceRule,
		"ReduceSum":          reduceRule,
		"ReduceMax":          reduceRule,
		"ReduceMin":          reduceRule,
		"Resize":             resizeRule,
		"Upsample":           resizeRule,
		"Cast":               castRule,
		"Expand":             expandRule,
		"ConstantOfShape":    constantOfShapeRule,
	} {
		shapeRules[op] = r
	}
}
