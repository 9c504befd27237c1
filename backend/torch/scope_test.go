package torch_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// freed reports whether t's handle has been released.
func freed(t *torch.Tensor) bool { return t.String() == "Tensor(freed)" }

func TestScopeCloseFreesEverything(t *testing.T) {
	s := torch.NewScope()
	a := torch.FromSlice(s, []float32{1, -2, 3, -4}, 2, 2)
	b := torch.Ones(s, torch.CPU, 2, 2)
	// Results join the scope of their operands.
	c := a.Add(b).Relu()
	d := torch.Conv2d(a.Reshape(1, 1, 2, 2), b.Reshape(1, 1, 2, 2), nil, torch.ConvOpts{})
	v, i := a.TopK(1, 1)
	all := []*torch.Tensor{a, b, c, d, v, i}
	for _, x := range all {
		if x.Scope() != s {
			t.Errorf("%v: scope %p, want %p", x, x.Scope(), s)
		}
	}
	if got := s.Len(); got < len(all) {
		t.Errorf("Len = %d, want at least %d", got, len(all))
	}
	s.Close()
	if s.Len() != 0 {
		t.Errorf("Len after Close = %d", s.Len())
	}
	for _, x := range all {
		if !freed(x) {
			t.Errorf("%v survived Close", x)
		}
	}
	s.Close() // a second Close is a no-op
}

func TestKeepSurvivesClose(t *testing.T) {
	var kept, dropped *torch.Tensor
	torch.Scoped(func(s *torch.Scope) {
		x := torch.FromSlice(s, []float32{1, 2, 3}, 3)
		kept = x.MulScalar(2)
		dropped = x.AddScalar(1)
		torch.Keep(kept, nil) // nil is ignored
		if kept.Scope() != nil {
			t.Errorf("kept tensor still in scope %p", kept.Scope())
		}
	})
	defer kept.Free()
	if !freed(dropped) {
		t.Errorf("unkept tensor survived the scope")
	}
	if got := kept.Float32s(); got[0] != 2 || got[1] != 4 || got[2] != 6 {
		t.Errorf("kept tensor = %v", got)
	}
	// A result computed from kept (caller-owned) tensors only is caller-owned.
	y := kept.Neg()
	defer y.Free()
	if y.Scope() != nil {
		t.Errorf("result of a caller-owned tensor joined scope %p", y.Scope())
	}
}

// TestResultJoinsInnermostScope checks that a result joins the innermost
// of its operands' scopes (s2, opened after s1), whatever their order, and
// the caller's only when no operand has a scope.
func TestResultJoinsInnermostScope(t *testing.T) {
	s1, s2 := torch.NewScope(), torch.NewScope()
	defer s1.Close()
	defer s2.Close()
	own := torch.Ones(nil, torch.CPU, 2)
	defer own.Free()
	a := torch.Ones(s1, torch.CPU, 2)
	b := torch.Ones(s2, torch.CPU, 2)
	tests := []struct {
		name string
		got  *torch.Tensor
		want *torch.Scope
	}{
		{"owned+s1", own.Add(a), s1},
		{"s2+s1", b.Add(a), s2},
		{"s1+s2", a.Add(b), s2},
		{"where(owned, s2, s1)", torch.Where(own.GtScalar(0), b, a), s2},
		{"where(owned, s1, s2)", torch.Where(own.GtScalar(0), a, b), s2},
		{"cat(owned, s1)", torch.Cat([]*torch.Tensor{own, a}, 0), s1},
		{"cat(s1, s2, owned)", torch.Cat([]*torch.Tensor{a, b, own}, 0), s2},
		{"linear(owned, owned, s2)", torch.Linear(own.Reshape(1, 2), own.Reshape(1, 2), b.Narrow(0, 0, 1)), s2},
		{"linear(s1, owned, s2)", torch.Linear(a.Reshape(1, 2), own.Reshape(1, 2), b.Narrow(0, 0, 1)), s2},
		{"grads(s2 output, s1 input)", torch.Grads([]*torch.Tensor{a.SetRequiresGrad(true).Mul(b).Sum()}, []*torch.Tensor{a})[0], s2},
	}
	for _, tc := range tests {
		if tc.got.Scope() != tc.want {
			t.Errorf("%s: scope %p, want %p", tc.name, tc.got.Scope(), tc.want)
		}
	}
}

