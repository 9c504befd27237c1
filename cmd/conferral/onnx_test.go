package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
)

// TestONNXSourceAndSuspect trains a small source, exports it to ONNX, and
// runs extract with the .onnx file as C-BIM's source and verify with .onnx
// suspects: the imported model must give the fingerprints and verdicts the
// original gives, and the ONNX flags must reach the importer.
func TestONNXSourceAndSuspect(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	small := []string{"--threads", "1", "--quiet", "--device", "cpu"}
	cmd := func(args ...string) (int, string, string) {
		return invoke(t, ctx, append(args, small...)...)
	}
	src := filepath.Join(dir, "src.safetensors")
	surr := filepath.Join(dir, "surr.safetensors")
	ref := filepath.Join(dir, "ref.safetensors")
	trainArgs := []string{"train", "--arch", "mlp", "--epochs", "1", "--limit", "400", "--optimizer", "adam", "--lr", "0.001", "--no-augment"}
	for _, a := range [][]string{
		{"--out", src},
		{"--out", surr, "--teacher", src, "--split", "adversary"},
		{"--out", ref, "--split", "adversary", "--seed", "7"},
	} {
		if code, _, stderr := cmd(append(append([]string{}, trainArgs...), a...)...); code != 0 {
			t.Fatalf("train %v: exit %d: %s", a, code, stderr)
		}
	}
	srcONNX := filepath.Join(dir, "src.onnx")
	if code, _, stderr := cmd("export", "--model", src, "--out", srcONNX); code != 0 {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}

	extract := func(source, out string) *fingerprint.Fingerprint {
		code, _, stderr := cmd("extract", "--source", source, "--surrogates", surr, "--references", ref, "--out", out,
			"--candidates", "24", "--batch", "24", "--steps", "5", "--tau", "0", "--limit", "200", "--seed", "3")
		if code != 0 {
			t.Fatalf("extract --source %s: exit %d: %s", source, code, stderr)
		}
		fp, err := fingerprint.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		return fp
	}
	// A calibration left beside the output belongs to the file extract
	// replaces: extract removes it rather than let verify trip on it.
	stale := fingerprint.CalibrationPath(filepath.Join(dir, "fp_zoo.safetensors"))
	if err := os.WriteFile(stale, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	fromZoo := extract(src, filepath.Join(dir, "fp_zoo.safetensors"))
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale calibration %s survived the extraction: %v", stale, err)
	}
	// A twin in another role is refused before anything is crafted.
	for _, twin := range []string{src, ref} {
		code, _, stderr := cmd("extract", "--source", src, "--surrogates", surr, "--references", ref, "--twins", twin,
			"--out", filepath.Join(dir, "fp_twin.safetensors"), "--natural", "--limit", "200")
		if code != 2 || !strings.Contains(stderr, "--twins") {
			t.Errorf("extract --twins %s (also the source or a reference): exit %d, %q; want a usage error", twin, code, stderr)
		}
	}
	fromONNX := extract(srcONNX, filepath.Join(dir, "fp_onnx.safetensors"))
	if fromONNX.N == 0 || fromONNX.N != fromZoo.N {
		t.Fatalf("%d fingerprints from the ONNX source, %d from the same model's file", fromONNX.N, fromZoo.N)
	}
	if !strings.HasPrefix(fromONNX.Meta.SourceArch, "onnx:") {
		t.Errorf("source arch %q, want onnx:…", fromONNX.Meta.SourceArch)
	}
	// C-BIM followed the same gradients: the fingerprints are the same
	// images up to steps where a gradient's sign is a rounding error.
	diff, moved := 0.0, 0.0
	for i := range fromONNX.Images {
		diff += math.Abs(float64(fromONNX.Images[i]) - float64(fromZoo.Images[i]))
		moved += math.Abs(float64(fromONNX.Images[i]) - float64(fromONNX.Originals[i]))
	}
	t.Logf("mean |ONNX − zoo| %.4f, mean perturbation %.4f (8-bit units)", diff/float64(len(fromONNX.Images)), moved/float64(len(fromONNX.Images)))
	if moved == 0 {
		t.Error("C-BIM did not move any pixel through the ONNX source")
	}
	if diff > 0.05*moved {
		t.Errorf("ONNX-sourced fingerprints differ from the zoo's by %.3g of the perturbation", diff/moved)
	}

	verify := func(args ...string) (int, []*fingerprint.Verdict, string) {
		code, stdout, stderr := cmd(append([]string{"verify", "--fingerprint", filepath.Join(dir, "fp_zoo.safetensors"), "--json"}, args...)...)
		var res verifyResult
		if code == 0 {
			if err := json.Unmarshal([]byte(stdout), &res); err != nil {
				t.Fatalf("verify --json: %v in %q", err, stdout)
			}
		}
		return code, res.Verdicts, stderr
	}
	code, vs, stderr := verify("--suspect", src+","+srcONNX)
	if code != 0 || len(vs) != 2 {
		t.Fatalf("verify: exit %d: %s", code, stderr)
	}
	if vs[0].Agree != vs[1].Agree || vs[1].Agree != fromZoo.N {
		t.Errorf("the source agrees with %d/%d fingerprints, its ONNX export with %d", vs[0].Agree, fromZoo.N, vs[1].Agree)
	}

	// A Keras-style file (NHWC, 0..255, Softmax) exported by PyTorch, that
	// says so in its metadata; flags override what the file says.
	keras := filepath.Join("..", "..", "backend", "onnx", "testdata", "keras_nhwc_op13.onnx")
	if code, vs, stderr := verify("--suspect", keras); code != 0 || len(vs) != 1 || vs[0].Fingerprints != fromZoo.N {
		t.Errorf("verify a Keras-style ONNX file: exit %d, %d verdicts: %s", code, len(vs), stderr)
	}
	if code, _, stderr := verify("--suspect", keras, "--layout", "nchw"); code != 1 || !strings.Contains(stderr, "the model takes (N,28,28,1)") {
		t.Errorf("verify with the wrong --layout: exit %d, stderr %q; want 1 and the model's input shape", code, stderr)
	}
	for _, bad := range [][]string{{"--layout", "hwcn"}, {"--mean", "0.5,x"}, {"--scale", "-1"}} {
		if code, _, _ := verify(append([]string{"--suspect", keras}, bad...)...); code != 2 {
			t.Errorf("verify %v: exit %d, want 2", bad, code)
		}
	}
	if code, _, stderr := verify("--suspect", filepath.Join(dir, "missing.onnx")); code != 1 || !strings.Contains(stderr, "missing.onnx") {
		t.Errorf("verify a missing ONNX file: exit %d, stderr %q", code, stderr)
	}
}
