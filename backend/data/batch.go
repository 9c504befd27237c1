package data

import (
	"iter"
	"math"
)

// Batch is a minibatch in pixel space: X holds N images of C×H×W pixels in
// [0,1] (NCHW, float32), Y their labels, and Index their indices in the
// dataset.
type Batch struct {
	X          []float32
	Y          []int64
	N, C, H, W int
	Index      []int
}

// DefaultBatchSize is the batch size that a zero [BatchOpts.Size] means.
const DefaultBatchSize = 128

// BatchOpts configures [Dataset.Batches].
type BatchOpts struct {
	// Size is the number of images per batch; 0 or less means
	// DefaultBatchSize.
	Size int
	// Shuffle visits the images in an order drawn from Seed instead of
	// index order.
	Shuffle bool
	// Seed fixes the order and the augmentation: the same seed gives the
	// same batches. Use a different seed for each epoch (seed + epoch).
	Seed int64
	// Augment applies the standard training augmentation of 32×32 image
	// classifiers to each image: a random crop with zero padding (Pad) and
	// a random horizontal flip with probability one half. Images stay in
	// [0,1] and keep their size.
	Augment bool
	// Pad is the zero padding of the random crop when augmenting: 0 means
	// the default (4 pixels for images of 32 pixels or more, 2 for smaller
	// ones such as 28×28 Fashion-MNIST), a negative value means no crop.
	Pad int
	// NoFlip disables the random flip. Flips are also never applied to a
	// dataset with Dataset.NoFlip set (MNIST digits, whose mirror images
	// are not digits); they are kept for clothing (Fashion-MNIST) and
	// natural images (CIFAR-10, CINIC-10, ImageNet32), whose classes are
	// mirror-symmetric.
	NoFlip bool
	// DropLast drops the last batch when it is smaller than Size.
	DropLast bool
	// Noise, when positive, adds Gaussian noise of this standard deviation
	// (pixel units) to every pixel, after any crop and flip, and clips the
	// result to [0,1]. It is drawn from Seed like the augmentation.
	Noise float64
}

// pad returns the crop padding for images of height h, or 0 for none.
func (o BatchOpts) pad(h int) int {
	switch {
	case o.Pad < 0:
		return 0
	case o.Pad > 0:
		return o.Pad
	case h >= 32:
		return 4
	}
	return 2
}

// Batches returns the minibatches of one pass over d. Each batch's slices are
// fresh, so a consumer may keep them. The sequence is the same every time it
// is ranged over; change BatchOpts.Seed for the next epoch.
func (d *Dataset) Batches(o BatchOpts) iter.Seq[Batch] {
	size := o.Size
	if size <= 0 {
		size = DefaultBatchSize
	}
	return func(yield func(Batch) bool) {
		noise := newRNG(o.Seed, 3)
		order := make([]int, d.N)
		for i := range order {
			order[i] = i
		}
		if o.Shuffle {
			newRNG(o.Seed, 1).shuffle(order)
		}
		aug := newRNG(o.Seed, 2)
		pad := o.pad(d.H)
		flip := !o.NoFlip && !d.NoFlip
		for start := 0; start < d.N; start += size {
			end := min(start+size, d.N)
			if o.DropLast && end-start < size {
				return
			}
			idx := order[start:end:end]
			var b Batch
			if o.Augment {
				b = d.augmented(idx, aug, pad, flip)
			} else {
				b = Batch{X: d.Float32(idx), N: len(idx), C: d.C, H: d.H, W: d.W}
			}
			if o.Noise > 0 {
				addNoise(b.X, o.Noise, noise)
			}
			b.Index = append([]int(nil), idx...)
			b.Y = make([]int64, len(idx))
			for j, i := range idx {
				b.Y[j] = d.Labels[i]
			}
			if !yield(b) {
				return
			}
		}
	}
}

// Float32 returns the images idx in pixel space [0,1], as float32 NCHW. It
// panics if an index is out of range.
func (d *Dataset) Float32(idx []int) []float32 {
	n := d.ImageSize()
	out := make([]float32, len(idx)*n)
	for j, i := range idx {
		dst := out[j*n : (j+1)*n]
		for k, v := range d.Image(i) {
			dst[k] = float32(v) / 255
		}
	}
	return out
}

// augmented returns the images idx, each randomly cropped from its zero-padded
// version (pad pixels each side) and, if flip, mirrored with probability one
// half.
func (d *Dataset) augmented(idx []int, r rng, pad int, flip bool) Batch {
	c, h, w := d.C, d.H, d.W
	n := c * h * w
	out := make([]float32, len(idx)*n)
	for j, i := range idx {
		src := d.Image(i)
		dst := out[j*n : (j+1)*n]
		dy, dx := 0, 0
		if pad > 0 {
			dy, dx = r.intn(2*pad+1)-pad, r.intn(2*pad+1)-pad
		}
		mirror := flip && r.intn(2) == 1
		for ch := range c {
			for y := range h {
				sy := y + dy
				if sy < 0 || sy >= h {
					continue // zero padding; out is zeroed
				}
				srow := src[(ch*h+sy)*w : (ch*h+sy+1)*w]
				drow := dst[(ch*h+y)*w : (ch*h+y+1)*w]
				for x := range w {
					xx := x
					if mirror {
						xx = w - 1 - x
					}
					if sx := xx + dx; sx >= 0 && sx < w {
						drow[x] = float32(srow[sx]) / 255
					}
				}
			}
		}
	}
	return Batch{X: out, N: len(idx), C: c, H: h, W: w}
}

// addNoise adds N(0, σ²) to every pixel of x and clips to [0,1]. The
// normal deviates come from r by the Box–Muller transform, written out so
// that no library change alters them.
func addNoise(x []float32, sigma float64, r rng) {
	for i := 0; i < len(x); i += 2 {
		u1 := 1 - r.float64() // (0,1]: the logarithm stays finite
		u2 := r.float64()
		rad := sigma * math.Sqrt(-2*math.Log(u1))
		z := [2]float64{rad * math.Cos(2*math.Pi*u2), rad * math.Sin(2*math.Pi*u2)}
		for k := range min(2, len(x)-i) {
			x[i+k] = float32(min(max(float64(x[i+k])+z[k], 0), 1))
		}
	}
}