// TestOperandOrderDoesNotDecideLifetime checks that a result of an outer
// scope's tensor and an inner scope's tensor is freed when the inner scope
// closes, in either operand order, and that the outer tensor outlives it.
func TestOperandOrderDoesNotDecideLifetime(t *testing.T) {
	outer := torch.NewScope()
	defer outer.Close()
	w := torch.Ones(outer, torch.CPU, 2)
	var res []*torch.Tensor
	torch.Scoped(func(inner *torch.Scope) {
		x := torch.Ones(inner, torch.CPU, 2)
		res = []*torch.Tensor{w.Add(x), x.Add(w), w.Mul(x).Sub(w), torch.Where(w.GtScalar(0), w, x)}
	})
	for i, r := range res {
		if !freed(r) {
			t.Errorf("result %d outlived the inner scope of one of its operands", i)
		}
	}
	if freed(w) {
		t.Error("closing the inner scope freed the outer scope's tensor")
	}
	n := outer.Len()
	torch.Scoped(func(inner *torch.Scope) {
		x := torch.Ones(inner, torch.CPU, 2)
		w.Add(x)
		w.Mul(x).Sum()
	})
	if outer.Len() != n {
		t.Errorf("inner-scope work left %d tensors in the outer scope", outer.Len()-n)
	}
}

func TestUseAfterFreePanics(t *testing.T) {
	s := torch.NewScope()
	x := torch.Ones(s, torch.CPU, 2, 2)
	y := torch.Ones(nil, torch.CPU, 2, 2)
	defer y.Free()
	s.Close()
	uses := []struct {
		name string
		use  func()
	}{
		{"Shape", func() { x.Shape() }},
		{"Float32s", func() { x.Float32s() }},
		{"Item", func() { x.Item() }},
		{"unary", func() { x.Relu() }},
		{"binary lhs", func() { x.Add(y) }},
		{"binary rhs", func() { y.Add(x) }},
		{"conv weight", func() { torch.Conv2d(y.Reshape(1, 1, 2, 2), x.Reshape(1, 1, 2, 2), nil, torch.ConvOpts{}) }},
		{"cat", func() { torch.Cat([]*torch.Tensor{y, x}, 0) }},
		{"grads", func() { torch.Grads([]*torch.Tensor{x}, []*torch.Tensor{y}) }},
		{"backward", func() { x.Backward() }},
		{"copy into", func() { x.CopyFrom(y) }},
		{"copy from", func() { y.CopyFrom(x) }},
	}
	for _, u := range uses {
		t.Run(u.name, func(t *testing.T) {
			te := mustPanicTorch(t, u.use)
			if te.Msg != "use of a freed tensor" {
				t.Errorf("message %q", te.Msg)
			}
			err := torch.Catch(u.use)
			var te2 *torch.Error
			if !errors.As(err, &te2) || !strings.Contains(err.Error(), "use of a freed tensor") {
				t.Errorf("Catch returned %v", err)
			}
		})
	}
}

func TestFreeThenCloseIsSafe(t *testing.T) {
	s := torch.NewScope()
	x := torch.Ones(s, torch.CPU, 3)
	x.Free()
	x.Free() // idempotent
	if !freed(x) {
		t.Errorf("Free left the handle alive")
	}
	var nilT *torch.Tensor
	nilT.Free() // nil-safe
	s.Close()   // must not double-free x
	if nilT.String() != "Tensor(freed)" {
		t.Errorf("nil tensor String = %q", nilT.String())
	}
}

func TestScopedClosesOnPanic(t *testing.T) {
	var x *torch.Tensor
	err := torch.Catch(func() {
		torch.Scoped(func(s *torch.Scope) {
			x = torch.Ones(s, torch.CPU, 2)
			x.Reshape(3) // fails
		})
	})
	if err == nil {
		t.Fatal("no error")
	}
	if !freed(x) {
		t.Errorf("Scoped did not close its scope when f panicked")
	}
}

func TestScopeConcurrentUse(t *testing.T) {
	s := torch.NewScope()
	base := torch.Ones(s, torch.CPU, 4, 4)
	var wg sync.WaitGroup
	const workers, per = 8, 50
	results := make([][]*torch.Tensor, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				results[w] = append(results[w], base.MulScalar(float64(w)).Sum())
			}
		}()
	}
	wg.Wait()
	if got, want := s.Len(), 1+workers*per*2; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	for w, rs := range results {
		for _, r := range rs {
			if r.Item() != float64(16*w) {
				t.Fatalf("worker %d: %v", w, r.Item())
			}
		}
	}
	s.Close()
	for _, rs := range results {
		for _, r := range rs {
			if !freed(r) {
				t.Fatalf("result survived Close")
			}
		}
	}
}

