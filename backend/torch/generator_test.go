package torch_test

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// draws is a job's randomness: uniform and normal samples and a dropout
// mask, n times over, as one slice.
func draws(n int) []float32 {
	var out []float32
	torch.Scoped(func(s *torch.Scope) {
		for range n {
			out = append(out, torch.Rand(s, torch.CPU, 3, 4).Float32s()...)
			out = append(out, torch.RandN(s, torch.CPU, 5).Float32s()...)
			out = append(out, torch.Dropout(torch.Ones(s, torch.CPU, 4, 8), 0.5, true).Float32s()...)
		}
	})
	return out
}

// TestGeneratorDrawsAsManualSeed checks that a Generator seeded with s
// draws on the CPU exactly what the global generators draw after
// ManualSeed(s), dropout masks included, so that moving a job onto its own
// generator does not change its numbers.
func TestGeneratorDrawsAsManualSeed(t *testing.T) {
	torch.ManualSeed(7)
	global := draws(3)
	var own []float32
	torch.Seeded(7, func() { own = draws(3) })
	if !slices.Equal(global, own) {
		t.Errorf("Seeded(7) drew %v…, ManualSeed(7) %v…", own[:4], global[:4])
	}
	var other []float32
	torch.Seeded(8, func() { other = draws(3) })
	if slices.Equal(own, other) {
		t.Error("seeds 7 and 8 drew the same numbers")
	}
}

// TestConcurrentJobsReproduce checks that jobs running at once, each with
// its own Generator, draw what they draw alone: two with seed 11 the same
// numbers, while a job of seed 12 and work on the global generators run
// beside them.
func TestConcurrentJobsReproduce(t *testing.T) {
	const n = 40
	var alone []float32
	torch.Seeded(11, func() { alone = draws(n) })
	seeds := []uint64{11, 12, 11, 12}
	got := make([][]float32, len(seeds))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // the global generators, drawn meanwhile
		for {
			select {
			case <-stop:
				return
			default:
				torch.Scoped(func(s *torch.Scope) { torch.Rand(s, torch.CPU, 16) })
			}
		}
	}()
	for i, seed := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			torch.Seeded(seed, func() { got[i] = draws(n) })
		}()
	}
	wg.Wait()
	close(stop)
	for i, seed := range seeds {
		if same := slices.Equal(got[i], alone); same != (seed == 11) {
			t.Errorf("job %d (seed %d): drew what seed 11 draws alone: %v, want %v", i, seed, same, seed == 11)
		}
	}
	if !slices.Equal(got[1], got[3]) {
		t.Error("the two jobs of seed 12 drew different numbers")
	}
}

// TestSetGeneratorRestores checks that a generator set inside another
// leaves the outer one's sequence where it was, that the global
// generators are the thread's source again afterwards, and that a
// generator freed while a thread draws from it stays usable there.
func TestSetGeneratorRestores(t *testing.T) {
	var want, got []float32
	torch.Seeded(3, func() { want = draws(2) })
	g, h := torch.NewGenerator(3), torch.NewGenerator(4)
	defer g.Free()
	torch.WithGenerator(g, func() {
		got = draws(1)
		torch.WithGenerator(h, func() {
			h.Free() // kept alive while this thread draws from it
			draws(1)
		})
		got = append(got, draws(1)...)
	})
	if !slices.Equal(got, want) {
		t.Error("a nested generator moved the outer one's sequence")
	}
	torch.ManualSeed(5)
	first := draws(1)
	torch.ManualSeed(5)
	torch.Seeded(6, func() { draws(1) })
	if again := draws(1); !slices.Equal(again, first) {
		t.Error("the thread did not return to the global generators")
	}
	err := torch.Catch(func() { torch.WithGenerator(h, func() {}) })
	var te *torch.Error
	if !errors.As(err, &te) || te.Op != "generator" {
		t.Errorf("WithGenerator of a freed generator: %v, want a *torch.Error", err)
	}
}

// BenchmarkDropout compares a dropout mask drawn from libtorch's global
// generator (at::dropout) with one drawn from a job's Generator (the same
// computation on the CPU, given the generator).
func BenchmarkDropout(b *testing.B) {
	x := torch.Ones(nil, torch.CPU, 128, 1024)
	defer x.Free()
	run := func(b *testing.B) {
		for range b.N {
			torch.Dropout(x, 0.5, true).Free()
		}
	}
	b.Run("global", run)
	b.Run("generator", func(b *testing.B) { torch.Seeded(1, func() { run(b) }) })
}
