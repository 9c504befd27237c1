package torch_test

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/torch"
)

// TestFinalizerRace reproduces a known bug of the binding: wrappers such as
// CopyFrom, Item, Data, Shape, Backward, Grad and Optimizer.Step pass a
// tensor's C handle to the shim and do not use the Go *Tensor afterwards,
// so a caller-owned temporary can become unreachable during the cgo call
// and its finalizer can free the libtorch tensor under libtorch's feet
// (a missing runtime.KeepAlive). With a collector running alongside, the
// pattern dst.CopyFrom(temporary) segfaults within a second.
//
// The binding now keeps its operands alive across each call; this test
// guards against a regression. It runs in a child process, which would crash.
func TestFinalizerRace(t *testing.T) {
	if os.Getenv("TORCH_FINALIZER_RACE_CHILD") == "1" {
		finalizerRaceChild(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFinalizerRace$", "-test.v")
	cmd.Env = append(os.Environ(), "TORCH_FINALIZER_RACE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child process failed (%v): a tensor was freed during a cgo call\n%s", err, out)
	}
}

func finalizerRaceChild(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	const n = 1 << 22
	dst := torch.Zeros(nil, torch.CPU, n)
	defer dst.Free()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		dst.CopyFrom(torch.Full(nil, []int64{n}, 3, torch.Float32, torch.CPU))
		if got := dst.Sum().Item(); got != 3*n {
			t.Fatalf("copy of a temporary gave sum %v, want %v", got, 3*n)
		}
		if got := len(torch.Ones(nil, torch.CPU, n).Float32s()); got != n {
			t.Fatalf("Data of a temporary: %d elements", got)
		}
	}
}
