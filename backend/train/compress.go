package train

// Beyond the paper: layer-wise magnitude pruning and 8-bit weight
// quantization, which transform a copy of the source's weights and train
// nothing.

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// LayerStats reports what pruning or quantization did to one weight tensor.
type LayerStats struct {
	Name   string  `json:"name"`
	Numel  int64   `json:"numel"`
	Zeroed int64   `json:"zeroed,omitempty"` // pruning: weights set to zero
	Scale  float64 `json:"scale,omitempty"`  // quantization: the step between levels
	Zero   int64   `json:"zero_point,omitempty"`
}

// weights returns m's trainable tensors of two or more dimensions: the
// weights of its dense and convolutional layers.
func weights(m *nn.Model) []*nn.Variable {
	var out []*nn.Variable
	for _, v := range m.Variables() {
		if v.Trainable && v.T.Dim() >= 2 {
			out = append(out, v)
		}
	}
	return out
}

// Prune sets, in every weight tensor of m (dense and convolutional layers;
// biases and batch-norm parameters are kept), the round(fraction·n) weights
// of smallest magnitude to zero, in place: layer-wise magnitude pruning.
func Prune(m *nn.Model, fraction float64) ([]LayerStats, error) {
	if !(fraction >= 0 && fraction <= 1) {
		return nil, fmt.Errorf("prune: fraction %v is not in [0,1]", fraction)
	}
	var out []LayerStats
	err := torch.Catch(func() {
		for _, v := range weights(m) {
			vals := v.T.Float32s()
			k := int(math.Round(fraction * float64(len(vals))))
			idx := make([]int, len(vals))
			for i := range idx {
				idx[i] = i
			}
			slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(math.Abs(float64(vals[a])), math.Abs(float64(vals[b]))) })
			for _, i := range idx[:k] {
				vals[i] = 0
			}
			setValues(v.T, vals)
			out = append(out, LayerStats{Name: v.Name, Numel: int64(len(vals)), Zeroed: int64(k)})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	return out, nil
}

// Quantize rounds every weight tensor of m (as Prune chooses them) through
// bits-bit per-tensor affine quantization and back, in place, as PyTorch's
// quint8 does: scale = (max(w,0) − min(w,0)) / (2^bits − 1), zero point
// z = round(−min(w,0)/scale), q = clamp(round(w/scale) + z, 0, 2^bits − 1),
// w′ = (q − z)·scale. Zero stays exactly zero and every weight moves by at
// most half a step (scale/2).
func Quantize(m *nn.Model, bits int) ([]LayerStats, error) {
	if bits < 2 || bits > 16 {
		return nil, fmt.Errorf("quantize: %d bits (want 2 to 16)", bits)
	}
	levels := float64(int64(1)<<bits - 1)
	var out []LayerStats
	err := torch.Catch(func() {
		for _, v := range weights(m) {
			vals := v.T.Float32s()
			lo, hi := 0.0, 0.0
			for _, w := range vals {
				lo, hi = math.Min(lo, float64(w)), math.Max(hi, float64(w))
			}
			st := LayerStats{Name: v.Name, Numel: int64(len(vals))}
			if hi > lo {
				scale := (hi - lo) / levels
				zero := math.Min(levels, math.Max(0, math.Round(-lo/scale)))
				for i, w := range vals {
					q := math.Min(levels, math.Max(0, math.Round(float64(w)/scale)+zero))
					vals[i] = float32((q - zero) * scale)
				}
				setValues(v.T, vals)
				st.Scale, st.Zero = scale, int64(zero)
			}
			out = append(out, st)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	return out, nil
}
