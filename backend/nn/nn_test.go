package nn

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/safetensors"
	"github.com/conferral/conferral/backend/torch"
)

func TestMain(m *testing.M) {
	torch.SetNumThreads(runtime.NumCPU())
	os.Exit(m.Run())
}

func spec(arch string, c, hw int64) Spec {
	mean, std := make([]float64, c), make([]float64, c)
	for i := range mean {
		mean[i], std[i] = 0.5, 0.25
	}
	return Spec{Arch: arch, Dataset: "test", Classes: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}, C: c, H: hw, W: hw, Mean: mean, Std: std}
}

// TestZoo builds every architecture for both input shapes the paper's
// datasets use and checks the logits' shape and the parameter count against
// the published size of each network.
func TestZoo(t *testing.T) {
	// Parameter counts for 3×32×32 input, 10 classes (± 5%): ResNet-20
	// 0.27M and ResNet-56 0.85M (He et al., Table 6; ours uses projection
	// shortcuts), VGG-16 with BN ≈ 14.7M, VGG-19 ≈ 20.0M, MobileNetV2
	// (CIFAR) ≈ 2.24M. DenseNet-BC-40 has no published count to check.
	want := map[string]float64{
		"resnet20": 0.27e6, "resnet56": 0.85e6, "vgg16": 14.7e6, "vgg19": 20.0e6,
		"mobilenetv2": 2.24e6,
	}
	for _, arch := range Architectures() {
		for _, shape := range [][2]int64{{1, 28}, {3, 32}} {
			t.Run(arch, func(t *testing.T) {
				m, err := New(spec(arch, shape[0], shape[1]), 1, torch.CPU)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Free()
				if arch == "lenet" && shape[0] == 1 && m.NumParams() != 61706 {
					t.Errorf("LeNet-5 on 28×28 has %d parameters, want LeCun's 61,706", m.NumParams())
				}
				if w, ok := want[arch]; ok && shape[0] == 3 {
					if n := float64(m.NumParams()); math.Abs(n-w)/w > 0.05 {
						t.Errorf("%s has %.3gM parameters, want ≈ %.3gM", arch, n/1e6, w/1e6)
					}
				}
				for _, training := range []bool{true, false} {
					m.SetTraining(training)
					torch.Scoped(func(s *torch.Scope) {
						got := m.Forward(torch.Rand(s, torch.CPU, 3, shape[0], shape[1], shape[1])).Shape()
						if len(got) != 2 || got[0] != 3 || got[1] != 10 {
							t.Errorf("logits shape %v, want [3 10]", got)
						}
					})
				}
			})
		}
	}
}

func TestUnknownArchAndBadSpec(t *testing.T) {
	if _, err := New(spec("nope", 1, 28), 1, torch.CPU); err == nil {
		t.Error("unknown architecture accepted")
	}
	s := spec("cnn", 1, 28)
	s.Std = []float64{0}
	if _, err := New(s, 1, torch.CPU); err == nil {
		t.Error("zero std accepted")
	}
}

