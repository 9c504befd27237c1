package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/internal/onnxtest"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1073741824", 1 << 30, true},
		{"2GiB", 2 << 30, true},
		{"2 GiB", 2 << 30, true},
		{"512MiB", 512 << 20, true},
		{"512m", 512 << 20, true},
		{"1.5GiB", 3 << 29, true},
		{"2GB", 2_000_000_000, true},
		{"64KiB", 64 << 10, true},
		{"100B", 100, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"0", 0, false},
		{"-1GiB", 0, false},
		{"2 parsecs", 0, false},
		{"1e30", 0, false},
		{"99999999TiB", 0, false},
	} {
		got, err := parseByteSize(tc.in)
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if !tc.ok && err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", tc.in, got)
		}
	}
}

// bombFixture writes a fingerprint of twelve Fashion-MNIST test images and
// the memory bomb of issue 15 for their size (rows rows) into dir.
func bombFixture(t *testing.T, dir string, rows int64) (fpPath, bomb string) {
	t.Helper()
	test, err := data.FashionMNIST("", false)
	if err != nil {
		t.Fatal(err)
	}
	d := test.Subset([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	fp := &fingerprint.Fingerprint{Images: d.Images, Originals: d.Images, N: d.N, C: d.C, H: d.H, W: d.W,
		Keys: d.Labels, Labels: d.Labels, Confer: make([]float64, d.N),
		Meta: fingerprint.Meta{Dataset: d.Name, Classes: d.Classes, ReferenceRate: 0.1}}
	fpPath = filepath.Join(dir, "fp.safetensors")
	if err := fp.Save(fpPath); err != nil {
		t.Fatal(err)
	}
	bomb = filepath.Join(dir, "bomb.onnx")
	if err := os.WriteFile(bomb, onnxtest.ExpandBomb(1, 28, 28, rows, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	return fpPath, bomb
}

// TestONNXMemoryFlag: --onnx-memory reaches the importer in verify and
// serve-model. The bomb at 256 rows needs 1.5 MiB per image: it is
// verified under the default budget and refused, before it runs, under
// 1MiB, with the estimate, the budget and the flag in the error.
func TestONNXMemoryFlag(t *testing.T) {
	ctx := context.Background()
	fpPath, bomb := bombFixture(t, t.TempDir(), 256)
	small := []string{"--threads", "1", "--quiet", "--device", "cpu"}
	const refusal = "onnx: one image needs about 1.5 MiB of intermediate values by the importer's estimate, over the memory budget of 1.0 MiB"
	const hint = "; --onnx-memory raises the budget for a model you trust"
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"verify, default budget", []string{"verify", "--fingerprint", fpPath, "--suspect", bomb}, 0, ""},
		{"verify, 1MiB", []string{"verify", "--fingerprint", fpPath, "--suspect", bomb, "--onnx-memory", "1MiB"}, 1, refusal},
		{"serve-model, 1MiB", []string{"serve-model", "--model", bomb, "--addr", "127.0.0.1:0", "--onnx-memory", "1MiB"}, 1, refusal},
		{"verify, not a size", []string{"verify", "--fingerprint", fpPath, "--suspect", bomb, "--onnx-memory", "lots"}, 2, "not a size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := invoke(t, ctx, append(tc.args, small...)...)
			if code != tc.code || !strings.Contains(stderr, tc.says) || (tc.says == refusal) != strings.Contains(stderr, hint) {
				t.Fatalf("exit %d: %s; want exit %d saying %q", code, stderr, tc.code, tc.says)
			}
		})
	}
}

// TestONNXFlagsBudget: the budget is the flag's value when given and the
// importer's default otherwise, on every command that loads .onnx files.
func TestONNXFlagsBudget(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int64
	}{
		{nil, onnx.DefaultMaxMemory},
		{[]string{"--onnx-memory", "3GiB"}, 3 << 30},
		{[]string{"--onnx-memory=300MiB"}, 300 << 20},
	} {
		fs := flag.NewFlagSet("verify", flag.ContinueOnError)
		var of onnxFlags
		of.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		o, err := of.options()
		if err != nil || o.MaxMemory != tc.want {
			t.Errorf("%v: MaxMemory %d (%v), want %d", tc.args, o.MaxMemory, err, tc.want)
		}
	}
}
