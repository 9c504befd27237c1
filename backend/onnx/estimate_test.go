package onnx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/internal/onnxtest"
)

// expandBomb is the attack of issue 15 for (N,3,32,32) images and 10
// classes; expandBombPeak and expandBombTotal are its estimate by hand.
func expandBomb(_ testing.TB, rows int64) []byte { return onnxtest.ExpandBomb(3, 32, 32, rows, 10) }

func expandBombPeak(n, rows int64) int64 { return onnxtest.PeakBytes(n, 3, 32, 32, rows) }

func expandBombTotal(n, rows int64) int64 { return onnxtest.TotalBytes(n, 3, 32, 32, rows, 10) }

func TestEstimateHandComputed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		model       []byte
		batch       int
		peak, total int64
	}{
		// Flatten (12) then Gemm (12): the input (12), f and logits are
		// alive at Gemm.
		{"linear", linearModel(t, 13, false, nil), 1, 4 * (12 + 12 + 12), 4 * (12 + 12 + 12)},
		{"linear batch 5", linearModel(t, 13, false, nil), 5, 4 * 5 * 36, 4 * 5 * 36},
		// Softmax and Identity run after the logits (which the pass
		// returns, so they stay): input 12 + logits 12 + sm 12 + p 12
		// after f died at Gemm.
		{"linear softmax", linearModel(t, 13, true, nil), 2, 4 * 2 * (12 + 12 + 12 + 12), 4 * 2 * 60},
		// The bomb (onnxtest.PeakBytes and TotalBytes say how): at Add the
		// input (3072 floats), Expand's and Add's outputs (rows·3072 each).
		{"expand bomb 256 rows", expandBomb(t, 256), 1, 6_303_744, 6_328_360},
		{"expand bomb 256 rows batch 3", expandBomb(t, 256), 3, 18_911_232, 18_985_080},
		{"expand bomb 65536 rows", expandBomb(t, 65536), 1, 1_610_625_024, 1_610_649_640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.peak > DefaultMaxMemory {
				// Too big to load (the load runs one image); estimate the
				// graph itself.
				est, err := estimateBytes(t, tc.model, tc.batch)
				if err != nil {
					t.Fatal(err)
				}
				if est.Peak != tc.peak || est.Total != tc.total {
					t.Fatalf("estimate %+v, want peak %d total %d", est, tc.peak, tc.total)
				}
				return
			}
			m, err := Read(bytes.NewReader(tc.model), int64(len(tc.model)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			est, err := m.Estimate(tc.batch)
			if err != nil {
				t.Fatal(err)
			}
			if est.Peak != tc.peak || est.Total != tc.total || est.Batch != int64(tc.batch) {
				t.Fatalf("estimate %+v, want batch %d peak %d total %d", est, tc.batch, tc.peak, tc.total)
			}
		})
	}
}

// estimateBytes estimates a graph without loading it as a Model (which
// would run it once).
func estimateBytes(t *testing.T, b []byte, batch int) (MemoryEstimate, error) {
	t.Helper()
	g := graphOf(t, b)
	defer g.free()
	in := g.inputs[0].shape
	shape := append([]int64{int64(batch)}, in[1:]...)
	est, _, err := g.estimate(torch.CPU, []aval{{shape: shape, dt: torch.Float32}}, []string{g.outputs[0].name})
	return est, err
}

