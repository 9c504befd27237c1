package nn

import (
	"fmt"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// BenchmarkForward times evaluation-mode forward passes of zoo models and
// counts the Go allocations of each: batch 1 shows the per-layer overhead
// of the Go side (layers, contexts, recording hooks), batch 128 the cost
// that matters in practice.
//
//	go test ./backend/nn -run '^$' -bench Forward -benchtime 20x
func BenchmarkForward(b *testing.B) {
	for _, c := range []struct {
		arch  string
		batch int64
	}{{"resnet20", 1}, {"densenet", 1}, {"mobilenetv2", 1}, {"resnet20", 128}} {
		b.Run(fmt.Sprintf("%s/batch%d", c.arch, c.batch), func(b *testing.B) {
			m, err := New(spec(c.arch, 3, 32), 1, torch.CPU)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Free()
			x := torch.Rand(nil, torch.CPU, c.batch, 3, 32, 32)
			defer x.Free()
			run := func() {
				torch.NoGrad(func() { torch.Scoped(func(s *torch.Scope) { m.Forward(s.Add(x.Detach())) }) })
			}
			run() // warm up MKL-DNN
			b.ReportAllocs()
			for b.Loop() {
				run()
			}
		})
	}
}
