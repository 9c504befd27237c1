package data

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// cifarRecord is the size of one record of the CIFAR-10 binary version: a
// label byte, then 32×32 red, 32×32 green and 32×32 blue pixels.
const cifarRecord = 1 + 3*32*32

// CIFAR10 loads the binary version of CIFAR-10 from dir: the training part
// (data_batch_1.bin to data_batch_5.bin, 50,000 images) or the test part
// (test_batch.bin, 10,000 images). dir is the folder that holds the files or
// the folder above the archive's cifar-10-batches-bin/. The class names come
// from batches.meta.txt (one per line) when it is there, else
// [CIFAR10Classes]. CIFAR-10 has no default location: dir must be given.
func CIFAR10(dir string, train bool) (*Dataset, error) {
	if dir == "" {
		return nil, fmt.Errorf("data: cifar10: no folder given (CIFAR-10 has no default location; pass the folder holding data_batch_1.bin)")
	}
	if _, err := os.Stat(filepath.Join(dir, "test_batch.bin")); err != nil {
		sub := filepath.Join(dir, "cifar-10-batches-bin")
		if _, err := os.Stat(sub); err == nil {
			dir = sub
		}
	}
	names := []string{"test_batch.bin"}
	if train {
		names = []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
	}
	classes, err := cifarClasses(filepath.Join(dir, "batches.meta.txt"))
	if err != nil {
		return nil, err
	}

	paths := make([]string, len(names))
	total := 0
	for i, name := range names {
		paths[i] = filepath.Join(dir, name)
		st, err := os.Stat(paths[i])
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		if st.Size() == 0 || st.Size()%cifarRecord != 0 {
			return nil, formatErr(paths[i], "size %d bytes is not a positive multiple of the %d-byte CIFAR-10 record (truncated or not CIFAR-10 binary)", st.Size(), cifarRecord)
		}
		total += int(st.Size() / cifarRecord)
	}

	d := &Dataset{
		Name:    "cifar10",
		Part:    partName(train),
		Images:  make([]uint8, total*(cifarRecord-1)),
		Labels:  make([]int64, total),
		N:       total,
		C:       3,
		H:       32,
		W:       32,
		Classes: classes,
	}
	at := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		if len(b)%cifarRecord != 0 || at+len(b)/cifarRecord > total {
			return nil, formatErr(p, "file changed while being read")
		}
		for r := range len(b) / cifarRecord {
			rec := b[r*cifarRecord : (r+1)*cifarRecord]
			if int(rec[0]) >= len(classes) {
				return nil, formatErr(p, "label %d of record %d out of range 0..%d", rec[0], r, len(classes)-1)
			}
			d.Labels[at] = int64(rec[0])
			copy(d.Image(at), rec[1:])
			at++
		}
	}
	if at != total {
		return nil, fmt.Errorf("data: %s: files changed while being read", dir)
	}
	return d, nil
}

// cifarClasses reads the class names of batches.meta.txt, or returns the
// standard names when the file does not exist.
func cifarClasses(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if isNotExist(err) {
		return CIFAR10Classes(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		if s := strings.TrimSpace(line); s != "" {
			names = append(names, s)
		}
	}
	if len(names) != 10 {
		return nil, formatErr(path, "%d class names, want 10 (one per line)", len(names))
	}
	return names, nil
}
