package main

import (
	"context"
	"strings"
	"testing"
)

// TestDemo runs the demo's story at toy scale — as jobs of a real server on
// 127.0.0.1, and in this process — and checks that every stage completed,
// the fingerprint was calibrated by the ten independent models, and every
// one of the eight suspects got a calibrated verdict.
func TestDemo(t *testing.T) {
	for _, flavour := range [][]string{{"--serve", "--keep=false", "--addr", "127.0.0.1:0"}, nil} {
		name := "cli"
		if flavour != nil {
			name = "serve"
		}
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			args := append(append([]string{"demo"}, flavour...), "--threads", "1", "--quiet", "--limit", "400", "--epochs", "1", "--out", out,
				"--candidates", "30", "--steps", "10", "--alpha", "0.025", "--eps", "0.25", "--tau", "0.01", "--tau-surr", "0")
			code, stdout, stderr := invoke(t, context.Background(), args...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			wants := []string{"test-surrogate-lenet-0", "test-reference-mlpdrop-2", "calibrated by 10 independent models", "verdicts right", "p = ", "Time: source (1 model)", "fleet (34 models)", "; total "}
			if flavour != nil {
				wants = append(wants, "open http://127.0.0.1:", "conferrable examples")
			}
			for _, want := range wants {
				if !strings.Contains(stdout, want) {
					t.Errorf("the output does not say %q:\n%s", want, stdout)
				}
			}
			if n := strings.Count(stdout, "fingerprint accuracy"); n != 8 {
				t.Errorf("%d verdicts, want 8:\n%s", n, stdout)
			}
		})
	}
}