// graphOf reads the graph of a serialised model, of opset 13, with the
// default budget.
func graphOf(t *testing.T, b []byte) *graph {
	t.Helper()
	mp, err := readProto(bytes.NewReader(b), int64(len(b)), 0)
	if err != nil {
		t.Fatal(err)
	}
	g, err := buildGraph(mp.Graph, 13, 0)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestExpandBombRefused loads the attack: its estimate (1.5 GiB
// for one image) is over the default budget, so Read refuses it before
// running it once, and says by how much. A budget the operator sets
// decides: the same graph at 256 rows (6 MiB) loads by default and is
// refused under a 4 MiB budget.
func TestExpandBombRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rows    int64
		budget  int64
		wantErr string
	}{
		{"65536 rows, default budget", 65536, 0,
			"onnx: one image needs about 1.5 GiB of intermediate values by the importer's estimate, over the memory budget of 1.0 GiB"},
		{"256 rows, 4 MiB budget", 256, 4 << 20,
			"onnx: one image needs about 6.0 MiB of intermediate values by the importer's estimate, over the memory budget of 4.0 MiB"},
		{"256 rows, default budget", 256, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := expandBomb(t, tc.rows)
			start := time.Now()
			m, err := Read(bytes.NewReader(b), int64(len(b)), Options{MaxMemory: tc.budget})
			took := time.Since(start)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer m.Free()
				if m.Classes() != 10 {
					t.Fatalf("%d classes, want 10", m.Classes())
				}
				return
			}
			if err == nil {
				m.Free()
				t.Fatal("the bomb was loaded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrOverBudget) {
				t.Fatalf("error %q, want it to contain %q and be ErrOverBudget", err, tc.wantErr)
			}
			// Running the bomb writes 1.5 GiB; the estimate is shape
			// arithmetic.
			if took > 2*time.Second {
				t.Errorf("the refusal took %v", took)
			}
		})
	}
}

