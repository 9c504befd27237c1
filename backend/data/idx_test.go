package data

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadIDXFormats(t *testing.T) {
	want := synth(7, 1, 28, 28, 10)
	for _, tc := range []struct {
		name  string
		zip   bool
		train bool
		load  func(dir string, train bool) (*Dataset, error)
		names []string
		flip  bool
	}{
		{"fashion gz train", true, true, FashionMNIST, FashionMNISTClasses(), false},
		{"fashion raw test", false, false, FashionMNIST, FashionMNISTClasses(), false},
		{"mnist gz test", true, false, MNIST, MNISTClasses(), true},
		{"mnist raw train", false, true, MNIST, MNISTClasses(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeIDXPair(t, dir, want, tc.train, tc.zip)
			d, err := tc.load(dir, tc.train)
			if err != nil {
				t.Fatal(err)
			}
			equalDatasets(t, d, want)
			if !slices.Equal(d.Classes, tc.names) {
				t.Errorf("classes %q, want %q", d.Classes, tc.names)
			}
			if d.NoFlip != tc.flip {
				t.Errorf("NoFlip = %v, want %v", d.NoFlip, tc.flip)
			}
			if d.Part != partName(tc.train) {
				t.Errorf("Part = %q", d.Part)
			}
			// The other part is missing: a clear error.
			_, err = tc.load(dir, !tc.train)
			if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) {
				t.Errorf("loading the missing part: %v", err)
			}
		})
	}
}

func TestLoadIDXGeneric(t *testing.T) {
	want := synth(5, 1, 3, 4, 3)
	dir := t.TempDir()
	writeIDXPair(t, dir, want, true, true)
	d, err := LoadIDX(filepath.Join(dir, "train-images-idx3-ubyte.gz"), filepath.Join(dir, "train-labels-idx1-ubyte.gz"))
	if err != nil {
		t.Fatal(err)
	}
	equalDatasets(t, d, want)
	if !slices.Equal(d.Classes, []string{"0", "1", "2"}) {
		t.Errorf("classes %q", d.Classes)
	}
}

func TestLoadIDXMalformed(t *testing.T) {
	good := synth(4, 1, 28, 28, 10)
	goodImages := idxBytes([]int{4, 28, 28}, good.Images)
	goodLabels := idxBytes([]int{4}, []byte{0, 1, 2, 3})
	for _, tc := range []struct {
		name           string
		images, labels []byte
		bad            string // "images" or "labels": the file the error must name
		want           string
	}{
		{"images empty file", nil, goodLabels, "images", "truncated"},
		{"images magic of labels", idxBytes([]int{4 * 28 * 28}, good.Images), goodLabels, "images", "wrong magic"},
		{"images not ubyte", append([]byte{0, 0, 0x0d, 3}, goodImages[4:]...), goodLabels, "images", "wrong magic"},
		{"images random bytes", []byte("hello, world, not idx"), goodLabels, "images", "wrong magic"},
		{"images header truncated", goodImages[:9], goodLabels, "images", "truncated"},
		{"images data truncated", goodImages[:len(goodImages)-1], goodLabels, "images", "truncated"},
		{"images trailing", append(slices.Clone(goodImages), 1, 2), goodLabels, "images", "trailing"},
		{"images huge dims", idxBytes([]int{1 << 31, 1 << 31, 1 << 31}, good.Images), goodLabels, "images", "truncated"},
		{"images wrong size", idxBytes([]int{4, 28, 27}, good.Images[:4*28*27]), goodLabels, "images", "wrong image size 28x27, want 28x28"},
		{"images empty size", idxBytes([]int{4, 0, 28}, nil), goodLabels, "images", "wrong image size"},
		{"images gzip truncated", gz(goodImages)[:100], goodLabels, "images", "gzip"},
		{"labels wrong magic", goodImages, idxBytes([]int{2, 2}, []byte{0, 1, 2, 3}), "labels", "wrong magic"},
		{"labels count mismatch", goodImages, idxBytes([]int{3}, []byte{0, 1, 2}), "labels", "label count mismatch: 3 labels for 4 images"},
		{"labels out of range", goodImages, idxBytes([]int{4}, []byte{0, 1, 10, 3}), "labels", "label 10 of item 2 out of range 0..9"},
		{"labels truncated gz", goodImages, gz(goodLabels)[:15], "labels", "gzip"},
		{"labels empty file", goodImages, nil, "labels", "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths := map[string]string{
				"images": writeFile(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), tc.images),
				"labels": writeFile(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), tc.labels),
			}
			d, err := FashionMNIST(dir, true)
			if d != nil {
				t.Errorf("got a dataset with the error")
			}
			wantFormatErr(t, err, paths[tc.bad], tc.want)
		})
	}
}

func TestLoadIDXMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadIDX(filepath.Join(dir, "nope-images"), filepath.Join(dir, "nope-labels"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope-images") {
		t.Errorf("error %v", err)
	}
	_, err = FashionMNIST(dir, true)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, "train-images-idx3-ubyte.gz")) {
		t.Errorf("error %v", err)
	}
}

func TestDefaultMNISTDirs(t *testing.T) {
	t.Setenv("GOMODCACHE", "/x/mod")
	dirs := DefaultMNISTDirs()
	want := filepath.Join("/x/mod", "github.com/petar/!go!m!n!i!s!t@"+goMNISTVersion, "data")
	if !slices.Contains(dirs, want) {
		t.Errorf("dirs %q lack %q", dirs, want)
	}
}
