package fingerprint_test

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/conferral/conferral/backend/fingerprint"
)

// Layout of the contact sheet (sheet.go): tiles upscaled 3×, 6 px gaps, a
// 260 px text column, a 20 px header.
const (
	sheetScale = 3
	sheetGap   = 6
	sheetText  = 260
	sheetHead  = 20
)

func TestWriteSheet(t *testing.T) {
	f := synthetic(5)
	// Make image 0's pixel (x=2, y=1) darker than its original by ε and pixel
	// (x=4, y=3) lighter by ε, and leave (x=0, y=0) unchanged.
	eps := 8.0 / 255
	f.Meta.Eps = eps
	per := f.ImageSize()
	copy(f.Images[:per], f.Originals[:per])
	f.Originals[1*f.W+2], f.Images[1*f.W+2] = 100, 92
	f.Originals[3*f.W+4], f.Images[3*f.W+4] = 100, 108
	for _, tc := range []struct {
		maxRows, rows int
	}{{3, 3}, {10, 5}, {0, 0}} {
		path := filepath.Join(t.TempDir(), "sheet.png")
		if err := fingerprint.WriteSheet(path, f, tc.maxRows); err != nil {
			t.Fatalf("WriteSheet: %v", err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("the sheet is not a PNG: %v", err)
		}
		cw, ch := f.W*sheetScale, f.H*sheetScale
		wantW := sheetGap + 3*(cw+sheetGap) + sheetText
		wantH := sheetHead + tc.rows*(ch+sheetGap) + sheetGap
		if b := img.Bounds(); b.Dx() != wantW || b.Dy() != wantH {
			t.Fatalf("maxRows %d: sheet is %dx%d, want %dx%d", tc.maxRows, b.Dx(), b.Dy(), wantW, wantH)
		}
		if tc.rows == 0 {
			continue
		}
		// Row 0: original, perturbation, fingerprint, each pixel a 3×3 block.
		at := func(tile, x, y int) color.RGBA {
			p := image.Pt(sheetGap+tile*(cw+sheetGap)+x*sheetScale+1, sheetHead+y*sheetScale+1)
			r, g, b, a := img.At(p.X, p.Y).RGBA()
			return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
		}
		for _, px := range []image.Point{{0, 0}, {2, 1}, {4, 3}, {5, 7}} {
			o, a := f.Originals[px.Y*f.W+px.X], f.Images[px.Y*f.W+px.X]
			if got := at(0, px.X, px.Y); got != (color.RGBA{o, o, o, 255}) {
				t.Errorf("original tile at %v is %v, want grey %d", px, got, o)
			}
			if got := at(2, px.X, px.Y); got != (color.RGBA{a, a, a, 255}) {
				t.Errorf("fingerprint tile at %v is %v, want grey %d", px, got, a)
			}
		}
		for _, c := range []struct {
			px   image.Point
			want color.RGBA
		}{
			{image.Pt(0, 0), color.RGBA{255, 255, 255, 255}}, // unchanged: white
			{image.Pt(2, 1), color.RGBA{0, 0, 255, 255}},     // darker by ε: blue
			{image.Pt(4, 3), color.RGBA{255, 0, 0, 255}},     // lighter by ε: red
		} {
			if got := at(1, c.px.X, c.px.Y); got != c.want {
				t.Errorf("perturbation tile at %v is %v, want %v", c.px, got, c.want)
			}
		}
	}
	// A file that cannot be written gives an error.
	if err := fingerprint.WriteSheet(filepath.Join(t.TempDir(), "no", "such", "dir", "s.png"), f, 3); err == nil {
		t.Error("WriteSheet into a missing folder succeeded")
	}
}

func TestPixelAndUpscale(t *testing.T) {
	// A 2×2 RGB image, channel-major.
	b := []uint8{
		10, 20, 30, 40, // R
		50, 60, 70, 80, // G
		90, 100, 110, 120, // B
	}
	img := fingerprint.Pixel(b, 3, 2, 2)
	if got := img.RGBAAt(1, 0); got != (color.RGBA{20, 60, 100, 255}) {
		t.Errorf("Pixel(1,0) = %v", got)
	}
	if got := img.RGBAAt(0, 1); got != (color.RGBA{30, 70, 110, 255}) {
		t.Errorf("Pixel(0,1) = %v", got)
	}
	up := fingerprint.Upscale(img, 4)
	if up.Bounds().Dx() != 8 || up.Bounds().Dy() != 8 {
		t.Fatalf("Upscale: %v", up.Bounds())
	}
	if got := up.RGBAAt(7, 3); got != img.RGBAAt(1, 0) {
		t.Errorf("Upscale(7,3) = %v, want %v", got, img.RGBAAt(1, 0))
	}
}
