package onnx

// Export. This file writes models of backend/nn as ONNX graphs built with
// the protobuf types of backend/onnx/onnxpb (generated from onnx.proto3).
// It knows no architecture: the model's forward pass runs once on a
// recording context (nn.Model.Trace), as PyTorch's and GoMLX's tracing
// exporters do, and each recorded layer call is lowered to ONNX nodes here.
// The graph mirrors the layers op for op, with the model's normalisation as
// its first two nodes (Sub, Div), so the file takes pixel-space NCHW images
// in [0,1] and its metadata says so: conferral.layout "nchw",
// conferral.scale "1", conferral.mean "0,…" and conferral.std "1,…".

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/conferral/conferral/backend/nn"
	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// Opsets Export can write. From opset 11 on, Clip takes its bounds as
// inputs and MaxPool has ceil_mode, which the zoo's pooling needs; 17 is
// the newest opset that Debian's python3-onnx (1.12) checks.
const (
	MinExportOpset     = 11
	MaxExportOpset     = 17
	DefaultExportOpset = 17
)

// exportIRVersion is the ONNX IR version written: 8, the version of
// onnx 1.12 (opsets up to 17).
const exportIRVersion = 8

// Metadata keys of the input convention, shared with the importer.
const (
	MetaLayout = "conferral.layout"
	MetaScale  = "conferral.scale"
	MetaMean   = "conferral.mean"
	MetaStd    = "conferral.std"
)

// ExportOptions configure Export.
type ExportOptions struct {
	// Opset is the ONNX operator set version, MinExportOpset to
	// MaxExportOpset; 0 means DefaultExportOpset.
	Opset int64
	// Metadata adds entries to the file's metadata_props (provenance, for
	// example); the input-convention keys cannot be overridden.
	Metadata map[string]string
}

// Export writes m as an ONNX model to w. The model is exported as it
// predicts: batch norm with its running statistics, no dropout.
func Export(m *nn.Model, w io.Writer, o ExportOptions) error {
	mp, err := ExportModel(m, o)
	if err != nil {
		return err
	}
	b, err := proto.Marshal(mp)
	if err != nil {
		return fmt.Errorf("onnx export: encoding %s: %w", m.Spec.Arch, err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("onnx export: writing %s: %w", m.Spec.Arch, err)
	}
	return nil
}

// ExportFile writes m as an ONNX model to path, atomically (a temporary file
// in the same directory, renamed when complete).
func ExportFile(m *nn.Model, path string, o ExportOptions) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("onnx export: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = Export(m, tmp, o); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("onnx export: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("onnx export: %w", err)
	}
	return nil
}

// ExportModel builds the ONNX model proto of m from a trace of its forward
// pass (nn.Model.Trace): each recorded layer call becomes a node, each
// model variable it reads an initializer, so any architecture written with
// backend/nn's layers exports without code here.
func ExportModel(m *nn.Model, o ExportOptions) (mp *pb.ModelProto, err error) {
	opset := o.Opset
	if opset == 0 {
		opset = DefaultExportOpset
	}
	if opset < MinExportOpset || opset > MaxExportOpset {
		return nil, fmt.Errorf("onnx export: opset %d is not supported (want %d to %d)", opset, MinExportOpset, MaxExportOpset)
	}
	tr, err := m.Trace()
	if err != nil {
		return nil, fmt.Errorf("onnx export: %w", err)
	}
	b := &exBuilder{g: &pb.GraphProto{Name: m.Spec.Arch}, inits: map[string]bool{}}
	err = torch.Catch(func() {
		defer func() {
			if r := recover(); r != nil {
				e, ok := r.(exportError)
				if !ok {
					panic(r)
				}
				err = e.error
			}
		}()
		b.trace(tr)
	})
	if err != nil {
		return nil, fmt.Errorf("onnx export: %s: %w", m.Spec.Arch, err)
	}
	classes := int64(len(m.Spec.Classes))
	b.g.Input = []*pb.ValueInfoProto{exTensorInfo("input", exDimParam("N"), exDimValue(m.Spec.C), exDimValue(m.Spec.H), exDimValue(m.Spec.W))}
	b.g.Output = []*pb.ValueInfoProto{exTensorInfo("logits", exDimParam("N"), exDimValue(classes))}
	b.g.DocString = fmt.Sprintf("Conferral %s classifier of %s (%d classes): pixel-space NCHW input in [0,1], normalisation (mean %v, std %v) inside, logits out",
		m.Spec.Arch, m.Spec.Dataset, classes, m.Spec.Mean, m.Spec.Std)
	return &pb.ModelProto{
		IrVersion:     exportIRVersion,
		OpsetImport:   []*pb.OperatorSetIdProto{{Domain: "", Version: opset}},
		ProducerName:  "conferral",
		Graph:         b.g,
		MetadataProps: exMetadata(m.Spec, o.Metadata),
	}, nil
}

