package nn

// Recording. Model.Trace runs a model's forward pass once, in evaluation
// mode, on a batch of one blank image, with a Trace attached to its
// context: every layer computes as usual and also appends an Op saying
// what it did, with its operands (earlier ops' outputs or the model's
// variables) and its hyper-parameters. This is how PyTorch's and GoMLX's
// tracing exporters work, and it is why an architecture is written once,
// in this package: backend/onnx turns a Trace into a graph without knowing
// any architecture.
//
// The zoo's architectures must therefore compute only through this
// package's layer functions (Conv2d, Dense, BatchNorm, Relu, Add, MaxPool,
// ...), never through torch's tensor methods directly: a value computed
// outside the layers is not in the trace, and an op that takes it as an
// operand makes Trace fail, naming the layer. (An in-place torch op on an
// activation would go unseen; the zoo has none.) When nothing records,
// each layer pays one nil check of a pointer field.

import (
	"fmt"
	"strings"

	"github.com/conferral/conferral/backend/torch"
)

// OpKind is a recorded layer operation.
type OpKind string

// Recorded operations, with their operands (Op.Inputs) and the fields of
// Op they use. Shapes are NCHW; elementwise ops broadcast.
const (
	OpConv2d        OpKind = "conv2d"          // x, weight[, bias]; Kernel, Stride, Padding (each side), Groups; dilation 1
	OpLinear        OpKind = "linear"          // x, weight[, bias]: x·Wᵀ + b
	OpBatchNorm     OpKind = "batch_norm"      // x, scale, shift, running mean, running variance; Eps, Momentum (PyTorch's); inference form
	OpRelu          OpKind = "relu"            // x
	OpRelu6         OpKind = "relu6"           // x: min(max(x, 0), 6)
	OpMaxPool       OpKind = "max_pool"        // x; Kernel, Stride, Padding, CeilMode
	OpAvgPool       OpKind = "avg_pool"        // x; Kernel, Stride, Padding, CeilMode; padding counts in the average
	OpGlobalAvgPool OpKind = "global_avg_pool" // x: (N, C, H, W) → (N, C, 1, 1)
	OpFlatten       OpKind = "flatten"         // x: (N, …) → (N, rest)
	OpAdd           OpKind = "add"             // x, y
	OpSub           OpKind = "sub"             // x, y
	OpMul           OpKind = "mul"             // x, y
	OpDiv           OpKind = "div"             // x, y
	OpConcat        OpKind = "concat"          // x₁, x₂, …; Dim
)

// Op is one recorded layer call; its output is value i+1 of the trace for
// Ops[i].
type Op struct {
	Kind OpKind
	// Name is the scope of the context the layer ran in ("layer1.0.conv1"),
	// for messages.
	Name   string
	Inputs []Operand

	Kernel, Stride, Padding, Groups int64
	CeilMode                        bool
	Dim                             int64
	Eps, Momentum                   float64
}

// Operand is an op's input: a model variable (Var), or else the value
// Value — 0 for the model's input (after nothing: normalisation is
// recorded too), i+1 for the output of Ops[i].
type Operand struct {
	Value int
	Var   *Variable
}

// Trace is the layer graph of one forward pass.
type Trace struct {
	Ops []Op
	// Output is the value the forward pass returned.
	Output int
	// Input is the shape of the traced batch (N = 1).
	Input []int64

	values map[*torch.Tensor]int
	vars   map[*torch.Tensor]*Variable
	err    error
}

// record appends op with the given operands (nil ones, an absent bias, are
// skipped) and out as its output. The first failure stops the recording.
func (t *Trace) record(c *Context, out *torch.Tensor, op Op, in ...*torch.Tensor) {
	if t.err != nil {
		return
	}
	// A copy: keeping c.prefix itself would make every context's name
	// escape to the heap in ordinary forward passes too.
	op.Name = strings.Clone(c.prefix)
	for _, x := range in {
		if x == nil {
			continue
		}
		if id, ok := t.values[x]; ok {
			op.Inputs = append(op.Inputs, Operand{Value: id})
			continue
		}
		if v, ok := t.vars[x]; ok {
			op.Inputs = append(op.Inputs, Operand{Var: v})
			continue
		}
		t.err = fmt.Errorf("layer %q (%s, op %d): operand %d was computed outside nn's layer functions, so the trace does not have it; compute it with them (nn.Relu, nn.Add, nn.Flatten, …)",
			op.Name, op.Kind, len(t.Ops)+1, len(op.Inputs)+1)
		return
	}
	t.Ops = append(t.Ops, op)
	t.values[out] = len(t.Ops)
}

// Trace records m's forward pass in evaluation mode on one blank image.
// The model itself is untouched (its mode included) and may serve other
// goroutines meanwhile.
func (m *Model) Trace() (tr *Trace, err error) {
	tr = &Trace{
		Input:  []int64{1, m.Spec.C, m.Spec.H, m.Spec.W},
		values: map[*torch.Tensor]int{},
		vars:   map[*torch.Tensor]*Variable{},
	}
	for _, v := range m.Variables() {
		tr.vars[v.T] = v
	}
	// A view of the model's variables that records and never trains.
	s := *m.ctx.s
	s.training, s.trace = false, tr
	c := &Context{s: &s}
	err = torch.Catch(func() {
		torch.NoGrad(func() {
			torch.Scoped(func(sc *torch.Scope) {
				x := torch.Zeros(sc, m.Device(), tr.Input...)
				tr.values[x] = 0
				y := m.forward(c, x)
				if tr.err != nil {
					return
				}
				id, ok := tr.values[y]
				if !ok {
					tr.err = fmt.Errorf("the output was computed outside nn's layer functions, so the trace does not have it")
				}
				tr.Output = id
			})
		})
	})
	if err == nil {
		err = tr.err
	}
	if err != nil {
		return nil, fmt.Errorf("tracing %s: %w", m.Spec.Arch, err)
	}
	tr.values, tr.vars = nil, nil
	return tr, nil
}
