package data

import (
	"bytes"
	"errors"
	"image/color"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCINIC10(t *testing.T) {
	dir := t.TempDir()
	rgb := synth(4, 3, 32, 32, 1)
	grey := synth(1, 1, 32, 32, 1)
	root := filepath.Join(dir, "valid")
	// Class folders out of order: labels follow the sorted names.
	writeFile(t, filepath.Join(root, "dog", "b.png"), pngBytes(t, rgb, 0))
	writeFile(t, filepath.Join(root, "dog", "a.png"), pngBytes(t, rgb, 1))
	writeFile(t, filepath.Join(root, "airplane", "x.png"), pngBytes(t, rgb, 2))
	writeFile(t, filepath.Join(root, "airplane", "notes.txt"), []byte("ignored"))
	writeFile(t, filepath.Join(root, "cat", "g.PNG"), pngBytes(t, grey, 0))
	writeFile(t, filepath.Join(root, "cat", "p.png"), palettedPNG(t, color.Palette{
		color.NRGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 255}, color.NRGBA{255, 255, 255, 0},
	}))
	writeFile(t, filepath.Join(root, ".hidden", "h.png"), pngBytes(t, rgb, 3))
	writeFile(t, filepath.Join(root, "README"), []byte("a file beside the class folders"))

	d, err := CINIC10(dir, "valid")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Classes, []string{"airplane", "cat", "dog"}) {
		t.Fatalf("classes %q", d.Classes)
	}
	if d.N != 5 || d.C != 3 || d.H != 32 || d.W != 32 || d.Name != "cinic10" || d.Part != "valid" {
		t.Fatalf("dataset %q/%q %dx%dx%dx%d", d.Name, d.Part, d.N, d.C, d.H, d.W)
	}
	if !slices.Equal(d.Labels, []int64{0, 1, 1, 2, 2}) {
		t.Errorf("labels %v", d.Labels)
	}
	// Files in name order within a class: airplane/x, cat/g, cat/p, dog/a, dog/b.
	for _, c := range []struct {
		at   int
		want []uint8
	}{
		{0, rgb.Image(2)},
		{1, slices.Concat(grey.Image(0), grey.Image(0), grey.Image(0))},
		{3, rgb.Image(1)},
		{4, rgb.Image(0)},
	} {
		if !bytes.Equal(d.Image(c.at), c.want) {
			t.Errorf("image %d differs", c.at)
		}
	}
	// The paletted image: pixel (x, y) has colour (x+y)%3; the third colour
	// is transparent and composes to black.
	p := d.Image(2)
	for _, px := range []struct{ x, y int }{{0, 0}, {1, 0}, {2, 0}, {5, 7}} {
		want := [][3]uint8{{10, 20, 30}, {200, 100, 50}, {0, 0, 0}}[(px.x+px.y)%3]
		at := px.y*32 + px.x
		if got := [3]uint8{p[at], p[1024+at], p[2048+at]}; got != want {
			t.Errorf("paletted pixel %v = %v, want %v", px, got, want)
		}
	}
}

func TestCINIC10Malformed(t *testing.T) {
	small := synth(1, 3, 31, 32, 1)
	good := pngBytes(t, synth(1, 3, 32, 32, 1), 0)
	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"wrong size", pngBytes(t, small, 0), "wrong image size 32x31, want 32x32"},
		{"not png", []byte("GIF89a not a png at all"), "not a readable PNG"},
		{"truncated", good[:len(good)/2], "not a readable PNG"},
		{"empty", nil, "not a readable PNG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "test", "cat", "ok.png"), good)
			bad := writeFile(t, filepath.Join(dir, "test", "dog", "bad.png"), tc.content)
			_, err := CINIC10(dir, "test")
			wantFormatErr(t, err, bad, tc.want)
		})
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		name, split, want string
		setup             func()
	}{
		{"bad split", "validation", "unknown split", func() {}},
		{"missing split", "train", "train", func() {}},
		{"no classes", "train", "no class folders", func() { os.MkdirAll(filepath.Join(dir, "train"), 0o755) }},
		{"no images", "train", "no PNG images", func() { os.MkdirAll(filepath.Join(dir, "train", "cat"), 0o755) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			_, err := CINIC10(dir, tc.split)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if tc.name == "missing split" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v is not ErrNotExist", err)
			}
		})
	}
	if _, err := CINIC10("", "train"); err == nil {
		t.Error("no error for an empty dir")
	}
}

func TestLoadByName(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR(t, filepath.Join(dir, "cifar"))
	writeIDXPair(t, filepath.Join(dir, "fm"), synth(3, 1, 28, 28, 10), false, true)
	writeFile(t, filepath.Join(dir, "cinic", "train", "cat", "a.png"), pngBytes(t, synth(1, 3, 32, 32, 1), 0))
	for _, tc := range []struct {
		name, dir string
		train     bool
		n         int
	}{
		{"CIFAR-10", "cifar", true, 10},
		{"cifar10", "cifar", false, 3},
		{"Fashion-MNIST", "fm", false, 3},
		{"fashion_mnist", "fm", false, 3},
		{"cinic-10", "cinic", true, 1},
	} {
		d, err := Load(tc.name, filepath.Join(dir, tc.dir), tc.train)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if d.N != tc.n || d.Name != CanonicalName(tc.name) {
			t.Errorf("%s: %d images named %q", tc.name, d.N, d.Name)
		}
	}
	if _, err := Load("svhn", dir, true); err == nil || !strings.Contains(err.Error(), "unknown dataset") {
		t.Errorf("unknown name: %v", err)
	}
	for _, name := range Names() {
		if CanonicalName(name) != name {
			t.Errorf("CanonicalName(%q) = %q", name, CanonicalName(name))
		}
	}
}
