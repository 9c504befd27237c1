// Package onnx imports ONNX image classifiers and runs them on backend/torch.
//
// Import. Read and Open parse a model with the ONNX protobuf types of
// backend/onnx/onnxpb (generated from onnx.proto3), check the graph (every op
// supported, every value defined before use, nodes in a runnable order) and
// move its weights into libtorch tensors. The interpreter then maps each ONNX
// node onto backend/torch ops, so a forward pass costs what the same layers
// cost in the zoo and gradients flow back to the input: an imported model can
// be a suspect (argmax labels) and a source for C-BIM (input gradients).
//
// Supported ops (default domain, opsets 9 to 17): Conv, ConvTranspose,
// BatchNormalization, Relu, LeakyRelu, Clip, Sigmoid, HardSigmoid, HardSwish,
// Tanh, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Gemm, MatMul,
// Add, Sub, Mul, Div, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Concat,
// Pad, Softmax, LogSoftmax, Dropout, Identity, Constant, Shape, Gather,
// Slice, ReduceMean, Resize, Upsample and Cast. Tensors are float32, int64,
// uint8 or bool in libtorch; double is computed as float32 and the other
// integer types as int64.
//
// Input convention. Model.Forward takes pixel-space NCHW images in [0,1], as
// every model in Conferral does, and converts them to what the file expects:
// v = (x·Scale − Mean)/Std per channel, then NHWC when the layout is "nhwc".
// Layout, scale, mean and std come from Options when set, otherwise from the
// model's metadata (keys conferral.layout, conferral.scale, conferral.mean,
// conferral.std; mean and std are comma-separated lists) and, for the
// layout, from the input's shape (a last dimension of 1 or 3 after a larger
// one means NHWC).
//
// Output convention. Forward returns logits. When the graph ends in Softmax
// the interpreter stops before it and returns the Softmax's input, so the
// argmax is the same and softmax of the result is the model's output; a
// final LogSoftmax is kept (log-probabilities are logits).
package onnx

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// maxPixels bounds an image's values (C·H·W) as the file declares them:
// 4 Mi, an RGB image of 1182×1182.
const maxPixels = 1 << 22

// Model is an imported image classifier. Forward may run on several
// goroutines at once; To and Free may not run alongside anything else.
type Model struct {
	g         *graph
	dev       torch.Device
	layout    string
	scale     float32
	mean, std []float32
	rank      int // of the graph's input: 4 for images, 2 for flat vectors
	c, h, w   int
	classes   int
	output    string // the value Forward returns
	opset     int64
	maxMem    int64 // the budget of one pass's estimate, in bytes

	estMu    sync.Mutex
	estCache map[string]MemoryEstimate // by the graph input's shape
}

