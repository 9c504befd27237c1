package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// TestEvasionUsage checks that `experiment evasion` refuses bad input —
// missing flags, a file that is not a model where a model belongs, a file
// that is not a fingerprint — before the adversary crafts anything.
func TestEvasionUsage(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.safetensors")
	m, err := nn.New(nn.Spec{Arch: "mlp", Classes: []string{"a", "b"}, C: 1, H: 28, W: 28, Mean: []float64{0.5}, Std: []float64{0.5}}, 1, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Save(model, nil); err != nil {
		t.Fatal(err)
	}
	m.Free()
	base := func(extra ...string) []string {
		return append([]string{"experiment", "evasion", "--source", model, "--surrogates", model, "--references", model}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no fingerprints", base(), "--source, --surrogates, --references and --fingerprints are required"},
		{"no source", []string{"experiment", "evasion", "--surrogates", model, "--references", model, "--fingerprints", "f"}, "are required"},
		{"empty group", base("--fingerprints", "cbim= ,"), "names no file"},
		{"bad batches", base("--fingerprints", "f", "--batches", "1,0"), "--batches"},
		{"bad fpr", base("--fingerprints", "f", "--fpr", "0.7"), "--fpr in (0, 0.5)"},
		{"eps flag", base("--fingerprints", "f", "--eps", "0.1"), "--eps does not apply"},
		{"natural flag", base("--fingerprints", "f", "--natural"), "--natural does not apply"},
		{"detector not a model", base("--fingerprints", "f", "--detector-model", "evasion_test.go"), "--detector-model: evasion_test.go is not a model"},
		{"surrogate not a model", []string{"experiment", "evasion", "--source", model, "--surrogates", "evasion.go", "--references", model, "--fingerprints", "f"}, "--surrogates: evasion.go is not a model"},
		{"fingerprint not a fingerprint", base("--fingerprints", "evasion_test.go"), "--fingerprints: evasion_test.go is not a fingerprint file"},
		{"model as fingerprint", base("--fingerprints", model), "is not a fingerprint file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, context.Background(), tc.args...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q: want a usage error with %q", code, stdout, stderr, tc.want)
			}
		})
	}
}
