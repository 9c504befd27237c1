package data

import (
	"fmt"
	"math"
	"slices"
)

// Dataset holds images as uint8 pixels (0..255) in NCHW order and their int64
// labels in 0..NumClasses()-1.
//
// Image i occupies Images[i*C*H*W : (i+1)*C*H*W], channel-major (all of the
// first channel, then the second, ...), each channel row-major.
type Dataset struct {
	// Name is the canonical dataset name, as accepted by [Load]
	// ("fashion-mnist", "cifar10", ...), or what the caller chose.
	Name string
	// Part says which part of the dataset this is: "train", "test",
	// "valid", and after [Split] a suffix "/defender" or "/adversary".
	Part string

	Images     []uint8 // N*C*H*W pixels, NCHW
	Labels     []int64 // N labels
	N, C, H, W int
	Classes    []string // class names; len(Classes) is the number of classes

	// NoFlip marks data whose labels a horizontal flip does not preserve
	// (handwritten digits): [Dataset.Batches] never flips it, even with
	// augmentation on.
	NoFlip bool
}

// Len returns the number of images.
func (d *Dataset) Len() int { return d.N }

// NumClasses returns the number of classes.
func (d *Dataset) NumClasses() int { return len(d.Classes) }

// ImageSize returns C*H*W, the number of pixels of one image.
func (d *Dataset) ImageSize() int { return d.C * d.H * d.W }

// Image returns a view of image i (C*H*W pixels, CHW order). Writing to it
// writes to the dataset. It panics if i is out of range, as a slice index
// would.
func (d *Dataset) Image(i int) []uint8 {
	n := d.ImageSize()
	return d.Images[i*n : (i+1)*n : (i+1)*n]
}

// Validate checks that the sizes agree and that every label is a class; the
// loaders return only datasets that pass it.
func (d *Dataset) Validate() error {
	if d.N < 0 || d.C <= 0 || d.H <= 0 || d.W <= 0 {
		return fmt.Errorf("data: dataset %q: bad shape N=%d C=%d H=%d W=%d", d.Name, d.N, d.C, d.H, d.W)
	}
	if len(d.Images) != d.N*d.ImageSize() {
		return fmt.Errorf("data: dataset %q: %d pixels for %d images of %dx%dx%d", d.Name, len(d.Images), d.N, d.C, d.H, d.W)
	}
	if len(d.Labels) != d.N {
		return fmt.Errorf("data: dataset %q: %d labels for %d images", d.Name, len(d.Labels), d.N)
	}
	k := int64(len(d.Classes))
	for i, y := range d.Labels {
		if y < 0 || y >= k {
			return fmt.Errorf("data: dataset %q: label %d of image %d is outside 0..%d", d.Name, y, i, k-1)
		}
	}
	return nil
}

// Subset returns a new dataset holding copies of the images idx, in that
// order (an index may repeat). It panics if an index is out of range.
func (d *Dataset) Subset(idx []int) *Dataset {
	n := d.ImageSize()
	s := d.emptyLike(len(idx))
	for j, i := range idx {
		copy(s.Images[j*n:(j+1)*n], d.Image(i))
		s.Labels[j] = d.Labels[i]
	}
	return s
}

