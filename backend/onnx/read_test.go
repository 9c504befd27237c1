package onnx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// untouchable fails the test if anything reads it.
type untouchable struct{ t *testing.T }

func (u untouchable) Read([]byte) (int, error) {
	u.t.Error("the reader was read")
	return 0, io.EOF
}

// nested builds a protobuf message nested depth levels deep in field 7
// (ModelProto.graph), the shape of a hostile file.
func nested(depth int) []byte {
	var b []byte
	for range depth {
		b = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), b)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), b)
}

func TestReadRefuses(t *testing.T) {
	vi := []*pb.ValueInfoProto{vinfo("x", -1, 3, 2, 2)}
	vo := []*pb.ValueInfoProto{vinfo("y", -1, 12)}
	flat := nodeOf("flat", "Flatten", []string{"x"}, []string{"y"})
	cases := []struct {
		name string
		data []byte
		size int64 // 0: len(data)
		max  int64
		want []string // substrings of the error
	}{
		{"over the size limit", nil, 1 << 20, 1 << 10, []string{"over the limit"}},
		{"longer than announced", append(linearModel(t, 13, false, nil), 0, 0), -2, 0, []string{"longer than"}},
		{"shorter than announced", linearModel(t, 13, false, nil), -3, 0, []string{"reading"}},
		{"not protobuf", []byte("\xff\xff\xff\xffnot a model"), 0, 0, []string{"not an ONNX model"}},
		{"nested too deep", nested(200), 0, 0, []string{"nesting deeper than"}},
		{"no graph", modelBytesNoGraph(t), 0, 0, []string{"no graph"}},
		{"unsupported op", modelBytes(t, 13, vi, vo, []*pb.NodeProto{nodeOf("rnn1", "LSTM", []string{"x"}, []string{"y"})}, nil, nil),
			0, 0, []string{`node "rnn1" (LSTM)`, "not supported"}},
		{"foreign domain", modelBytes(t, 13, vi, vo, []*pb.NodeProto{{Name: "q", OpType: "Relu", Domain: "com.microsoft", Input: []string{"x"}, Output: []string{"y"}}}, nil, nil),
			0, 0, []string{`node "q" (Relu)`, "com.microsoft"}},
		{"undefined input", modelBytes(t, 13, vi, vo, []*pb.NodeProto{nodeOf("add1", "Add", []string{"x", "ghost"}, []string{"y"})}, nil, nil),
			0, 0, []string{`node "add1" (Add)`, `"ghost" is not defined`}},
		{"cycle", modelBytes(t, 13, vi, vo, []*pb.NodeProto{
			nodeOf("a", "Relu", []string{"b_out"}, []string{"a_out"}),
			nodeOf("b", "Relu", []string{"a_out"}, []string{"b_out"}),
			flat}, nil, nil), 0, 0, []string{"cycle"}},
		{"value defined twice", modelBytes(t, 13, vi, vo, []*pb.NodeProto{flat, nodeOf("again", "Flatten", []string{"x"}, []string{"y"})}, nil, nil),
			0, 0, []string{`node "again" (Flatten)`, "defined twice"}},
		{"output never computed", modelBytes(t, 13, vi, []*pb.ValueInfoProto{vinfo("z", -1, 12)}, []*pb.NodeProto{flat}, nil, nil),
			0, 0, []string{`"z" is not computed`}},
		{"shape mismatch", modelBytes(t, 13, vi, vo, []*pb.NodeProto{
			nodeOf("flat", "Flatten", []string{"x"}, []string{"f"}),
			nodeOf("fc", "Gemm", []string{"f", "w"}, []string{"y"}, intAttr("transB", 1))},
			[]*pb.TensorProto{floatInit("w", make([]float32, 10*7), 10, 7)}, nil),
			0, 0, []string{`node "fc" (Gemm)`, "do not multiply"}},
		{"bad attribute", modelBytes(t, 13, vi, vo, []*pb.NodeProto{nodeOf("t", "Transpose", []string{"x"}, []string{"y"}, intsAttr("perm", 0, 0, 1, 2))}, nil, nil),
			0, 0, []string{`node "t" (Transpose)`, "not a permutation"}},
		{"opset too new", modelBytes(t, 18, vi, vo, []*pb.NodeProto{flat}, nil, nil), 0, 0, []string{"opset 18"}},
		{"two inputs", modelBytes(t, 13, append(vi, vinfo("x2", -1, 3)), vo, []*pb.NodeProto{flat}, nil, nil),
			0, 0, []string{"takes 2 inputs"}},
		{"external weights", modelBytes(t, 13, vi, vo, []*pb.NodeProto{flat},
			[]*pb.TensorProto{{Name: "w", Dims: []int64{2}, DataType: int32(pb.TensorProto_FLOAT), DataLocation: pb.TensorProto_EXTERNAL}}, nil),
			0, 0, []string{`"w"`, "external data"}},
		{"weights short of their dims", modelBytes(t, 13, vi, vo, []*pb.NodeProto{flat}, []*pb.TensorProto{floatInit("w", []float32{1, 2}, 3)}, nil),
			0, 0, []string{`"w"`, "2 values for dims [3]"}},
		{"float16 weights", modelBytes(t, 13, vi, vo, []*pb.NodeProto{flat},
			[]*pb.TensorProto{{Name: "h", Dims: []int64{1}, DataType: int32(pb.TensorProto_FLOAT16), RawData: []byte{0, 0}}}, nil),
			0, 0, []string{`"h"`, "FLOAT16 is not supported"}},
		{"huge image", modelBytes(t, 13, []*pb.ValueInfoProto{vinfo("x", -1, 3, 100000, 100000)}, vo, []*pb.NodeProto{flat}, nil, nil),
			0, 0, []string{"over the limit"}},
		{"bad layout metadata", linearModel(t, 13, false, map[string]string{MetaLayout: "chwn"}), 0, 0, []string{`layout "chwn"`}},
		{"bad mean metadata", linearModel(t, 13, false, map[string]string{MetaMean: "0.5,x"}), 0, 0, []string{MetaMean}},
		{"wrong number of means", linearModel(t, 13, false, map[string]string{MetaMean: "0.5,0.5"}), 0, 0, []string{"2 normalisation values for 3 channels"}},
		{"NaN scale metadata", linearModel(t, 13, false, map[string]string{MetaScale: "NaN"}), 0, 0, []string{MetaScale, "not a positive number"}},
		{"infinite std metadata", linearModel(t, 13, false, map[string]string{MetaStd: "Inf"}), 0, 0, []string{MetaStd}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(c.data)
			size := int64(len(c.data))
			switch {
			case c.size > 0:
				r, size = untouchable{t}, c.size
			case c.size == -2:
				size = int64(len(c.data)) - 2
			case c.size == -3:
				size = int64(len(c.data)) + 5
			}
			m, err := Read(r, size, Options{MaxBytes: c.max})
			if err == nil {
				m.Free()
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func modelBytesNoGraph(t *testing.T) []byte {
	b, err := proto.Marshal(&pb.ModelProto{IrVersion: 8, OpsetImport: []*pb.OperatorSetIdProto{{Version: 13}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInputConvention checks that Forward converts pixel-space NCHW input
// to the layout, scale and normalisation given by options, by metadata, or
// by the input's shape, options taking precedence.
func TestInputConvention(t *testing.T) {
	x := make([]float32, 2*3*2*2) // NCHW, value = index/24
	for i := range x {
		x[i] = float32(i) / 24
	}
	// want computes the graph input for image n, flattened in the file's
	// layout, from the pixel-space NCHW x.
	want := func(scale float32, mean, std []float32, nhwc bool) []float32 {
		var out []float32
		for n := range 2 {
			for i := range 12 {
				c, h, w := i/4, (i/2)%2, i%2
				if nhwc {
					h, w, c = i/6, (i/3)%2, i%3
				}
				v := x[n*12+c*4+h*2+w] * scale
				if mean != nil {
					v -= mean[min(c, len(mean)-1)]
				}
				if std != nil {
					v /= std[min(c, len(std)-1)]
				}
				out = append(out, v)
			}
		}
		return out
	}
	meta := map[string]string{MetaScale: "255", MetaMean: "10,20,30", MetaStd: "2,4,8"}
	cases := []struct {
		name   string
		file   []byte
		o      Options
		layout string
		want   []float32
	}{
		{"plain", linearModel(t, 13, false, nil), Options{}, "nchw", want(1, nil, nil, false)},
		{"options", linearModel(t, 13, false, nil), Options{Scale: 255, Mean: []float32{10, 20, 30}, Std: []float32{2, 4, 8}}, "nchw",
			want(255, []float32{10, 20, 30}, []float32{2, 4, 8}, false)},
		{"one mean for all channels", linearModel(t, 13, false, nil), Options{Mean: []float32{0.5}, Std: []float32{0.25}}, "nchw",
			want(1, []float32{0.5}, []float32{0.25}, false)},
		{"metadata", linearModel(t, 13, false, meta), Options{}, "nchw", want(255, []float32{10, 20, 30}, []float32{2, 4, 8}, false)},
		{"options over metadata", linearModel(t, 13, false, meta), Options{Scale: 1, Mean: []float32{0, 0, 0}}, "nchw",
			want(1, []float32{0, 0, 0}, []float32{2, 4, 8}, false)},
		{"nhwc from shape", linearModel(t, 13, false, nil, -1, 2, 2, 3), Options{}, "nhwc", want(1, nil, nil, true)},
		{"nhwc from metadata", linearModel(t, 13, false, map[string]string{MetaLayout: "nhwc"}, -1, 2, 2, 3), Options{}, "nhwc", want(1, nil, nil, true)},
		{"nhwc from options", linearModel(t, 13, false, nil, -1, 2, 2, 3), Options{Layout: "NHWC"}, "nhwc", want(1, nil, nil, true)},
		{"opset 9", linearModel(t, 9, false, nil), Options{}, "nchw", want(1, nil, nil, false)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Read(bytes.NewReader(c.file), int64(len(c.file)), c.o)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			if m.Layout() != c.layout {
				t.Errorf("layout %s, want %s", m.Layout(), c.layout)
			}
			if ch, h, w := m.InputShape(); ch != 3 || h != 2 || w != 2 {
				t.Errorf("InputShape = %d,%d,%d, want 3,2,2", ch, h, w)
			}
			if m.Classes() != 12 {
				t.Errorf("Classes = %d, want 12", m.Classes())
			}
			torch.Scoped(func(s *torch.Scope) {
				y := m.Forward(torch.FromSlice(s, x, 2, 3, 2, 2))
				if err := allClose(y.Float32s(), c.want, 1e-6, 1e-6); err != nil {
					t.Error(err)
				}
			})
		})
	}
}

// TestSoftmaxOutput checks that a final Softmax is stripped: Forward
// returns its input, whose softmax is the file's output and whose argmax
// is the file's label.
func TestSoftmaxOutput(t *testing.T) {
	for _, opset := range []int64{9, 13, 17} {
		b := linearModel(t, opset, true, nil)
		m, err := Read(bytes.NewReader(b), int64(len(b)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		torch.Scoped(func(s *torch.Scope) {
			x := torch.Rand(s, torch.CPU, 4, 3, 2, 2)
			y := m.Forward(x)
			if err := allClose(y.Float32s(), x.Reshape(4, 12).Float32s(), 1e-6, 1e-6); err != nil {
				t.Errorf("opset %d: Forward is not the pre-softmax logits: %v", opset, err)
			}
			// The whole graph, Softmax included, as the interpreter runs it.
			res, err := m.g.run(context.Background(), torch.CPU, []*torch.Tensor{x}, []string{"p"})
			if err != nil {
				t.Fatal(err)
			}
			if err := allClose(y.Softmax(1).Float32s(), res[0].Float32s(), 1e-6, 1e-6); err != nil {
				t.Errorf("opset %d: softmax(Forward) is not the file's output: %v", opset, err)
			}
		})
		m.Free()
	}
}

func TestForwardErrors(t *testing.T) {
	b := linearModel(t, 13, false, nil)
	m, err := Read(bytes.NewReader(b), int64(len(b)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	torch.Scoped(func(s *torch.Scope) {
		cases := []struct {
			name string
			x    *torch.Tensor
			want string
		}{
			{"channels", torch.Zeros(s, torch.CPU, 1, 1, 2, 2), "the model takes (N,3,2,2)"},
			{"size", torch.Zeros(s, torch.CPU, 1, 3, 4, 4), "the model takes (N,3,2,2)"},
			{"rank", torch.Zeros(s, torch.CPU, 3, 2, 2), "want (N,C,H,W)"},
		}
		for _, c := range cases {
			_, err := m.ForwardContext(context.Background(), c.x)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.want)
			}
			var te *torch.Error
			if perr := torch.Catch(func() { m.Forward(c.x) }); !errors.As(perr, &te) || !strings.Contains(perr.Error(), c.want) {
				t.Errorf("%s: Forward panicked with %v, want a *torch.Error saying %q", c.name, perr, c.want)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := m.ForwardContext(ctx, torch.Zeros(s, torch.CPU, 1, 3, 2, 2)); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled: error %v, want context.Canceled", err)
		}
	})
}

// rss is the process's resident set in bytes, after the allocator gave
// its free memory back (torch.TrimMemory): live memory, not what glibc
// keeps for reuse, which would hide a leak of up to its trim threshold.
func rss(t *testing.T) int64 {
	torch.TrimMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, res int64
	if _, err := fmt.Sscan(string(b), &size, &res); err != nil {
		t.Fatal(err)
	}
	return res * int64(os.Getpagesize())
}

// TestRunFreesIntermediates runs many forward and backward passes with
// the garbage collector off, so only deterministic freeing keeps memory
// flat: the interpreter must free every intermediate it makes.
func TestRunFreesIntermediates(t *testing.T) {
	m, err := Open("testdata/resnet20_op13.onnx", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if err := m.To(torch.CPU); err != nil {
		t.Fatal(err)
	}
	if m.Device() != torch.CPU {
		t.Errorf("Device = %v", m.Device())
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	step := func() {
		torch.Scoped(func(s *torch.Scope) {
			x := torch.Rand(s, torch.CPU, 16, 3, 32, 32).SetRequiresGrad(true)
			y := m.Forward(x)
			if y.Scope() != s {
				t.Error("the result is not in the input's scope")
			}
			y.Sum().Backward()
		})
	}
	for range 10 {
		step()
	}
	before := rss(t)
	for range 60 {
		step()
	}
	// One batch of activations is about 16·16·32·32·4 B = 1 MiB per layer;
	// a leak of one tensor per node would grow by far more than 16 MiB.
	if grown := rss(t) - before; grown > 16<<20 {
		t.Errorf("resident memory grew by %d MiB over 60 passes", grown>>20)
	}
	m.Free()
	if _, err := m.ForwardContext(context.Background(), nil); err == nil {
		t.Error("a freed model ran")
	}
}

// TestOpenMissing checks Open's error for a missing file.
func TestOpenMissing(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "none.onnx"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestParseFloats(t *testing.T) {
	cases := []struct {
		in   string
		want []float32
		err  bool
	}{
		{"", nil, false},
		{"0.5", []float32{0.5}, false},
		{"0.4914, 0.4822,0.4465", []float32{0.4914, 0.4822, 0.4465}, false},
		{"1,,2", nil, true},
		{"a", nil, true},
		{"0.5,NaN", nil, true},
		{"Inf", nil, true},
	}
	for _, c := range cases {
		got, err := ParseFloats(c.in)
		if (err != nil) != c.err {
			t.Errorf("ParseFloats(%q) error %v", c.in, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("ParseFloats(%q) = %v, want %v", c.in, got, c.want)
			continue
		}
		for i := range got {
			if math.Abs(float64(got[i]-c.want[i])) > 1e-7 {
				t.Errorf("ParseFloats(%q) = %v, want %v", c.in, got, c.want)
			}
		}
	}
}
