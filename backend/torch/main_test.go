package torch_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

func TestMain(m *testing.M) {
	torch.SetNumThreads(runtime.NumCPU())
	os.Exit(m.Run())
}

// mustPanicTorch runs f and returns the *torch.Error it panicked with; it
// fails the test if f returns normally or panics with anything else.
func mustPanicTorch(t *testing.T, f func()) (te *torch.Error) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("no panic, want a *torch.Error")
		}
		e, ok := r.(error)
		if !ok || !errors.As(e, &te) {
			t.Fatalf("panic with %T %v, want a *torch.Error", r, r)
		}
	}()
	f()
	return nil
}

// allClose compares got with want elementwise: |g−w| ≤ tol + tol·|w|.
func allClose(got, want []float32, tol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("length %d, want %d", len(got), len(want))
	}
	worst, at := 0.0, -1
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return fmt.Errorf("element %d is %v, want %v", i, g, w)
		}
		d := math.Abs(g-w) / (tol + tol*math.Abs(w))
		if d > worst {
			worst, at = d, i
		}
	}
	if worst > 1 {
		return fmt.Errorf("element %d: got %v, want %v (error %.3g× the tolerance %g)", at, got[at], want[at], worst, tol)
	}
	return nil
}

func shapeEq(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
