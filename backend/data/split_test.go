package data

import (
	"slices"
	"testing"
)

// checkSplit checks that def and adv are disjoint, together cover d, and
// that every class is split within one image of frac.
func checkSplit(t *testing.T, d *Dataset, def, adv []int, frac float64) {
	t.Helper()
	seen := make([]int, d.N)
	for _, i := range def {
		seen[i]++
	}
	for _, i := range adv {
		seen[i]++
	}
	for i, s := range seen {
		if s != 1 {
			t.Fatalf("image %d is in %d parts", i, s)
		}
	}
	counts := d.ClassCounts()
	defCounts := make([]int, d.NumClasses())
	for _, i := range def {
		defCounts[d.Labels[i]]++
	}
	for c, n := range counts {
		want := frac * float64(n)
		if diff := float64(defCounts[c]) - want; diff <= -1 || diff >= 1 {
			t.Errorf("class %d: %d of %d images for the defender, want %.1f", c, defCounts[c], n, want)
		}
	}
	if diff := float64(len(def)) - frac*float64(d.N); diff < -0.5 || diff > 0.5 {
		t.Errorf("%d of %d images for the defender, want %.1f", len(def), d.N, frac*float64(d.N))
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n, k    int
		frac    float64
		balance bool
	}{
		{"even classes", 100, 10, 0.5, true},
		{"odd classes", 105, 10, 0.5, true},  // classes of 11 and 10 images
		{"odd everything", 33, 3, 0.5, true}, // three classes of 11
		{"cinic share", 180, 10, 85.0 / 180, false},
		{"all defender", 20, 3, 1, false},
		{"none defender", 20, 3, 0, false},
		{"one image", 1, 1, 0.5, true},
		{"empty", 0, 2, 0.5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := synth(tc.n, 1, 2, 2, tc.k)
			def, adv := SplitIndices(d, tc.frac, 42)
			checkSplit(t, d, def, adv, tc.frac)

			// Deterministic: same seed, same split; another seed, another order.
			def2, adv2 := SplitIndices(d, tc.frac, 42)
			if !slices.Equal(def, def2) || !slices.Equal(adv, adv2) {
				t.Error("same seed gave another split")
			}
			if tc.n >= 100 {
				def3, _ := SplitIndices(d, tc.frac, 43)
				if slices.Equal(def, def3) {
					t.Error("another seed gave the same split")
				}
				if slices.IsSorted(def) {
					t.Error("defender part is not shuffled")
				}
			}

			dd, da, err := SplitFraction(d, tc.frac, 42)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(dd.Images, d.Subset(def).Images) || !slices.Equal(da.Labels, d.Subset(adv).Labels) {
				t.Error("SplitFraction differs from SplitIndices")
			}
			if dd.Part != "train/defender" || da.Part != "train/adversary" {
				t.Errorf("parts %q %q", dd.Part, da.Part)
			}
			if tc.balance {
				a, b := Split(d, 42)
				if diff := a.N - b.N; diff < -1 || diff > 1 {
					t.Errorf("halves of %d and %d", a.N, b.N)
				}
				if !slices.Equal(a.Labels, dd.Labels) {
					t.Error("Split differs from SplitFraction(0.5)")
				}
			}
		})
	}
	if _, _, err := SplitFraction(synth(4, 1, 1, 1, 2), 1.5, 1); err == nil {
		t.Error("fraction 1.5 accepted")
	}
}

// TestSplitGolden pins the split of a small dataset, so that a change of the
// random source (which would silently move images between defender and
// adversary in saved experiments) fails a test.
func TestSplitGolden(t *testing.T) {
	d := synth(12, 1, 1, 1, 3)
	def, adv := SplitIndices(d, 0.5, 7)
	t.Logf("defender %v adversary %v", def, adv)
	wantDef := []int{3, 4, 8, 5, 9, 10}
	wantAdv := []int{7, 1, 2, 0, 6, 11}
	if !slices.Equal(def, wantDef) || !slices.Equal(adv, wantAdv) {
		t.Errorf("split %v / %v, want %v / %v", def, adv, wantDef, wantAdv)
	}
}

func TestRNGUniform(t *testing.T) {
	r := newRNG(1, 1)
	counts := make([]int, 6)
	for range 60000 {
		counts[r.intn(6)]++
	}
	for v, c := range counts {
		if c < 9500 || c > 10500 {
			t.Errorf("value %d drawn %d times of 60000", v, c)
		}
	}
}
