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
