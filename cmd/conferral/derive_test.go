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
		{"trades", []string{"--adv-eps", "0.2", "--adv-alpha", "0.1", "--adv-steps", "1", "--beta", "0"}, 400},
		{"combined", []string{"--steps", "prune,quantize", "--bits", "4"}, 0},
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
			// The settings reach the attack, β = 0 included.
			for k, v := range map[string]map[string]string{
				"trades":   {"eps": "0.2", "alpha": "0.1", "steps": "1", "beta": "0"},
				"combined": {"steps": "prune,quantize", "bits": "4"},
			}[tc.attack] {
				if meta["derive."+k] != v || r.Params[k] != v {
					t.Errorf("derive.%s: model file %q, report %q; want %q", k, meta["derive."+k], r.Params[k], v)
				}
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

// TestDeriveSettingsRefusedBeforeTraining: a bad combined spec, a setting
// for an attack that does not use it and one out of range are usage errors
// (exit 2) before the source is even read: the source named here does not
// exist.
func TestDeriveSettingsRefusedBeforeTraining(t *testing.T) {
	ctx := context.Background()
	source := filepath.Join(t.TempDir(), "missing.safetensors")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--attack", "combined", "--steps", "distill,melt"}, `unknown step "melt"`},
		{[]string{"--attack", "combined", "--steps", "finetune,distill"}, "only be the first step"},
		{[]string{"--attack", "combined", "--steps", ""}, "--steps: want a comma-separated list"},
		{[]string{"--attack", "pgd", "--steps", "prune"}, "steps: pgd does not use it"},
		{[]string{"--attack", "pgd-at", "--beta", "0"}, "beta: pgd-at does not use it"},
		{[]string{"--attack", "fgm", "--adv-steps", "5"}, "adv_steps: fgm does not use it"},
		{[]string{"--attack", "ftal", "--adv-eps", "0.1"}, "adv_eps: ftal does not use it"},
		{[]string{"--attack", "trades", "--norm", "l2"}, "--norm: trades does not use it"},
		{[]string{"--attack", "fgm", "--transfer", "mnist"}, "--transfer: fgm does not use it (only knockoff)"},
		{[]string{"--attack", "knockoff", "--rounds", "2"}, "--rounds: knockoff does not use it (only papernot)"},
		{[]string{"--attack", "pgd-at", "--adv-eps", "2"}, "adv_eps 2"},
		{[]string{"--attack", "trades", "--beta", "-1"}, "beta -1"},
		{[]string{"--attack", "pgd", "--adv-alpha", "0"}, "--adv-alpha 0: want more than 0"},
	} {
		code, _, stderr := invoke(t, ctx, append([]string{"derive", "--source", source, "--out", "x", "--quiet"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.msg)
		}
	}
}
