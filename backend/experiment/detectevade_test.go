package experiment

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/conferral/conferral/backend/suspect"
)

// firstPixel answers each image's first value ×100 as its label and
// remembers how many images each call sent.
type firstPixel struct{ sent []int }

func (f *firstPixel) String() string { return "first pixel" }

func (f *firstPixel) Classify(_ context.Context, b suspect.Images) ([]int64, error) {
	f.sent = append(f.sent, b.N)
	out := make([]int64, b.N)
	for i := range b.N {
		out[i] = int64(b.X[i*b.C*b.H*b.W]*100 + 0.5)
	}
	return out, nil
}

// TestMixer: the keys go out among mix decoys each, and come back in
// their own order with their own answers.
func TestMixer(t *testing.T) {
	for _, tc := range []struct{ keys, mix int }{{1, 0}, {5, 1}, {7, 4}} {
		inner := &firstPixel{}
		decoys := []float32{0.9, 0, 0.8, 0} // two 1×1×2 decoys labelled 90 and 80
		m := &mixer{inner: inner, decoys: decoys, per: 2, mix: tc.mix, rng: rand.New(rand.NewPCG(1, 2))}
		x := make([]float32, 2*tc.keys)
		want := make([]int64, tc.keys)
		for i := range tc.keys {
			x[2*i] = float32(i+1) / 100
			want[i] = int64(i + 1)
		}
		got, err := m.Classify(context.Background(), suspect.Images{X: x, N: tc.keys, C: 1, H: 1, W: 2})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) || !slices.Equal(inner.sent, []int{tc.keys * (1 + tc.mix)}) {
			t.Errorf("keys %d, mix %d: answers %v, sent %v", tc.keys, tc.mix, got, inner.sent)
		}
	}
}
