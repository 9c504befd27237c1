package onnx

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/conferral/conferral/backend/nn"
	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
)

// python is Debian's interpreter with python3-onnx (a dependency in the
// Makefile's DEPS): PyTorch's ONNX tooling checks every exported file.
const python = "/usr/bin/python3"

func needONNXPython(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import onnx, numpy").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import onnx (install python3-onnx: make deps): %v\n%s", python, err, out)
	}
}

func exportSpec(arch string, c, hw int64) nn.Spec {
	mean, std := make([]float64, c), make([]float64, c)
	for i := range mean {
		mean[i], std[i] = 0.3+0.1*float64(i), 0.2+0.05*float64(i)
	}
	return nn.Spec{Arch: arch, Dataset: "test", Classes: strings.Split("a,b,c,d,e,f,g,h,i,j", ","),
		C: c, H: hw, W: hw, Mean: mean, Std: std}
}

// trainedLike gives batch norm the non-trivial statistics and affine
// parameters a trained model has (a fresh model has mean 0, variance 1,
// scale 1, shift 0, which would hide a mix-up of the four).
func trainedLike(t *testing.T, m *nn.Model, seed uint64) {
	t.Helper()
	f, err := m.File(nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for i, ts := range f.Tensors {
		vals, err := ts.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(ts.Name, "running_var"):
			for j := range vals {
				vals[j] = 0.5 + rng.Float32()
			}
		case strings.HasSuffix(ts.Name, "running_mean"):
			for j := range vals {
				vals[j] = 0.2 * float32(rng.NormFloat64())
			}
		case strings.Contains(ts.Name, "bn") && strings.HasSuffix(ts.Name, ".weight"):
			for j := range vals {
				vals[j] = 0.5 + rng.Float32()
			}
		case strings.HasSuffix(ts.Name, ".bias"):
			for j := range vals {
				vals[j] = 0.1 * float32(rng.NormFloat64())
			}
		case strings.HasSuffix(ts.Name, ".alpha"): // deepnarrow's residual scales start at 0
			for j := range vals {
				vals[j] = 0.5 + rng.Float32()
			}
		default:
			continue
		}
		f.Tensors[i] = safetensors.F32(ts.Name, ts.Shape, vals)
	}
	if err := m.LoadTensors(f.Tensors); err != nil {
		t.Fatal(err)
	}
}

