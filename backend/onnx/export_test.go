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

			const n = 2
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			x := make([]float32, n*c.c*c.hw*c.hw)
			for j := range x {
				x[j] = rng.Float32()
			}
			want := logits(t, m, x, n, c.c, c.hw, c.hw)
			in, out := filepath.Join(dir, "in.f32"), filepath.Join(dir, "out.f32")
			writeF32(t, in, x)
			cmd := exec.Command(python, "testdata/check_onnx.py", path, in, fmt.Sprintf("%d,%d,%d,%d", n, c.c, c.hw, c.hw), out)
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
		})
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
			path := filepath.Join(dir, c.arch+".onnx")
			if err := ExportFile(m, path, ExportOptions{}); err != nil {
				t.Fatal(err)
			}
			im, err := Open(path, Options{})
			if err != nil {
				t.Fatalf("Open of an exported %s: %v", c.arch, err)
			}
			defer im.Free()
			if ch, h, w := im.InputShape(); int64(ch) != c.c || int64(h) != c.hw || int64(w) != c.hw || im.Classes() != 10 || im.Layout() != "nchw" {
				t.Errorf("imported input %dx%dx%d, %d classes, layout %q; want %dx%dx%d, 10, nchw", ch, h, w, im.Classes(), im.Layout(), c.c, c.hw, c.hw)
			}
			const n = 3
			rng := rand.New(rand.NewPCG(uint64(i), 2))
			x := make([]float32, n*c.c*c.hw*c.hw)
			for j := range x {
				x[j] = rng.Float32()
			}
			wantY, wantG := outputAndGrad(t, m.Forward, x, n, c.c, c.hw, c.hw)
			gotY, gotG := outputAndGrad(t, im.Forward, x, n, c.c, c.hw, c.hw)
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
		})
	}
}
