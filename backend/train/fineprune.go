package train

// Fine-pruning (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending
// Against Backdooring Attacks on Deep Neural Networks", RAID 2018), beyond
// the paper: the channels of the source's last convolutional layer that are
// least active on clean data are pruned, then the pruned model is
// fine-tuned. Liu et al. remove a backdoor this way; an adversary may hope
// that it removes a fingerprint too.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// ErrNoConv says a model has no convolutional layer to fine-prune.
var ErrNoConv = errors.New("no convolutional layer")

// CanFinePrune says whether fine-pruning applies to m: it has a
// convolution.
func CanFinePrune(m *nn.Model) bool {
	_, err := lastConv(m)
	return !errors.Is(err, ErrNoConv)
}

// convLayer is a model's last convolution and the layers right after it
// whose output is its activation (batch norm, ReLU).
type convLayer struct {
	ops    []nn.Op
	conv   int            // index of the convolution in ops
	end    int            // index of the op whose output is the activation
	vars   []*nn.Variable // weight, bias (if any), then batch norm's scale and shift (if any)
	weight *nn.Variable
}

// lastConv finds m's last convolution in its trace (nn.Model.Trace), and
// the batch norm and ReLU that directly follow it.
func lastConv(m *nn.Model) (*convLayer, error) {
	tr, err := m.Trace()
	if err != nil {
		return nil, err
	}
	l := &convLayer{ops: tr.Ops, conv: -1}
	for i, op := range tr.Ops {
		if op.Kind == nn.OpConv2d {
			l.conv = i
		}
	}
	if l.conv < 0 {
		return nil, fmt.Errorf("%s has %w", m.Spec.Arch, ErrNoConv)
	}
	conv := tr.Ops[l.conv]
	for _, in := range conv.Inputs[1:] {
		l.vars = append(l.vars, in.Var)
	}
	l.weight = l.vars[0]
	l.end = l.conv
	for j := l.conv + 1; j < len(tr.Ops); j++ {
		op := tr.Ops[j]
		if (op.Kind != nn.OpBatchNorm && op.Kind != nn.OpRelu && op.Kind != nn.OpRelu6) || op.Inputs[0].Var != nil || op.Inputs[0].Value != l.end+1 {
			break
		}
		if op.Kind == nn.OpBatchNorm {
			l.vars = append(l.vars, op.Inputs[1].Var, op.Inputs[2].Var) // scale, shift
		}
		l.end = j
	}
	for _, v := range l.vars {
		if v == nil {
			return nil, fmt.Errorf("%s: layer %q has an operand that is not a variable", m.Spec.Arch, conv.Name)
		}
	}
	return l, nil
}

// activation evaluates the trace's ops up to l.end on x: the layer's
// activation, (N, C, H, W).
func (l *convLayer) activation(x *torch.Tensor) *torch.Tensor {
	vals := []*torch.Tensor{x}
	for _, op := range l.ops[:l.end+1] {
		in := make([]*torch.Tensor, len(op.Inputs))
		for i, o := range op.Inputs {
			if o.Var != nil {
				in[i] = o.Var.T
			} else {
				in[i] = vals[o.Value]
			}
		}
		var bias *torch.Tensor // an absent bias is not recorded
		if len(in) > 2 {
			bias = in[2]
		}
		var y *torch.Tensor
		switch op.Kind {
		case nn.OpConv2d:
			y = torch.Conv2d(in[0], in[1], bias, torch.ConvOpts{Stride: torch.P(op.Stride), Padding: torch.P(op.Padding), Groups: op.Groups})
		case nn.OpLinear:
			y = torch.Linear(in[0], in[1], bias)
		case nn.OpBatchNorm:
			y = torch.BatchNorm(in[0], in[1], in[2], in[3], in[4], false, op.Momentum, op.Eps)
		case nn.OpRelu:
			y = in[0].Relu()
		case nn.OpRelu6:
			y = in[0].Relu6()
		case nn.OpMaxPool:
			y = torch.MaxPool2d(in[0], torch.PoolOpts{Kernel: torch.P(op.Kernel), Stride: torch.P(op.Stride), Padding: torch.P(op.Padding), CeilMode: op.CeilMode})
		case nn.OpAvgPool:
			y = torch.AvgPool2d(in[0], torch.PoolOpts{Kernel: torch.P(op.Kernel), Stride: torch.P(op.Stride), Padding: torch.P(op.Padding), CeilMode: op.CeilMode})
		case nn.OpGlobalAvgPool:
			y = in[0].MeanDims([]int64{2, 3}, true)
		case nn.OpFlatten:
			y = in[0].Reshape(in[0].Size(0), -1)
		case nn.OpAdd:
			y = in[0].Add(in[1])
		case nn.OpSub:
			y = in[0].Sub(in[1])
		case nn.OpMul:
			y = in[0].Mul(in[1])
		case nn.OpDiv:
			y = in[0].Div(in[1])
		case nn.OpConcat:
			y = torch.Cat(in, op.Dim)
		default:
			panic(&torch.Error{Op: "fine-pruning", Msg: fmt.Sprintf("cannot evaluate %s (layer %q)", op.Kind, op.Name)})
		}
		vals = append(vals, y)
	}
	return vals[len(vals)-1]
}

