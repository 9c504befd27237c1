package data

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// writeCIFAR writes five training batches of 2 images each and a test batch
// of 3 into dir, and returns the training and test datasets they hold.
func writeCIFAR(t *testing.T, dir string) (train, test *Dataset) {
	train = synth(10, 3, 32, 32, 10)
	for b := range 5 {
		writeFile(t, filepath.Join(dir, "data_batch_"+strconv.Itoa(b+1)+".bin"), cifarBytes(train.Subset([]int{2 * b, 2*b + 1})))
	}
	test = synth(3, 3, 32, 32, 10)
	test.Labels = []int64{9, 0, 4}
	writeFile(t, filepath.Join(dir, "test_batch.bin"), cifarBytes(test))
	return train, test
}

func TestCIFAR10(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sub     string // folder of the files below the dir given
		meta    string // content of batches.meta.txt, "" for none
		classes []string
	}{
		{"flat, standard names", "", "", CIFAR10Classes()},
		{"archive folder, meta", "cifar-10-batches-bin", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n", strings.Fields("a b c d e f g h i j")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			train, test := writeCIFAR(t, filepath.Join(dir, tc.sub))
			if tc.meta != "" {
				writeFile(t, filepath.Join(dir, tc.sub, "batches.meta.txt"), []byte(tc.meta))
			}
			for _, part := range []struct {
				train bool
				want  *Dataset
			}{{true, train}, {false, test}} {
				d, err := CIFAR10(dir, part.train)
				if err != nil {
					t.Fatal(err)
				}
				equalDatasets(t, d, part.want)
				if !slices.Equal(d.Classes, tc.classes) {
					t.Errorf("classes %q, want %q", d.Classes, tc.classes)
				}
				if d.Name != "cifar10" || d.Part != partName(part.train) || d.NoFlip {
					t.Errorf("name %q part %q noflip %v", d.Name, d.Part, d.NoFlip)
				}
			}
		})
	}
}

func TestCIFAR10Malformed(t *testing.T) {
	rec := cifarBytes(synth(2, 3, 32, 32, 10))
	badLabel := slices.Clone(rec)
	badLabel[cifarRecord] = 10 // label of the second record
	for _, tc := range []struct {
		name    string
		file    string // the file to replace (or remove, with nil content)
		content []byte
		want    string
	}{
		{"truncated", "test_batch.bin", rec[:len(rec)-1], "not a positive multiple of the 3073-byte"},
		{"empty", "test_batch.bin", []byte{}, "not a positive multiple"},
		{"label out of range", "test_batch.bin", badLabel, "label 10 of record 1 out of range 0..9"},
		{"meta wrong count", "batches.meta.txt", []byte("a\nb\n"), "2 class names, want 10"},
		{"meta names 11", "batches.meta.txt", []byte(strings.Repeat("x\n", 11)), "11 class names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCIFAR(t, dir)
			path := writeFile(t, filepath.Join(dir, tc.file), tc.content)
			_, err := CIFAR10(dir, false)
			wantFormatErr(t, err, path, tc.want)
		})
	}
	t.Run("missing batch", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "data_batch_1.bin"), rec)
		_, err := CIFAR10(dir, true)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, "data_batch_2.bin")) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("no dir", func(t *testing.T) {
		if _, err := CIFAR10("", true); err == nil {
			t.Error("no error")
		}
	})
}
