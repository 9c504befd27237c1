package torch_test

import (
	"context"
	"errors"
	"iter"
	"slices"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// batchesOf yields n batches of 2 images of 1×1×2 values: batch i holds
// i, i+1, i+2, i+3.
func batchesOf(n int) iter.Seq[torch.Images] {
	return func(yield func(torch.Images) bool) {
		for i := range n {
			v := float32(i)
			if !yield(torch.Images{X: []float32{v, v + 1, v + 2, v + 3}, N: 2, C: 1, H: 1, W: 2}) {
				return
			}
		}
	}
}

// TestInfer checks the batched inference loop: every batch in order with
// its shape, no gradient recorded, each batch's tensors freed after it,
// and a stop at cancellation and at the first failing op.
func TestInfer(t *testing.T) {
	ctx := context.Background()
	var sums []float32
	var seen []*torch.Tensor
	err := torch.Infer(ctx, torch.CPU, batchesOf(3), func(x *torch.Tensor) {
		if got := x.Shape(); !slices.Equal(got, []int64{2, 1, 1, 2}) {
			t.Errorf("shape %v", got)
		}
		y := x.SetRequiresGrad(true).MulScalar(2)
		if y.RequiresGrad() {
			t.Error("gradient recorded")
		}
		sums = append(sums, y.Sum().Float32s()...)
		seen = append(seen, x, y)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{12, 20, 28}; !slices.Equal(sums, want) {
		t.Errorf("sums %v, want %v", sums, want)
	}
	for _, x := range seen {
		if !freed(x) {
			t.Errorf("%v outlived its batch", x)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	n := 0
	err = torch.Infer(cctx, torch.CPU, batchesOf(3), func(*torch.Tensor) {
		n++
		cancel()
	})
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Errorf("cancelled after the first batch: %d batches, err %v", n, err)
	}

	n = 0
	err = torch.Infer(ctx, torch.CPU, batchesOf(3), func(x *torch.Tensor) {
		n++
		x.Reshape(7)
	})
	var te *torch.Error
	if !errors.As(err, &te) || n != 1 {
		t.Errorf("a failing op: %d batches, err %v; want 1 and a *torch.Error", n, err)
	}
}
