package torch_test

import (
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/torch"
)

// rss is the resident set size of this process in bytes.
// rss is the resident set after the allocator gave its free memory back
// (torch.TrimMemory): live memory, not what glibc keeps for reuse, which
// would absorb a leak of up to its trim threshold unseen.
func rss(t *testing.T) int64 {
	t.Helper()
	torch.TrimMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

const mb = 1 << 20

// convNet is a small CNN for 1×28×28 inputs built from the raw ops:
// conv(8) → bn → relu → pool → conv(16) → relu → pool → linear(10).
type convNet struct {
	c1w, c1b, bnW, bnB, bnMean, bnVar, c2w, c2b, lw, lb *torch.Tensor
}

// newConvNet makes caller-owned parameters (freed by free).
func newConvNet(r *rand.Rand) *convNet {
	p := func(scale float64, shape ...int64) *torch.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * scale)
		}
		return torch.FromSlice(nil, v, shape...).SetRequiresGrad(true)
	}
	return &convNet{
		c1w: p(1.0/3, 8, 1, 3, 3), c1b: p(0.01, 8),
		bnW:    torch.Ones(nil, torch.CPU, 8).SetRequiresGrad(true),
		bnB:    torch.Zeros(nil, torch.CPU, 8).SetRequiresGrad(true),
		bnMean: torch.Zeros(nil, torch.CPU, 8), bnVar: torch.Ones(nil, torch.CPU, 8),
		c2w: p(1.0/8.5, 16, 8, 3, 3), c2b: p(0.01, 16),
		lw: p(1.0/28, 10, 16*7*7), lb: p(0.01, 10),
	}
}

func (n *convNet) params() []*torch.Tensor {
	return []*torch.Tensor{n.c1w, n.c1b, n.bnW, n.bnB, n.c2w, n.c2b, n.lw, n.lb}
}

func (n *convNet) free() {
	for _, p := range append(n.params(), n.bnMean, n.bnVar) {
		p.Free()
	}
}

// loss runs the forward pass and returns the mean cross-entropy and every
// tensor it created (all must belong to x's scope).
func (n *convNet) loss(x, y *torch.Tensor) (*torch.Tensor, []*torch.Tensor) {
	var made []*torch.Tensor
	m := func(t *torch.Tensor) *torch.Tensor { made = append(made, t); return t }
	h := m(torch.Conv2d(x, n.c1w, n.c1b, torch.ConvOpts{Padding: torch.P(1)}))
	h = m(torch.BatchNorm(h, n.bnW, n.bnB, n.bnMean, n.bnVar, true, 0.1, 1e-5))
	h = m(torch.MaxPool2d(m(h.Relu()), torch.PoolOpts{Kernel: torch.P(2)}))
	h = m(torch.Conv2d(h, n.c2w, n.c2b, torch.ConvOpts{Padding: torch.P(1)}))
	h = m(m(torch.MaxPool2d(m(h.Relu()), torch.PoolOpts{Kernel: torch.P(2)})).Flatten())
	logits := m(torch.Linear(h, n.lw, n.lb))
	return m(torch.CrossEntropy(logits, y, torch.ReduceMean)), made
}

// batches are fixed random inputs, the way a data loader hands slices over.
type batches struct {
	x [][]float32
	y [][]int64
}

func newBatches(r *rand.Rand, count, size int) batches {
	var b batches
	for range count {
		x := make([]float32, size*28*28)
		for i := range x {
			x[i] = r.Float32()
		}
		y := make([]int64, size)
		for i := range y {
			y[i] = int64(r.IntN(10))
		}
		b.x = append(b.x, x)
		b.y = append(b.y, y)
	}
	return b
}

// TestScopesDoNotLeak trains the small CNN for 2,000 steps, one scope per
// step, and requires resident memory to stay flat; then it shows that the
// same loop without closing its scopes grows, so the measurement can see a
// leak.
func TestScopesDoNotLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("leak test in -short mode")
	}
	const batch, warm = 16, 200
	steps := 2000 // LEAK_STEPS=n runs a longer soak
	if v, err := strconv.Atoi(os.Getenv("LEAK_STEPS")); err == nil && v > warm {
		steps = v
	}
	r := rand.New(rand.NewPCG(7, 7))
	data := newBatches(r, 32, batch)
	net := newConvNet(r)
	defer net.free()
	opt := torch.NewSGD(net.params(), torch.SGDOpts{LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4})
	defer opt.Free()

	// step runs one training step in s and returns the loss and the tensors
	// it holds handles to.
	step := func(s *torch.Scope, i int) (float64, []*torch.Tensor) {
		x := torch.FromSlice(s, data.x[i%len(data.x)], batch, 1, 28, 28)
		y := torch.FromSlice(s, data.y[i%len(data.y)], batch)
		loss, made := net.loss(x, y)
		opt.ZeroGrad()
		loss.Backward()
		opt.Step()
		return loss.Item(), append(made, x, y)
	}

	// Stay on one OS thread: glibc gives each thread that allocates its own
	// arena, so a goroutine wandering over threads grows RSS by allocator
	// arenas, which is not what this test is after.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	var rssWarm int64
	var first, last float64
	for i := 1; i <= steps; i++ {
		s := torch.NewScope()
		l, made := step(s, i)
		if i == 1 {
			first = l
			// Every tensor of the step joined the scope, and Close frees them all.
			if s.Len() != len(made) {
				t.Errorf("scope holds %d tensors, the step made %d", s.Len(), len(made))
			}
			for _, m := range made {
				if m.Scope() != s {
					t.Errorf("%v escaped the step's scope", m)
				}
			}
			s.Close()
			for _, m := range made {
				if !freed(m) {
					t.Errorf("%v survived Close", m)
				}
			}
		} else {
			s.Close()
		}
		last = l
		if i == warm {
			rssWarm = rss(t)
		}
	}
	rssEnd := rss(t)
	elapsed := time.Since(start)
	t.Logf("%d steps in %v (%.2f ms/step); loss %.3f → %.3f; RSS after step %d: %d MB, after step %d: %d MB",
		steps, elapsed.Round(time.Millisecond), float64(elapsed.Milliseconds())/float64(steps), first, last,
		warm, rssWarm/mb, steps, rssEnd/mb)
	if grow := rssEnd - rssWarm; grow > 20*mb {
		t.Errorf("RSS grew by %d MB between step %d and step %d", grow/mb, warm, steps)
	}

	// Positive control: the same steps without Close keep every activation.
	const leaky = 40
	before := rss(t)
	open := make([]*torch.Scope, 0, leaky)
	for i := range leaky {
		s := torch.NewScope()
		step(s, i)
		open = append(open, s)
	}
	after := rss(t)
	held := 0
	for _, s := range open {
		held += s.Len()
		s.Close()
	}
	t.Logf("without Close: %d steps hold %d tensors and grow RSS by %d MB", leaky, held, (after-before)/mb)
	if after-before < 30*mb {
		t.Errorf("unclosed scopes grew RSS by only %d MB: the leak measurement is blind", (after-before)/mb)
	}
}
