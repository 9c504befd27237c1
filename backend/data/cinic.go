package data

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// CINIC10 loads one split of CINIC-10 (paper §6.1) from its folder tree
// dir/<split>/<class>/*.png, with split "train", "valid" or "test" (90,000
// images each in the real dataset). The classes are the sub-folders of
// dir/<split>, sorted by name; files in a class folder whose name does not end
// in .png are ignored. Every image must be 32×32; grey-scale and palette
// images are converted to RGB, and transparent pixels are composed onto
// black. CINIC-10 has no default location: dir must be given.
//
// The paper gives the defender 85,000 and the adversary 95,000 of the 180,000
// images of train and valid together: Concat them and use [SplitFraction].
func CINIC10(dir string, split string) (*Dataset, error) {
	switch split {
	case "train", "valid", "test":
	default:
		return nil, fmt.Errorf("data: cinic10: unknown split %q (want train, valid or test)", split)
	}
	if dir == "" {
		return nil, fmt.Errorf("data: cinic10: no folder given (CINIC-10 has no default location; pass the folder holding train/, valid/ and test/)")
	}
	root := filepath.Join(dir, split)
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var classes []string
	var files []string
	var labels []int64
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		classes = append(classes, e.Name())
	}
	slices.Sort(classes)
	for c, class := range classes {
		sub, err := os.ReadDir(filepath.Join(root, class))
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		for _, e := range sub {
			if e.IsDir() || !strings.EqualFold(filepath.Ext(e.Name()), ".png") {
				continue
			}
			files = append(files, filepath.Join(root, class, e.Name()))
			labels = append(labels, int64(c))
		}
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("data: %s: no class folders", root)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("data: %s: no PNG images in the %d class folders", root, len(classes))
	}

	d := &Dataset{
		Name:    "cinic10",
		Part:    split,
		Images:  make([]uint8, len(files)*3*32*32),
		Labels:  labels,
		N:       len(files),
		C:       3,
		H:       32,
		W:       32,
		Classes: classes,
	}
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), len(files))
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(files); i += workers {
				errs[i] = readPNG32(files[i], d.Image(i))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// readPNG32 decodes the 32×32 PNG file path into dst as RGB planes.
func readPNG32(path string, dst []uint8) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	// Check the size before decoding, so that a huge declared size
	// allocates nothing.
	cfg, err := png.DecodeConfig(bytes.NewReader(raw))
	if err != nil {
		return formatErr(path, "not a readable PNG: %v", err)
	}
	if cfg.Width != 32 || cfg.Height != 32 {
		return formatErr(path, "wrong image size %dx%d, want 32x32", cfg.Width, cfg.Height)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return formatErr(path, "not a readable PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 32 || b.Dy() != 32 {
		return formatErr(path, "wrong image size %dx%d, want 32x32", b.Dx(), b.Dy())
	}
	toRGBPlanes(img, dst)
	return nil
}

// toRGBPlanes writes img as three planes R, G, B of 8-bit pixels into dst,
// which holds 3*width*height bytes.
func toRGBPlanes(img image.Image, dst []uint8) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	plane := w * h
	r, g, bl := dst[:plane], dst[plane:2*plane], dst[2*plane:3*plane]
	switch m := img.(type) {
	case *image.Gray:
		for y := range h {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			copy(r[y*w:], row)
			copy(g[y*w:], row)
			copy(bl[y*w:], row)
		}
	case *image.RGBA:
		for y := range h {
			row := m.Pix[y*m.Stride : y*m.Stride+4*w]
			for x := range w {
				r[y*w+x], g[y*w+x], bl[y*w+x] = row[4*x], row[4*x+1], row[4*x+2]
			}
		}
	default:
		for y := range h {
			for x := range w {
				cr, cg, cb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
				r[y*w+x], g[y*w+x], bl[y*w+x] = uint8(cr>>8), uint8(cg>>8), uint8(cb>>8)
			}
		}
	}
}