// logits runs the zoo model in evaluation mode on x.
func logits(t *testing.T, m *nn.Model, x []float32, shape ...int64) []float32 {
	t.Helper()
	var out []float32
	m.SetTraining(false)
	err := torch.Catch(func() {
		torch.NoGrad(func() {
			torch.Scoped(func(s *torch.Scope) {
				out = m.Forward(torch.FromSlice(s, x, shape...)).Float32s()
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeF32(t *testing.T, path string, v []float32) {
	t.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, v); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, v); err != nil {
		t.Fatal(err)
	}
	return v
}

// maxRelDiff is max |a−b| over max(1, max |b|).
func maxRelDiff(a, b []float32) float64 {
	var d, scale float64 = 0, 1
	for i := range b {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		scale = max(scale, math.Abs(float64(b[i])))
	}
	return d / scale
}

// TestExportZoo exports every zoo architecture, has onnx.checker accept the
// file, runs the file in Python (check_onnx.py's NumPy evaluator, which is
// itself held to PyTorch's outputs by TestCheckerMatchesPyTorch) and
// compares its output with the zoo model's logits.
func TestExportZoo(t *testing.T) {
	needONNXPython(t)
	type tc struct {
		arch  string
		c, hw int64
		opset int64
	}
	var cases []tc
	for _, arch := range nn.Architectures() {
		cases = append(cases, tc{arch, 1, 28, 0}) // Fashion-MNIST shape, default opset
	}
	cases = append(cases,
		tc{"resnet20", 3, 32, 11}, // CIFAR shape, oldest opset
		tc{"cnn", 3, 32, 13},
		tc{"mobilenetv2", 3, 32, 11}, // Clip with bound inputs at its first opset
		tc{"densenet", 3, 32, 15},
	)
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s_%dx%d_op%d", c.arch, c.c, c.hw, c.opset), func(t *testing.T) {
			m, err := nn.New(exportSpec(c.arch, c.c, c.hw), uint64(i+1), torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			trainedLike(t, m, uint64(i+1))
			path := filepath.Join(dir, fmt.Sprintf("%s_%d.onnx", c.arch, i))
			if err := ExportFile(m, path, ExportOptions{Opset: c.opset, Metadata: map[string]string{"conferral.source": "test"}}); err != nil {
				t.Fatal(err)
			}
			checkProto(t, path, m.Spec, c.opset)
			checkInPython(t, m, path, uint64(i))
		})
	}
}

// checkInPython has onnx.checker accept the exported file path and runs it
// in Python (check_onnx.py's NumPy evaluator) on two random images,
// comparing with m's logits.
func checkInPython(t *testing.T, m *nn.Model, path string, seed uint64) {
	t.Helper()
	const n = 2
	c, h, w := m.Spec.C, m.Spec.H, m.Spec.W
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*c*h*w)
	for j := range x {
		x[j] = rng.Float32()
	}
	want := logits(t, m, x, n, c, h, w)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.f32"), filepath.Join(dir, "out.f32")
	writeF32(t, in, x)
	cmd := exec.Command(python, "testdata/check_onnx.py", path, in, fmt.Sprintf("%d,%d,%d,%d", n, c, h, w), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("check_onnx.py rejects the export: %v\n%s", err, b)
	}
	got := readF32(t, out)
	if len(got) != len(want) {
		t.Fatalf("the ONNX graph gives %d values, the model %d", len(got), len(want))
	}
	if d := maxRelDiff(got, want); d > 1e-4 {
		t.Errorf("the ONNX graph's logits differ from the model's by %.2e (relative), want ≤ 1e-4\ngot  %v\nwant %v", d, got, want)
	}
}

// checkProto reads the file back with the onnxpb types and checks what a
// consumer relies on: opset, input and output, the input convention.
func checkProto(t *testing.T, path string, spec nn.Spec, opset int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mp := &pb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		t.Fatal(err)
	}
	if opset == 0 {
		opset = DefaultExportOpset
	}
	if len(mp.OpsetImport) != 1 || mp.OpsetImport[0].Version != opset {
		t.Errorf("opset imports %v, want %d", mp.OpsetImport, opset)
	}
	g := mp.GetGraph()
	if len(g.Input) != 1 || g.Input[0].Name != "input" || len(g.Output) != 1 || g.Output[0].Name != "logits" {
		t.Fatalf("graph inputs %v outputs %v, want input and logits", g.Input, g.Output)
	}
	dims := g.Input[0].GetType().GetTensorType().GetShape().GetDim()
	if len(dims) != 4 || dims[0].GetDimParam() != "N" || dims[1].GetDimValue() != spec.C || dims[2].GetDimValue() != spec.H || dims[3].GetDimValue() != spec.W {
		t.Errorf("input dims %v, want [N %d %d %d]", dims, spec.C, spec.H, spec.W)
	}
	meta := map[string]string{}
	for _, p := range mp.MetadataProps {
		meta[p.Key] = p.Value
	}
	ones, zeros := strings.TrimSuffix(strings.Repeat("1,", int(spec.C)), ","), strings.TrimSuffix(strings.Repeat("0,", int(spec.C)), ",")
	for k, v := range map[string]string{MetaLayout: "nchw", MetaScale: "1", MetaMean: zeros, MetaStd: ones,
		"conferral.arch": spec.Arch, "conferral.source": "test"} {
		if meta[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, meta[k], v)
		}
	}
	if g.Node[0].OpType != "Sub" || g.Node[1].OpType != "Div" {
		t.Errorf("graph starts with %s, %s; want the normalisation Sub, Div", g.Node[0].OpType, g.Node[1].OpType)
	}
	for _, n := range g.Node {
		if n.OpType == "Dropout" {
			t.Errorf("inference graph has a Dropout node %s", n.Name)
		}
	}
}

