package onnx

import (
	"fmt"
	"slices"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// Opsets the interpreter implements for the default domain.
const (
	MinOpset = 1
	MaxOpset = 17
)

// node is one ONNX node ready to run.
type node struct {
	name, op string
	index    int // position in the file
	in, out  []string
	attrs    map[string]*pb.AttributeProto
	fn       opFunc
}

// String names the node for error messages: by its name, or by its
// position in the file and its first output when it has no name.
func (n *node) String() string {
	if n.name != "" {
		return fmt.Sprintf("node %q (%s)", n.name, n.op)
	}
	if len(n.out) > 0 && n.out[0] != "" {
		return fmt.Sprintf("node #%d → %q (%s)", n.index, n.out[0], n.op)
	}
	return fmt.Sprintf("node #%d (%s)", n.index, n.op)
}

// valueInfo is a graph input or output as declared in the file.
type valueInfo struct {
	name  string
	dtype int32
	shape []int64 // -1 for a dimension that is not fixed; nil if unknown
}

// graph is a checked, ordered ONNX graph whose constants live in tensors
// owned by the graph.
type graph struct {
	opset   int64
	nodes   []*node
	consts  map[string]*torch.Tensor
	inputs  []valueInfo
	outputs []valueInfo
	// lastUse[i] lists the values whose last reader is nodes[i].
	lastUse [][]string
	// used lists the constants that nodes read at run time, and usedVals
	// their shapes and types (content nil), described once for the
	// estimate.
	used     []string
	usedVals []aval
}

// opsetOf returns the default domain's opset version.
func opsetOf(mp *pb.ModelProto) (int64, error) {
	var v int64 = -1
	for _, o := range mp.OpsetImport {
		if o.Domain == "" || o.Domain == "ai.onnx" {
			v = o.Version
		}
	}
	if v < 0 {
		return 0, fmt.Errorf("onnx: the model imports no opset of the default domain")
	}
	if v < MinOpset || v > MaxOpset {
		return 0, fmt.Errorf("onnx: opset %d is not supported (%d to %d are)", v, MinOpset, MaxOpset)
	}
	return v, nil
}

func valueInfoOf(v *pb.ValueInfoProto) (valueInfo, error) {
	vi := valueInfo{name: v.Name}
	if v.GetType() == nil {
		return vi, nil // untyped: checked when it arrives
	}
	tt := v.GetType().GetTensorType()
	if tt == nil {
		return vi, fmt.Errorf("onnx: value %q: only tensor types are supported", v.Name)
	}
	vi.dtype = tt.ElemType
	if _, err := dtypeOf(vi.dtype); vi.dtype != 0 && err != nil {
		return vi, fmt.Errorf("onnx: value %q: %w", v.Name, err)
	}
	if tt.Shape == nil {
		return vi, nil
	}
	vi.shape = make([]int64, len(tt.Shape.Dim))
	for i, d := range tt.Shape.Dim {
		vi.shape[i] = -1
		if dv, ok := d.Value.(*pb.TensorShapeProto_Dimension_DimValue); ok && dv.DimValue > 0 {
			vi.shape[i] = dv.DimValue
		}
	}
	return vi, nil
}

// buildGraph checks gp and converts it; maxMem bounds the bytes of the
// constants that folding makes (as Options.MaxMemory, see budgetOf). On error every
// tensor made so far is freed.
func buildGraph(gp *pb.GraphProto, opset, maxMem int64) (_ *graph, err error) {
	g := &graph{opset: opset, consts: map[string]*torch.Tensor{}}
	defer func() {
		if err != nil {
			g.free()
		}
	}()
	if len(gp.SparseInitializer) > 0 {
		return nil, fmt.Errorf("onnx: sparse initializers are not supported")
	}
	for _, tp := range gp.Initializer {
		if tp.Name == "" {
			return nil, fmt.Errorf("onnx: an initializer has no name")
		}
		if _, dup := g.consts[tp.Name]; dup {
			return nil, fmt.Errorf("onnx: initializer %q is defined twice", tp.Name)
		}
		t, err := tensorFromProto(tp)
		if err != nil {
			return nil, fmt.Errorf("onnx: initializer: %w", err)
		}
		g.consts[tp.Name] = t
	}
	defined := map[string]bool{"": true}
	for name := range g.consts {
		defined[name] = true
	}
	for _, v := range gp.Input {
		if _, ok := g.consts[v.Name]; ok {
			continue // older exporters list initializers as inputs too
		}
		if v.Name == "" || defined[v.Name] {
			return nil, fmt.Errorf("onnx: graph input %q is unnamed or defined twice", v.Name)
		}
		defined[v.Name] = true
		vi, err := valueInfoOf(v)
		if err != nil {
			return nil, err
		}
		g.inputs = append(g.inputs, vi)
	}
	if len(gp.Output) == 0 {
		return nil, fmt.Errorf("onnx: the graph has no output")
	}
	for _, v := range gp.Output {
		vi, err := valueInfoOf(v)
		if err != nil {
			return nil, err
		}
		g.outputs = append(g.outputs, vi)
	}

	// Convert the nodes, then order them so that each runs after the nodes
	// that produce its inputs (files should already be in that order).
	pending := make([]*node, 0, len(gp.Node))
	producer := map[string]bool{}
	for i, np := range gp.Node {
		n := &node{name: np.Name, op: np.OpType, index: i, in: np.Input, out: np.Output, attrs: map[string]*pb.AttributeProto{}}
		if np.Domain != "" && np.Domain != "ai.onnx" {
			return nil, fmt.Errorf("onnx: %v: domain %q is not supported", n, np.Domain)
		}
		fn, ok := ops[n.op]
		if !ok {
			return nil, fmt.Errorf("onnx: %v: op %s is not supported", n, n.op)
		}
		n.fn = fn
		for _, a := range np.Attribute {
			if a.RefAttrName != "" {
				return nil, fmt.Errorf("onnx: %v: attribute references are not supported", n)
			}
			n.attrs[a.Name] = a
		}
		if len(n.out) == 0 {
			return nil, fmt.Errorf("onnx: %v has no output", n)
		}
		for _, o := range n.out {
			if o == "" {
				continue
			}
			if defined[o] || producer[o] {
				return nil, fmt.Errorf("onnx: %v: value %q is defined twice", n, o)
			}
			producer[o] = true
		}
		pending = append(pending, n)
	}
	for len(pending) > 0 {
		rest := pending[:0:0]
		for _, n := range pending {
			ready := true
			for _, in := range n.in {
				if !defined[in] {
					ready = false
					break
				}
			}
			if !ready {
				rest = append(rest, n)
				continue
			}
			g.nodes = append(g.nodes, n)
			for _, o := range n.out {
				defined[o] = true
			}
		}
		if len(rest) == len(pending) {
			n := rest[0]
			for _, in := range n.in {
				if !defined[in] && !producer[in] {
					return nil, fmt.Errorf("onnx: %v: input %q is not defined", n, in)
				}
			}
			return nil, fmt.Errorf("onnx: %v: the graph has a cycle", n)
		}
		pending = rest
	}
	for _, o := range g.outputs {
		if !defined[o.name] || o.name == "" {
			return nil, fmt.Errorf("onnx: graph output %q is not computed", o.name)
		}
	}
	if maxMem, err = budgetOf(maxMem); err != nil {
		return nil, err
	}
	if err := g.fold(maxMem); err != nil {
		return nil, err
	}
	if err := torch.Catch(g.plan); err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	return g, nil
}

// fold runs, once at load, every node whose inputs are all constants
// (Constant nodes, shape arithmetic on weights) and keeps its outputs as
// constants. The shapes of what it makes are inferred before each node
// runs, and their bytes must stay within maxMem.
func (g *graph) fold(maxMem int64) error {
	kept := g.nodes[:0:0]
	var folded int64
	for _, n := range g.nodes {
		constant := true
		for _, in := range n.in {
			if _, ok := g.consts[in]; in != "" && !ok {
				constant = false
				break
			}
		}
		if !constant || n.op == "Dropout" && len(n.out) > 1 {
			kept = append(kept, n)
			continue
		}
		if err := g.checkFold(n, &folded, maxMem); err != nil {
			return err
		}
		var outs []*torch.Tensor
		var err error
		torch.NoGrad(func() {
			c := &runCtx{opset: g.opset, dev: torch.CPU, s: torch.NewScope(), batch: 1}
			defer c.s.Close()
			vals := map[string]*torch.Tensor{}
			for _, in := range n.in {
				if t, ok := g.consts[in]; ok {
					vals[in] = c.s.Add(t.Detach())
				}
			}
			outs, err = c.call(n, vals)
			for _, t := range outs {
				if t != nil {
					torch.Keep(t)
				}
			}
		})
		if err != nil {
			return err
		}
		for i, o := range n.out {
			if o == "" || i >= len(outs) || outs[i] == nil {
				continue
			}
			g.consts[o] = outs[i]
		}
	}
	g.nodes = kept
	return nil
}

// checkFold infers the outputs of constant node n and adds their bytes to
// folded, failing past maxMem.
func (g *graph) checkFold(n *node, folded *int64, maxMem int64) error {
	c := &runCtx{opset: g.opset, dev: torch.CPU, s: torch.NewScope(), batch: 1}
	defer c.s.Close()
	in := make([]*aval, len(n.in))
	err := torch.Catch(func() {
		for i, name := range n.in {
			if t, ok := g.consts[name]; ok && name != "" {
				in[i] = &aval{shape: t.Shape(), dt: t.DType(), t: t}
			}
		}
	})
	if err != nil {
		return fmt.Errorf("onnx: %v: %w", n, err)
	}
	outs, err := c.infer(n, in)
	if err != nil {
		return err
	}
	for _, o := range outs {
		*folded = satAdd(*folded, o.bytes())
	}
	return checkBudget(*folded, maxMem, fmt.Sprintf("%v: the constants folded at load need", n), "")
}

// plan records where each intermediate value is read for the last time, so
// that a run can free it right there, and which constants the nodes read.
func (g *graph) plan() {
	last := map[string]int{}
	for i, n := range g.nodes {
		for _, in := range n.in {
			last[in] = i
		}
	}
	for _, o := range g.outputs {
		delete(last, o.name)
	}
	for _, in := range g.inputs {
		delete(last, in.name)
	}
	g.used = nil
	for name := range last {
		if _, ok := g.consts[name]; ok {
			g.used = append(g.used, name)
		}
	}
	for _, o := range g.outputs {
		if _, ok := g.consts[o.name]; ok && !slices.Contains(g.used, o.name) {
			g.used = append(g.used, o.name)
		}
	}
	g.usedVals = make([]aval, len(g.used))
	for i, name := range g.used {
		t := g.consts[name]
		g.usedVals[i] = aval{shape: t.Shape(), dt: t.DType()}
	}
	g.lastUse = make([][]string, len(g.nodes))
	for name, i := range last {
		if _, ok := g.consts[name]; ok || name == "" {
			continue
		}
		g.lastUse[i] = append(g.lastUse[i], name)
	}
}

// free releases the graph's constants.
func (g *graph) free() {
	for name, t := range g.consts {
		t.Free()
		delete(g.consts, name)
	}
}

// to moves the constants to device d.
func (g *graph) to(d torch.Device) error {
	return torch.Catch(func() {
		for name, t := range g.consts {
			if t.Device() == d {
				continue
			}
			u := t.ToDevice(d)
			torch.Keep(u)
			t.Free()
			g.consts[name] = u
		}
	})
}
