package onnx

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// FuzzRead feeds arbitrary bytes to Read: it must return a model or an
// error, never panic or crash libtorch. Seeds are small valid models.
func FuzzRead(f *testing.F) {
	for _, opset := range []int64{9, 13, 17} {
		f.Add(linearModel(f, opset, false, nil))
		f.Add(linearModel(f, opset, true, map[string]string{MetaLayout: "nchw", MetaMean: "0.5", MetaStd: "0.25"}))
	}
	f.Add(linearModel(f, 13, false, nil, -1, 2, 2, 3))
	if b, err := os.ReadFile("testdata/keras_nhwc_op13.onnx"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Read(bytes.NewReader(data), int64(len(data)), Options{MaxBytes: 1 << 20})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "onnx: ") {
				t.Errorf("error %q does not say it comes from onnx", err)
			}
			return
		}
		defer m.Free()
		c, h, w := m.InputShape()
		if c < 0 || h < 0 || w < 0 || m.Classes() < 0 {
			t.Errorf("InputShape %d,%d,%d, Classes %d", c, h, w, m.Classes())
		}
	})
}

// fuzzBytes hands out fuzz input a byte at a time (zeros when it runs out).
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) next() int {
	if len(f.b) == 0 {
		return 0
	}
	v := f.b[0]
	f.b = f.b[1:]
	return int(v)
}

