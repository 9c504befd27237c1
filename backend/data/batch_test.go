package data

import (
	"math"
	"slices"
	"testing"
)

func TestBatches(t *testing.T) {
	d := synth(10, 3, 4, 5, 3)
	for _, tc := range []struct {
		name  string
		o     BatchOpts
		sizes []int
	}{
		{"plain", BatchOpts{Size: 4}, []int{4, 4, 2}},
		{"drop last", BatchOpts{Size: 4, DropLast: true}, []int{4, 4}},
		{"exact", BatchOpts{Size: 5, DropLast: true}, []int{5, 5}},
		{"shuffle", BatchOpts{Size: 3, Shuffle: true, Seed: 9}, []int{3, 3, 3, 1}},
		{"default size", BatchOpts{}, []int{10}},
		{"augment", BatchOpts{Size: 6, Shuffle: true, Augment: true}, []int{6, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sizes, all []int
			for b := range d.Batches(tc.o) {
				sizes = append(sizes, b.N)
				all = append(all, b.Index...)
				if b.C != 3 || b.H != 4 || b.W != 5 || len(b.X) != b.N*60 || len(b.Y) != b.N || len(b.Index) != b.N {
					t.Fatalf("batch shape %d %d %d %d: %d values, %d labels", b.N, b.C, b.H, b.W, len(b.X), len(b.Y))
				}
				for _, v := range b.X {
					if v < 0 || v > 1 {
						t.Fatalf("value %v outside [0,1]", v)
					}
				}
				for j, i := range b.Index {
					if b.Y[j] != d.Labels[i] {
						t.Fatalf("label of index %d", i)
					}
				}
				if !tc.o.Augment && !slices.Equal(b.X, d.Float32(b.Index)) {
					t.Fatal("pixels differ from Float32")
				}
			}
			if !slices.Equal(sizes, tc.sizes) {
				t.Errorf("batch sizes %v, want %v", sizes, tc.sizes)
			}
			if !tc.o.DropLast {
				sorted := slices.Sorted(slices.Values(all))
				for i, v := range sorted {
					if v != i {
						t.Fatalf("indices %v do not cover the dataset once", all)
					}
				}
				if tc.o.Shuffle == slices.IsSorted(all) {
					t.Errorf("shuffle %v but order %v", tc.o.Shuffle, all)
				}
			}
			// The same options give the same batches.
			var again []int
			for b := range d.Batches(tc.o) {
				again = append(again, b.Index...)
			}
			if !slices.Equal(all, again) {
				t.Error("second pass differs")
			}
		})
	}
	// Stopping early is allowed.
	n := 0
	for range d.Batches(BatchOpts{Size: 2}) {
		n++
		break
	}
	if n != 1 {
		t.Error("break did not stop")
	}
}

func TestFloat32(t *testing.T) {
	d := synth(3, 1, 2, 2, 1)
	d.Images[4] = 255
	d.Images[5] = 0
	x := d.Float32([]int{1, 1})
	if len(x) != 8 || x[0] != 1 || x[1] != 0 || x[4] != 1 {
		t.Errorf("Float32 = %v", x)
	}
	for i, v := range x[:4] {
		if want := float32(d.Images[4+i]) / 255; v != want {
			t.Errorf("value %d = %v, want %v", i, v, want)
		}
	}
}

// transform returns image img (c×h×w, [0,1]) cropped at offset (dy, dx) from
// its zero-padded version and mirrored if flip.
func transform(img []float32, c, h, w, dy, dx int, flip bool) []float32 {
	out := make([]float32, len(img))
	for ch := range c {
		for y := range h {
			for x := range w {
				xx := x
				if flip {
					xx = w - 1 - x
				}
				sy, sx := y+dy, xx+dx
				if sy >= 0 && sy < h && sx >= 0 && sx < w {
					out[(ch*h+y)*w+x] = img[(ch*h+sy)*w+sx]
				}
			}
		}
	}
	return out
}

// matchAugment finds the crop offset and flip that turn orig into got, or
// reports ok false.
func matchAugment(orig, got []float32, c, h, w, pad int) (dy, dx int, flip, ok bool) {
	for _, f := range []bool{false, true} {
		for dy := -pad; dy <= pad; dy++ {
			for dx := -pad; dx <= pad; dx++ {
				if slices.Equal(transform(orig, c, h, w, dy, dx, f), got) {
					return dy, dx, f, true
				}
			}
		}
	}
	return 0, 0, false, false
}

