package fingerprint

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/conferral/conferral/backend/safetensors"
)

// Pixel returns the RGB image of one NCHW 8-bit example (grey for one
// channel).
func Pixel(b []uint8, c, h, w int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			var r, g, bl uint8
			if c == 1 {
				r = b[y*w+x]
				g, bl = r, r
			} else {
				r, g, bl = b[y*w+x], b[h*w+y*w+x], b[2*h*w+y*w+x]
			}
			img.Set(x, y, color.RGBA{r, g, bl, 255})
		}
	}
	return img
}

// Heatmap shows the perturbation adv − orig, averaged over channels and
// amplified so that ±eps spans the colour map: blue for darker, red for
// lighter, white for unchanged.
func Heatmap(adv, orig []uint8, c, h, w int, eps float64) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			var d float64
			for ch := range c {
				i := ch*h*w + y*w + x
				d += (float64(adv[i]) - float64(orig[i])) / 255
			}
			d /= float64(c) * math.Max(eps, 1e-6)
			d = math.Max(-1, math.Min(1, d))
			fade := uint8(255 * (1 - math.Abs(d)))
			if d >= 0 {
				img.Set(x, y, color.RGBA{255, fade, fade, 255})
			} else {
				img.Set(x, y, color.RGBA{fade, fade, 255, 255})
			}
		}
	}
	return img
}

// Upscale enlarges img by an integer factor with nearest-neighbour
// sampling, so pixels stay crisp.
func Upscale(img image.Image, k int) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx()*k, b.Dy()*k))
	for y := range out.Bounds().Dy() {
		for x := range out.Bounds().Dx() {
			out.Set(x, y, img.At(b.Min.X+x/k, b.Min.Y+y/k))
		}
	}
	return out
}

func label(dst *image.RGBA, x, y int, s string) {
	d := &font.Drawer{Dst: dst, Src: image.NewUniform(color.RGBA{20, 20, 20, 255}), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// Sheet draws a contact sheet of up to maxRows fingerprints: per row the
// original, the amplified perturbation, the fingerprint, and "source label
// → key, conferrability".
func Sheet(fp *Fingerprint, maxRows int) *image.RGBA {
	const scale, gap, textW, headH = 3, 6, 260, 20
	n := min(fp.N, maxRows)
	cw, ch := fp.W*scale, fp.H*scale
	width := gap + 3*(cw+gap) + textW
	height := headH + n*(ch+gap) + gap
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	for i, t := range []string{"original", "perturbation", "fingerprint"} {
		label(img, gap+i*(cw+gap), 14, t)
	}
	label(img, gap+3*(cw+gap), 14, fmt.Sprintf("label -> key   (eps %.3g)", fp.Meta.Eps))
	per := fp.ImageSize()
	name := func(k int64) string {
		if int(k) < len(fp.Meta.Classes) {
			return fp.Meta.Classes[k]
		}
		return fmt.Sprint(k)
	}
	for r := range n {
		y := headH + r*(ch+gap)
		orig, adv := fp.Originals[r*per:(r+1)*per], fp.Images[r*per:(r+1)*per]
		tiles := []image.Image{
			Pixel(orig, fp.C, fp.H, fp.W),
			Heatmap(adv, orig, fp.C, fp.H, fp.W, fp.Meta.Eps),
			Pixel(adv, fp.C, fp.H, fp.W),
		}
		for i, t := range tiles {
			at := image.Pt(gap+i*(cw+gap), y)
			draw.Draw(img, image.Rectangle{Min: at, Max: at.Add(image.Pt(cw, ch))}, Upscale(t, scale), image.Point{}, draw.Src)
		}
		label(img, gap+3*(cw+gap), y+ch/2, fmt.Sprintf("%s -> %s", name(fp.Labels[r]), name(fp.Keys[r])))
		label(img, gap+3*(cw+gap), y+ch/2+14, fmt.Sprintf("confer %.2f", fp.Confer[r]))
	}
	return img
}

// WriteSheet writes Sheet as a PNG file, atomically.
func WriteSheet(path string, fp *Fingerprint, maxRows int) error {
	img := Sheet(fp, maxRows)
	return safetensors.WriteAtomic(path, func(w io.Writer) error { return png.Encode(w, img) })
}