func TestWrongInputShapeIsAnError(t *testing.T) {
	m, err := New(spec("cnn", 1, 28), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	err = torch.Catch(func() {
		torch.Scoped(func(s *torch.Scope) { m.Forward(torch.Zeros(s, torch.CPU, 2, 3, 32, 32)) })
	})
	if err == nil {
		t.Fatal("forward of a 3×32×32 batch through a 1×28×28 model did not fail")
	}
}

// TestSaveLoad checks that a saved model is self-describing and reproduces
// its outputs exactly, buffers (normalisation, running statistics) included.
func TestSaveLoad(t *testing.T) {
	m, err := New(spec("resnet20", 1, 28), 7, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	// Move the running statistics away from their initial values.
	m.SetTraining(true)
	torch.Scoped(func(s *torch.Scope) { m.Forward(torch.Rand(s, torch.CPU, 8, 1, 28, 28)) })
	m.SetTraining(false)

	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(path, map[string]string{"note": "hello"}); err != nil {
		t.Fatal(err)
	}
	m2, meta, err := Load(path, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Free()
	if meta["note"] != "hello" || m2.Spec.Arch != "resnet20" || m2.Spec.H != 28 || len(m2.Spec.Classes) != 10 {
		t.Errorf("metadata lost: %v %+v", meta, m2.Spec)
	}
	torch.Scoped(func(s *torch.Scope) {
		x := torch.Rand(s, torch.CPU, 4, 1, 28, 28)
		a, b := m.Forward(x).Float32s(), m2.Forward(x).Float32s()
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("logit %d: %v before saving, %v after loading", i, a[i], b[i])
			}
		}
	})
}

func TestLoadRejectsMismatchedFiles(t *testing.T) {
	m, err := New(spec("cnn", 1, 28), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	f, err := m.File(nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(f *safetensors.File){
		"missing tensor": func(f *safetensors.File) { f.Tensors = f.Tensors[1:] },
		"wrong shape": func(f *safetensors.File) {
			f.Tensors[len(f.Tensors)-1] = safetensors.F32(f.Tensors[len(f.Tensors)-1].Name, []int64{1}, []float32{0})
		},
		"not a model":  func(f *safetensors.File) { f.Metadata["conferral.format"] = "other" },
		"unknown arch": func(f *safetensors.File) { f.Metadata["arch"] = "transformer" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			g := &safetensors.File{Metadata: map[string]string{}, Tensors: append([]safetensors.Tensor(nil), f.Tensors...)}
			for k, v := range f.Metadata {
				g.Metadata[k] = v
			}
			mutate(g)
			if m2, err := FromFile(g, torch.CPU); err == nil {
				m2.Free()
				t.Error("accepted")
			}
		})
	}
}

// The architectures beyond the paper's zoo are what their names say: no
// batch norm in the wide and the deep nets, fifteen convolutions in the
// deep one, dropout where it is claimed.
func TestNewArchitecturesShape(t *testing.T) {
	tests := []struct {
		arch       string
		convs      int
		batchNorm  bool
		hasDropout bool
	}{
		{"widecnn", 2, false, true},
		{"deepnarrow", 15, false, false},
		{"mlpdrop", 0, false, true},
		{"cnn", 3, true, true},
		{"resnet20", 21, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.arch, func(t *testing.T) {
			m, err := New(spec(tc.arch, 1, 28), 1, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			convs, bn := 0, false
			for _, v := range m.Variables() {
				if strings.HasSuffix(v.Name, "running_mean") {
					bn = true
				}
				if strings.HasSuffix(v.Name, ".weight") && len(v.T.Shape()) == 4 {
					convs++
				}
			}
			if convs != tc.convs || bn != tc.batchNorm || m.HasDropout() != tc.hasDropout {
				t.Errorf("%d convolutions, batch norm %v, dropout %v; want %d, %v, %v", convs, bn, m.HasDropout(), tc.convs, tc.batchNorm, tc.hasDropout)
			}
		})
	}
}

// Spec.Dropout replaces every dropout layer's rate in training, travels in
// the model file, and is refused where an architecture has no dropout.
func TestDropoutOverride(t *testing.T) {
	// The share of a layer's activations dropped in training: with rate p
	// the MLP's logits change run to run; with p close to 1 the hidden
	// layer is almost all zeros. Measure it on the first dense layer's
	// output through the model's own Dropout.
	dropped := func(p float64) float64 {
		s := spec("mlpdrop", 1, 28)
		s.Dropout = p
		m, err := New(s, 1, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Free()
		m.SetTraining(true)
		var frac float64
		torch.Scoped(func(s *torch.Scope) {
			x := torch.Ones(s, torch.CPU, 1, 20000)
			y := Dropout(m.Context(), x, 0.5).Float32s()
			zeros := 0
			for _, v := range y {
				if v == 0 {
					zeros++
				}
			}
			frac = float64(zeros) / float64(len(y))
		})
		return frac
	}
	for _, tc := range []struct{ p, want float64 }{{0, 0.5}, {0.1, 0.1}, {0.8, 0.8}} {
		if got := dropped(tc.p); math.Abs(got-tc.want) > 0.02 {
			t.Errorf("Spec.Dropout %v: %.3f of activations dropped, want %.2f", tc.p, got, tc.want)
		}
	}

	s := spec("widecnn", 1, 28)
	s.Dropout = 0.4
	m, err := New(s, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	m2, meta, err := Load(path, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Free()
	if m2.Spec.Dropout != 0.4 || meta["dropout"] != "0.4" {
		t.Errorf("loaded dropout %v (meta %q), want 0.4", m2.Spec.Dropout, meta["dropout"])
	}

	d, err := New(spec("deepnarrow", 1, 28), 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free()
	if err := d.SetDropout(0.3); err == nil {
		t.Error("deepnarrow, which has no dropout, accepted a dropout rate")
	}
	if err := m.SetDropout(1); err == nil {
		t.Error("dropout 1 accepted")
	}
	if err := m.SetDropout(0.2); err != nil || m.Spec.Dropout != 0.2 {
		t.Errorf("SetDropout(0.2): %v, Spec.Dropout %v", err, m.Spec.Dropout)
	}
	bad := spec("cnn", 1, 28)
	bad.Dropout = -0.1
	if _, err := New(bad, 1, torch.CPU); err == nil {
		t.Error("negative dropout accepted")
	}
}