func TestAugment(t *testing.T) {
	for _, tc := range []struct {
		name      string
		c, h, w   int
		noFlipSet bool // Dataset.NoFlip
		o         BatchOpts
		pad       int  // the padding the crops must stay within
		wantFlip  bool // flips must occur
		wantPad   int  // some crop must reach this offset
	}{
		{"cifar-like", 3, 32, 32, false, BatchOpts{Augment: true}, 4, true, 4},
		{"fashion-like", 1, 28, 28, false, BatchOpts{Augment: true}, 2, true, 2},
		{"mnist-like", 1, 28, 28, true, BatchOpts{Augment: true}, 2, false, 2},
		{"no flip option", 3, 32, 32, false, BatchOpts{Augment: true, NoFlip: true}, 4, false, 4},
		{"pad 1", 3, 32, 32, false, BatchOpts{Augment: true, Pad: 1}, 1, true, 1},
		{"flip only", 1, 28, 28, false, BatchOpts{Augment: true, Pad: -1}, 0, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := synth(150, tc.c, tc.h, tc.w, 2)
			d.NoFlip = tc.noFlipSet
			o := tc.o
			o.Size, o.Seed = 64, 5
			flips, maxOff := 0, 0
			for b := range d.Batches(o) {
				n := tc.c * tc.h * tc.w
				for j, i := range b.Index {
					got := b.X[j*n : (j+1)*n]
					for _, v := range got {
						if v < 0 || v > 1 {
							t.Fatalf("value %v outside [0,1]", v)
						}
					}
					dy, dx, flip, ok := matchAugment(d.Float32([]int{i}), got, tc.c, tc.h, tc.w, tc.pad)
					if !ok {
						t.Fatalf("image %d is no crop within %d pixels or flip of the original", i, tc.pad)
					}
					if flip {
						flips++
					}
					maxOff = max(maxOff, dy, -dy, dx, -dx)
				}
			}
			if tc.wantFlip && (flips < 40 || flips > 110) {
				t.Errorf("%d of 150 images flipped", flips)
			}
			if !tc.wantFlip && flips > 0 {
				t.Errorf("%d images flipped", flips)
			}
			if maxOff != tc.wantPad {
				t.Errorf("largest crop offset %d, want %d", maxOff, tc.wantPad)
			}
		})
	}
}

// Noise adds zero-mean Gaussian noise of the given deviation, clipped to
// [0,1], reproducibly from the seed, on top of crops and flips or alone.
func TestNoise(t *testing.T) {
	d := synth(64, 1, 8, 8, 4)
	for i := range d.Images {
		d.Images[i] = 128 // mid-grey: no clipping at σ = 0.05
	}
	first := func(o BatchOpts) []float32 {
		for b := range d.Batches(o) {
			return b.X
		}
		return nil
	}
	clean := first(BatchOpts{Size: 64})
	for _, tc := range []struct {
		name  string
		o     BatchOpts
		sigma float64
	}{
		{"none", BatchOpts{Size: 64, Seed: 3}, 0},
		{"noise 0.05", BatchOpts{Size: 64, Seed: 3, Noise: 0.05}, 0.05},
		{"noise 0.1", BatchOpts{Size: 64, Seed: 4, Noise: 0.1}, 0.1},
	} {
		got := first(tc.o)
		var sum, sq float64
		for i, v := range got {
			e := float64(v - clean[i])
			sum += e
			sq += e * e
		}
		n := float64(len(got))
		mean, std := sum/n, math.Sqrt(sq/n)
		if math.Abs(mean) > 0.1*tc.sigma+1e-9 || math.Abs(std-tc.sigma) > 0.1*tc.sigma+1e-9 {
			t.Errorf("%s: noise mean %.4f, std %.4f; want 0 and %.2f", tc.name, mean, std, tc.sigma)
		}
		if again := first(tc.o); !slices.Equal(again, got) {
			t.Errorf("%s: the same seed gave different noise", tc.name)
		}
	}
	// Clipped to [0,1] with crops and flips too.
	for b := range d.Batches(BatchOpts{Size: 16, Seed: 1, Augment: true, Noise: 2}) {
		for _, v := range b.X {
			if v < 0 || v > 1 {
				t.Fatalf("pixel %v outside [0,1]", v)
			}
		}
	}
}
