package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The fleet sections alone (--models ""): both sides run, the PyTorch side
// under the binding's allocator policy, and the report has each model and
// the demo's mix as a ratio, one model at a time and two at once.
func TestBenchFleetOnly(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import torch").Run(); err != nil {
		t.Fatal("no python3-torch (make deps installs it):", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root) // bench/torch_bench.py is relative to the repository
	out := filepath.Join(t.TempDir(), "BENCH.md")
	code, _, stderr := invoke(t, context.Background(), "bench", "--quiet", "--threads", "1", "--models", "", "--fleet", "lenet,mlp,mlpdrop",
		"--jobs", "2", "--rounds", "1", "--iters", "1", "--batch", "16", "--out", out)
	if code != 0 {
		t.Fatalf("bench: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"## The demo fleet: one model at a time", "## The demo fleet as `make demo` trains it: 2 models at once"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// Each section has a row per model and the demo's mix, with a ratio.
	for _, sec := range strings.Split(md, "\n## ")[1:] {
		for _, model := range []string{"lenet", "mlp", "mlpdrop", "the demo's mix"} {
			if !regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(model) + ` \|.*\| [0-9.]+× \|$`).MatchString(sec) {
				t.Errorf("section %q lacks a row with a ratio for %s:\n%s", strings.SplitN(sec, "\n", 2)[0], model, sec)
			}
		}
	}
	if strings.Contains(md, "| cnn |") || strings.Contains(md, "C-BIM") {
		t.Errorf("--models \"\" still ran the zoo:\n%s", md)
	}
	code, _, _ = invoke(t, context.Background(), "bench", "--quiet", "--models", "", "--fleet", "")
	if code != 2 {
		t.Errorf("bench with nothing to measure: exit %d, want 2", code)
	}
}
