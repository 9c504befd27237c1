package torch_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// Every libtorch failure must come back as a *torch.Error carrying
// libtorch's own message (without its C++ backtrace), and the process must
// stay usable afterwards.
func TestCppExceptionsBecomeErrors(t *testing.T) {
	// op is the binding's op name in the error, want a piece of libtorch's
	// (or the binding's) message.
	tests := []struct {
		name, op, want string
		failOp         func(s *torch.Scope)
	}{
		{"conv2d channels", "conv2d", "to have 4 channels", func(s *torch.Scope) {
			torch.Conv2d(torch.Zeros(s, torch.CPU, 1, 3, 5, 5), torch.Zeros(s, torch.CPU, 2, 4, 3, 3), nil, torch.ConvOpts{})
		}},
		{"conv2d kernel larger than input", "conv2d", "Kernel size can't be greater than actual input size", func(s *torch.Scope) {
			torch.Conv2d(torch.Zeros(s, torch.CPU, 1, 1, 2, 2), torch.Zeros(s, torch.CPU, 1, 1, 3, 3), nil, torch.ConvOpts{})
		}},
		{"matmul shapes", "matmul", "cannot be multiplied", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 3).MatMul(torch.Zeros(s, torch.CPU, 4, 5))
		}},
		{"linear shapes", "linear", "cannot be multiplied", func(s *torch.Scope) {
			torch.Linear(torch.Zeros(s, torch.CPU, 2, 3), torch.Zeros(s, torch.CPU, 4, 5), nil)
		}},
		{"broadcast", "add", "must match the size of tensor b", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 3).Add(torch.Zeros(s, torch.CPU, 2, 4))
		}},
		{"reshape", "reshape", "is invalid for input of size 6", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 3).Reshape(4, 2)
		}},
		{"backward of non-scalar", "backward", "grad can be implicitly created only for scalar outputs", func(s *torch.Scope) {
			x := torch.Ones(s, torch.CPU, 3).SetRequiresGrad(true)
			x.MulScalar(2).Backward()
		}},
		{"backward without grad", "backward", "does not require grad", func(s *torch.Scope) {
			torch.Ones(s, torch.CPU, 3).Sum().Backward()
		}},
		{"cross-entropy target out of range", "cross_entropy", "out of bounds", func(s *torch.Scope) {
			torch.CrossEntropy(torch.Zeros(s, torch.CPU, 2, 3), torch.FromSlice(s, []int64{0, 7}, 2), torch.ReduceMean)
		}},
		{"index_select out of range", "index_select", "out of range", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 3).IndexSelect(0, torch.FromSlice(s, []int64{5}, 1))
		}},
		{"narrow out of range", "narrow", "exceeds dimension size", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 4).Narrow(1, 3, 2)
		}},
		{"item of many", "item", "cannot be converted to Scalar", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 3).Item()
		}},
		{"cat mismatched", "cat", "Sizes of tensors must match", func(s *torch.Scope) {
			torch.Cat([]*torch.Tensor{torch.Zeros(s, torch.CPU, 2, 3), torch.Zeros(s, torch.CPU, 2, 4)}, 0)
		}},
		{"one_hot negative", "one_hot", "non-negative", func(s *torch.Scope) {
			torch.FromSlice(s, []int64{-1, 0}, 2).OneHot(3)
		}},
		{"permute wrong rank", "permute", "does not match the length of the desired ordering", func(s *torch.Scope) {
			torch.Zeros(s, torch.CPU, 2, 3).Permute(0)
		}},
		{"reflect pad too wide", "pad", "Padding size should be less than", func(s *torch.Scope) {
			torch.Pad(torch.Zeros(s, torch.CPU, 1, 1, 3), []int64{3, 3}, torch.PadReflect, 0)
		}},
		{"batch_norm channels", "batch_norm", "running_mean should contain 2 elements not 3", func(s *torch.Scope) {
			torch.BatchNorm(torch.Zeros(s, torch.CPU, 4, 2, 3, 3), nil, nil,
				torch.Zeros(s, torch.CPU, 3), torch.Ones(s, torch.CPU, 3), true, 0.1, 1e-5)
		}},
		{"requires grad on int64", "requires_grad_", "floating point", func(s *torch.Scope) {
			torch.FromSlice(s, []int64{1, 2}, 2).SetRequiresGrad(true)
		}},
		// The binding's own checks.
		{"from_slice shape", "from_slice", "holds 6 elements, data has 5", func(s *torch.Scope) {
			torch.FromSlice(s, []float32{1, 2, 3, 4, 5}, 2, 3)
		}},
		{"data dtype", "data", "tensor is float32, asked for int64", func(s *torch.Scope) {
			torch.Data[int64](torch.Zeros(s, torch.CPU, 2))
		}},
		{"nil tensor in cat", "cat", "nil tensor at position 1", func(s *torch.Scope) {
			torch.Cat([]*torch.Tensor{torch.Zeros(s, torch.CPU, 2), nil}, 0)
		}},
		{"freed optimizer", "optimizer", "use of a freed optimizer", func(s *torch.Scope) {
			o := torch.NewSGD([]*torch.Tensor{torch.Zeros(s, torch.CPU, 2).SetRequiresGrad(true)}, torch.SGDOpts{LR: 0.1})
			o.Free()
			o.Free() // double free is a no-op
			o.Step()
		}},
	}
	if torch.CUDADeviceCount() == 0 {
		tests = append(tests, struct {
			name, op, want string
			failOp         func(s *torch.Scope)
		}{"cuda on a cpu build", "full", "CUDA", func(s *torch.Scope) {
			torch.Zeros(s, torch.CUDA(0), 2)
		}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			err := torch.Catch(func() { tc.failOp(s) })
			if err == nil {
				t.Fatalf("no error")
			}
			var te *torch.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %T %v, want *torch.Error", err, err)
			}
			if te.Op != tc.op {
				t.Errorf("Op = %q, want %q", te.Op, tc.op)
			}
			if !strings.Contains(te.Msg, tc.want) {
				t.Errorf("message %q does not contain %q", te.Msg, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "torch: "+tc.op+": ") {
				t.Errorf("Error() = %q, want the prefix %q", err.Error(), "torch: "+tc.op+": ")
			}
			if strings.Contains(te.Msg, "Exception raised from") || strings.Contains(te.Msg, "frame #") {
				t.Errorf("message carries a C++ backtrace: %q", te.Msg)
			}
			// The process, the scope and grad mode are intact.
			x := torch.Ones(s, torch.CPU, 2).SetRequiresGrad(true)
			if y := x.MulScalar(3).Sum(); y.Item() != 6 || !y.RequiresGrad() {
				t.Errorf("after the error: sum = %v, requires grad %v", y.Item(), y.RequiresGrad())
			}
		})
	}
}

