package onnx

// Export. This file writes zoo models (backend/nn) as ONNX graphs built with
// the protobuf types of backend/onnx/onnxpb (generated from onnx.proto3). The
// graph mirrors the zoo's layers op for op, with the model's normalisation
// as its first two nodes (Sub, Div), so the file takes pixel-space NCHW
// images in [0,1] and its metadata says so: conferral.layout "nchw",
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

// ExportModel builds the ONNX model proto of m.
func ExportModel(m *nn.Model, o ExportOptions) (mp *pb.ModelProto, err error) {
	opset := o.Opset
	if opset == 0 {
		opset = DefaultExportOpset
	}
	if opset < MinExportOpset || opset > MaxExportOpset {
		return nil, fmt.Errorf("onnx export: opset %d is not supported (want %d to %d)", opset, MinExportOpset, MaxExportOpset)
	}
	arch, ok := exportArchs()[m.Spec.Arch]
	if !ok {
		return nil, fmt.Errorf("onnx export: architecture %q has no ONNX export", m.Spec.Arch)
	}
	b := &exBuilder{ctx: m.Context(), opset: opset, g: &pb.GraphProto{Name: m.Spec.Arch}, inits: map[string]bool{}}
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
		x := exValue{name: "input", c: m.Spec.C}
		x = b.node("Sub", x.c, nil, x.name, b.variable("normalize.mean"))
		x = b.node("Div", x.c, nil, x.name, b.variable("normalize.std"))
		out := arch(b, x)
		b.rename(out.name, "logits")
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

// exportArchs maps zoo architectures onto graph builders. Each mirrors its
// counterpart in backend/nn/zoo.go; the round-trip tests hold them together.
func exportArchs() map[string]func(*exBuilder, exValue) exValue {
	return map[string]func(*exBuilder, exValue) exValue{
		"cnn":         exportSmallCNN,
		"lenet":       exportLeNet,
		"mlp":         exportMLP,
		"resnet20":    exportResNet,
		"resnet56":    exportResNet,
		"vgg16":       exportVGG,
		"vgg19":       exportVGG,
		"densenet":    exportDenseNet,
		"mobilenetv2": exportMobileNetV2,
		"widecnn":     exportWideCNN,
		"deepnarrow":  exportDeepNarrow,
		"mlpdrop":     exportMLP, // fc1–fc3 with ReLUs; dropout is the identity
	}
}

func exportSmallCNN(b *exBuilder, x exValue) exValue {
	for i := 1; i <= 3; i++ {
		x = b.maxPool(b.convBNReLU(fmt.Sprintf("block%d", i), x, 1), 2)
	}
	x = b.relu(b.dense("fc1", b.flatten(x)))
	return b.dense("fc2", x)
}

func exportLeNet(b *exBuilder, x exValue) exValue {
	x = b.maxPool(b.relu(b.convPad("conv1", x, 1, -1)), 2)
	x = b.maxPool(b.relu(b.convPad("conv2", x, 1, 0)), 2)
	x = b.relu(b.dense("fc1", b.flatten(x)))
	x = b.relu(b.dense("fc2", x))
	return b.dense("fc3", x)
}

func exportMLP(b *exBuilder, x exValue) exValue {
	x = b.relu(b.dense("fc1", b.flatten(x)))
	x = b.relu(b.dense("fc2", x))
	return b.dense("fc3", x)
}

func exportWideCNN(b *exBuilder, x exValue) exValue {
	x = b.relu(b.convPad("conv1", x, 2, -1))
	x = b.relu(b.convPad("conv2", x, 2, -1))
	return b.dense("fc", b.globalAvgPool(x))
}

// exportDeepNarrow follows nn.DeepNarrow: a stem, stages of residual
// blocks whose branch is scaled by its alpha, a 1×1 projection and a 2×2
// average pool where a stage has one.
func exportDeepNarrow(b *exBuilder, x exValue) exValue {
	x = b.avgPool(b.relu(b.convPad("stem", x, 1, -1)), 2)
	for s := 1; b.has(fmt.Sprintf("stage%d.block1.conv1.weight", s)); s++ {
		if p := fmt.Sprintf("stage%d.proj", s); b.has(p + ".weight") {
			x = b.avgPool(b.convPad(p, x, 1, -1), 2)
		}
		for i := 1; b.has(fmt.Sprintf("stage%d.block%d.conv1.weight", s, i)); i++ {
			p := fmt.Sprintf("stage%d.block%d.", s, i)
			h := b.convPad(p+"conv2", b.relu(b.convPad(p+"conv1", x, 1, -1)), 1, -1)
			h = b.node("Mul", h.c, nil, h.name, b.variable(p+"alpha"))
			x = b.relu(b.add(h, x))
		}
	}
	return b.dense("fc", b.globalAvgPool(x))
}

func exportResNet(b *exBuilder, x exValue) exValue {
	x = b.convBNReLU("stem", x, 1)
	for stage := 1; stage <= 3; stage++ {
		for i := 0; b.has(fmt.Sprintf("layer%d.%d.conv1.weight", stage, i)); i++ {
			p := fmt.Sprintf("layer%d.%d.", stage, i)
			stride := int64(1)
			if stage > 1 && i == 0 {
				stride = 2
			}
			out := b.relu(b.bn(p+"bn1", b.conv(p+"conv1", x, stride)))
			out = b.bn(p+"bn2", b.conv(p+"conv2", out, 1))
			short := x
			if b.has(p + "short.conv.weight") {
				short = b.bn(p+"short.bn", b.conv(p+"short.conv", x, stride))
			}
			x = b.relu(b.add(out, short))
		}
	}
	return b.dense("fc", b.globalAvgPool(x))
}

func exportVGG(b *exBuilder, x exValue) exValue {
	// features.i is a conv–BN–ReLU unit where it has variables and a 2×2
	// max-pool where it has none; the configuration ends with a pool.
	last := -1
	for i := 0; i < 64; i++ {
		if b.has(fmt.Sprintf("features.%d.conv.weight", i)) {
			last = i
		}
	}
	if last < 0 {
		b.fail("no features.*.conv layers")
	}
	for i := 0; i <= last+1; i++ {
		p := fmt.Sprintf("features.%d", i)
		if b.has(p + ".conv.weight") {
			x = b.convBNReLU(p, x, 1)
		} else {
			x = b.maxPool(x, 2)
		}
	}
	return b.dense("fc", b.globalAvgPool(x))
}

func exportDenseNet(b *exBuilder, x exValue) exValue {
	x = b.conv("stem", x, 1)
	for blk := 1; b.has(fmt.Sprintf("block%d.0.conv1.weight", blk)); blk++ {
		for i := 0; b.has(fmt.Sprintf("block%d.%d.conv1.weight", blk, i)); i++ {
			p := fmt.Sprintf("block%d.%d.", blk, i)
			out := b.conv(p+"conv1", b.relu(b.bn(p+"bn1", x)), 1)
			out = b.conv(p+"conv2", b.relu(b.bn(p+"bn2", out)), 1)
			x = b.concat(x, out)
		}
		if p := fmt.Sprintf("trans%d.", blk); b.has(p + "conv.weight") {
			x = b.avgPool(b.conv(p+"conv", b.relu(b.bn(p+"bn", x)), 1), 2)
		}
	}
	x = b.relu(b.bn("bn", x))
	return b.dense("fc", b.globalAvgPool(x))
}

// mobileNetV2Strides are the first block's strides of the stages of
// nn.MobileNetV2 (CIFAR strides); the variables do not record them.
func mobileNetV2Strides() []int64 { return []int64{1, 1, 2, 2, 1, 2, 1} }

func exportMobileNetV2(b *exBuilder, x exValue) exValue {
	x = b.relu6(b.bn("stem.bn", b.conv("stem.conv", x, 1)))
	strides := mobileNetV2Strides()
	for s := 1; b.has(fmt.Sprintf("stage%d.0.dw.conv.weight", s)); s++ {
		if s > len(strides) {
			b.fail("stage%d: more stages than MobileNetV2 has", s)
		}
		for i := 0; b.has(fmt.Sprintf("stage%d.%d.dw.conv.weight", s, i)); i++ {
			p := fmt.Sprintf("stage%d.%d.", s, i)
			stride := int64(1)
			if i == 0 {
				stride = strides[s-1]
			}
			h := x
			if b.has(p + "expand.conv.weight") {
				h = b.relu6(b.bn(p+"expand.bn", b.conv(p+"expand.conv", h, 1)))
			}
			h = b.relu6(b.bn(p+"dw.bn", b.conv(p+"dw.conv", h, stride)))
			h = b.bn(p+"project.bn", b.conv(p+"project.conv", h, 1))
			if stride == 1 && x.c == h.c {
				h = b.add(h, x)
			}
			x = h
		}
	}
	x = b.relu6(b.bn("head.bn", b.conv("head.conv", x, 1)))
	return b.dense("fc", b.globalAvgPool(x))
}

// exValue is a tensor of the graph: its name and its channels (dimension 1).
type exValue struct {
	name string
	c    int64
}

// exportError carries a failure out of the builder's call chain.
type exportError struct{ error }

// exBuilder appends nodes and initializers to a graph.
type exBuilder struct {
	ctx   *nn.Context
	opset int64
	g     *pb.GraphProto
	inits map[string]bool
	n     int
}

func (b *exBuilder) fail(format string, args ...any) {
	panic(exportError{fmt.Errorf(format, args...)})
}

func (b *exBuilder) has(name string) bool {
	_, ok := b.ctx.Variable(name)
	return ok
}

// variable adds the model variable name as an initializer (once) and
// returns its name.
func (b *exBuilder) variable(name string) string {
	v, ok := b.ctx.Variable(name)
	if !ok {
		b.fail("the model has no variable %s", name)
	}
	if !b.inits[name] {
		b.inits[name] = true
		b.g.Initializer = append(b.g.Initializer, exTensor(name, v.T.Shape(), v.T.Float32s()))
	}
	return name
}

func (b *exBuilder) shape(name string) []int64 {
	v, ok := b.ctx.Variable(name)
	if !ok {
		b.fail("the model has no variable %s", name)
	}
	return v.T.Shape()
}

// constant adds a float32 initializer that is not a model variable.
func (b *exBuilder) constant(name string, shape []int64, data ...float32) string {
	if !b.inits[name] {
		b.inits[name] = true
		b.g.Initializer = append(b.g.Initializer, exTensor(name, shape, data))
	}
	return name
}

// node appends an op with one output of c channels and returns it.
func (b *exBuilder) node(op string, c int64, attrs []*pb.AttributeProto, inputs ...string) exValue {
	b.n++
	out := fmt.Sprintf("%s_%d", op, b.n)
	b.g.Node = append(b.g.Node, &pb.NodeProto{
		Name: fmt.Sprintf("%s_%d", op, b.n), OpType: op, Input: inputs, Output: []string{out}, Attribute: attrs,
	})
	return exValue{name: out, c: c}
}

// rename makes the last node's output the graph output name.
func (b *exBuilder) rename(from, to string) {
	last := b.g.Node[len(b.g.Node)-1]
	if last.Output[0] != from {
		b.fail("output %s is not the last node's", from)
	}
	last.Output[0] = to
}

// conv is nn.Conv2d with "same" padding k/2 (nn.ConvOpts{Padding: -1};
// the zoo's 1×1 convolutions have padding 0 either way).
func (b *exBuilder) conv(prefix string, x exValue, stride int64) exValue {
	return b.convPad(prefix, x, stride, -1)
}

// convPad is nn.Conv2d: a k×k kernel, padding pad (−1: k/2), groups from
// the weight's shape, a bias where the model has one.
func (b *exBuilder) convPad(prefix string, x exValue, stride, pad int64) exValue {
	ws := b.shape(prefix + ".weight")
	if len(ws) != 4 || ws[1] == 0 || x.c%ws[1] != 0 || ws[2] != ws[3] {
		b.fail("%s.weight has shape %v for %d input channels", prefix, ws, x.c)
	}
	k := ws[2]
	if pad < 0 {
		pad = k / 2
	}
	inputs := []string{x.name, b.variable(prefix + ".weight")}
	if b.has(prefix + ".bias") {
		inputs = append(inputs, b.variable(prefix+".bias"))
	}
	return b.node("Conv", ws[0], []*pb.AttributeProto{
		exInts("kernel_shape", k, ws[3]),
		exInts("strides", stride, stride),
		exInts("pads", pad, pad, pad, pad),
		exInts("dilations", 1, 1),
		exInt("group", x.c/ws[1]),
	}, inputs...)
}

// bn is batch norm in inference form (ε 1e-5, as nn.BatchNorm).
func (b *exBuilder) bn(prefix string, x exValue) exValue {
	return b.node("BatchNormalization", x.c, []*pb.AttributeProto{exFloat("epsilon", 1e-5), exFloat("momentum", 0.9)},
		x.name, b.variable(prefix+".weight"), b.variable(prefix+".bias"),
		b.variable(prefix+".running_mean"), b.variable(prefix+".running_var"))
}

func (b *exBuilder) convBNReLU(prefix string, x exValue, stride int64) exValue {
	return b.relu(b.bn(prefix+".bn", b.conv(prefix+".conv", x, stride)))
}

func (b *exBuilder) relu(x exValue) exValue { return b.node("Relu", x.c, nil, x.name) }

// relu6 is Clip(0, 6) with its bounds as inputs (opset 11 on).
func (b *exBuilder) relu6(x exValue) exValue {
	return b.node("Clip", x.c, nil, x.name, b.constant("clip_min", nil, 0), b.constant("clip_max", nil, 6))
}

func (b *exBuilder) add(x, y exValue) exValue { return b.node("Add", x.c, nil, x.name, y.name) }

func (b *exBuilder) concat(x, y exValue) exValue {
	return b.node("Concat", x.c+y.c, []*pb.AttributeProto{exInt("axis", 1)}, x.name, y.name)
}

// maxPool is nn.MaxPool: k×k, stride k, rounding up.
func (b *exBuilder) maxPool(x exValue, k int64) exValue {
	return b.node("MaxPool", x.c, []*pb.AttributeProto{
		exInts("kernel_shape", k, k), exInts("strides", k, k), exInts("pads", 0, 0, 0, 0), exInt("ceil_mode", 1),
	}, x.name)
}

// avgPool is torch.AvgPool2d with kernel and stride k, rounding down.
func (b *exBuilder) avgPool(x exValue, k int64) exValue {
	return b.node("AveragePool", x.c, []*pb.AttributeProto{
		exInts("kernel_shape", k, k), exInts("strides", k, k), exInts("pads", 0, 0, 0, 0), exInt("ceil_mode", 0),
	}, x.name)
}

// globalAvgPool is nn.GlobalAvgPool: average each channel, flatten to (N, C).
func (b *exBuilder) globalAvgPool(x exValue) exValue {
	return b.flatten(b.node("GlobalAveragePool", x.c, nil, x.name))
}

// flatten reshapes (N, …) to (N, rest); the channel count is not tracked
// past it.
func (b *exBuilder) flatten(x exValue) exValue {
	return b.node("Flatten", 0, []*pb.AttributeProto{exInt("axis", 1)}, x.name)
}

// dense is nn.Dense: x·Wᵀ + b.
func (b *exBuilder) dense(prefix string, x exValue) exValue {
	ws := b.shape(prefix + ".weight")
	inputs := []string{x.name, b.variable(prefix + ".weight")}
	if b.has(prefix + ".bias") {
		inputs = append(inputs, b.variable(prefix+".bias"))
	}
	return b.node("Gemm", ws[0], []*pb.AttributeProto{exFloat("alpha", 1), exFloat("beta", 1), exInt("transB", 1)}, inputs...)
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