// First returns the first n examples of d, or d itself when n ≤ 0 or d
// has no more than n.
func (d *Dataset) First(n int) *Dataset {
	if n <= 0 || n >= d.Len() {
		return d
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return d.Subset(idx)
}

// emptyLike returns a dataset with d's metadata and room for n images.
func (d *Dataset) emptyLike(n int) *Dataset {
	return &Dataset{
		Name:    d.Name,
		Part:    d.Part,
		Images:  make([]uint8, n*d.ImageSize()),
		Labels:  make([]int64, n),
		N:       n,
		C:       d.C,
		H:       d.H,
		W:       d.W,
		Classes: slices.Clone(d.Classes),
		NoFlip:  d.NoFlip,
	}
}

// ClassCounts returns the number of images of each class.
func (d *Dataset) ClassCounts() []int {
	counts := make([]int, d.NumClasses())
	for _, y := range d.Labels {
		if y >= 0 && int(y) < len(counts) {
			counts[y]++
		}
	}
	return counts
}

// Stats returns the per-channel mean and standard deviation (population, not
// sample) of the pixels scaled to [0,1]: the constants of the per-channel
// z-score normalisation of paper §6.1. They are exact: computed from pixel
// histograms. An empty dataset gives zeros.
func (d *Dataset) Stats() (mean, std []float64) {
	hist := make([][256]int64, d.C)
	plane := d.H * d.W
	for i := range d.N {
		img := d.Image(i)
		for c := range d.C {
			h := &hist[c]
			for _, v := range img[c*plane : (c+1)*plane] {
				h[v]++
			}
		}
	}
	mean = make([]float64, d.C)
	std = make([]float64, d.C)
	count := float64(d.N * plane)
	if count == 0 {
		return mean, std
	}
	for c := range d.C {
		var s float64
		for v, k := range hist[c] {
			s += float64(k) * float64(v)
		}
		m := s / count
		var ss float64
		for v, k := range hist[c] {
			dv := float64(v) - m
			ss += float64(k) * dv * dv
		}
		mean[c] = m / 255
		std[c] = math.Sqrt(ss/count) / 255
	}
	return mean, std
}

// Concat returns a new dataset with the images of a followed by those of b.
// They must have the same image shape and the same classes.
func Concat(a, b *Dataset) (*Dataset, error) {
	if a.C != b.C || a.H != b.H || a.W != b.W {
		return nil, fmt.Errorf("data: concat %q and %q: image shapes %dx%dx%d and %dx%dx%d differ",
			a.Name, b.Name, a.C, a.H, a.W, b.C, b.H, b.W)
	}
	if !slices.Equal(a.Classes, b.Classes) {
		return nil, fmt.Errorf("data: concat %q and %q: class lists differ (%d and %d classes)",
			a.Name, b.Name, len(a.Classes), len(b.Classes))
	}
	out := a.emptyLike(0)
	out.N = a.N + b.N
	out.Images = slices.Concat(a.Images, b.Images)
	out.Labels = slices.Concat(a.Labels, b.Labels)
	out.NoFlip = a.NoFlip || b.NoFlip
	if a.Name != b.Name {
		out.Name = a.Name + "+" + b.Name
	}
	if a.Part != b.Part {
		out.Part = a.Part + "+" + b.Part
	}
	return out, nil
}

// SelectClasses returns a new dataset with only the images of the given
// classes, relabelled 0..len(classes)-1 in the order given (paper §6.1 uses
// 100 of ImageNet32's 1000 classes).
func (d *Dataset) SelectClasses(classes []int) (*Dataset, error) {
	newLabel := make(map[int64]int64, len(classes))
	names := make([]string, len(classes))
	for j, c := range classes {
		if c < 0 || c >= d.NumClasses() {
			return nil, fmt.Errorf("data: dataset %q: class %d is outside 0..%d", d.Name, c, d.NumClasses()-1)
		}
		if _, dup := newLabel[int64(c)]; dup {
			return nil, fmt.Errorf("data: dataset %q: class %d selected twice", d.Name, c)
		}
		newLabel[int64(c)] = int64(j)
		names[j] = d.Classes[c]
	}
	var idx []int
	for i, y := range d.Labels {
		if _, ok := newLabel[y]; ok {
			idx = append(idx, i)
		}
	}
	s := d.Subset(idx)
	for i, y := range s.Labels {
		s.Labels[i] = newLabel[y]
	}
	s.Classes = names
	return s, nil
}

// SelectClassNames is [Dataset.SelectClasses] by class name. Every name must
// match exactly one class.
func (d *Dataset) SelectClassNames(names []string) (*Dataset, error) {
	classes := make([]int, len(names))
	for j, name := range names {
		classes[j] = -1
		for c, cn := range d.Classes {
			if cn != name {
				continue
			}
			if classes[j] >= 0 {
				return nil, fmt.Errorf("data: dataset %q: class name %q is ambiguous (classes %d and %d)", d.Name, name, classes[j], c)
			}
			classes[j] = c
		}
		if classes[j] < 0 {
			return nil, fmt.Errorf("data: dataset %q: no class named %q", d.Name, name)
		}
	}
	return d.SelectClasses(classes)
}

// FormatError reports a dataset file whose content is not what its format
// requires.
type FormatError struct {
	File string // the file's path
	Msg  string // what is wrong
}

// Error returns "data: FILE: MSG".
func (e *FormatError) Error() string { return "data: " + e.File + ": " + e.Msg }

// formatErr returns a *FormatError for file.
func formatErr(file, format string, args ...any) error {
	return &FormatError{File: file, Msg: fmt.Sprintf(format, args...)}
}

// FashionMNISTClasses returns the ten Fashion-MNIST class names, in label
// order.
func FashionMNISTClasses() []string {
	return []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
}

// MNISTClasses returns the MNIST class names "0" to "9".
func MNISTClasses() []string {
	return []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
}

// CIFAR10Classes returns the ten CIFAR-10 class names, in label order (CINIC-10
// uses the same names, as folder names, in the same order).
func CIFAR10Classes() []string {
	return []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
}

// PaperImageNet32Classes returns the names of the 100 ImageNet32 classes that
// the paper uses (appendix §9), in the paper's order. With class names read
// from map_clsloc.txt (see [ImageNet32]), d.SelectClassNames of this list
// gives the paper's 100-class subset.
func PaperImageNet32Classes() []string {
	return []string{
		"kit fox", "Persian cat", "gazelle", "porcupine", "sea lion", "killer whale", "African elephant", "jaguar", "otterhound", "hyena",
		"sorrel", "dalmatian", "fox squirrel", "tiger", "zebra", "ram", "orangutan", "squirrel monkey", "komondor", "guinea pig",
		"golden retriever", "macaque", "pug", "water buffalo", "American black bear", "giant panda", "armadillo", "gibbon", "German shepherd", "koala",
		"umbrella", "soccer ball", "starfish", "grand piano", "laptop", "strawberry", "airliner", "balloon", "space shuttle", "aircraft carrier",
		"tank", "missile", "mountain bike", "steam locomotive", "cab", "snowplow", "bookcase", "toilet seat", "pool table", "orange",
		"lemon", "violin", "sax", "volcano", "coral reef", "lakeside", "hammer", "vulture", "hummingbird", "flamingo",
		"great white shark", "hammerhead", "stingray", "barracouta", "goldfish", "American chameleon", "green snake", "European fire salamander", "loudspeaker", "microphone",
		"digital clock", "sunglass", "combination lock", "nail", "altar", "mountain tent", "scoreboard", "mashed potato", "head cabbage", "cucumber",
		"plate", "necklace", "sandal", "ski mask", "teddy", "golf ball", "red wine", "sunscreen", "beer glass", "cup",
		"traffic light", "lipstick", "hotdog", "toilet tissue", "cassette", "lotion", "barrel", "basketball", "barbell", "pole",
	}
}
