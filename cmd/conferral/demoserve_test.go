package main

import (
	"context"
	"strings"
	"testing"
)

// TestDemoServe runs the demo's story as jobs of a real server on
// 127.0.0.1, at toy scale, and checks that every stage completed and every
// verdict was printed.
func TestDemoServe(t *testing.T) {
	out := t.TempDir()
	code, stdout, stderr := invoke(t, context.Background(), "demo", "--serve", "--keep=false", "--addr", "127.0.0.1:0",
		"--threads", "1", "--quiet", "--limit", "400", "--epochs", "1", "--out", out,
		"--candidates", "30", "--steps", "10", "--alpha", "0.025", "--eps", "0.25", "--tau", "0.01")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"open http://127.0.0.1:", "conferrable examples", "test-surrogate-cnn", "test-reference-mlp", "verdicts right at θ"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the output does not say %q:\n%s", want, stdout)
		}
	}
	if n := strings.Count(stdout, "fingerprint accuracy"); n != 4 {
		t.Errorf("%d verdicts, want 4:\n%s", n, stdout)
	}
}
