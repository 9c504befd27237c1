package detect

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// TestSaveLoad round-trips a confidence detector and a CNN detector, and
// refuses files that are not detectors with ErrNotDetector.
func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	benign := make([]uint8, 3*2*4*4)
	for i := range benign {
		benign[i] = uint8(i)
	}
	net, err := nn.New(nn.Spec{Arch: "mlp", Classes: []string{"benign", "fingerprint"}, C: 2, H: 4, W: 4, Mean: []float64{0.5, 0.5}, Std: []float64{0.2, 0.2}}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Free()
	for _, d := range []*Detector{
		{Kind: Entropy, Flip: false, Against: "natural", OwnAUC: 0.8, C: 2, H: 4, W: 4, Benign: benign, Note: "n"},
		{Kind: MaxSoftmax, Flip: true, Against: "C-BIM ε 0.05", OwnAUC: 0.7, C: 2, H: 4, W: 4, Benign: benign},
		{Kind: CNN, Against: "natural", C: 2, H: 4, W: 4, Benign: benign, Net: net},
	} {
		path := filepath.Join(dir, d.Kind+".safetensors")
		if err := d.Save(path); err != nil {
			t.Fatalf("%s: %v", d.Kind, err)
		}
		got, err := Load(path, torch.CPU)
		if err != nil {
			t.Fatalf("%s: %v", d.Kind, err)
		}
		if got.Kind != d.Kind || got.Flip != d.Flip || got.Against != d.Against || got.OwnAUC != d.OwnAUC || got.N() != 3 ||
			!slices.Equal(got.Benign, benign) || (got.Net != nil) != (d.Net != nil) {
			t.Errorf("%s: loaded %+v", d.Kind, got)
		}
		got.Free()
	}
	model := filepath.Join(dir, "model.safetensors")
	if err := net.Save(model, nil); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("junk"), 0o644)
	for _, p := range []string{model, junk, filepath.Join(dir, "missing")} {
		if _, err := Load(p, torch.CPU); !errors.Is(err, ErrNotDetector) {
			t.Errorf("Load(%s): %v, want ErrNotDetector", p, err)
		}
	}
	if err := (&Detector{Kind: "magic", C: 1, H: 1, W: 1, Benign: []uint8{1}}).Save(filepath.Join(dir, "x")); err == nil {
		t.Error("saved an unknown detector")
	}
}

// TestEvade checks the answers to a flagged input: second is the
// second-best class, random another class than the model's, the same for
// the same input; both swap the probabilities so the answer is the argmax.
func TestEvade(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Evasion
		p    []float32
		want int64 // -1: any other class than the top
	}{
		{"second", Second, []float32{0.1, 0.6, 0.3}, 2},
		{"second, top last", Second, []float32{0.25, 0.05, 0.7}, 0},
		{"random", Random, []float32{0.1, 0.6, 0.2, 0.1}, -1},
		{"random, two classes", Random, []float32{0.9, 0.1}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := slices.Index(tc.p, slices.Max(tc.p))
			x := []float32{0.1, 0.2, 0.3}
			p := slices.Clone(tc.p)
			got := tc.e.Evade(x, p)
			if (tc.want >= 0 && got != tc.want) || int(got) == top || got < 0 || int(got) >= len(p) {
				t.Fatalf("answer %d, want %d (top %d)", got, tc.want, top)
			}
			if slices.Index(p, slices.Max(p)) != int(got) || p[got] != tc.p[top] || p[top] != tc.p[got] {
				t.Errorf("probabilities %v from %v: not swapped", p, tc.p)
			}
			if again := tc.e.Evade(x, slices.Clone(tc.p)); again != got {
				t.Errorf("same input: %d then %d", got, again)
			}
		})
	}
	if _, err := ParseEvasion("third"); err == nil {
		t.Error("ParseEvasion(third) accepted")
	}
}

// TestQuantile: the (1 − fpr) quantile flags at most a share fpr.
func TestQuantile(t *testing.T) {
	s := make([]float64, 200)
	for i := range s {
		s[i] = float64((i * 37) % 200)
	}
	for _, fpr := range []float64{0.01, 0.05, 0.5} {
		thr := Quantile(s, 1-fpr)
		above := 0
		for _, v := range s {
			if v > thr {
				above++
			}
		}
		if above != int(fpr*200) {
			t.Errorf("fpr %g: %d of 200 above %g", fpr, above, thr)
		}
	}
}