// ExportMetadata is the input convention of an exported model of spec:
// normalisation is in the graph, so the consumer's mean and std are 0 and 1.
func ExportMetadata(spec nn.Spec) map[string]string {
	zeros := make([]string, spec.C)
	ones := make([]string, spec.C)
	for i := range zeros {
		zeros[i], ones[i] = "0", "1"
	}
	classes, _ := json.Marshal(spec.Classes)
	return map[string]string{
		MetaLayout:          "nchw",
		MetaScale:           "1",
		MetaMean:            strings.Join(zeros, ","),
		MetaStd:             strings.Join(ones, ","),
		"conferral.arch":    spec.Arch,
		"conferral.dataset": spec.Dataset,
		"conferral.classes": string(classes),
	}
}

func exMetadata(spec nn.Spec, extra map[string]string) []*pb.StringStringEntryProto {
	all := map[string]string{}
	for k, v := range extra {
		all[k] = v
	}
	for k, v := range ExportMetadata(spec) {
		all[k] = v
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*pb.StringStringEntryProto, len(keys))
	for i, k := range keys {
		out[i] = &pb.StringStringEntryProto{Key: k, Value: all[k]}
	}
	return out
}

// trace writes the trace's ops as nodes, "input" for the traced input and
// "logits" for its output.
func (b *exBuilder) trace(tr *nn.Trace) {
	names := make([]string, len(tr.Ops)+1)
	names[0] = "input"
	for i, op := range tr.Ops {
		in := make([]string, len(op.Inputs))
		for j, o := range op.Inputs {
			if o.Var != nil {
				in[j] = b.variable(o.Var)
			} else {
				in[j] = names[o.Value]
			}
		}
		names[i+1] = b.lower(op, in)
	}
	if tr.Output != len(tr.Ops) || len(tr.Ops) == 0 { // the output is not the last op's
		b.node("Identity", nil, names[tr.Output])
	}
	b.g.Node[len(b.g.Node)-1].Output[0] = "logits"
}

// lower appends the ONNX form of a recorded layer op, whose operands have
// the graph names in, and returns its output's name. A layer kind that
// backend/nn records is written here once, for every architecture.
func (b *exBuilder) lower(op nn.Op, in []string) string {
	switch op.Kind {
	case nn.OpConv2d:
		k, s, p := op.Kernel, op.Stride, op.Padding
		return b.node("Conv", []*pb.AttributeProto{
			exInts("kernel_shape", k, k),
			exInts("strides", s, s),
			exInts("pads", p, p, p, p),
			exInts("dilations", 1, 1),
			exInt("group", op.Groups),
		}, in...)
	case nn.OpLinear: // x·Wᵀ + b
		return b.node("Gemm", []*pb.AttributeProto{exFloat("alpha", 1), exFloat("beta", 1), exInt("transB", 1)}, in...)
	case nn.OpBatchNorm: // ONNX's momentum weighs the old statistic, PyTorch's the new one
		return b.node("BatchNormalization", []*pb.AttributeProto{exFloat("epsilon", float32(op.Eps)), exFloat("momentum", float32(1-op.Momentum))}, in...)
	case nn.OpRelu:
		return b.node("Relu", nil, in...)
	case nn.OpRelu6: // Clip with its bounds as inputs (opset 11 on)
		return b.node("Clip", nil, in[0], b.constant("clip_min", nil, 0), b.constant("clip_max", nil, 6))
	case nn.OpMaxPool, nn.OpAvgPool:
		k, s, p := op.Kernel, op.Stride, op.Padding
		attrs := []*pb.AttributeProto{exInts("kernel_shape", k, k), exInts("strides", s, s), exInts("pads", p, p, p, p), exInt("ceil_mode", exBool(op.CeilMode))}
		if op.Kind == nn.OpMaxPool {
			return b.node("MaxPool", attrs, in...)
		}
		if p > 0 { // nn.AvgPool averages over the padding too, as PyTorch by default
			attrs = append(attrs, exInt("count_include_pad", 1))
		}
		return b.node("AveragePool", attrs, in...)
	case nn.OpGlobalAvgPool:
		return b.node("GlobalAveragePool", nil, in...)
	case nn.OpFlatten:
		return b.node("Flatten", []*pb.AttributeProto{exInt("axis", 1)}, in...)
	case nn.OpAdd:
		return b.node("Add", nil, in...)
	case nn.OpSub:
		return b.node("Sub", nil, in...)
	case nn.OpMul:
		return b.node("Mul", nil, in...)
	case nn.OpDiv:
		return b.node("Div", nil, in...)
	case nn.OpConcat:
		return b.node("Concat", []*pb.AttributeProto{exInt("axis", op.Dim)}, in...)
	}
	b.fail("layer %q: %s has no ONNX form", op.Name, op.Kind)
	return ""
}