// newModel checks the graph of mp and sets up the input conversion.
func newModel(mp *pb.ModelProto, o Options) (m *Model, err error) {
	opset, err := opsetOf(mp)
	if err != nil {
		return nil, err
	}
	maxMem, err := budgetOf(o.MaxMemory)
	if err != nil {
		return nil, err
	}
	g, err := buildGraph(mp.Graph, opset, maxMem)
	if err != nil {
		return nil, err
	}
	m = &Model{g: g, dev: torch.CPU, opset: opset, maxMem: maxMem}
	defer func() {
		if err != nil {
			g.free()
		}
	}()
	if len(g.inputs) != 1 {
		return nil, fmt.Errorf("onnx: the model takes %d inputs; an image classifier takes one", len(g.inputs))
	}
	in := g.inputs[0]
	if in.dtype != 0 && in.dtype != int32(pb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("onnx: input %q is %s; only float input is supported", in.name, pb.TensorProto_DataType(in.dtype))
	}
	meta := map[string]string{}
	for _, p := range mp.MetadataProps {
		meta[p.Key] = p.Value
	}
	if err := m.setInput(in, meta, o); err != nil {
		return nil, err
	}
	m.setOutput()
	if out := g.outputs[0].shape; len(out) > 0 && out[len(out)-1] > 0 {
		m.classes = int(out[len(out)-1])
	}
	if int64(m.c)*int64(m.h)*int64(m.w) > maxPixels {
		return nil, fmt.Errorf("onnx: input of %d×%d×%d values is over the limit of %d", m.c, m.h, m.w, maxPixels)
	}
	if m.c > 0 && m.h > 0 && m.w > 0 {
		// The estimate of one image, before anything runs on it.
		e, eerr := m.Estimate(1)
		if eerr != nil {
			return nil, eerr
		}
		if err := m.checkBudget(e, false); err != nil {
			return nil, err
		}
		// One run on a blank image checks every node's shapes now rather
		// than on the first suspect query, and finds the class count.
		var y *torch.Tensor
		var ferr error
		err := torch.Catch(func() {
			torch.Scoped(func(s *torch.Scope) {
				x := torch.Zeros(s, torch.CPU, 1, int64(m.c), int64(m.h), int64(m.w))
				torch.NoGrad(func() { y, ferr = m.ForwardContext(context.Background(), x) })
				if ferr != nil {
					return
				}
				if y.Dim() != 2 || y.Size(0) != 1 {
					ferr = fmt.Errorf("onnx: output %q has shape %v, want (batch, classes)", m.output, y.Shape())
					return
				}
				m.classes = int(y.Size(1))
			})
		})
		if err == nil {
			err = ferr
		}
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setInput decides layout, scale and normalisation and reads the input size.
func (m *Model) setInput(in valueInfo, meta map[string]string, o Options) error {
	m.layout = strings.ToLower(strings.TrimSpace(o.Layout))
	if m.layout == "auto" { // as the CLI and the server say "decide from the file"
		m.layout = ""
	}
	if m.layout == "" {
		m.layout = strings.ToLower(meta[MetaLayout])
	}
	s := in.shape
	m.rank = len(s)
	if m.rank != 4 && m.rank != 2 && s != nil {
		return fmt.Errorf("onnx: input %q has shape %v; want (N,C,H,W), (N,H,W,C) or (N,features)", in.name, s)
	}
	if m.layout == "" {
		m.layout = "nchw"
		if m.rank == 4 && (s[3] == 1 || s[3] == 3) && s[1] != 1 && s[1] != 3 {
			m.layout = "nhwc"
		}
	}
	if m.layout != "nchw" && m.layout != "nhwc" {
		return fmt.Errorf("onnx: layout %q is not nchw or nhwc", m.layout)
	}
	if s == nil {
		m.rank = 4
	}
	if m.rank == 4 && s != nil {
		if m.layout == "nchw" {
			m.c, m.h, m.w = int(s[1]), int(s[2]), int(s[3])
		} else {
			m.h, m.w, m.c = int(s[1]), int(s[2]), int(s[3])
		}
		m.c, m.h, m.w = max(m.c, 0), max(m.h, 0), max(m.w, 0)
	}
	m.scale = o.Scale
	if m.scale == 0 {
		m.scale = 1
		if v, ok := meta[MetaScale]; ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 32)
			if err != nil || !(f > 0) || math.IsInf(f, 0) {
				return fmt.Errorf("onnx: metadata %s=%q is not a positive number", MetaScale, v)
			}
			m.scale = float32(f)
		}
	}
	if !(m.scale > 0) || math.IsInf(float64(m.scale), 0) { // NaN would silently poison every logit
		return fmt.Errorf("onnx: scale %v is not a positive number", m.scale)
	}
	for _, v := range append(append([]float32{}, o.Mean...), o.Std...) {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("onnx: normalisation value %v is not finite", v)
		}
	}
	var err error
	pick := func(opt []float32, key string) []float32 {
		if opt != nil || err != nil {
			return opt
		}
		v, ok := meta[key]
		if !ok {
			return nil
		}
		var f []float32
		f, err = floatList(v)
		if err != nil {
			err = fmt.Errorf("onnx: metadata %s=%q is not a list of numbers", key, v)
		}
		return f
	}
	m.mean, m.std = pick(o.Mean, MetaMean), pick(o.Std, MetaStd)
	if err != nil {
		return err
	}
	for _, v := range [][]float32{m.mean, m.std} {
		if len(v) > 1 && m.c > 0 && len(v) != m.c {
			return fmt.Errorf("onnx: %d normalisation values for %d channels", len(v), m.c)
		}
	}
	for _, v := range m.std {
		if v == 0 {
			return fmt.Errorf("onnx: std %v has a zero", m.std)
		}
	}
	return nil
}

// setOutput picks the value Forward returns: the first graph output, or
// the input of a final Softmax over the class axis (seen through Identity
// nodes).
func (m *Model) setOutput() {
	m.output = m.g.outputs[0].name
	producer := map[string]*node{}
	for _, n := range m.g.nodes {
		for _, o := range n.out {
			producer[o] = n
		}
	}
	name := m.output
	n := producer[name]
	for n != nil && (n.op == "Identity" || n.op == "Dropout") && len(n.in) > 0 {
		name = n.in[0]
		n = producer[name]
	}
	if n == nil || n.op != "Softmax" || len(n.in) == 0 || len(n.out) == 0 || n.out[0] != name {
		return
	}
	rank := int64(len(m.g.outputs[0].shape))
	if rank == 0 {
		rank = 2 // unknown: classifiers output (batch, classes)
	}
	axis := int64(-1)
	if m.opset < 13 {
		axis = 1
	}
	if a := n.attrs["axis"]; a != nil {
		axis = a.I
	}
	if axis == -1 || axis == rank-1 {
		m.output = n.in[0]
	}
}

// Forward runs the model on pixel-space NCHW images in [0,1] and returns
// logits (batch, classes). It panics with a *torch.Error on failure, as
// the zoo's models do; ForwardContext returns the error instead. The
// result joins x's scope.
func (m *Model) Forward(x *torch.Tensor) *torch.Tensor {
	y, err := m.ForwardContext(context.Background(), x)
	if err != nil {
		panic(&torch.Error{Op: "onnx", Msg: strings.TrimPrefix(err.Error(), "onnx: ")})
	}
	return y
}