// A failed op inside a scope leaves nothing behind and the scope still
// closes cleanly; the error crosses goroutines as a value.
func TestErrorsInGoroutines(t *testing.T) {
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			errs <- torch.Catch(func() {
				torch.Scoped(func(s *torch.Scope) {
					torch.Zeros(s, torch.CPU, 2, 3).MatMul(torch.Zeros(s, torch.CPU, 2, 3))
				})
			})
		}()
	}
	for range 8 {
		err := <-errs
		var te *torch.Error
		if !errors.As(err, &te) || !strings.Contains(te.Msg, "cannot be multiplied") {
			t.Errorf("got %v", err)
		}
	}
}

func TestCatchPassesOtherPanics(t *testing.T) {
	defer func() {
		if r := recover(); r != "not a torch error" {
			t.Errorf("recovered %v, want the original panic", r)
		}
	}()
	_ = torch.Catch(func() { panic("not a torch error") })
	t.Errorf("Catch swallowed a foreign panic")
}

func TestCatchNil(t *testing.T) {
	if err := torch.Catch(func() {}); err != nil {
		t.Errorf("Catch of a clean run = %v", err)
	}
}

// An op that fails panics (rather than returning a zero tensor).
func TestFailingOpPanicsWithError(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	te := mustPanicTorch(t, func() { torch.Zeros(s, torch.CPU, 2, 3).Reshape(5) })
	if te.Op != "reshape" {
		t.Errorf("Op = %q", te.Op)
	}
}
