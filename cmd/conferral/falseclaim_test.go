package main

import (
	"context"
	"strings"
	"testing"
)

// TestFalseClaimUsage checks that `experiment false-claim` refuses bad
// input before it loads a model or crafts anything.
func TestFalseClaimUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no public models", []string{"experiment", "false-claim", "--calibration-models", "a,b", "--source", "s"}, "--public, --calibration-models and --suspects, --victims or --source are required"},
		{"no victims", []string{"experiment", "false-claim", "--public", "p", "--calibration-models", "a,b"}, "are required"},
		{"eps above 1", []string{"experiment", "false-claim", "--public", "p", "--calibration-models", "a,b", "--source", "s", "--eps", "2"}, "want ε in (0,1]"},
		{"bad manifest row", []string{"experiment", "false-claim", "--public", "p", "--calibration-models", "a,b", "--suspects", "falseclaim_test.go"}, "want derived|independent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, context.Background(), tc.args...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q: want a usage error with %q", code, stdout, stderr, tc.want)
			}
		})
	}
}
