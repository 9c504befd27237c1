package onnx

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

// manifest is testdata/manifest.json, written by testdata/gen_onnx.py.
type manifest struct {
	Models []struct {
		File       string    `json:"file"`
		Arch       string    `json:"arch"`
		Opset      int64     `json:"opset"`
		PixelShape []int     `json:"pixel_shape"`
		Layout     string    `json:"layout"`
		Scale      float32   `json:"scale"`
		Mean       []float32 `json:"mean"`
		Std        []float32 `json:"std"`
		Output     string    `json:"output"`
		Classes    int       `json:"classes"`
		Metadata   bool      `json:"metadata_props"`
		Ref        struct {
			Input, Output, Weights, Grad string
		} `json:"ref"`
	} `json:"models"`
}

// TestPyTorchModels runs every model that PyTorch exported (ResNet-20,
// VGG-16, MobileNetV2, DenseNet, a Keras-style NHWC model; opsets 9 to 17)
// and holds outputs to 1e-4 and input gradients to 1e-3 of PyTorch's
// (absolute differences).
func TestPyTorchModels(t *testing.T) {
	b, err := os.ReadFile("testdata/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var man manifest
	if err := json.Unmarshal(b, &man); err != nil {
		t.Fatal(err)
	}
	if len(man.Models) == 0 {
		t.Fatal("manifest lists no models")
	}
	for _, mm := range man.Models {
		t.Run(mm.File, func(t *testing.T) {
			// Files with metadata describe their input themselves; the
			// others are given it as the CLI flags would.
			var o Options
			if !mm.Metadata {
				o = Options{Layout: mm.Layout, Scale: mm.Scale, Mean: mm.Mean, Std: mm.Std}
			}
			m, err := Open(filepath.Join("testdata", mm.File), o)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			if c, h, w := m.InputShape(); c != mm.PixelShape[0] || h != mm.PixelShape[1] || w != mm.PixelShape[2] {
				t.Errorf("InputShape = %d,%d,%d, want %v", c, h, w, mm.PixelShape)
			}
			if m.Classes() != mm.Classes {
				t.Errorf("Classes = %d, want %d", m.Classes(), mm.Classes)
			}
			if m.Layout() != mm.Layout {
				t.Errorf("Layout = %s, want %s", m.Layout(), mm.Layout)
			}
			xs, _, xshape := readNpy(t, filepath.Join("testdata", mm.Ref.Input))
			want, _, _ := readNpy(t, filepath.Join("testdata", mm.Ref.Output))
			wts, _, wshape := readNpy(t, filepath.Join("testdata", mm.Ref.Weights))
			grad, _, _ := readNpy(t, filepath.Join("testdata", mm.Ref.Grad))
			torch.Scoped(func(s *torch.Scope) {
				x := torch.FromSlice(s, xs, xshape...).SetRequiresGrad(true)
				y := m.Forward(x)
				if mm.Output == "probabilities" {
					y = y.Softmax(1) // Forward stops before the final Softmax
				}
				if err := allClose(y.Float32s(), want, 1e-4, 0); err != nil {
					t.Errorf("output: %v", err)
				}
				y.Mul(torch.FromSlice(s, wts, wshape...)).Sum().Backward()
				g := x.Grad(s)
				if g == nil {
					t.Fatal("no gradient reached the input")
				}
				if err := allClose(g.Float32s(), grad, 1e-3, 0); err != nil {
					t.Errorf("input gradient: %v", err)
				}
				t.Logf("max |Δoutput| %.2g, max |Δgrad| %.2g", maxAbsDiff(y.Float32s(), want), maxAbsDiff(g.Float32s(), grad))
			})
		})
	}
}
