package torch

import (
	"context"
	"iter"
	"runtime"
)

// Images is a batch of N images of C×H×W float32 values, NCHW.
type Images struct {
	X          []float32
	N, C, H, W int
}

// Infer is the batched inference loop: it runs f on each batch that batches
// yields, as a tensor on dev, with autograd off and every tensor of the
// batch freed when f returns. All batches run on the calling goroutine's OS
// thread, locked to it: libtorch's intra-op thread pool belongs to the
// thread that starts it, and moving between threads would start new pools
// that compete for the cores. Infer stops at ctx's cancellation, checked
// before each batch, returning ctx's error, and at the first batch whose
// torch calls fail, returning the *Error.
func Infer(ctx context.Context, dev Device, batches iter.Seq[Images], f func(x *Tensor)) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for b := range batches {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := Catch(func() {
			NoGrad(func() {
				Scoped(func(s *Scope) {
					x := FromSlice(s, b.X, int64(b.N), int64(b.C), int64(b.H), int64(b.W))
					if dev != CPU {
						x = x.ToDevice(dev)
					}
					f(x)
				})
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}
