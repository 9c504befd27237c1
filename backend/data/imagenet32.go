package data

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// imageNetClasses is the number of ImageNet classes; ImageNet32 labels run
// from 1 to it in the files.
const imageNetClasses = 1000

// ImageNet32 loads the downsampled-ImageNet 32×32 dataset (paper §6.1) from
// dir: the training part (train_data_batch_1 to train_data_batch_10, about
// 1.28 million images) or the validation part (val_data, 50,000 images).
// Each file is the Python pickle of a dict {'data': uint8 array N×3072 (an
// image's red, green and blue 32×32 planes), 'labels': list of ints from 1 to
// 1000, 'mean': ...}, or the .npz archive of the same arrays (the same names
// with .npz). The files are looked up in dir and in the archives' folders
// dir/Imagenet32_train, dir/Imagenet32_val, dir/Imagenet32_train_npz and
// dir/Imagenet32_val_npz; all ten training files must be there. Labels become
// 0-based. Part is "train" or "test" (the validation files serve as the test
// set).
//
// The class names come from map_clsloc.txt in dir (lines "n02119789 1
// kit_fox" of the ILSVRC development kit, whose order the labels follow),
// with underscores turned into spaces; without that file they are
// "class 0" to "class 999". ImageNet32 has no default location: dir must be
// given. Loading the training part holds all pixels (3.9 GB) twice at its
// peak.
func ImageNet32(dir string, train bool) (*Dataset, error) {
	if dir == "" {
		return nil, fmt.Errorf("data: imagenet32: no folder given (ImageNet32 has no default location; pass the folder holding train_data_batch_1 and val_data)")
	}
	classes, err := imageNetClassNames(filepath.Join(dir, "map_clsloc.txt"))
	if err != nil {
		return nil, err
	}
	var names []string
	dirs := []string{dir}
	if train {
		for i := 1; i <= 10; i++ {
			names = append(names, "train_data_batch_"+strconv.Itoa(i))
		}
		dirs = append(dirs, filepath.Join(dir, "Imagenet32_train"), filepath.Join(dir, "Imagenet32_train_npz"))
	} else {
		names = []string{"val_data"}
		dirs = append(dirs, filepath.Join(dir, "Imagenet32_val"), filepath.Join(dir, "Imagenet32_val_npz"))
	}
	var parts []*Dataset
	total := 0
	for _, name := range names {
		path, err := findInDirs(dirs, name, name+".npz")
		if err != nil {
			return nil, err
		}
		p, err := ImageNet32File(path)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
		total += p.N
	}
	d := &Dataset{
		Name:    "imagenet32",
		Part:    partName(train),
		Images:  make([]uint8, 0, total*3*32*32),
		Labels:  make([]int64, 0, total),
		N:       total,
		C:       3,
		H:       32,
		W:       32,
		Classes: classes,
	}
	for i, p := range parts {
		d.Images = append(d.Images, p.Images...)
		d.Labels = append(d.Labels, p.Labels...)
		parts[i] = nil
	}
	return d, nil
}

// findInDirs returns the first existing file among dirs × names, or an
// error naming the first candidate.
func findInDirs(dirs []string, names ...string) (string, error) {
	for _, d := range dirs {
		if p, err := findFile(d, names...); err == nil {
			return p, nil
		}
	}
	_, err := findFile(dirs[0], names...)
	return "", err
}

// ImageNet32File loads one downsampled-ImageNet 32×32 batch file, a Python
// pickle or a .npz archive (recognised by its content, not by its name), as
// described at [ImageNet32]. Its classes are named "class 0" to "class 999".
func ImageNet32File(path string) (*Dataset, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var data, labels any
	if bytes.HasPrefix(raw, []byte("PK\x03\x04")) || bytes.HasPrefix(raw, []byte("PK\x05\x06")) {
		arrays, err := readNPZ(raw)
		if err != nil {
			return nil, formatErr(path, "%v", err)
		}
		a, ok1 := arrays["data"]
		l, ok2 := arrays["labels"]
		if !ok1 || !ok2 {
			return nil, formatErr(path, "npz archive lacks data.npy or labels.npy")
		}
		data, labels = a, l
	} else {
		v, err := unpickle(raw)
		if err != nil {
			return nil, formatErr(path, "not a readable pickle: %v", err)
		}
		dict, ok := v.(*pyDict)
		if !ok {
			return nil, formatErr(path, "pickle holds a %s, want a dict with 'data' and 'labels'", typeName(v))
		}
		var ok1, ok2 bool
		data, ok1 = dict.get("data")
		labels, ok2 = dict.get("labels")
		if !ok1 || !ok2 {
			return nil, formatErr(path, "pickled dict lacks 'data' or 'labels'")
		}
	}
	return imageNet32FromArrays(path, data, labels)
}