// TestCheckerMatchesPyTorch holds check_onnx.py's evaluator to PyTorch: it
// runs every PyTorch-exported test model on its reference input and
// compares with PyTorch's output.
func TestCheckerMatchesPyTorch(t *testing.T) {
	needONNXPython(t)
	if b, err := exec.Command(python, "testdata/check_onnx.py", "--selftest").CombinedOutput(); err != nil {
		t.Fatalf("check_onnx.py --selftest: %v\n%s", err, b)
	}
}

func TestExportErrors(t *testing.T) {
	m, err := nn.New(exportSpec("cnn", 1, 28), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	dir := t.TempDir()
	cases := []struct {
		name string
		path string
		o    ExportOptions
		want string
	}{
		{"opset too old", filepath.Join(dir, "a.onnx"), ExportOptions{Opset: 9}, "opset 9 is not supported"},
		{"opset too new", filepath.Join(dir, "b.onnx"), ExportOptions{Opset: 18}, "opset 18 is not supported"},
		{"negative opset", filepath.Join(dir, "c.onnx"), ExportOptions{Opset: -1}, "opset -1 is not supported"},
		{"missing directory", filepath.Join(dir, "no", "such", "d.onnx"), ExportOptions{}, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ExportFile(m, c.path, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if _, err := os.Stat(c.path); !os.IsNotExist(err) {
				t.Errorf("a failed export left %s behind", c.path)
			}
		})
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("failed exports left temporary files: %v", left)
	}
}

// TestExportMetadataKeepsConvention: extra metadata cannot override the
// input convention.
func TestExportMetadataKeepsConvention(t *testing.T) {
	m, err := nn.New(exportSpec("mlp", 3, 8), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	mp, err := ExportModel(m, ExportOptions{Metadata: map[string]string{MetaLayout: "nhwc", MetaScale: "255", "x": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range mp.MetadataProps {
		got[p.Key] = p.Value
	}
	if got[MetaLayout] != "nchw" || got[MetaScale] != "1" || got["x"] != "y" || got[MetaMean] != "0,0,0" || got[MetaStd] != "1,1,1" {
		t.Errorf("metadata %v", got)
	}
}

// outputAndGrad runs f on x and returns the output and the input gradient
// of sum(w · f(x)), with w[i] = sin(i+1).
func outputAndGrad(t *testing.T, f func(*torch.Tensor) *torch.Tensor, x []float32, shape ...int64) (out, grad []float32) {
	t.Helper()
	err := torch.Catch(func() {
		torch.Scoped(func(s *torch.Scope) {
			xi := torch.FromSlice(s, x, shape...).SetRequiresGrad(true)
			y := f(xi)
			w := make([]float32, y.Numel())
			for i := range w {
				w[i] = float32(math.Sin(float64(i + 1)))
			}
			loss := y.Mul(torch.FromSlice(s, w, y.Shape()...)).Sum()
			g := torch.Grads([]*torch.Tensor{loss}, []*torch.Tensor{xi})
			out, grad = y.Float32s(), g[0].Float32s()
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, grad
}

// TestExportRoundTrip reads every exported zoo architecture back with Open
// and checks that the imported model gives the zoo model's logits (1e-4)
// and input gradients (1e-3, relative to the largest): the exported file
// is a faithful copy, and a source for C-BIM once imported.
func TestExportRoundTrip(t *testing.T) {
	type tc struct {
		arch  string
		c, hw int64
	}
	var cases []tc
	for _, arch := range nn.Architectures() {
		cases = append(cases, tc{arch, 1, 28})
	}
	cases = append(cases, tc{"resnet20", 3, 32}, tc{"mobilenetv2", 3, 32})
	dir := t.TempDir()
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s_%dx%d", c.arch, c.c, c.hw), func(t *testing.T) {
			m, err := nn.New(exportSpec(c.arch, c.c, c.hw), uint64(i+11), torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			trainedLike(t, m, uint64(i+11))
			m.SetTraining(false)
			checkRoundTrip(t, m, filepath.Join(dir, c.arch+".onnx"), uint64(i))
		})
	}
}

// checkRoundTrip exports m to path, reads the file back with Open and
// checks that the imported model gives m's logits (1e-4) and input
// gradients (1e-3, relative to the largest) on three random images.
func checkRoundTrip(t *testing.T, m *nn.Model, path string, seed uint64) {
	t.Helper()
	if err := ExportFile(m, path, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open of an exported %s: %v", m.Spec.Arch, err)
	}
	defer im.Free()
	c, h, w := m.Spec.C, m.Spec.H, m.Spec.W
	if ic, ih, iw := im.InputShape(); int64(ic) != c || int64(ih) != h || int64(iw) != w || im.Classes() != len(m.Spec.Classes) || im.Layout() != "nchw" {
		t.Errorf("imported input %dx%dx%d, %d classes, layout %q; want %dx%dx%d, %d, nchw", ic, ih, iw, im.Classes(), im.Layout(), c, h, w, len(m.Spec.Classes))
	}
	const n = 3
	rng := rand.New(rand.NewPCG(seed, 2))
	x := make([]float32, n*c*h*w)
	for j := range x {
		x[j] = rng.Float32()
	}
	wantY, wantG := outputAndGrad(t, m.Forward, x, n, c, h, w)
	gotY, gotG := outputAndGrad(t, im.Forward, x, n, c, h, w)
	if d := maxRelDiff(gotY, wantY); d > 1e-4 {
		t.Errorf("imported logits differ by %.2e (relative), want ≤ 1e-4\ngot  %v\nwant %v", d, gotY, wantY)
	}
	var gmax float64
	for _, v := range wantG {
		gmax = max(gmax, math.Abs(float64(v)))
	}
	var gd float64
	for j := range wantG {
		gd = max(gd, math.Abs(float64(gotG[j]-wantG[j])))
	}
	if gmax == 0 || gd > 1e-3*gmax {
		t.Errorf("imported input gradients differ by %.2e, largest %.2e; want ≤ 1e-3 of it", gd, gmax)
	}
}

// tinyArch is an architecture that exists only in this test, not in the
// zoo and not in export.go: it exports because Export traces the layers it
// runs. It uses every layer kind that the tracer records — a grouped
// convolution with bias, batch norm, ReLU and ReLU6, max pooling (rounding
// up) and average pooling, concatenation, a residual addition, a learned
// scale, dropout, global pooling, flattening and dense layers — on a
// 3×12×12 input.
func tinyArch(c *nn.Context, x *torch.Tensor, classes int64) *torch.Tensor {
	a := nn.Relu(c, nn.ConvBNReLU(c.In("a"), x, 8, 3, nn.ConvOpts{Padding: -1}))
	b := nn.Relu6(c, nn.BatchNorm(c.In("b.bn"), nn.Conv2d(c.In("b.conv"), a, 8, 3, nn.ConvOpts{Padding: -1, Groups: 4, Bias: true})))
	scale := c.Param("scale", []int64{1, 8, 1, 1}, nn.Uniform(1))
	h := nn.Add(c, a, nn.Mul(c, b, scale))
	h = nn.Concat(c, []*torch.Tensor{h, nn.Dropout(c, a, 0.5)}, 1)
	h = nn.MaxPool(c, h, 2)          // 12×12 → 6×6
	h = nn.AvgPool(c, h, 2)          // → 3×3
	h = nn.MaxPool(c, h, 2)          // → 2×2, rounding up
	flat := nn.Flatten(c, h)         // 16·2·2
	pooled := nn.GlobalAvgPool(c, h) // 16
	mix := nn.Relu(c, nn.Dense(c.In("fc1"), flat, 16, false))
	return nn.Dense(c.In("fc2"), nn.Add(c, mix, pooled), classes, true)
}

// TestExportTracedArch is the proof that a new architecture exports by
// itself: tinyArch, defined here and nowhere else, exports, passes
// onnx.checker, computes the model's logits in Python and round-trips
// through Open with the same logits and input gradients.
func TestExportTracedArch(t *testing.T) {
	needONNXPython(t)
	spec := exportSpec("tiny", 3, 12)
	spec.Classes = spec.Classes[:5]
	m, err := nn.NewArch(spec, tinyArch, 5, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	trainedLike(t, m, 5)
	path := filepath.Join(t.TempDir(), "tiny.onnx")
	if err := ExportFile(m, path, ExportOptions{Opset: 13, Metadata: map[string]string{"conferral.source": "test"}}); err != nil {
		t.Fatal(err)
	}
	checkProto(t, path, m.Spec, 13)
	checkInPython(t, m, path, 5)
	checkRoundTrip(t, m, path, 5)

	// Every kind the tracer records is in the graph.
	mp, err := ExportModel(m, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, n := range mp.Graph.Node {
		ops[n.OpType]++
	}
	for op, want := range map[string]int{"Sub": 1, "Div": 1, "Conv": 2, "BatchNormalization": 2, "Relu": 3, "Clip": 1, "Mul": 1,
		"Add": 2, "Concat": 1, "MaxPool": 2, "AveragePool": 1, "GlobalAveragePool": 1, "Flatten": 2, "Gemm": 2} {
		if ops[op] != want {
			t.Errorf("%d %s nodes, want %d (graph: %v)", ops[op], op, want, ops)
		}
	}
	if len(mp.Graph.Initializer) != len(m.Variables())+2 { // + Clip's bounds
		t.Errorf("%d initializers for %d variables and 2 constants", len(mp.Graph.Initializer), len(m.Variables()))
	}
}

// TestExportUntracedOpFails: an architecture that computes with torch's
// tensor methods directly, outside nn's layers, cannot be traced; export
// says which layer met the unrecorded value instead of writing a wrong
// graph.
func TestExportUntracedOpFails(t *testing.T) {
	for name, arch := range map[string]nn.Arch{
		"inside": func(c *nn.Context, x *torch.Tensor, classes int64) *torch.Tensor {
			return nn.Dense(c.In("fc"), x.Flatten(), classes, true) // x.Flatten: not nn.Flatten
		},
		"last": func(c *nn.Context, x *torch.Tensor, classes int64) *torch.Tensor {
			return nn.Dense(c.In("fc"), nn.Flatten(c, x), classes, true).Relu()
		},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := nn.NewArch(exportSpec("untraced", 1, 4), arch, 1, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			_, err = ExportModel(m, ExportOptions{})
			if err == nil || !strings.Contains(err.Error(), "outside nn's layer functions") {
				t.Fatalf("error %v, want one saying a value was computed outside nn's layer functions", err)
			}
			if name == "inside" && !strings.Contains(err.Error(), `"fc"`) {
				t.Errorf("error %v does not name the layer fc", err)
			}
		})
	}
}

// TestExportOutputNotLastOp: when an architecture's output is not the last
// layer it ran (here a head whose ReLU'd copy goes unused), the graph ends
// with an Identity to "logits" and still round-trips.
func TestExportOutputNotLastOp(t *testing.T) {
	arch := func(c *nn.Context, x *torch.Tensor, classes int64) *torch.Tensor {
		y := nn.Dense(c.In("fc"), nn.Flatten(c, x), classes, true)
		nn.Relu(c, y)
		return y
	}
	m, err := nn.NewArch(exportSpec("headfirst", 1, 4), arch, 2, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	trainedLike(t, m, 2)
	mp, err := ExportModel(m, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodes := mp.Graph.Node
	if last := nodes[len(nodes)-1]; last.OpType != "Identity" || last.Output[0] != "logits" || last.Input[0] != nodes[len(nodes)-3].Output[0] {
		t.Errorf("graph ends %v, want an Identity of the Gemm to logits", last)
	}
	checkRoundTrip(t, m, filepath.Join(t.TempDir(), "headfirst.onnx"), 2)
}
