package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/detect"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
)

// smallModel saves an untrained (seeded) MLP for Fashion-MNIST: a real
// model whose softmaxes differ from image to image, in milliseconds.
func smallModel(t *testing.T, path string) *nn.Model {
	t.Helper()
	classes := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	m, err := nn.New(nn.Spec{Arch: "mlp", Dataset: "fashion-mnist", Classes: classes, C: 1, H: 28, W: 28, Mean: []float64{0.29}, Std: []float64{0.35}}, 7, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	m.SetTraining(false)
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

// TestServeModelDetectorRefused: a --detector that is not a detector file
// (no file, not safetensors, a model) is a usage error at start, before
// anything is served; so are the detector's flags without it.
func TestServeModelDetectorRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := filepath.Join(dir, "m.safetensors")
	smallModel(t, model)
	junk := filepath.Join(dir, "junk.safetensors")
	if err := os.WriteFile(junk, []byte("not a model at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{"--detector", filepath.Join(dir, "none.safetensors")}, "not a Conferral detector"},
		{"not safetensors", []string{"--detector", junk}, "not a Conferral detector"},
		{"a model, not a detector", []string{"--detector", model}, `format "conferral-model/1"`},
		{"--flag-fpr alone", []string{"--flag-fpr", "0.01"}, "need --detector"},
		{"--evade alone", []string{"--evade", "second"}, "need --detector"},
		{"bad --evade", []string{"--detector", junk, "--evade", "third"}, "--evade"},
		{"bad --flag-fpr", []string{"--detector", junk, "--flag-fpr", "1.5"}, "--flag-fpr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve-model", "--model", model, "--addr", "127.0.0.1:0", "--threads", "1", "--device", "cpu"}, tc.args...)
			code, stdout, stderr := invoke(t, ctx, args...)
			if code != 2 || !strings.Contains(stderr, tc.want) || strings.Contains(stdout, "serving") {
				t.Errorf("exit %d, want 2 with %q before serving\nstdout: %s\nstderr: %s", code, tc.want, stdout, stderr)
			}
		})
	}
}

// TestServeModelDetectEvade serves a real model behind a real detector
// (entropy, its threshold on benign inputs that all score as the
// least-uncertain image) over 127.0.0.1: the least-uncertain image is not
// flagged and gets the model's own label; the most uncertain one is
// flagged and gets the second-best label, or with --evade random another
// label than the model's, the same one each time it is asked.
func TestServeModelDetectEvade(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "m.safetensors")
	m := smallModel(t, modelPath)
	test, err := data.FashionMNIST("", false)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	x := test.First(n).Float32(seqInts(n))
	per := 28 * 28
	p, err := detect.Softmaxes(m, x, n, 1, 28, 28)
	if err != nil {
		t.Fatal(err)
	}
	_, ent := detect.Confidence(p, n)
	lo, hi := 0, 0
	for i, v := range ent {
		if v < ent[lo] {
			lo = i
		}
		if v > ent[hi] {
			hi = i
		}
	}
	if ent[hi] <= ent[lo] {
		t.Fatalf("every image has entropy %g", ent[lo])
	}
	rank := func(i int) (first, second int64) {
		q := p[i*10 : (i+1)*10]
		first, second = -1, -1
		for j := range q {
			switch {
			case first < 0 || q[j] > q[first]:
				first, second = int64(j), first
			case second < 0 || q[j] > q[second]:
				second = int64(j)
			}
		}
		return first, second
	}
	// The detector's benign inputs: the least uncertain image, 20 times.
	img := func(i int) []uint8 { return test.Image(i) }
	det := &detect.Detector{Kind: detect.Entropy, Against: "natural", C: 1, H: 28, W: 28}
	for range 20 {
		det.Benign = append(det.Benign, img(lo)...)
	}
	detPath := filepath.Join(dir, "det.safetensors")
	if err := det.Save(detPath); err != nil {
		t.Fatal(err)
	}
	query := func(t *testing.T, url string) []int64 {
		t.Helper()
		r, err := suspect.NewRemote(url, suspect.RemoteOptions{AllowPrivate: true})
		if err != nil {
			t.Fatal(err)
		}
		b := append(append(append([]float32{}, x[lo*per:(lo+1)*per]...), x[hi*per:(hi+1)*per]...), x[hi*per:(hi+1)*per]...)
		got, err := r.Classify(ctx, suspect.Images{X: b, N: 3, C: 1, H: 28, W: 28})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	ownLo, _ := rank(lo)
	ownHi, secondHi := rank(hi)
	for _, tc := range []struct{ evade string }{{"second"}, {"random"}} {
		t.Run(tc.evade, func(t *testing.T) {
			url, _ := serveModel(t, "--model", modelPath, "--detector", detPath, "--flag-fpr", "0.01", "--evade", tc.evade, "--labels-only")
			got := query(t, url)
			if got[0] != ownLo {
				t.Errorf("unflagged image: label %d, want the model's own %d", got[0], ownLo)
			}
			switch tc.evade {
			case "second":
				if got[1] != secondHi {
					t.Errorf("flagged image: label %d, want the second-best %d (the model's own is %d)", got[1], secondHi, ownHi)
				}
			case "random":
				if got[1] == ownHi || got[1] < 0 || got[1] > 9 {
					t.Errorf("flagged image: label %d, want another label than the model's own %d", got[1], ownHi)
				}
			}
			if got[2] != got[1] {
				t.Errorf("the flagged image asked twice: %d then %d", got[1], got[2])
			}
		})
	}
	// Without the detector the same server answers the model's own labels.
	url, _ := serveModel(t, "--model", modelPath, "--labels-only")
	if got := query(t, url); got[0] != ownLo || got[1] != ownHi {
		t.Errorf("plain server: %v, want %d, %d", got, ownLo, ownHi)
	}
}

func seqInts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestDetectEvadeUsage: the study refuses bad flags and a --detectors file
// that is not a detector with a usage error, before it serves anything.
func TestDetectEvadeUsage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := filepath.Join(dir, "m.safetensors")
	smallModel(t, model)
	base := []string{"experiment", "evasion", "detect-evade", "--threads", "1", "--device", "cpu", "--quiet", "--out", filepath.Join(dir, "out")}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "are required"},
		{"a model as detector", []string{"--fingerprint", "x.safetensors", "--derived", model, "--detectors", model}, "not a Conferral detector"},
		{"bad rate", []string{"--fingerprint", "x", "--derived", model, "--detectors", model, "--flag-fprs", "0.01,2"}, "--flag-fprs"},
		{"bad evasion", []string{"--fingerprint", "x", "--derived", model, "--detectors", model, "--evade", "random,third"}, "--evade"},
		{"empty folder", []string{"--fingerprint", "x", "--derived", model, "--detectors", t.TempDir()}, "names no detector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := invoke(t, ctx, append(base, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want 2 with %q: %s", code, tc.want, stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
				t.Error("a report was written")
			}
		})
	}
}