// imageNet32FromArrays checks and converts the 'data' and 'labels' values
// of one batch file.
func imageNet32FromArrays(path string, data, labels any) (*Dataset, error) {
	const side, pixels = 32, 3 * 32 * 32
	a, ok := data.(*ndarray)
	if !ok {
		return nil, formatErr(path, "'data' is a %s, want a numpy uint8 array", typeName(data))
	}
	if s, _ := a.itemSize(); s != 1 || a.kind() != 'u' {
		return nil, formatErr(path, "'data' has dtype %s, want uint8", a.dtype.str)
	}
	n := 0
	switch {
	case len(a.shape) == 2 && a.shape[1] == pixels:
		n = a.shape[0]
	case len(a.shape) == 4 && a.shape[1] == 3 && a.shape[2] == side && a.shape[3] == side:
		n = a.shape[0]
	default:
		return nil, formatErr(path, "wrong image size: 'data' has shape %v, want (N, %d) of 3×%d×%d images", a.shape, pixels, side, side)
	}
	if a.fortran && n > 1 {
		return nil, formatErr(path, "'data' is a Fortran-order array; want C order")
	}

	var ys []int64
	switch l := labels.(type) {
	case *pyList:
		ys = make([]int64, len(l.items))
		for i, v := range l.items {
			y, ok := v.(int64)
			if !ok {
				return nil, formatErr(path, "label %d is a %s, want an int", i, typeName(v))
			}
			ys[i] = y
		}
	case *ndarray:
		if len(l.shape) != 1 {
			return nil, formatErr(path, "'labels' array has shape %v, want (N,)", l.shape)
		}
		var err error
		if ys, err = l.ints(); err != nil {
			return nil, formatErr(path, "'labels': %v", err)
		}
	default:
		return nil, formatErr(path, "'labels' is a %s, want a list of ints", typeName(labels))
	}
	if len(ys) != n {
		return nil, formatErr(path, "label count mismatch: %d labels for %d images", len(ys), n)
	}
	for i, y := range ys {
		if y < 1 || y > imageNetClasses {
			return nil, formatErr(path, "label %d of image %d out of range 1..%d", y, i, imageNetClasses)
		}
		ys[i] = y - 1
	}
	classes := make([]string, imageNetClasses)
	for i := range classes {
		classes[i] = "class " + strconv.Itoa(i)
	}
	return &Dataset{
		Name:    "imagenet32",
		Images:  a.data,
		Labels:  ys,
		N:       n,
		C:       3,
		H:       side,
		W:       side,
		Classes: classes,
	}, nil
}

// imageNetClassNames reads map_clsloc.txt ("wnid index name" per line,
// indices 1 to 1000), or returns "class 0" to "class 999" when it does not
// exist.
func imageNetClassNames(path string) ([]string, error) {
	names := make([]string, imageNetClasses)
	raw, err := os.ReadFile(path)
	if isNotExist(err) {
		for i := range names {
			names[i] = "class " + strconv.Itoa(i)
		}
		return names, nil
	}
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, formatErr(path, "line %d: want \"wnid index name\"", line)
		}
		i, err := strconv.Atoi(f[1])
		if err != nil || i < 1 || i > imageNetClasses {
			return nil, formatErr(path, "line %d: class index %q is not in 1..%d", line, f[1], imageNetClasses)
		}
		if names[i-1] != "" {
			return nil, formatErr(path, "line %d: class index %d appears twice", line, i)
		}
		names[i-1] = strings.ReplaceAll(f[2], "_", " ")
	}
	if err := sc.Err(); err != nil {
		return nil, formatErr(path, "%v", err)
	}
	for i, n := range names {
		if n == "" {
			return nil, formatErr(path, "no name for class index %d", i+1)
		}
	}
	return names, nil
}