// fuzzAttrs are the attributes the supported ops read, with the values a
// fuzzer may give them.
var fuzzAttrs = []struct {
	name    string
	kind    pb.AttributeProto_AttributeType
	strings []string
}{
	{"axis", pb.AttributeProto_INT, nil}, {"axes", pb.AttributeProto_INTS, nil},
	{"perm", pb.AttributeProto_INTS, nil}, {"pads", pb.AttributeProto_INTS, nil},
	{"strides", pb.AttributeProto_INTS, nil}, {"kernel_shape", pb.AttributeProto_INTS, nil},
	{"dilations", pb.AttributeProto_INTS, nil}, {"group", pb.AttributeProto_INT, nil},
	{"alpha", pb.AttributeProto_FLOAT, nil}, {"beta", pb.AttributeProto_FLOAT, nil},
	{"transA", pb.AttributeProto_INT, nil}, {"transB", pb.AttributeProto_INT, nil},
	{"keepdims", pb.AttributeProto_INT, nil}, {"allowzero", pb.AttributeProto_INT, nil},
	{"starts", pb.AttributeProto_INTS, nil}, {"ends", pb.AttributeProto_INTS, nil},
	{"epsilon", pb.AttributeProto_FLOAT, nil}, {"count_include_pad", pb.AttributeProto_INT, nil},
	{"ceil_mode", pb.AttributeProto_INT, nil}, {"output_padding", pb.AttributeProto_INTS, nil},
	{"output_shape", pb.AttributeProto_INTS, nil}, {"min", pb.AttributeProto_FLOAT, nil},
	{"max", pb.AttributeProto_FLOAT, nil}, {"to", pb.AttributeProto_INT, nil},
	{"value_int", pb.AttributeProto_INT, nil}, {"value_floats", pb.AttributeProto_FLOATS, nil},
	{"scales", pb.AttributeProto_FLOATS, nil}, {"start", pb.AttributeProto_INT, nil},
	{"end", pb.AttributeProto_INT, nil}, {"value", pb.AttributeProto_FLOAT, nil},
	{"auto_pad", pb.AttributeProto_STRING, []string{"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "bogus"}},
	{"mode", pb.AttributeProto_STRING, []string{"constant", "reflect", "edge", "nearest", "linear", "cubic", "bogus"}},
	{"coordinate_transformation_mode", pb.AttributeProto_STRING, []string{"half_pixel", "pytorch_half_pixel",
		"align_corners", "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize", "bogus"}},
	{"nearest_mode", pb.AttributeProto_STRING, []string{"round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "bogus"}},
}

// fuzzNode builds a one-node graph from fuzz input: the op, its inputs
// (float32 or int64 tensors of small random shapes, or absent) and
// attributes. It returns the graph proto and the input tensors.
func fuzzNode(s *torch.Scope, data []byte) (*pb.GraphProto, int64, []*torch.Tensor) {
	fb := &fuzzBytes{data}
	names := SupportedOps()
	op := names[fb.next()%len(names)]
	opset := int64(7 + fb.next()%11)
	n := &pb.NodeProto{Name: "fuzzed", OpType: op}
	gp := &pb.GraphProto{Node: []*pb.NodeProto{n}}
	var ins []*torch.Tensor
	for i := range fb.next() % 6 {
		name := fmt.Sprintf("in%d", i)
		k := fb.next()
		if k%7 == 6 {
			n.Input = append(n.Input, "") // an absent optional input
			continue
		}
		rank := k % 5
		shape := make([]int64, rank)
		for j := range shape {
			shape[j] = int64(fb.next() % 5)
			if k%3 != 0 && shape[j] == 0 {
				shape[j] = 1
			}
		}
		cnt := prod(shape)
		var t *torch.Tensor
		if k%4 == 3 {
			v := make([]int64, cnt)
			for j := range v {
				v[j] = int64(int8(fb.next())) % 6
			}
			t = torch.FromSlice(s, v, shape...)
		} else {
			v := make([]float32, cnt)
			for j := range v {
				v[j] = float32(int8(fb.next())) / 16
			}
			t = torch.FromSlice(s, v, shape...)
		}
		ins = append(ins, t)
		n.Input = append(n.Input, name)
		gp.Input = append(gp.Input, &pb.ValueInfoProto{Name: name})
	}
	for range fb.next() % 8 {
		a := fuzzAttrs[fb.next()%len(fuzzAttrs)]
		ap := &pb.AttributeProto{Name: a.name, Type: a.kind}
		switch a.kind {
		case pb.AttributeProto_INT:
			ap.I = int64(int8(fb.next())) % 9
		case pb.AttributeProto_FLOAT:
			ap.F = float32(int8(fb.next())) / 8
		case pb.AttributeProto_INTS:
			for range fb.next() % 9 {
				ap.Ints = append(ap.Ints, int64(int8(fb.next()))%5)
			}
		case pb.AttributeProto_FLOATS:
			for range fb.next() % 5 {
				ap.Floats = append(ap.Floats, float32(fb.next()%16)/4)
			}
		case pb.AttributeProto_STRING:
			ap.S = []byte(a.strings[fb.next()%len(a.strings)])
		}
		n.Attribute = append(n.Attribute, ap)
	}
	for i := range 1 + fb.next()%2 {
		name := fmt.Sprintf("out%d", i)
		n.Output = append(n.Output, name)
		gp.Output = append(gp.Output, &pb.ValueInfoProto{Name: name})
	}
	return gp, opset, ins
}

// FuzzRun runs one node of every supported op on fuzzed inputs and
// attributes: each must compute or fail with an error naming the node,
// never panic or crash libtorch.
func FuzzRun(f *testing.F) {
	// Seeds: each op once with two 2×3 float inputs and no attributes,
	// and a few with attributes.
	for i := range SupportedOps() {
		f.Add([]byte{byte(i), 6, 2, 2, 2, 3, 1, 2, 3, 4, 5, 6, 2, 2, 3, 7, 8, 9, 10, 11, 12, 0, 0})
	}
	f.Add([]byte{0, 6, 2, 4, 1, 1, 3, 3, 4, 1, 1, 2, 2, 1, 2, 3, 4, 1, 5, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		torch.Scoped(func(s *torch.Scope) {
			gp, opset, ins := fuzzNode(s, data)
			g, err := buildGraph(gp, opset, 0)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "onnx: ") {
					t.Errorf("error %q does not say it comes from onnx", err)
				}
				return
			}
			defer g.free()
			var want []string
			for _, o := range g.outputs {
				want = append(want, o.name)
			}
			var res []*torch.Tensor
			torch.NoGrad(func() { res, err = g.run(context.Background(), torch.CPU, ins, want) })
			if err != nil {
				if !strings.Contains(err.Error(), "onnx: ") {
					t.Errorf("error %q does not say it comes from onnx", err)
				}
				return
			}
			for _, r := range res {
				r.Shape() // the result is a live tensor
			}
		})
	})
}
