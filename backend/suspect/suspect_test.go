package suspect

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		b    Images
		ok   bool
	}{
		{"good", Images{X: []float32{0, 0.5, 1, 1}, N: 1, C: 1, H: 2, W: 2}, true},
		{"empty batch", Images{N: 0, C: 1, H: 2, W: 2}, true},
		{"wrong length", Images{X: []float32{0, 0.5, 1}, N: 1, C: 1, H: 2, W: 2}, false},
		{"above one", Images{X: []float32{0, 0.5, 1, 1.5}, N: 1, C: 1, H: 2, W: 2}, false},
		{"negative", Images{X: []float32{0, -0.1, 1, 1}, N: 1, C: 1, H: 2, W: 2}, false},
		{"NaN", Images{X: []float32{0, float32nan(), 1, 1}, N: 1, C: 1, H: 2, W: 2}, false},
		{"zero channels", Images{X: nil, N: 1, C: 0, H: 2, W: 2}, false},
	}
	for _, c := range cases {
		if err := c.b.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func float32nan() float32 {
	z := float32(0)
	return z / z
}

// TestLocal checks that batching does not change answers, that a
// wrong-shaped batch is an error and that a cancelled context stops.
func TestLocal(t *testing.T) {
	spec := nn.Spec{Arch: "mlp", Dataset: "t", Classes: []string{"a", "b", "c"}, C: 1, H: 4, W: 4, Mean: []float64{0.5}, Std: []float64{0.3}}
	m, err := nn.New(spec, 3, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	n := 7
	x := make([]float32, n*16)
	for i := range x {
		x[i] = float32(i%17) / 16
	}
	b := Images{X: x, N: n, C: 1, H: 4, W: 4}
	whole, err := (&Local{Model: m, Name: "m"}).Classify(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	small, err := (&Local{Model: m, Name: "m", Batch: 2}).Classify(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != n {
		t.Fatalf("%d labels for %d images", len(whole), n)
	}
	for i := range whole {
		if whole[i] != small[i] || whole[i] < 0 || whole[i] > 2 {
			t.Errorf("image %d: %d in one batch, %d in batches of 2", i, whole[i], small[i])
		}
	}
	if _, err := (&Local{Model: m, Name: "m"}).Classify(context.Background(), Images{X: make([]float32, 3*3*3), N: 1, C: 3, H: 3, W: 3}); err == nil {
		t.Error("a 3×3×3 image was classified by a 1×4×4 model")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Local{Model: m, Name: "m"}).Classify(ctx, b); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}

	// Progress gives the same answers in batches, reports each, and counts
	// the images it passed on.
	var done []int
	p := &Progress{Suspect: &Local{Model: m, Name: "m"}, Batch: 3, Report: func(d, total int) {
		if total != n {
			t.Errorf("progress total %d, want %d", total, n)
		}
		done = append(done, d)
	}}
	watched, err := p.Classify(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range whole {
		if watched[i] != whole[i] {
			t.Errorf("image %d: %d through Progress, %d directly", i, watched[i], whole[i])
		}
	}
	if fmt.Sprint(done) != "[3 6 7]" || p.Queries() != n || p.String() != "m" {
		t.Errorf("progress %v, %d queries, name %q; want [3 6 7], %d, m", done, p.Queries(), p.String(), n)
	}
	if _, err := p.Classify(ctx, b); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled through Progress: %v", err)
	}
}
