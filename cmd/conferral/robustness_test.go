package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRobustnessCLI runs `experiment robustness` at toy scale: the flags
// reach the plan (two λ and one ρ instead of the default six and four),
// and the report has a row per attack of the plan.
func TestRobustnessCLI(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "report")
	code, stdout, stderr := invoke(t, context.Background(), "experiment", "robustness", "--quiet", "--threads", "2",
		"--limit", "300", "--archs", "mlp", "--source-arch", "mlp", "--per", "1", "--epochs", "1",
		"--derive-epochs", "1", "--finetune-examples", "100", "--lambdas", "0.1,0.3", "--rhos", "0.2",
		"--candidates", "60", "--steps", "5", "--eps", "0.15", "--tau", "0", "--tau-surr", "0",
		"--models", filepath.Join(dir, "fleet"), "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(filepath.Join(out, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"λ = 0.10", "λ = 0.30", "ρ = 0.20", "| knockoff | transfer mnist", "| ftal |", "| retraining |"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	for _, unwanted := range []string{"λ = 0.05", "λ = 0.50", "ρ = 0.40"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("the report has %q, a default the flags replaced", unwanted)
		}
	}
}

// TestRobustnessRefused: a combined attack naming an unknown step, and a
// study from a source file without its fingerprint, are usage errors
// before anything trains or is written.
func TestRobustnessRefused(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--full", "--combined", "distill,melt"}, `unknown step "melt"`},
		{[]string{"--full", "--combined", "finetune,distill"}, "only be the first step"},
		{[]string{"--combined", "distill"}, "--combined needs --full"},
		{[]string{"--source", filepath.Join(dir, "source.safetensors")}, "--source needs --fingerprint"},
	} {
		args := append([]string{"experiment", "robustness", "--quiet", "--limit", "300", "--models", models, "--out", filepath.Join(dir, "report")}, c.args...)
		code, _, stderr := invoke(t, context.Background(), args...)
		if code != 2 || !strings.Contains(stderr, c.says) {
			t.Errorf("%v: exit %d, stderr %q; want 2 saying %q", c.args, code, stderr, c.says)
		}
	}
	if _, err := os.Stat(models); !os.IsNotExist(err) {
		t.Errorf("a refused study made %s: %v", models, err)
	}
}