func exBool(v bool) int64 {
	if v {
		return 1
	}
	return 0
}

// exportError carries a failure out of the builder's call chain.
type exportError struct{ error }

// exBuilder appends nodes and initializers to a graph.
type exBuilder struct {
	g     *pb.GraphProto
	inits map[string]bool
	n     int
}

func (b *exBuilder) fail(format string, args ...any) {
	panic(exportError{fmt.Errorf(format, args...)})
}

// variable adds the model variable v as an initializer (once) and returns
// its name.
func (b *exBuilder) variable(v *nn.Variable) string {
	if !b.inits[v.Name] {
		b.inits[v.Name] = true
		b.g.Initializer = append(b.g.Initializer, exTensor(v.Name, v.T.Shape(), v.T.Float32s()))
	}
	return v.Name
}

// constant adds a float32 initializer that is not a model variable.
func (b *exBuilder) constant(name string, shape []int64, data ...float32) string {
	if !b.inits[name] {
		b.inits[name] = true
		b.g.Initializer = append(b.g.Initializer, exTensor(name, shape, data))
	}
	return name
}

// node appends an op with one output and returns the output's name.
func (b *exBuilder) node(op string, attrs []*pb.AttributeProto, inputs ...string) string {
	b.n++
	out := fmt.Sprintf("%s_%d", op, b.n)
	b.g.Node = append(b.g.Node, &pb.NodeProto{
		Name: out, OpType: op, Input: inputs, Output: []string{out}, Attribute: attrs,
	})
	return out
}

// Protobuf helpers.

func exTensor(name string, shape []int64, data []float32) *pb.TensorProto {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &pb.TensorProto{Name: name, Dims: append([]int64{}, shape...), DataType: int32(pb.TensorProto_FLOAT), RawData: raw}
}

func exInt(name string, v int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INT, I: v}
}

func exInts(name string, v ...int64) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_INTS, Ints: v}
}

func exFloat(name string, v float32) *pb.AttributeProto {
	return &pb.AttributeProto{Name: name, Type: pb.AttributeProto_FLOAT, F: v}
}

type exDim = *pb.TensorShapeProto_Dimension

func exDimValue(v int64) exDim {
	return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimValue{DimValue: v}}
}

func exDimParam(p string) exDim {
	return &pb.TensorShapeProto_Dimension{Value: &pb.TensorShapeProto_Dimension_DimParam{DimParam: p}}
}

func exTensorInfo(name string, dims ...exDim) *pb.ValueInfoProto {
	return &pb.ValueInfoProto{Name: name, Type: &pb.TypeProto{Value: &pb.TypeProto_TensorType{TensorType: &pb.TypeProto_Tensor{
		ElemType: int32(pb.TensorProto_FLOAT), Shape: &pb.TensorShapeProto{Dim: dims},
	}}}}
}
