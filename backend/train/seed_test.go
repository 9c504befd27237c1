package train_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// weights copies a model's parameters.
func weights(ps []*torch.Tensor) [][]float32 {
	var out [][]float32
	for _, p := range ps {
		out = append(out, p.Float32s())
	}
	return out
}

// TestConcurrentTrainingReproduces checks that training jobs running at
// once reproduce their seed: each draws its dropout masks from a generator
// of its own, so two MLPs (dropout 0.2) trained at the same time with
// seed 5, beside one with seed 6, end with the weights of seed 5 trained
// alone.
func TestConcurrentTrainingReproduces(t *testing.T) {
	trainSet, _ := fashion(t)
	d := trainSet.Subset(seq(512))
	run := func(seed int64) [][]float32 {
		m := newModel(t, "mlp", d, 1)
		if !m.HasDropout() {
			t.Fatal("the mlp has no dropout: nothing to draw")
		}
		cfg := fast(1)
		cfg.Seed = seed
		if _, err := train.Train(context.Background(), m, d, cfg); err != nil {
			t.Error(err)
			return nil
		}
		return weights(m.Params())
	}
	alone := run(5)
	seeds := []int64{5, 6, 5}
	got := make([][][]float32, len(seeds))
	var wg sync.WaitGroup
	for i, s := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = run(s)
		}()
	}
	wg.Wait()
	eq := func(a, b [][]float32) bool { return slices.EqualFunc(a, b, slices.Equal[[]float32]) }
	for i, s := range seeds {
		if same := eq(got[i], alone); same != (s == 5) {
			t.Errorf("job %d (seed %d): weights of seed 5 trained alone: %v, want %v", i, s, same, s == 5)
		}
	}
}
