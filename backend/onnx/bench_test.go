package onnx

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// benchModels returns the zoo's ResNet-20 and the same model exported and
// imported, on a batch of 128 CIFAR-sized images.
func benchModels(b *testing.B) (zoo *nn.Model, imported *Model) {
	spec := nn.Spec{Arch: "resnet20", Dataset: "bench", Classes: strings.Split("0123456789", ""), C: 3, H: 32, W: 32,
		Mean: []float64{0.5, 0.5, 0.5}, Std: []float64{0.25, 0.25, 0.25}}
	zoo, err := nn.New(spec, 1, torch.CPU)
	if err != nil {
		b.Fatal(err)
	}
	zoo.SetTraining(false)
	path := filepath.Join(b.TempDir(), "resnet20.onnx")
	if err := ExportFile(zoo, path, ExportOptions{}); err != nil {
		b.Fatal(err)
	}
	imported, err = Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { zoo.Free(); imported.Free() })
	// Warm both up (libtorch's first convolutions set up MKL-DNN).
	torch.NoGrad(func() {
		torch.Scoped(func(s *torch.Scope) {
			x := torch.Rand(s, torch.CPU, 128, 3, 32, 32)
			for range 2 {
				zoo.Forward(x)
				imported.Forward(x)
			}
		})
	})
	return zoo, imported
}

type forwarder interface {
	Forward(x *torch.Tensor) *torch.Tensor
}

// BenchmarkResNet20 times forward passes and input gradients of the zoo's
// ResNet-20 and of its ONNX import (batch 128, 3×32×32):
//
//	go test ./backend/onnx/ -run '^$' -bench ResNet20 -benchtime 20x
func BenchmarkResNet20(b *testing.B) {
	zoo, imported := benchModels(b)
	x := torch.Rand(nil, torch.CPU, 128, 3, 32, 32)
	defer x.Free()
	for _, m := range []struct {
		name string
		f    forwarder
	}{{"zoo", zoo}, {"onnx", imported}} {
		b.Run(m.name+"/forward", func(b *testing.B) {
			for b.Loop() {
				torch.NoGrad(func() { torch.Scoped(func(s *torch.Scope) { m.f.Forward(s.Add(x.Detach())) }) })
			}
		})
		b.Run(m.name+"/input_grad", func(b *testing.B) {
			for b.Loop() {
				torch.Scoped(func(s *torch.Scope) {
					xi := s.Add(x.Detach()).SetRequiresGrad(true)
					torch.Grads([]*torch.Tensor{m.f.Forward(xi).Sum()}, []*torch.Tensor{xi})
				})
			}
		})
	}
}

// BenchmarkResNet20Ratio alternates the zoo's forward pass and the
// import's on the same batch and reports the median ratio of their times,
// which holds up on a loaded machine better than separate timings:
//
//	go test ./backend/onnx/ -run '^$' -bench ResNet20Ratio -benchtime 30x
func BenchmarkResNet20Ratio(b *testing.B) {
	zoo, imported := benchModels(b)
	x := torch.Rand(nil, torch.CPU, 128, 3, 32, 32)
	defer x.Free()
	timeIt := func(f forwarder, grad bool) time.Duration {
		start := time.Now()
		torch.Scoped(func(s *torch.Scope) {
			xi := s.Add(x.Detach())
			if !grad {
				torch.NoGrad(func() { f.Forward(xi) })
				return
			}
			xi.SetRequiresGrad(true)
			torch.Grads([]*torch.Tensor{f.Forward(xi).Sum()}, []*torch.Tensor{xi})
		})
		return time.Since(start)
	}
	for _, grad := range []bool{false, true} {
		name := "forward"
		if grad {
			name = "input_grad"
		}
		b.Run(name, func(b *testing.B) {
			var ratios []float64
			var zt, ot []time.Duration
			for b.Loop() {
				z := timeIt(zoo, grad)
				o := timeIt(imported, grad)
				zt, ot = append(zt, z), append(ot, o)
				ratios = append(ratios, float64(o)/float64(z))
			}
			slices.Sort(ratios)
			slices.Sort(zt)
			slices.Sort(ot)
			b.ReportMetric(ratios[len(ratios)/2], "onnx/zoo")
			b.ReportMetric(float64(zt[len(zt)/2].Milliseconds()), "zoo-ms")
			b.ReportMetric(float64(ot[len(ot)/2].Milliseconds()), "onnx-ms")
		})
	}
}