// TestEstimateBatchOverBudget runs a model whose one image fits the budget
// but whose batch does not: an inference pass runs in parts that fit and
// answers what one pass would; a pass that records gradients is refused
// with the estimate.
func TestEstimateBatchOverBudget(t *testing.T) {
	b := expandBomb(t, 256)
	per := expandBombPeak(1, 256)
	budget := 3 * per // 3 images fit at once
	m, err := Read(bytes.NewReader(b), int64(len(b)), Options{MaxMemory: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if part, err := m.partSize([]int64{8, 3, 32, 32}); err != nil || part != 3 {
		t.Fatalf("part size %d (%v), want 3", part, err)
	}
	free, err := Read(bytes.NewReader(b), int64(len(b)), Options{MaxMemory: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer free.Free()
	torch.Scoped(func(s *torch.Scope) {
		x := torch.RandN(s, torch.CPU, 8, 3, 32, 32)
		var y, want *torch.Tensor
		var err1, err2 error
		torch.NoGrad(func() {
			y, err1 = m.ForwardContext(context.Background(), x)
			want, err2 = free.ForwardContext(context.Background(), x)
		})
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !slices.Equal(y.Shape(), []int64{8, 10}) {
			t.Fatalf("shape %v, want [8 10]", y.Shape())
		}
		if d := maxAbsDiff(y.Float32s(), want.Float32s()); d > 1e-5 {
			t.Fatalf("parts differ from one pass by %g", d)
		}
		xg := x.Detach().SetRequiresGrad(true)
		_, err := m.ForwardContext(context.Background(), xg)
		want8 := fmt.Sprintf("a batch of 8 images needs about %s of intermediate values kept for gradients", FormatBytes(expandBombTotal(8, 256)))
		if err == nil || !strings.Contains(err.Error(), want8) || !strings.Contains(err.Error(), FormatBytes(budget)) {
			t.Fatalf("error %v, want %q and the budget", err, want8)
		}
	})
}

// TestEstimateRealModels loads every model PyTorch exported under the
// default budget, checks that the estimate of a batch of 4 names the shape
// of every value a real run makes, and logs the estimates.
func TestEstimateRealModels(t *testing.T) {
	b, err := os.ReadFile("testdata/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var man manifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	for _, mm := range man.Models {
		t.Run(mm.File, func(t *testing.T) {
			var o Options
			if !mm.Metadata {
				o = Options{Layout: mm.Layout, Scale: mm.Scale, Mean: mm.Mean, Std: mm.Std}
			}
			m, err := Open(filepath.Join("testdata", mm.File), o)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			est, err := m.Estimate(4)
			if err != nil {
				t.Fatal(err)
			}
			c, h, w := m.InputShape()
			shape := m.graphShape(4, int64(c), int64(h), int64(w))
			in := 4 * prod(shape)
			if est.Peak < in || est.Total < est.Peak || est.Peak > 256<<20 {
				t.Fatalf("estimate %+v for an input of %d bytes", est, in)
			}
			t.Logf("batch 4: peak %s, total %s", FormatBytes(est.Peak), FormatBytes(est.Total))
			_, inferred, err := m.g.estimate(torch.CPU, []aval{{shape: shape, dt: torch.Float32}}, []string{m.output})
			if err != nil {
				t.Fatal(err)
			}
			for name, k := range m.g.consts {
				if k.Scope() != nil {
					t.Fatalf("the estimate left constant %q in a scope", name)
				}
			}
			real := runShapes(t, m.g, shape)
			if len(real) == 0 {
				t.Fatal("the run made no values")
			}
			for name, v := range real {
				got := inferred[name]
				if got == nil || !slices.Equal(got.shape, v.shape) || got.dt != v.dt {
					t.Errorf("value %q: estimated %v, the run made %v %v", name, got, v.shape, v.dt)
				}
			}
		})
	}
}

// runShapes runs g's nodes in order on zeros of the given shape, keeping
// every value, and returns the shape and type of each value a node made.
func runShapes(t *testing.T, g *graph, shape []int64) map[string]aval {
	t.Helper()
	res := map[string]aval{}
	c := &runCtx{opset: g.opset, dev: torch.CPU, s: torch.NewScope(), batch: shape[0]}
	defer c.s.Close()
	torch.NoGrad(func() {
		vals := map[string]*torch.Tensor{g.inputs[0].name: torch.Zeros(c.s, torch.CPU, shape...)}
		for name, t := range g.consts {
			vals[name] = c.s.Add(t.Detach())
		}
		for _, n := range g.nodes {
			outs, err := c.call(n, vals)
			if err != nil {
				t.Fatal(err)
			}
			for j, o := range n.out {
				if o != "" && j < len(outs) && outs[j] != nil {
					vals[o] = outs[j]
					res[o] = aval{shape: outs[j].Shape(), dt: outs[j].DType()}
				}
			}
		}
	})
	return res
}

// TestShapeRulesConformance holds every op's shape rule to ONNX's node
// tests: for each test the interpreter passes, the rule infers the shape
// and type of every expected output from the inputs (their content given
// where small, as the estimate knows shape arithmetic).
func TestShapeRulesConformance(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(nodeTests, "test_*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no ONNX node tests in %s (apt install libonnx-testdata): %v", nodeTests, err)
	}
	checked := map[string]int{}
	for _, dir := range dirs {
		op, res, _ := runNodeTest(dir)
		if res != passed {
			continue
		}
		if err := checkRule(dir); err != nil {
			t.Errorf("%s: %v", filepath.Base(dir), err)
			continue
		}
		checked[op]++
	}
	for _, op := range SupportedOps() {
		if checked[op] == 0 {
			t.Errorf("op %s: no node test checked its shape rule", op)
		}
	}
	t.Logf("shape rules checked against %d node tests", len(dirs))
}

// checkRule infers the outputs of the one node in dir's model and compares
// them with the first data set's expected outputs.
func checkRule(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		return err
	}
	mp, err := readProto(bytes.NewReader(b), int64(len(b)), 0)
	if err != nil {
		return err
	}
	opset, err := opsetOf(mp)
	if err != nil {
		return err
	}
	g, err := buildGraph(mp.Graph, opset, 0)
	if err != nil {
		return err
	}
	defer g.free()
	// The node as the file has it: a node of constants only was folded.
	np := mp.Graph.Node[0]
	n := &node{name: np.Name, op: np.OpType, in: np.Input, out: np.Output, attrs: map[string]*pb.AttributeProto{}}
	for _, a := range np.Attribute {
		n.attrs[a.Name] = a
	}
	set := filepath.Join(dir, "test_data_set_0")
	s := torch.NewScope()
	defer s.Close()
	byName := map[string]*aval{}
	for name, t := range g.consts {
		v := aval{shape: t.Shape(), dt: t.DType(), t: t}
		byName[name] = &v
	}
	for i, in := range g.inputs {
		t, err := readTensorFile(filepath.Join(set, fmt.Sprintf("input_%d.pb", i)))
		if err != nil {
			return err
		}
		v := avalOf(s.Add(t))
		byName[in.name] = &v
	}
	in := make([]*aval, len(n.in))
	for i, name := range n.in {
		if name != "" {
			in[i] = byName[name]
		}
	}
	c := &runCtx{opset: g.opset, dev: torch.CPU, s: s, batch: 1}
	if v := arg(in, 0); v != nil && len(v.shape) > 0 {
		c.batch = max(v.shape[0], 1)
	}
	outs, err := c.infer(n, in)
	if err != nil {
		return err
	}
	for i, o := range g.outputs {
		exp, err := readTensorFile(filepath.Join(set, fmt.Sprintf("output_%d.pb", i)))
		if err != nil {
			return err
		}
		s.Add(exp)
		j := slices.Index(n.out, o.name)
		if j < 0 || j >= len(outs) {
			return fmt.Errorf("output %q not inferred", o.name)
		}
		if !slices.Equal(outs[j].shape, exp.Shape()) || outs[j].dt != exp.DType() {
			return fmt.Errorf("%s output %d: inferred %v %v, want %v %v", n.op, i, outs[j].shape, outs[j].dt, exp.Shape(), exp.DType())
		}
	}
	return nil
}

// avalOf describes a tensor as the estimate would: its content is kept
// when it is small.
func avalOf(t *torch.Tensor) aval {
	v := aval{shape: t.Shape(), dt: t.DType()}
	if t.Numel() <= maxKnown {
		v.t = t
	}
	return v
}

// TestEveryOpHasShapeRule keeps the estimate complete as ops are added.
func TestEveryOpHasShapeRule(t *testing.T) {
	for _, op := range SupportedOps() {
		if shapeRules[op] == nil {
			t.Errorf("op %s has no shape rule", op)
		}
	}
}

// TestFoldBudget refuses a file whose constants would fold into more than
// the budget (ConstantOfShape of a constant shape), before folding them.
func TestFoldBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		elems   int64
		budget  int64
		wantErr string
	}{
		{"128 Mi floats", 1 << 27, 0, "the constants folded at load need about 512.0 MiB"},
		{"1 Ki floats, 1 KiB budget", 1 << 10, 1 << 10, "the constants folded at load need about 4.0 KiB, over the memory budget of 1.0 KiB"},
		{"1 Ki floats", 1 << 10, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := []*pb.NodeProto{
				nodeOf("big", "ConstantOfShape", []string{"shape"}, []string{"big"}),
				nodeOf("flat", "Flatten", []string{"x"}, []string{"f"}),
				nodeOf("fc", "Gemm", []string{"f", "w", "b"}, []string{"y"}, intAttr("transB", 1)),
			}
			inits := []*pb.TensorProto{intInit("shape", []int64{tc.elems}, 1),
				floatInit("w", make([]float32, 12*12), 12, 12), floatInit("b", make([]float32, 12), 12)}
			model := modelBytes(t, 13, []*pb.ValueInfoProto{vinfo("x", -1, 3, 2, 2)}, []*pb.ValueInfoProto{vinfo("y", -1, 12)},
				nodes, inits, nil)
			// With a budget of its own, the fold's budget is the model's;
			// at 512 MiB the default budget of 1 GiB would allow it, so
			// test that one with a smaller budget.
			budget := tc.budget
			if tc.elems == 1<<27 {
				budget = 256 << 20
			}
			m, err := Read(bytes.NewReader(model), int64(len(model)), Options{MaxMemory: budget})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				m.Free()
				return
			}
			if err == nil {
				m.Free()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {3 << 29, "1.5 GiB"}, {1 << 40, "1.0 TiB"},
	} {
		if got := FormatBytes(tc.n); got != tc.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

// TestEstimateRefusesAsInterpreter holds the estimate to the interpreter's
// checks of attributes and inputs: for each one-node graph on an input of
// shape (1,1,4,4) (or the case's), the estimate and a run fail with the
// same error (or both succeed), and Read refuses the model with it.
func TestEstimateRefusesAsInterpreter(t *testing.T) {
	w := floatInit("w", make([]float32, 2*1*3*3), 2, 1, 3, 3)
	ones := floatInit("ones", []float32{1}, 1)
	for _, tc := range []struct {
		name    string
		node    *pb.NodeProto
		inits   []*pb.TensorProto
		wantErr string  // "": both succeed
		in      []int64 // the input's shape; nil: (1,1,4,4)
	}{
		{"conv", nodeOf("conv", "Conv", []string{"x", "w"}, []string{"y"}, intsAttr("kernel_shape", 3, 3)),
			[]*pb.TensorProto{w}, "", nil},
		{"conv kernel_shape off the weight", nodeOf("conv", "Conv", []string{"x", "w"}, []string{"y"}, intsAttr("kernel_shape", 2, 2)),
			[]*pb.TensorProto{w}, "kernel_shape [2 2] does not match weight shape [2 1 3 3]", nil},
		{"conv kernel_shape of another rank", nodeOf("conv", "Conv", []string{"x", "w"}, []string{"y"}, intsAttr("kernel_shape", 3)),
			[]*pb.TensorProto{w}, "kernel_shape [3] does not match weight shape [2 1 3 3]", nil},
		{"conv transpose kernel_shape off the weight", nodeOf("tconv", "ConvTranspose", []string{"x", "wt"}, []string{"y"}, intsAttr("kernel_shape", 2, 2)),
			[]*pb.TensorProto{floatInit("wt", make([]float32, 1*2*3*3), 1, 2, 3, 3)}, "kernel_shape [2 2] does not match weight shape [1 2 3 3]", nil},
		{"max pool", nodeOf("pool", "MaxPool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 2, 2)), nil, "", nil},
		{"max pool storage_order 1", nodeOf("pool", "MaxPool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 2, 2), intAttr("storage_order", 1)),
			nil, "storage_order 1 is not supported", nil},
		{"max pool indices", nodeOf("pool", "MaxPool", []string{"x"}, []string{"y", "i"}, intsAttr("kernel_shape", 2, 2)),
			nil, `output 1 ("i") is not supported`, nil},
		{"average pool", nodeOf("pool", "AveragePool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 2, 2), intAttr("ceil_mode", 1), intsAttr("strides", 3, 3)),
			nil, "", nil},
		{"average pool dilations", nodeOf("pool", "AveragePool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 2, 2), intsAttr("dilations", 1, 1)),
			nil, "dilations are not supported", nil},
		{"pool window past the input", nodeOf("pool", "MaxPool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 5, 5)),
			nil, "the window of 5 does not fit an axis of 4 padded by 0 and 0", nil},
		{"pad", nodeOf("pad", "Pad", []string{"x", "pads"}, []string{"y"}, strAttr("mode", "reflect")),
			[]*pb.TensorProto{intInit("pads", []int64{0, 0, 1, 1, 0, 0, 1, 1}, 8)}, "", nil},
		{"pad mode wrap", nodeOf("pad", "Pad", []string{"x", "pads"}, []string{"y"}, strAttr("mode", "wrap")),
			[]*pb.TensorProto{intInit("pads", []int64{0, 0, 1, 1, 0, 0, 1, 1}, 8)}, `mode "wrap" is not supported`, nil},
		{"reflect pad of an axis cropped away", nodeOf("pad", "Pad", []string{"x", "pads"}, []string{"y"}, strAttr("mode", "reflect")),
			[]*pb.TensorProto{intInit("pads", []int64{0, 0, -4, 0, 0, 0, 1, 0}, 8)}, "cannot reflect-pad an empty axis 2", nil},
		{"batch norm training", nodeOf("bn", "BatchNormalization", []string{"x", "ones", "ones", "ones", "ones"}, []string{"y"}, intAttr("training_mode", 1)),
			[]*pb.TensorProto{ones}, "training mode is not supported", nil},
		{"batch norm of other channels", nodeOf("bn", "BatchNormalization", []string{"x", "ones", "ones", "ones", "ones"}, []string{"y"}),
			[]*pb.TensorProto{ones}, "input 1 has shape [1], want [3]", []int64{1, 3, 4, 4}},
		{"where of a float condition", nodeOf("where", "Where", []string{"x", "x", "x"}, []string{"y"}),
			nil, "condition is float32, want bool", nil},
		{"add of float and int", nodeOf("add", "Add", []string{"x", "k"}, []string{"y"}),
			[]*pb.TensorProto{intInit("k", []int64{1}, 1)}, "operands are float32 and int64", nil},
		{"reduce mean over an axis twice", nodeOf("mean", "ReduceMean", []string{"x"}, []string{"y"}, intsAttr("axes", 1, -3)),
			nil, "axes [1 -3] repeat an axis", nil},
		{"gemm", nodeOf("fc", "Gemm", []string{"x", "b", "c"}, []string{"y"}),
			[]*pb.TensorProto{floatInit("b", make([]float32, 12), 3, 4), floatInit("c", make([]float32, 4), 4)}, "", []int64{2, 3}},
		{"gemm C past the output", nodeOf("fc", "Gemm", []string{"x", "b", "c"}, []string{"y"}),
			[]*pb.TensorProto{floatInit("b", make([]float32, 12), 3, 4), floatInit("c", make([]float32, 12), 3, 1, 4)},
			"C [3 1 4] does not broadcast to [2 4]", []int64{2, 3}},
		{"prelu slope past the input", nodeOf("prelu", "PRelu", []string{"x", "slope"}, []string{"y"}),
			[]*pb.TensorProto{floatInit("slope", make([]float32, 2), 2, 1, 1, 1)}, "slope [2 1 1 1] does not broadcast to input [1 1 4 4]", nil},
		{"clip of a wide min", nodeOf("clip", "Clip", []string{"x", "lo"}, []string{"y"}),
			[]*pb.TensorProto{floatInit("lo", []float32{0, 0}, 2)}, "min must have one element, has shape [2]", nil},
		{"dropout", nodeOf("drop", "Dropout", []string{"x", "", "train"}, []string{"y"}),
			[]*pb.TensorProto{{Name: "train", DataType: int32(pb.TensorProto_BOOL), Int32Data: []int32{0}}}, "", nil},
		{"dropout training", nodeOf("drop", "Dropout", []string{"x", "", "train"}, []string{"y"}),
			[]*pb.TensorProto{{Name: "train", DataType: int32(pb.TensorProto_BOOL), Int32Data: []int32{1}}}, "training mode is not supported", nil},
		{"resize mode area", nodeOf("resize", "Resize", []string{"x", "", "scales"}, []string{"y"}, strAttr("mode", "area")),
			[]*pb.TensorProto{floatInit("scales", []float32{1, 1, 2, 2}, 4)}, `mode "area" is not supported`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if in == nil {
				in = []int64{1, 1, 4, 4}
			}
			model := modelBytes(t, 13, []*pb.ValueInfoProto{vinfo("x", in...)}, []*pb.ValueInfoProto{vinfo("y")},
				[]*pb.NodeProto{tc.node}, tc.inits, nil)
			g := graphOf(t, model)
			defer g.free()
			_, _, estErr := g.estimate(torch.CPU, []aval{{shape: in, dt: torch.Float32}}, []string{"y"})
			var runErr error
			torch.Scoped(func(s *torch.Scope) {
				_, runErr = g.run(context.Background(), torch.CPU, []*torch.Tensor{torch.Zeros(s, torch.CPU, in...)}, []string{"y"})
			})
			if tc.wantErr == "" {
				if estErr != nil || runErr != nil {
					t.Fatalf("estimate: %v; run: %v", estErr, runErr)
				}
				return
			}
			if estErr == nil || runErr == nil || estErr.Error() != runErr.Error() {
				t.Fatalf("estimate: %v; run: %v; want both to fail alike", estErr, runErr)
			}
			if !strings.Contains(estErr.Error(), tc.wantErr) {
				t.Fatalf("error %q, want %q", estErr, tc.wantErr)
			}
			if len(in) != 4 {
				return // Read runs images only
			}
			if m, err := Read(bytes.NewReader(model), int64(len(model)), Options{}); err == nil || err.Error() != estErr.Error() {
				if err == nil {
					m.Free()
				}
				t.Fatalf("Read: %v, want %v", err, estErr)
			}
		})
	}
}