// ForwardContext is Forward that stops between nodes when ctx is done and
// returns errors (an unsupported attribute, a shape mismatch) naming the
// node and its op.
func (m *Model) ForwardContext(ctx context.Context, x *torch.Tensor) (y *torch.Tensor, err error) {
	if m.g == nil {
		return nil, fmt.Errorf("onnx: the model was freed")
	}
	ps := torch.NewScope()
	defer ps.Close()
	var ferr error
	err = torch.Catch(func() {
		s := x.Shape()
		if len(s) != 4 {
			ferr = fmt.Errorf("onnx: input has shape %v, want (N,C,H,W)", s)
			return
		}
		if m.c > 0 && s[1] != int64(m.c) || m.h > 0 && s[2] != int64(m.h) || m.w > 0 && s[3] != int64(m.w) {
			ferr = fmt.Errorf("onnx: input has shape %v, the model takes (N,%d,%d,%d)", s, m.c, m.h, m.w)
			return
		}
		v := ps.Add(x.Reshape(s...))
		if m.scale != 1 {
			v = v.MulScalar(float64(m.scale))
		}
		norm := func(f []float32) *torch.Tensor {
			t := torch.FromSlice(ps, f, 1, int64(len(f)), 1, 1)
			if m.dev != torch.CPU {
				t = t.ToDevice(m.dev)
			}
			return t
		}
		if m.mean != nil {
			v = v.Sub(norm(m.mean))
		}
		if m.std != nil {
			v = v.Div(norm(m.std))
		}
		switch {
		case m.rank == 2:
			v = v.Reshape(s[0], -1)
		case m.layout == "nhwc":
			v = v.Permute(0, 2, 3, 1)
		}
		y, ferr = m.run(ctx, v, x.RequiresGrad())
		if ferr != nil {
			return
		}
		if home := x.Scope(); home != nil {
			home.Add(y)
		} else {
			torch.Keep(y)
		}
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	return y, nil
}

// run evaluates the graph on v, the converted input, after checking the
// memory estimate of the pass: a batch over the budget runs in parts that
// fit when grad is false (an inference pass frees each part's values) and
// is refused otherwise. The result joins v's scope.
func (m *Model) run(ctx context.Context, v *torch.Tensor, grad bool) (*torch.Tensor, error) {
	shape := v.Shape()
	e, err := m.estimateShape(shape)
	if err != nil {
		return nil, err
	}
	n := shape[0]
	part := n
	if err := m.checkBudget(e, grad); err != nil {
		if grad || n <= 1 {
			return nil, err
		}
		if part, err = m.partSize(shape); err != nil {
			return nil, err
		}
	}
	var ys []*torch.Tensor
	for off := int64(0); off < n; off += part {
		in := v
		if part < n {
			in = v.Narrow(0, off, min(part, n-off))
		}
		res, err := m.g.run(ctx, m.dev, []*torch.Tensor{in}, []string{m.output})
		if err != nil {
			return nil, err
		}
		ys = append(ys, res[0])
	}
	if len(ys) == 1 {
		return ys[0], nil
	}
	return torch.Cat(ys, 0), nil
}

// partSize is the largest number of images of an inference pass on shape
// whose estimate fits the budget.
func (m *Model) partSize(shape []int64) (int64, error) {
	one := append([]int64{1}, shape[1:]...)
	e1, err := m.estimateShape(one)
	if err != nil {
		return 0, err
	}
	if err := m.checkBudget(e1, false); err != nil {
		return 0, err
	}
	part := min(max(m.maxMem/max(e1.Peak, 1), 1), shape[0])
	for part > 1 {
		e, err := m.estimateShape(append([]int64{part}, shape[1:]...))
		if err != nil {
			return 0, err
		}
		if m.checkBudget(e, false) == nil {
			break
		}
		part /= 2
	}
	return part, nil
}

// Device is where the model's weights live.
func (m *Model) Device() torch.Device { return m.dev }

// To moves the weights to device d.
func (m *Model) To(d torch.Device) error {
	if m.g == nil {
		return fmt.Errorf("onnx: the model was freed")
	}
	if err := m.g.to(d); err != nil {
		return fmt.Errorf("onnx: moving to %v: %w", d, err)
	}
	m.dev = d
	return nil
}

// Free releases the weights; the model is unusable afterwards.
func (m *Model) Free() {
	if m.g != nil {
		m.g.free()
		m.g = nil
	}
}

// InputShape is the image size the model takes (0 where the file leaves a
// dimension open).
func (m *Model) InputShape() (c, h, w int) { return m.c, m.h, m.w }

// Classes is the number of classes (0 if unknown until a forward pass).
func (m *Model) Classes() int { return m.classes }

// Layout is the input layout the file expects, "nchw" or "nhwc".
func (m *Model) Layout() string { return m.layout }

// Opset is the file's default-domain opset.
func (m *Model) Opset() int64 { return m.opset }

// SetTraining does nothing: an imported model always runs in inference
// mode (Dropout is the identity, BatchNormalization uses its running
// statistics), which is what suspects and C-BIM's source need.
func (m *Model) SetTraining(bool) {}
