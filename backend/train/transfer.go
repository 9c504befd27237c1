package train

// A Knockoff transfer set for a source whose task has no natural
// neighbouring dataset: the adversary's own unlabelled images, heavily
// augmented.

import (
	"math"
	"math/rand/v2"

	"github.com/conferral/conferral/backend/data"
)

// AugmentedTransfer returns a transfer set for Knockoff made of d's images,
// each transformed once by heavy augmentation drawn from seed, and d's
// labels dropped (the adversary asks the source for them):
//   - a random shift of up to 4 pixels each way (zero fill),
//   - a horizontal flip with probability ½ (unless d.NoFlip),
//   - with probability ½, a mix with another image of d, weight λ ~ U(0.2, 0.5)
//     for the other (mixup's inputs without its labels),
//   - a random contrast (×U(0.6, 1.4)) and brightness (+U(−0.15, 0.15)),
//   - with probability ½, a random erased rectangle (up to a quarter of the
//     image, filled with uniform noise),
//   - Gaussian pixel noise of σ = 0.05.
//
// The images stay 8-bit and of d's shape. Knockoff Nets (Orekondy et al.
// 2019) query natural images of another distribution; for a source whose
// task has none (MNIST is to Fashion-MNIST what noise is: the source labels
// almost all of it as one class), images near the task's distribution but
// not the task's own are the closest honest choice.
func AugmentedTransfer(d *data.Dataset, seed int64) *data.Dataset {
	out := d.Subset(seqInts(0, d.Len()))
	out.Name, out.Part = d.Name+"-augmented", "transfer"
	clear(out.Labels)
	r := rand.New(rand.NewPCG(uint64(seed), 0xa0a0))
	per := d.ImageSize()
	img := make([]float64, per)
	for i := range d.Len() {
		src := d.Image(i)
		dx, dy := r.IntN(9)-4, r.IntN(9)-4
		flip := !d.NoFlip && r.IntN(2) == 0
		for c := range d.C {
			for y := range d.H {
				for x := range d.W {
					sx, sy := x-dx, y-dy
					if flip {
						sx = d.W - 1 - sx
					}
					v := 0.0
					if sx >= 0 && sx < d.W && sy >= 0 && sy < d.H {
						v = float64(src[(c*d.H+sy)*d.W+sx]) / 255
					}
					img[(c*d.H+y)*d.W+x] = v
				}
			}
		}
		if r.IntN(2) == 0 {
			other, lambda := d.Image(r.IntN(d.Len())), 0.2+0.3*r.Float64()
			for k := range img {
				img[k] = (1-lambda)*img[k] + lambda*float64(other[k])/255
			}
		}
		contrast, bright := 0.6+0.8*r.Float64(), 0.3*r.Float64()-0.15
		for k := range img {
			img[k] = (img[k]-0.5)*contrast + 0.5 + bright
		}
		if r.IntN(2) == 0 {
			h, w := 1+r.IntN(d.H/2), 1+r.IntN(d.W/2)
			y0, x0 := r.IntN(d.H-h+1), r.IntN(d.W-w+1)
			for c := range d.C {
				for y := y0; y < y0+h; y++ {
					for x := x0; x < x0+w; x++ {
						img[(c*d.H+y)*d.W+x] = r.Float64()
					}
				}
			}
		}
		dst := out.Image(i)
		for k, v := range img {
			v += 0.05 * r.NormFloat64()
			dst[k] = uint8(math.Round(255 * min(1, max(0, v))))
		}
	}
	return out
}
