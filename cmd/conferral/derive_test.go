package main

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// TestDerive derives models from a small source through the CLI and checks
// the reports and the files written.
func TestDerive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	source := filepath.Join(dir, "source.safetensors")
	small := []string{"--limit", "400", "--threads", "1", "--quiet", "--device", "cpu"}
	code, _, stderr := invoke(t, ctx, append([]string{"train", "--arch", "mlp", "--epochs", "1", "--optimizer", "adam", "--lr", "0.001", "--no-augment", "--out", source}, small...)...)
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	// A folder of images for Knockoff.
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(filepath.Join(images, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		img := image.NewRGBA(image.Rect(0, 0, 40, 30))
		for y := range 30 {
			for x := range 40 {
				img.Set(x, y, color.RGBA{uint8(x * 6), uint8(y * 8), uint8(i * 20), 255})
			}
		}
		f, err := os.Create(filepath.Join(images, "sub", string(rune('a'+i))+".png"))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	cases := []struct {
		attack  string
		args    []string
		queries int64
	}{
		{"ftll", nil, 400},
		{"ensemble", []string{"--members", "2"}, 400},
		{"papernot", []string{"--seeds", "30", "--rounds", "2"}, 60},
		{"knockoff", []string{"--transfer", images}, 12},
		{"prune", []string{"--fraction", "0.2"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.attack, func(t *testing.T) {
			out := filepath.Join(dir, tc.attack+".safetensors")
			args := append([]string{"derive", "--attack", tc.attack, "--source", source, "--out", out, "--epochs", "1", "--json"}, small...)
			code, stdout, stderr := invoke(t, ctx, append(args, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var r deriveResult
			if err := json.Unmarshal([]byte(stdout), &r); err != nil {
				t.Fatalf("--json: %v in %q", err, stdout)
			}
			if r.Derivation == nil || r.Attack != tc.attack || r.Queries != tc.queries || r.Split != "adversary" || r.Model != out {
				t.Errorf("result %s", stdout)
			}
			if r.TestAccuracy <= 0 || r.SourceTestAccuracy <= 0 {
				t.Errorf("test accuracy %v, source %v", r.TestAccuracy, r.SourceTestAccuracy)
			}
			m, meta, err := train.LoadDeployed(out, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Free()
			if meta["derive.attack"] != tc.attack || meta["derive.source_sha256"] == "" {
				t.Errorf("metadata %v", meta)
			}
			if _, ok := m.(*train.Ensemble); ok != (tc.attack == "ensemble") {
				t.Errorf("loaded a %T", m)
			}
		})
	}

	t.Run("bad flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			msg  string
		}{
			{[]string{"--source", source, "--out", "x"}, "--attack is required"},
			{[]string{"--attack", "melt", "--source", source, "--out", "x"}, `--attack "melt"`},
			{[]string{"--attack", "ftll", "--out", "x"}, "--source is required"},
			{[]string{"--attack", "ftll", "--source", source}, "--out is required"},
		} {
			code, _, stderr := invoke(t, ctx, append([]string{"derive"}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.msg) {
				t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.msg)
			}
		}
	})
}

// TestDeriveUsageListsAttacks checks that `derive -h` lists every attack of
// the registry with its summary, and that --attack refuses a name outside
// it, listing them.
func TestDeriveUsageListsAttacks(t *testing.T) {
	ctx := context.Background()
	code, stdout, stderr := invoke(t, ctx, "derive", "-h")
	if code != 0 {
		t.Fatalf("derive -h: exit %d: %s", code, stderr)
	}
	for _, a := range train.Registry() {
		if line := fmt.Sprintf("  %-12s %s\n", a.Name, a.Summary); !strings.Contains(stdout+stderr, line) {
			t.Errorf("derive -h lacks %q:\n%s%s", line, stdout, stderr)
		}
	}
	code, _, stderr = invoke(t, ctx, "derive", "--attack", "melt", "--source", "s", "--out", "x")
	if want := `--attack "melt": want one of ` + strings.Join(train.Attacks(), ", "); code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("--attack melt: exit %d, stderr %q; want 2 and %q", code, stderr, want)
	}
}