// ChannelActivity returns the mean activation of each output channel of
// m's last convolutional layer (after its batch norm and ReLU, when they
// follow it) over d, in evaluation mode: what fine-pruning ranks channels
// by. It also returns the layer's weight variable.
func ChannelActivity(ctx context.Context, m *nn.Model, d *data.Dataset) ([]float64, *nn.Variable, error) {
	l, err := lastConv(m)
	if err != nil {
		return nil, nil, fmt.Errorf("channel activity: %w", err)
	}
	act, err := l.channelActivity(ctx, m, d)
	return act, l.weight, err
}

// channelActivity is ChannelActivity for m's last convolution l, already
// found.
func (l *convLayer) channelActivity(ctx context.Context, m *nn.Model, d *data.Dataset) ([]float64, error) {
	m.SetTraining(false)
	sum := make([]float64, l.weight.T.Size(0))
	n := 0
	dev := m.Device()
	// The trace starts at the pixel-space input and records the
	// normalisation, so the images go in as they are.
	for b := range d.Batches(data.BatchOpts{Size: evalBatch}) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("channel activity: %w", err)
		}
		err := torch.Catch(func() {
			torch.NoGrad(func() {
				torch.Scoped(func(s *torch.Scope) {
					x := onDevice(torch.FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W)), dev)
					means := l.activation(x).MeanDims([]int64{0, 2, 3}, false).ToDevice(torch.CPU).Float32s()
					for c, v := range means {
						sum[c] += float64(v) * float64(b.N)
					}
				})
			})
		})
		if err != nil {
			return nil, fmt.Errorf("channel activity: %w", err)
		}
		n += b.N
	}
	for c := range sum {
		sum[c] /= float64(max(n, 1))
	}
	return sum, nil
}

// FinePrune derives from m, a copy of the source, by fine-pruning (Liu et
// al. 2018, §4): the output channels of m's last convolutional layer are
// ranked by their mean activation on d (clean data of the adversary), the
// round(fraction·C) least active are pruned (their filter, bias and batch
// norm scale and shift set to zero), and m is fine-tuned on d labelled by
// the source by cfg, every layer training and the pruned channels kept at
// zero throughout. Liu et al. prune until the validation accuracy drops by
// a set amount; we prune a set fraction, which Options.Fraction names.
// Queries: d.Len().
func FinePrune(ctx context.Context, source Classifier, m *nn.Model, d *data.Dataset, fraction float64, cfg Config) (*Derivation, error) {
	if !(fraction >= 0 && fraction < 1) {
		return nil, fmt.Errorf("fine-pruning: fraction %v is not in [0,1)", fraction)
	}
	stage := cmp.Or(cfg.Stage, AttackFinePrune+" "+m.Spec.Arch)
	l, err := lastConv(m)
	if err != nil {
		return nil, fmt.Errorf("fine-pruning: %w", err)
	}
	act, err := l.channelActivity(ctx, m, d) // the trace lastConv made, not a second one
	if err != nil {
		return nil, fmt.Errorf("fine-pruning: %w", err)
	}
	order := make([]int, len(act))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(act[a], act[b]) })
	pruned := slices.Sorted(slices.Values(order[:int(math.Round(fraction*float64(len(act))))]))
	logf(cfg, stage, "pruning %d of %d channels of %s, the least active on %d clean examples", len(pruned), len(act), l.weight.Name, d.Len())
	der := &Derivation{Attack: AttackFinePrune, Queries: int64(d.Len()), Examples: d.Len(), Pruned: pruned}
	err = torch.Catch(func() {
		for _, v := range l.vars {
			vals := v.T.Float32s()
			per := len(vals) / int(v.T.Size(0))
			for _, c := range pruned {
				clear(vals[c*per : (c+1)*per])
			}
			setValues(v.T, vals)
			der.Layers = append(der.Layers, LayerStats{Name: v.Name, Numel: int64(len(vals)), Zeroed: int64(len(pruned) * per)})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("fine-pruning: %w", err)
	}
	masks, err := zeroMasks(l.vars)
	if err != nil {
		return der, fmt.Errorf("fine-pruning: %w", err)
	}
	defer freeMasks(masks)
	ft, err := fitOnSource(ctx, source, m, d, "fine-pruning", stage, cfg, fitOpts{masks: masks})
	if ft != nil {
		der.Train = ft.Train
	}
	return der, err
}
