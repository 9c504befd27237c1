package onnx

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

func floatAttr(name string, v float32) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_FLOAT, F: v}
}

func strAttr(name, v string) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_STRING, S: []byte(v)}
}

// TestInputGradients holds the input gradient of ops whose backward pass
// the interpreter composes itself (Resize and Pad from index selects,
// Slice with steps, Gather, pooling with asymmetric pads, Elu, PRelu,
// Softplus, ConvTranspose cropping) to central finite differences.
func TestInputGradients(t *testing.T) {
	x4 := []int64{1, 2, 5, 5}
	cases := []struct {
		name  string
		shape []int64
		node  *pb.NodeProto
		inits []*pb.TensorProto
	}{
		{"Resize linear", x4, nodeOf("r", "Resize", []string{"x", "", "scales"}, []string{"y"}, strAttr("mode", "linear")),
			[]*pb.TensorProto{floatInit("scales", []float32{1, 1, 1.6, 2.2}, 4)}},
		{"Resize cubic align_corners", x4, nodeOf("r", "Resize", []string{"x", "", "scales"}, []string{"y"}, strAttr("mode", "cubic"),
			strAttr("coordinate_transformation_mode", "align_corners")), []*pb.TensorProto{floatInit("scales", []float32{1, 1, 0.8, 1.4}, 4)}},
		{"Resize nearest", x4, nodeOf("r", "Resize", []string{"x", "", "", "sizes"}, []string{"y"}),
			[]*pb.TensorProto{intInit("sizes", []int64{1, 2, 7, 3}, 4)}},
		{"Pad reflect", x4, nodeOf("p", "Pad", []string{"x", "pads"}, []string{"y"}, strAttr("mode", "reflect")),
			[]*pb.TensorProto{intInit("pads", []int64{0, 0, 2, 1, 0, 0, 1, 3}, 8)}},
		{"Pad edge", x4, nodeOf("p", "Pad", []string{"x", "pads"}, []string{"y"}, strAttr("mode", "edge")),
			[]*pb.TensorProto{intInit("pads", []int64{0, 0, 1, -1, 0, 0, 2, 2}, 8)}},
		{"Slice with steps", x4, nodeOf("s", "Slice", []string{"x", "st", "en", "ax", "sp"}, []string{"y"}),
			[]*pb.TensorProto{intInit("st", []int64{4, 0}, 2), intInit("en", []int64{-10, 5}, 2), intInit("ax", []int64{2, 3}, 2), intInit("sp", []int64{-2, 2}, 2)}},
		{"Gather", x4, nodeOf("g", "Gather", []string{"x", "idx"}, []string{"y"}, intAttr("axis", 3)),
			[]*pb.TensorProto{intInit("idx", []int64{4, -1, 0, 2}, 2, 2)}},
		{"AveragePool asymmetric pads", x4, nodeOf("a", "AveragePool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 3, 2),
			intsAttr("pads", 1, 0, 0, 1), intsAttr("strides", 2, 1)), nil},
		{"MaxPool same_upper", x4, nodeOf("m", "MaxPool", []string{"x"}, []string{"y"}, intsAttr("kernel_shape", 2, 2),
			strAttr("auto_pad", "SAME_UPPER")), nil},
		{"ConvTranspose output_shape", x4, nodeOf("c", "ConvTranspose", []string{"x", "w", "b"}, []string{"y"}, intsAttr("strides", 2, 2),
			intsAttr("output_shape", 10, 12)), []*pb.TensorProto{
			floatInit("w", []float32{0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, -0.9, 1, 0.2, 0.1, -0.3, 0.2, 0.5, 0.4, 0.3, -0.1}, 2, 1, 3, 3),
			floatInit("b", []float32{0.5}, 1)}},
		{"Elu", x4, nodeOf("e", "Elu", []string{"x"}, []string{"y"}, floatAttr("alpha", 0.7)), nil},
		{"PRelu", x4, nodeOf("p", "PRelu", []string{"x", "slope"}, []string{"y"}), []*pb.TensorProto{floatInit("slope", []float32{0.1, 0.3}, 2, 1, 1)}},
		{"Softplus", x4, nodeOf("s", "Softplus", []string{"x"}, []string{"y"}), nil},
		{"HardSigmoid", x4, nodeOf("h", "HardSigmoid", []string{"x"}, []string{"y"}, floatAttr("alpha", 0.3)), nil},
		{"Softmax opset 11", x4, nodeOf("s", "Softmax", []string{"x"}, []string{"y"}, intAttr("axis", 2)), nil},
		{"ReduceMean", x4, nodeOf("r", "ReduceMean", []string{"x"}, []string{"y"}, intsAttr("axes", 1, 3), intAttr("keepdims", 0)), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opset := int64(13)
			if c.node.OpType == "Softmax" || c.node.OpType == "ReduceMean" {
				opset = 11
			}
			gp := &pb.GraphProto{Node: []*pb.NodeProto{c.node}, Initializer: c.inits,
				Input: []*pb.ValueInfoProto{{Name: "x"}}, Output: []*pb.ValueInfoProto{{Name: "y"}}}
			g, err := buildGraph(gp, opset, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer g.free()
			r := rand.New(rand.NewPCG(1, 2))
			n := int(prod(c.shape))
			xs := make([]float32, n)
			for i := range xs {
				xs[i] = float32(r.NormFloat64())
			}
			torch.Scoped(func(s *torch.Scope) {
				forward := func(x *torch.Tensor) *torch.Tensor {
					res, err := g.run(context.Background(), torch.CPU, []*torch.Tensor{x}, []string{"y"})
					if err != nil {
						t.Fatal(err)
					}
					return res[0]
				}
				x := torch.FromSlice(s, xs, c.shape...).SetRequiresGrad(true)
				y := forward(x)
				ws := make([]float32, y.Numel())
				for i := range ws {
					ws[i] = float32(r.NormFloat64())
				}
				w := torch.FromSlice(s, ws, y.Shape()...)
				grad := torch.Grads([]*torch.Tensor{y.Mul(w).Sum()}, []*torch.Tensor{x})[0].Float32s()
				loss := func(v []float32) float64 {
					var l float64
					torch.NoGrad(func() { l = forward(torch.FromSlice(s, v, c.shape...)).Mul(w).Sum().Item() })
					return l
				}
				const h = 1e-2
				worst, scale := 0.0, 1e-3
				for i := range xs {
					v := append([]float32{}, xs...)
					v[i] += h
					up := loss(v)
					v[i] -= 2 * h
					fd := (up - loss(v)) / (2 * h)
					worst = max(worst, math.Abs(fd-float64(grad[i])))
					scale = max(scale, math.Abs(fd))
				}
				if worst > 2e-2*scale {
					t.Errorf("input gradient differs from finite differences by %.3g (largest gradient %.3g)", worst, scale)
				}
			})
		})
	}
}
