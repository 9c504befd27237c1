package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pix is the test pattern: pixel k of image i.
func pix(i, k int) uint8 { return uint8((7*k + 31*i) % 256) }

// synth returns a dataset of n images of c×h×w with the test pattern and
// labels i % classes.
func synth(n, c, h, w, classes int) *Dataset {
	d := &Dataset{Name: "synth", Part: "train", N: n, C: c, H: h, W: w,
		Images: make([]uint8, n*c*h*w), Labels: make([]int64, n), Classes: make([]string, classes)}
	for i := range n {
		for k, img := 0, d.Image(i); k < len(img); k++ {
			img[k] = pix(i, k)
		}
		d.Labels[i] = int64(i % classes)
	}
	for c := range classes {
		d.Classes[c] = string(rune('a' + c))
	}
	return d
}

// idxBytes encodes an IDX file of unsigned bytes.
func idxBytes(dims []int, data []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 8, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeIDXPair writes the IDX image and label files of d (C must be 1) in
// dir with the MNIST names for train or t10k, gzip-compressed if zip.
func writeIDXPair(t *testing.T, dir string, d *Dataset, train, zip bool) {
	t.Helper()
	prefix := "t10k"
	if train {
		prefix = "train"
	}
	labels := make([]byte, d.N)
	for i, y := range d.Labels {
		labels[i] = byte(y)
	}
	img := idxBytes([]int{d.N, d.H, d.W}, d.Images)
	lab := idxBytes([]int{d.N}, labels)
	suffix := ""
	if zip {
		img, lab, suffix = gz(img), gz(lab), ".gz"
	}
	writeFile(t, filepath.Join(dir, prefix+"-images-idx3-ubyte"+suffix), img)
	writeFile(t, filepath.Join(dir, prefix+"-labels-idx1-ubyte"+suffix), lab)
}

// cifarBytes encodes d (3×32×32) as CIFAR-10 binary records.
func cifarBytes(d *Dataset) []byte {
	var b bytes.Buffer
	for i := range d.N {
		b.WriteByte(byte(d.Labels[i]))
		b.Write(d.Image(i))
	}
	return b.Bytes()
}

// pngBytes encodes image i of d (C = 3 or 1) as a PNG: RGB as NRGBA, grey
// as Gray.
func pngBytes(t *testing.T, d *Dataset, i int) []byte {
	t.Helper()
	var img image.Image
	src := d.Image(i)
	plane := d.H * d.W
	if d.C == 1 {
		g := image.NewGray(image.Rect(0, 0, d.W, d.H))
		copy(g.Pix, src)
		img = g
	} else {
		m := image.NewNRGBA(image.Rect(0, 0, d.W, d.H))
		for p := range plane {
			m.Pix[4*p], m.Pix[4*p+1], m.Pix[4*p+2], m.Pix[4*p+3] = src[p], src[plane+p], src[2*plane+p], 255
		}
		img = m
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// palettedPNG returns a 32×32 paletted PNG whose pixel (x, y) has colour
// pal[(x+y)%len(pal)].
func palettedPNG(t *testing.T, pal color.Palette) []byte {
	t.Helper()
	m := image.NewPaletted(image.Rect(0, 0, 32, 32), pal)
	for y := range 32 {
		for x := range 32 {
			m.SetColorIndex(x, y, uint8((x+y)%len(pal)))
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// wantFormatErr checks that err is a *FormatError naming file whose message
// contains want.
func wantFormatErr(t *testing.T, err error, file, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one about %s containing %q", file, want)
	}
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("error %q is %T, not a *FormatError", err, err)
	}
	if fe.File != file {
		t.Errorf("error %q names %s, want %s", err, fe.File, file)
	}
	if !strings.Contains(err.Error(), file) || !strings.Contains(fe.Msg, want) {
		t.Errorf("error %q does not contain %s and %q", err, file, want)
	}
}

// equalDatasets compares images, labels, shape and classes.
func equalDatasets(t *testing.T, got, want *Dataset) {
	t.Helper()
	if got.N != want.N || got.C != want.C || got.H != want.H || got.W != want.W {
		t.Fatalf("shape %dx%dx%dx%d, want %dx%dx%dx%d", got.N, got.C, got.H, got.W, want.N, want.C, want.H, want.W)
	}
	if !bytes.Equal(got.Images, want.Images) {
		t.Errorf("images differ")
	}
	for i := range want.Labels {
		if got.Labels[i] != want.Labels[i] {
			t.Fatalf("label %d = %d, want %d", i, got.Labels[i], want.Labels[i])
		}
	}
	if len(got.Classes) != len(want.Classes) {
		t.Errorf("%d classes, want %d", len(got.Classes), len(want.Classes))
	}
	if err := got.Validate(); err != nil {
		t.Error(err)
	}
}
