package onnx

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
)

// Small graphs built in Go for tests of the reader's and interpreter's
// edges; real models come from PyTorch (testdata/) and ONNX's node tests.

func vinfo(name string, dims ...int64) *pb.ValueInfoProto {
	sh := &pb.TensorShapeProto{}
	for _, d := range dims {
		dim := &pb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
		} else {
			dim.Value = &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		sh.Dim = append(sh.Dim, dim)
	}
	return &pb.ValueInfoProto{Name: name, Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{
		TensorType: &pb.TypeProto_Tensor{ElemType: int32(pb.TensorProto_FLOAT), Shape: sh}}}}
}

func floatInit(name string, v []float32, dims ...int64) *pb.TensorProto {
	return &pb.TensorProto{Name: name, Dims: dims, DataType: int32(pb.TensorProto_FLOAT), FloatData: v}
}

func intInit(name string, v []int64, dims ...int64) *pb.TensorProto {
	return &pb.TensorProto{Name: name, Dims: dims, DataType: int32(pb.TensorProto_INT64), Int64Data: v}
}

func nodeOf(name, op string, in, out []string, attrs ...*pb.AttributeProto) *pb.NodeProto {
	return &pb.NodeProto{Name: name, OpType: op, Input: in, Output: out, Attribute: attrs}
}

func intAttr(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INT, I: v}
}

func intsAttr(name string, v ...int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INTS, Ints: v}
}

// modelBytes serialises a one-graph model.
func modelBytes(t testing.TB, opset int64, in []*pb.ValueInfoProto, out []*pb.ValueInfoProto,
	nodes []*pb.NodeProto, inits []*pb.TensorProto, meta map[string]string) []byte {
	t.Helper()
	mp := &pb.ModelProto{
		IrVersion:   8,
		OpsetImport: []*pb.OperatorSetIdProto{{Version: opset}},
		Graph:       &pb.GraphProto{Name: "g", Input: in, Output: out, Node: nodes, Initializer: inits},
	}
	for k, v := range meta {
		mp.MetadataProps = append(mp.MetadataProps, &pb.StringStringEntryProto{Key: k, Value: v})
	}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// linearModel is a classifier of (N,3,2,2) images: Flatten, then Gemm with
// a weight that picks pixel i for class i (12 classes), then optionally
// Softmax and Identity, as some exporters end a graph.
func linearModel(t testing.TB, opset int64, softmax bool, meta map[string]string, inDims ...int64) []byte {
	if inDims == nil {
		inDims = []int64{-1, 3, 2, 2}
	}
	w := make([]float32, 12*12)
	for i := range 12 {
		w[i*12+i] = 1
	}
	nodes := []*pb.NodeProto{
		nodeOf("flat", "Flatten", []string{"x"}, []string{"f"}),
		nodeOf("fc", "Gemm", []string{"f", "w", "b"}, []string{"logits"}, intAttr("transB", 1)),
	}
	out := "logits"
	if softmax {
		nodes = append(nodes, nodeOf("prob", "Softmax", []string{"logits"}, []string{"sm"}, intAttr("axis", 1)),
			nodeOf("id", "Identity", []string{"sm"}, []string{"p"}))
		out = "p"
	}
	return modelBytes(t, opset, []*pb.ValueInfoProto{vinfo("x", inDims...)}, []*pb.ValueInfoProto{vinfo(out, -1, 12)},
		nodes, []*pb.TensorProto{floatInit("w", w, 12, 12), floatInit("b", make([]float32, 12), 12)}, meta)
}
