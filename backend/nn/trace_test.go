package nn

import (
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// TestTraceZoo traces every zoo architecture and checks the trace's shape:
// the normalisation comes first, every operand is the input, an earlier
// op's output or a variable, every variable of the model is read by some
// recorded op (a layer that read one without recording would leave it
// out), and the output is a recorded value.
func TestTraceZoo(t *testing.T) {
	for _, arch := range Architectures() {
		t.Run(arch, func(t *testing.T) {
			m, err := New(spec(arch, 1, 28), 1, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			tr, err := m.Trace()
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Ops) < 3 || tr.Ops[0].Kind != OpSub || tr.Ops[1].Kind != OpDiv || tr.Ops[0].Name != "normalize" {
				t.Fatalf("trace starts %v, want the normalisation's sub and div", tr.Ops[:min(2, len(tr.Ops))])
			}
			read := map[string]bool{}
			for i, op := range tr.Ops {
				if len(op.Inputs) == 0 {
					t.Errorf("op %d (%s %s) has no operands", i, op.Kind, op.Name)
				}
				for _, o := range op.Inputs {
					if o.Var != nil {
						read[o.Var.Name] = true
					} else if o.Value < 0 || o.Value > i {
						t.Errorf("op %d (%s %s) reads value %d, not yet computed", i, op.Kind, op.Name, o.Value)
					}
				}
			}
			for _, v := range m.Variables() {
				if !read[v.Name] {
					t.Errorf("no recorded op reads variable %s", v.Name)
				}
			}
			if tr.Output != len(tr.Ops) || tr.Ops[len(tr.Ops)-1].Kind != OpLinear {
				t.Errorf("output is value %d of %d ops, last %s; want the last op, a linear layer", tr.Output, len(tr.Ops), tr.Ops[len(tr.Ops)-1].Kind)
			}
			if !slices.Equal(tr.Input, []int64{1, 1, 28, 28}) {
				t.Errorf("traced input %v", tr.Input)
			}
		})
	}
}

// TestTraceLeavesModelAlone: tracing a model in training mode records the
// evaluation graph (no dropout, running statistics) and changes neither
// the mode nor batch norm's running statistics, which a training forward
// pass would update.
func TestTraceLeavesModelAlone(t *testing.T) {
	m, err := New(spec("cnn", 1, 28), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.SetTraining(true)
	v, _ := m.Context().Variable("block1.bn.running_mean")
	before := v.T.Float32s()
	tr, err := m.Trace()
	if err != nil {
		t.Fatal(err)
	}
	if !m.Training() {
		t.Error("Trace switched the model to evaluation mode")
	}
	if after := v.T.Float32s(); !slices.Equal(before, after) {
		t.Error("Trace updated batch norm's running mean")
	}
	kinds := map[OpKind]int{}
	for _, op := range tr.Ops {
		kinds[op.Kind]++
	}
	if kinds[OpConv2d] != 3 || kinds[OpBatchNorm] != 3 || kinds[OpMaxPool] != 3 || kinds[OpLinear] != 2 || kinds[OpRelu] != 4 || kinds[OpFlatten] != 1 {
		t.Errorf("cnn's trace has %v", kinds)
	}
}

// TestTraceNamesUnrecordedValues: a value computed with torch's tensor
// methods directly is not in the trace, and Trace says which layer met it.
func TestTraceNamesUnrecordedValues(t *testing.T) {
	arch := func(c *Context, x *torch.Tensor, classes int64) *torch.Tensor {
		h := Conv2d(c.In("conv"), x, 4, 3, ConvOpts{}).Relu() // not nn.Relu
		return Dense(c.In("fc"), Flatten(c.In("flat"), h), classes, true)
	}
	m, err := NewArch(spec("custom", 1, 8), arch, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	_, err = m.Trace()
	if err == nil || !strings.Contains(err.Error(), `layer "flat" (flatten`) || !strings.Contains(err.Error(), "outside nn's layer functions") {
		t.Fatalf("error %v, want one naming the flatten layer and the cause", err)
	}
	// The model itself works, and so does a clone of it (NewArch's
	// architecture travels with the model, not by name).
	c, err := m.Clone(torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	c.Free()
	err = torch.Catch(func() {
		torch.NoGrad(func() {
			torch.Scoped(func(s *torch.Scope) { m.Forward(torch.Zeros(s, torch.CPU, 2, 1, 8, 8)) })
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
