package torch

/*
#include <malloc.h>
*/
import "C"

import (
	"fmt"
	"os"
)

// Tensors live in glibc's malloc, and glibc hands freed memory back to the
// kernel eagerly: blocks over its mmap threshold are unmapped on free, and
// a thread arena's free top is trimmed (madvise) once it passes the trim
// threshold. A training step frees and reallocates the same few megabytes
// of activations every time, so each step paid thousands of page faults on
// fresh zeroed pages: ~2,800 per LeNet-5 step on a batch of 128 (11 MB), a
// 1-epoch LeNet run 1.3–2.4× slower than with the memory kept (docs/performance.md).
// Goroutines run on threads other than the process's first, so their
// tensors come from glibc's thread arenas, where the dynamic thresholds
// that settle PyTorch's main thread do not help. Keep it: serve blocks up
// to 32 MiB (glibc's largest mmap threshold) from the heap and trim only
// past 256 MiB of free top. Setting GLIBC_TUNABLES or MALLOC_*_ in the
// environment leaves glibc's choice alone.
const (
	mmapThreshold = 32 << 20
	trimThreshold = 256 << 20
)

func init() {
	if os.Getenv("GLIBC_TUNABLES") != "" || os.Getenv("MALLOC_MMAP_THRESHOLD_") != "" || os.Getenv("MALLOC_TRIM_THRESHOLD_") != "" {
		return
	}
	C.mallopt(C.M_MMAP_THRESHOLD, mmapThreshold)
	C.mallopt(C.M_TRIM_THRESHOLD, trimThreshold)
}

// TrimMemory gives the allocator's free memory back to the kernel now
// (malloc_trim over every arena), so that the resident set measures what
// is live rather than what the policy above keeps for reuse: for memory
// measurements.
func TrimMemory() { C.malloc_trim(0) }

// MallocTunables is the GLIBC_TUNABLES value that gives another process
// (PyTorch, for a benchmark) the allocator policy this package sets.
var MallocTunables = fmt.Sprintf("glibc.malloc.mmap_threshold=%d:glibc.malloc.trim_threshold=%d", mmapThreshold, trimThreshold)
