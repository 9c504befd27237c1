package detect

import (
	"math"
	"slices"
	"testing"
)

// TestBitDepth checks the bit-depth squeezer against hand-computed values:
// 4 bits are the 16 levels k/15.
func TestBitDepth(t *testing.T) {
	for _, tc := range []struct {
		bits   int
		in     float32
		wantK  float64 // the level, out of 2^bits − 1
		levels float64
	}{
		{4, 0, 0, 15},
		{4, 1, 15, 15},
		{4, 0.5, 8, 15},  // 7.5 rounds to even: 8
		{4, 0.3, 5, 15},  // float32 0.3 is 0.30000001: 4.5000002 → 5
		{4, 0.1, 2, 15},  // 1.5 → 2
		{4, 0.12, 2, 15}, // 1.8 → 2
		{1, 0.49, 0, 1},
		{1, 0.51, 1, 1},
		{8, 0.2, 51, 255},
	} {
		got := BitDepth([]float32{tc.in}, tc.bits)[0]
		if want := tc.wantK / tc.levels; math.Abs(float64(got)-want) > 1e-6 {
			t.Errorf("BitDepth(%g, %d) = %g, want %g", tc.in, tc.bits, got, want)
		}
	}
}

// TestMedian2x2 checks the 2×2 median filter against a hand-computed image:
// each output is the third smallest of the pixel, its right, lower and
// lower-right neighbours, the edge repeated.
func TestMedian2x2(t *testing.T) {
	// One 3×3 image, then a second channel that is constant.
	in := []float32{
		1, 5, 2,
		7, 3, 9,
		4, 8, 6,
		0.5, 0.5, 0.5,
		0.5, 0.5, 0.5,
		0.5, 0.5, 0.5,
	}
	want := []float32{
		5, 5, 9, // {1,5,7,3}→5; {5,2,3,9}→5; {2,2,9,9}→9
		7, 8, 9, // {7,3,4,8}→7; {3,9,8,6}→8; {9,9,6,6}→9
		8, 8, 6, // {4,8,4,8}→8; {8,6,8,6}→8; {6,6,6,6}→6
		0.5, 0.5, 0.5,
		0.5, 0.5, 0.5,
		0.5, 0.5, 0.5,
	}
	got := Median2x2(in, 1, 2, 3, 3)
	if !slices.Equal(got, want) {
		t.Errorf("Median2x2 =\n%v\nwant\n%v", got, want)
	}
	two := Median2x2(append(slices.Clone(in[:9]), in[:9]...), 2, 1, 3, 3) // two images of one channel
	if !slices.Equal(two[:9], want[:9]) || !slices.Equal(two[9:], want[:9]) {
		t.Errorf("two images: %v", two)
	}
}
