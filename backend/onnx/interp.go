package onnx

import (
	"context"
	"fmt"
	"slices"

	"github.com/conferral/conferral/backend/torch"
)

// maxElems bounds the size of a tensor an op computes from attributes or
// input values (Resize scales, Pad widths, Reshape targets, broadcasts,
// convolution padding), so a hostile file cannot ask libtorch for
// terabytes: 2^28 elements (1 GiB of float32) per example of the batch.
const maxElems = 1 << 28

// maxAxis bounds one axis of a tensor whose indices an op lists in Go
// (Resize, reflect and edge Pad).
const maxAxis = 1 << 24

// maxRank bounds a tensor's dimensions, as the binding does.
const maxRank = 16

// opFunc runs one node on its inputs (nil for an absent optional input)
// and returns its outputs. It reports bad input by panicking with an
// *opError or a *torch.Error; runCtx.call turns both into errors.
type opFunc func(c *runCtx, n *node, in []*torch.Tensor) []*torch.Tensor

// opError is a node's complaint about its inputs or attributes.
type opError struct{ msg string }

func (e *opError) Error() string { return e.msg }

// fail aborts the current node with a message.
func fail(format string, args ...any) {
	panic(&opError{fmt.Sprintf(format, args...)})
}

// nodeError turns what node n panicked with (an *opError or a
// *torch.Error) into an error that names the node; anything else panics on.
func nodeError(n *node, r any) error {
	var msg string
	switch e := r.(type) {
	case *opError:
		msg = e.msg
	case *torch.Error:
		msg = e.Error()
	default:
		panic(r)
	}
	return fmt.Errorf("onnx: %v: %s", n, msg)
}

// checkOutputs fails when n names an output past the got that its op
// makes.
func checkOutputs(n *node, got int) {
	for i := got; i < len(n.out); i++ {
		if n.out[i] != "" {
			fail("output %d (%q) is not supported", i, n.out[i])
		}
	}
}

// runCtx is what ops need besides their inputs.
type runCtx struct {
	opset int64
	dev   torch.Device
	s     *torch.Scope // owns helper tensors made during the run
	batch int64        // the first input's first dimension: scales limit
}

// call runs node n reading its inputs from vals.
func (c *runCtx) call(n *node, vals map[string]*torch.Tensor) (outs []*torch.Tensor, err error) {
	in := make([]*torch.Tensor, len(n.in))
	for i, name := range n.in {
		if name == "" {
			continue
		}
		t, ok := vals[name]
		if !ok {
			return nil, fmt.Errorf("onnx: %v: input %q has no value", n, name)
		}
		in[i] = t
	}
	defer func() {
		if r := recover(); r != nil {
			outs, err = nil, nodeError(n, r)
		}
	}()
	outs = n.fn(c, n, in)
	for _, t := range outs {
		if t != nil && t.Dim() > maxRank { // Dim panics past libtorch's own limit
			fail("the result has %d dimensions, more than %d", t.Dim(), maxRank)
		}
	}
	checkOutputs(n, len(outs))
	return outs, nil
}

// run evaluates the graph on the given inputs (in the order of the graph's
// inputs) and returns the named values. Results join the scope of the
// first input (the caller owns them when it has none); every other tensor
// made during the run is freed before run returns.
func (g *graph) run(ctx context.Context, dev torch.Device, inputs []*torch.Tensor, want []string) (res []*torch.Tensor, err error) {
	if len(inputs) != len(g.inputs) {
		return nil, fmt.Errorf("onnx: the graph takes %d inputs, got %d", len(g.inputs), len(inputs))
	}
	c := &runCtx{opset: g.opset, dev: dev, s: torch.NewScope(), batch: 1}
	defer c.s.Close()
	vals := make(map[string]*torch.Tensor, len(g.consts)+len(g.nodes)+len(inputs))
	protect := map[*torch.Tensor]bool{} // never freed by the run
	for i, in := range g.inputs {
		if inputs[i] == nil {
			return nil, fmt.Errorf("onnx: input %q is nil", in.name)
		}
	}
	// Views of the constants and of unscoped inputs live in c.s, so that
	// every tensor an op makes joins a scope and nothing waits for a
	// finalizer; autograd sees through the views to the inputs.
	err = torch.Catch(func() {
		for _, k := range g.used {
			v := c.s.Add(g.consts[k].Detach())
			vals[k] = v
			protect[v] = true
		}
		if len(inputs) > 0 {
			if s := inputs[0].Shape(); len(s) > 0 {
				c.batch = s[0]
			}
		}
		for i, in := range g.inputs {
			v := inputs[i]
			if v.Scope() == nil {
				v = c.s.Add(v.Reshape(v.Shape()...))
			}
			vals[in.name] = v
			protect[v] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	live := map[*torch.Tensor]int{} // names holding each produced tensor
	var made []*torch.Tensor        // every produced tensor, freed on error
	defer func() {
		if err != nil {
			for _, t := range made {
				if live[t] > 0 {
					t.Free()
					live[t] = 0
				}
			}
		}
	}()
	for i, n := range g.nodes {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("onnx: %w", err)
		}
		outs, err := c.call(n, vals)
		if err != nil {
			return nil, err
		}
		for j, o := range n.out {
			if o == "" || j >= len(outs) || outs[j] == nil {
				continue
			}
			t := outs[j]
			vals[o] = t
			if !protect[t] {
				if live[t] == 0 {
					made = append(made, t)
				}
				live[t]++
			}
		}
		for _, name := range g.lastUse[i] {
			if slices.Contains(want, name) {
				continue
			}
			t := vals[name]
			delete(vals, name)
			if t == nil || protect[t] {
				continue
			}
			if live[t]--; live[t] == 0 {
				t.Free()
			}
		}
	}
	var home *torch.Scope
	if len(inputs) > 0 {
		home = inputs[0].Scope()
	}
	res = make([]*torch.Tensor, len(want))
	for _, name := range want {
		if _, ok := vals[name]; !ok {
			return nil, fmt.Errorf("onnx: value %q was not computed", name)
		}
	}
	err = torch.Catch(func() {
		for i, name := range want {
			t := vals[name]
			if protect[t] || seen(res[:i], t) {
				t = t.Reshape(t.Shape()...) // a handle of its own
			}
			if home != nil {
				home.Add(t)
			} else {
				torch.Keep(t)
			}
			res[i] = t
			live[t] = 0
		}
	})
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	// Free what is still alive and not returned.
	for _, t := range made {
		if live[t] > 0 && !seen(res, t) {
			t.Free()
			live[t] = 0
		}
	}
	return res, nil
}

func seen(ts []*torch.Tensor, t *torch.Tensor) bool {
	for _, u := range ts {
		if u == t {
			return true
		}
	}
	return false
}
