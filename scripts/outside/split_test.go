package outside

import (
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
)

// python is Debian's interpreter (numpy comes with python3-onnx).
const python = "/usr/bin/python3"

// conferral_split.py gives the same defender and adversary indices, in the
// same order, as data.SplitIndices on the real Fashion-MNIST training set,
// so that steal.py trains on exactly Conferral's adversary half.
func TestPythonSplitMatches(t *testing.T) {
	if err := exec.Command(python, "-c", "import numpy").Run(); err != nil {
		t.Fatalf("%s with numpy is not available (make deps installs python3-torch, which brings it): %v", python, err)
	}
	full, err := data.FashionMNIST("", true)
	if err != nil {
		t.Fatalf("Fashion-MNIST is not installed (make deps): %v", err)
	}
	for _, tc := range []struct {
		seed int64
		part string
	}{{1, "adversary"}, {1, "defender"}, {7, "adversary"}} {
		def, adv := data.SplitIndices(full, 0.5, tc.seed)
		want := adv
		if tc.part == "defender" {
			want = def
		}
		out, err := exec.Command(python, "conferral_split.py", "--split-seed", strconv.FormatInt(tc.seed, 10), "--part", tc.part).Output()
		if err != nil {
			t.Fatalf("conferral_split.py: %v", err)
		}
		var got []int
		for _, f := range strings.Fields(string(out)) {
			i, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, i)
		}
		if !slices.Equal(got, want) {
			n := 0
			for n < min(len(got), len(want)) && got[n] == want[n] {
				n++
			}
			t.Errorf("seed %d, %s: Python gives %d indices, Go %d; they first differ at position %d", tc.seed, tc.part, len(got), len(want), n)
		}
	}
}
