// Package onnxtest builds small ONNX files for tests: the memory bomb of
// issue 15, a graph of a few kilobytes whose intermediate values grow per
// image to whatever size its constants ask for.
package onnxtest

import (
	"google.golang.org/protobuf/proto"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
)

// ExpandBomb is an image classifier (opset 13) of (N,c,h,w) images with
// the given number of classes that reshapes each image to (1, c·h·w),
// expands it to (rows, c·h·w), adds that to itself, averages the rows away
// and ends in a Gemm with zero weights. Each of the two large values holds
// rows·c·h·w float32s per image, so an inference pass on n images holds at
// most 4·n·c·h·w·(1 + 2·rows) bytes at once (PeakBytes).
func ExpandBomb(c, h, w, rows, classes int64) []byte {
	chw := c * h * w
	node := func(name, op string, in []string, attrs ...*pb.AttributeProto) *pb.NodeProto {
		return &pb.NodeProto{Name: name, OpType: op, Input: in, Output: []string{name}, Attribute: attrs}
	}
	ints := func(name string, v ...int64) *pb.AttributeProto {
		return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INTS, Ints: v}
	}
	one := func(name string, v int64) *pb.AttributeProto {
		return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INT, I: v}
	}
	value := func(name string, dims ...int64) *pb.ValueInfoProto {
		sh := &pb.TensorShapeProto{}
		for _, d := range dims {
			dim := &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}}
			if d < 0 {
				dim.Value = &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
			}
			sh.Dim = append(sh.Dim, dim)
		}
		return &pb.ValueInfoProto{Name: name, Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{
			TensorType: &pb.TypeProto_Tensor{ElemType: int32(pb.TensorProto_FLOAT), Shape: sh}}}}
	}
	g := &pb.GraphProto{
		Name:   "expand-bomb",
		Input:  []*pb.ValueInfoProto{value("x", -1, c, h, w)},
		Output: []*pb.ValueInfoProto{value("y", -1, classes)},
		Node: []*pb.NodeProto{
			node("r", "Reshape", []string{"x", "shape"}),
			node("e", "Expand", []string{"r", "big"}),
			node("a", "Add", []string{"e", "e"}),
			node("m", "ReduceMean", []string{"a"}, ints("axes", 1), one("keepdims", 0)),
			node("y", "Gemm", []string{"m", "w"}, one("transB", 1)),
		},
		Initializer: []*pb.TensorProto{
			{Name: "shape", Dims: []int64{3}, DataType: int32(pb.TensorProto_INT64), Int64Data: []int64{-1, 1, chw}},
			{Name: "big", Dims: []int64{3}, DataType: int32(pb.TensorProto_INT64), Int64Data: []int64{1, rows, chw}},
			{Name: "w", Dims: []int64{classes, chw}, DataType: int32(pb.TensorProto_FLOAT), FloatData: make([]float32, classes*chw)},
		},
	}
	b, err := proto.Marshal(&pb.ModelProto{IrVersion: 8, OpsetImport: []*pb.OperatorSetIdProto{{Version: 13}}, Graph: g})
	if err != nil {
		panic(err) // a message built above always marshals
	}
	return b
}

// PeakBytes is the peak of ExpandBomb's intermediate values for n images,
// by hand: the input (n·c·h·w floats) lives throughout; at Add, Expand's
// output and Add's output (n·rows·c·h·w each) are alive with it, Reshape's
// having died at Expand.
func PeakBytes(n, c, h, w, rows int64) int64 {
	chw := c * h * w
	return 4 * (n*chw + 2*n*rows*chw)
}

// TotalBytes is the sum of every value of a pass of ExpandBomb on n images:
// the input, Reshape's, Expand's, Add's, ReduceMean's (n·c·h·w) and the
// logits (n·classes).
func TotalBytes(n, c, h, w, rows, classes int64) int64 {
	chw := c * h * w
	return 4 * (3*n*chw + 2*n*rows*chw + n*classes)
}

// WideMLP is a classifier (opset 13) of (N,c,h,w) images: Flatten, a Gemm
// to hidden units, Relu, a Gemm to classes, with zero weights. Its first
// weight is hidden·c·h·w float32s stored as raw bytes, so the file's size
// is about 4·hidden·(c·h·w + classes) bytes: a large upload that is a
// valid model.
func WideMLP(c, h, w, hidden, classes int64) []byte {
	chw := c * h * w
	value := func(name string, dims ...int64) *pb.ValueInfoProto {
		sh := &pb.TensorShapeProto{}
		for _, d := range dims {
			dim := &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: d}}
			if d < 0 {
				dim.Value = &pb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
			}
			sh.Dim = append(sh.Dim, dim)
		}
		return &pb.ValueInfoProto{Name: name, Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{
			TensorType: &pb.TypeProto_Tensor{ElemType: int32(pb.TensorProto_FLOAT), Shape: sh}}}}
	}
	transB := &pb.AttributeProto{Name: "transB", Type: pb.AttributeProto_INT, I: 1}
	raw := func(name string, dims ...int64) *pb.TensorProto {
		n := int64(4)
		for _, d := range dims {
			n *= d
		}
		return &pb.TensorProto{Name: name, Dims: dims, DataType: int32(pb.TensorProto_FLOAT), RawData: make([]byte, n)}
	}
	g := &pb.GraphProto{
		Name:   "wide-mlp",
		Input:  []*pb.ValueInfoProto{value("x", -1, c, h, w)},
		Output: []*pb.ValueInfoProto{value("y", -1, classes)},
		Node: []*pb.NodeProto{
			{Name: "f", OpType: "Flatten", Input: []string{"x"}, Output: []string{"f"}},
			{Name: "h", OpType: "Gemm", Input: []string{"f", "w1"}, Output: []string{"h"}, Attribute: []*pb.AttributeProto{transB}},
			{Name: "r", OpType: "Relu", Input: []string{"h"}, Output: []string{"r"}},
			{Name: "y", OpType: "Gemm", Input: []string{"r", "w2"}, Output: []string{"y"}, Attribute: []*pb.AttributeProto{transB}},
		},
		Initializer: []*pb.TensorProto{raw("w1", hidden, chw), raw("w2", classes, hidden)},
	}
	b, err := proto.Marshal(&pb.ModelProto{IrVersion: 8, OpsetImport: []*pb.OperatorSetIdProto{{Version: 13}}, Graph: g})
	if err != nil {
		panic(err)
	}
	return b
}