// Data crosses the boundary by whole slices and round-trips exactly.
func TestFromSliceRoundTrip(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	f := []float32{0, -1.5, 3.25, 1e-30, -7e20, 0.1}
	if got := torch.FromSlice(s, f, 2, 3).Float32s(); !equalSlices(got, f) {
		t.Errorf("float32: %v", got)
	}
	i := []int64{-1 << 62, 0, 1<<62 + 3}
	if got := torch.FromSlice(s, i, 3).Int64s(); !equalSlices(got, i) {
		t.Errorf("int64: %v", got)
	}
	b := []bool{true, false, true}
	if got := torch.Data[bool](torch.FromSlice(s, b, 3, 1)); !equalSlices(got, b) {
		t.Errorf("bool: %v", got)
	}
	u := []uint8{0, 255, 7}
	if got := torch.Data[uint8](torch.FromSlice(s, u, 3)); !equalSlices(got, u) {
		t.Errorf("uint8: %v", got)
	}
	// A scalar (0-d) and an empty tensor.
	sc := torch.FromSlice(s, []float32{2.5})
	if sc.Dim() != 0 || sc.Item() != 2.5 || sc.Numel() != 1 {
		t.Errorf("scalar: %v %v", sc, sc.Item())
	}
	e := torch.FromSlice(s, []float32{}, 0, 3)
	if e.Numel() != 0 || len(e.Float32s()) != 0 || !shapeEq(e.Shape(), []int64{0, 3}) {
		t.Errorf("empty: %v", e)
	}
	// The tensor owns a copy: changing the slice afterwards changes nothing.
	src := []float32{1, 2}
	x := torch.FromSlice(s, src, 2)
	src[0] = 99
	if x.Float32s()[0] != 1 {
		t.Errorf("tensor aliases its source slice")
	}
	// Data of a non-contiguous view is in logical order.
	p := torch.FromSlice(s, []float32{1, 2, 3, 4, 5, 6}, 2, 3).Permute(1, 0)
	if got := p.Float32s(); !equalSlices(got, []float32{1, 4, 2, 5, 3, 6}) {
		t.Errorf("permuted data %v", got)
	}
	if p.Size(-1) != 2 || p.Size(0) != 3 || p.DType() != torch.Float32 || p.Device() != torch.CPU {
		t.Errorf("permuted: %v", p)
	}
	if got := p.String(); got != "Tensor([3 2], float32, cpu)" {
		t.Errorf("String = %q", got)
	}
}

func TestCopyFromIsInPlaceAndUntracked(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	w := torch.Zeros(s, torch.CPU, 3).SetRequiresGrad(true)
	w.CopyFrom(torch.FromSlice(s, []float32{1, 2, 3}, 3))
	if got := w.Float32s(); !equalSlices(got, []float32{1, 2, 3}) {
		t.Errorf("after CopyFrom: %v", got)
	}
	// w is still a leaf: its gradient accumulates.
	w.Square().Sum().Backward()
	if g := w.Grad(s); g == nil || !equalSlices(g.Float32s(), []float32{2, 4, 6}) {
		t.Errorf("grad = %v", g)
	}
}

func equalSlices[E comparable](a, b []E) bool {
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

func TestScopeAddMovesOwnership(t *testing.T) {
	s1, s2 := torch.NewScope(), torch.NewScope()
	defer s2.Close()
	own := torch.Ones(nil, torch.CPU, 2)
	if got := s2.Add(own); got != own || own.Scope() != s2 {
		t.Fatalf("Add of a caller-owned tensor: scope %p, want %p", own.Scope(), s2)
	}
	// Results computed from an added tensor join its new scope.
	if r := own.MulScalar(2); r.Scope() != s2 {
		t.Errorf("result of an added tensor in scope %p", r.Scope())
	}
	// Moving a tensor out of s1: closing s1 leaves it alone.
	moved := torch.Ones(s1, torch.CPU, 2)
	stays := torch.Ones(s1, torch.CPU, 2)
	n := s2.Len()
	s2.Add(moved)
	s2.Add(moved) // already there: not added twice
	if s2.Len() != n+1 {
		t.Errorf("Len = %d after adding one tensor twice, want %d", s2.Len(), n+1)
	}
	s1.Close()
	if freed(moved) || !freed(stays) {
		t.Errorf("after closing the old scope: moved freed %v, stayed freed %v", freed(moved), freed(stays))
	}
	if s2.Add(nil) != nil {
		t.Errorf("Add(nil) != nil")
	}
	s2.Close()
	if !freed(moved) || !freed(own) {
		t.Errorf("closing the new scope left moved tensors alive")
	}
}
