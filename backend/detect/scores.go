package detect

import (
	"math"
	"slices"

	"github.com/conferral/conferral/backend/torch"
)

// BitDepth rounds every value of x (pixel space [0,1]) to 2^bits levels:
// round(x·(2^bits−1))/(2^bits−1), as Xu et al.'s bit-depth squeezer.
func BitDepth(x []float32, bits int) []float32 {
	l := float64(int(1)<<bits - 1)
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(math.RoundToEven(float64(v)*l) / l)
	}
	return out
}

// Median2x2 is a 2×2 median filter over every channel of n NCHW images: the
// value at (i, j) is the upper median (the third smallest, as scipy's
// median_filter ranks an even window) of the pixels at (i, j), (i, j+1),
// (i+1, j) and (i+1, j+1), the image's last row and column repeated past
// its edge.
func Median2x2(x []float32, n, c, h, w int) []float32 {
	out := make([]float32, len(x))
	var win [4]float32
	for p := range n * c {
		base := p * h * w
		for i := range h {
			i2 := min(i+1, h-1)
			for j := range w {
				j2 := min(j+1, w-1)
				win = [4]float32{x[base+i*w+j], x[base+i*w+j2], x[base+i2*w+j], x[base+i2*w+j2]}
				s := win[:]
				slices.Sort(s)
				out[base+i*w+j] = s[2]
			}
		}
	}
	return out
}

// Softmaxes returns m's softmax of the n images x (n×k, row-major).
func Softmaxes(m Model, x []float32, n, c, h, w int) ([]float32, error) {
	const batch = 500
	per := c * h * w
	var out []float32
	for b := 0; b < n; b += batch {
		k := min(batch, n-b)
		err := torch.Catch(func() {
			torch.Scoped(func(s *torch.Scope) {
				torch.NoGrad(func() {
					xt := torch.FromSlice(s, x[b*per:(b+k)*per], int64(k), int64(c), int64(h), int64(w)).ToDevice(m.Device())
					out = append(out, m.Forward(xt).Softmax(1).ToDevice(torch.CPU).Float32s()...)
				})
			})
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SqueezeScoresOf are Xu et al.'s scores: for each image, the larger L1
// distance between m's softmax on it (p0, m's softmaxes of x) and on its
// bit-depth-4 and 2×2-median squeezed versions.
func SqueezeScoresOf(m Model, x, p0 []float32, n, c, h, w int) ([]float64, error) {
	out := make([]float64, n)
	for _, sq := range [][]float32{BitDepth(x, 4), Median2x2(x, n, c, h, w)} {
		p, err := Softmaxes(m, sq, n, c, h, w)
		if err != nil {
			return nil, err
		}
		k := len(p) / n
		for i := range n {
			d := 0.0
			for j := range k {
				d += math.Abs(float64(p[i*k+j] - p0[i*k+j]))
			}
			out[i] = math.Max(out[i], d)
		}
	}
	return out, nil
}

// Confidence is the max softmax and the softmax's entropy (nats) of the
// n softmaxes p (n×k, row-major).
func Confidence(p []float32, n int) (maxp, ent []float64) {
	k := len(p) / n
	maxp, ent = make([]float64, n), make([]float64, n)
	for i := range n {
		for _, v := range p[i*k : (i+1)*k] {
			maxp[i] = math.Max(maxp[i], float64(v))
			if v > 0 {
				ent[i] -= float64(v) * math.Log(float64(v))
			}
		}
	}
	return maxp, ent
}
