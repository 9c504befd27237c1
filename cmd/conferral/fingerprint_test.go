package main

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestExtractNaturalRefusesCBIMFlags checks that extract --natural with
// C-BIM's flags is a usage error naming exactly the flags given, before
// any work, and that the same flags without --natural, or --natural with
// the flags it uses, get past the check (to the signing key, the next
// thing read, which is missing here).
func TestExtractNaturalRefusesCBIMFlags(t *testing.T) {
	key := filepath.Join(t.TempDir(), "no-such.key")
	base := []string{"extract", "--source", "s", "--surrogates", "a", "--references", "b", "--out", filepath.Join(t.TempDir(), "fp"), "--sign", key, "--quiet"}
	for _, tc := range []struct {
		name string
		args []string
		want []string // the flags named; nil: the check passes
	}{
		{"eps", []string{"--natural", "--eps", "0.1"}, []string{"--eps"}},
		{"eps at its default", []string{"--natural", "--eps", "0.15"}, []string{"--eps"}},
		{"flags before --natural", []string{"--steps", "5", "--alpha", "0.02", "--natural"}, []string{"--alpha", "--steps"}},
		{"no dropout", []string{"--natural", "--dropout", "0"}, []string{"--dropout"}},
		{"loss", []string{"--natural", "--loss", "ce"}, []string{"--loss"}},
		{"best iterate", []string{"--natural", "--best-iterate"}, []string{"--best-iterate"}},
		{"input diversity", []string{"--natural", "--shift", "2", "--noise", "0.05"}, []string{"--noise", "--shift"}},
		{"all of them, with the flags that apply", []string{"--natural", "--eps", "0.1", "--alpha", "0.02", "--steps", "5", "--dropout", "0.5", "--loss", "linear",
			"--best-iterate", "--shift", "1", "--noise", "0.1", "--tau", "0.5", "--tau-surr", "0.5", "--candidates", "10", "--batch", "10", "--seed", "3", "--start", "test"},
			[]string{"--alpha", "--best-iterate", "--dropout", "--eps", "--loss", "--noise", "--shift", "--steps"}},
		{"natural with the flags it uses", []string{"--natural", "--tau", "0.5", "--tau-surr", "0.5", "--candidates", "10", "--batch", "10", "--seed", "3"}, nil},
		{"natural false with C-BIM's flags", []string{"--natural=false", "--eps", "0.1", "--loss", "ce"}, nil},
		{"C-BIM with every flag", []string{"--eps", "0.1", "--alpha", "0.02", "--steps", "5", "--dropout", "0", "--loss", "geometric", "--best-iterate", "--shift", "1", "--noise", "0.1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, context.Background(), append(slices.Clone(base), tc.args...)...)
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if tc.want == nil {
				if code != 1 || strings.Contains(stderr, "do not apply") || !strings.Contains(stderr, "no-such.key") {
					t.Errorf("exit %d, stderr %q; want 1 at the missing key, past the check", code, stderr)
				}
				return
			}
			first, _, _ := strings.Cut(stderr, "\n")
			_, list, ok := strings.Cut(first, "; drop ")
			if code != 2 || !strings.HasPrefix(first, "conferral extract: --natural: C-BIM's flags do not apply") || !ok {
				t.Fatalf("exit %d, stderr %q; want 2 and a usage error: --natural: C-BIM's flags do not apply …; drop …", code, stderr)
			}
			if got := strings.Split(list, ", "); !slices.Equal(got, tc.want) {
				t.Errorf("the message names %q, want %q (%s)", got, tc.want, stderr)
			}
		})
	}
}
