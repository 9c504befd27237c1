package data

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdataLabels returns the 0-based labels of the files in testdata/,
// written by testdata/make_imagenet32.py (numpy): 3 images with the test
// pattern, labels 1, 1000, 17 in the files.
func testdataLabels() []int64 { return []int64{0, 999, 16} }

func checkTiny(t *testing.T, d *Dataset) {
	t.Helper()
	want := synth(3, 3, 32, 32, 1000)
	want.Labels = testdataLabels()
	equalDatasets(t, d, want)
}

func TestImageNet32Files(t *testing.T) {
	for _, name := range []string{
		"imagenet32_p2.pkl", "imagenet32_p3.pkl", "imagenet32_p4.pkl", "imagenet32_p5.pkl",
		"imagenet32_nplabels.pkl", "imagenet32_npscalars.pkl",
		"imagenet32.npz", "imagenet32_compressed.npz",
	} {
		t.Run(name, func(t *testing.T) {
			d, err := ImageNet32File(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			checkTiny(t, d)
		})
	}
}

// pk writes pickle opcodes.
type pk struct{ bytes.Buffer }

func (p *pk) op(b ...byte) *pk { p.Write(b); return p }

func (p *pk) u32(n int) { binary.Write(p, binary.LittleEndian, uint32(n)) }

// str writes a Python 3 str (BINUNICODE) or, if py2, a Python 2 str
// (BINSTRING).
func (p *pk) str(s string, py2 bool) *pk {
	if py2 {
		p.op('T')
	} else {
		p.op('X')
	}
	p.u32(len(s))
	p.WriteString(s)
	return p
}

func (p *pk) bytes(b []byte) *pk { p.op('B'); p.u32(len(b)); p.Write(b); return p }

func (p *pk) int(v int) *pk { p.op('J'); p.u32(v); return p }

func (p *pk) global(mod, name string) *pk {
	p.op('c')
	p.WriteString(mod + "\n" + name + "\n")
	return p
}

// array writes a numpy array the way numpy pickles one with protocol 2.
func (p *pk) array(dtype, order string, shape []int, data []byte, py2 bool) *pk {
	p.global("numpy.core.multiarray", "_reconstruct").global("numpy", "ndarray")
	p.int(0).op(0x85).str("b", py2).op(0x87, 'R')
	p.op('(').int(1).op('(')
	for _, s := range shape {
		p.int(s)
	}
	p.op('t')
	p.global("numpy", "dtype").str(dtype, py2).op(0x89, 0x88, 0x87, 'R')
	p.op('(').int(3).str(order, py2).op('N', 'N', 'N').int(-1).int(-1).int(0).op('t', 'b')
	p.op(0x89)
	if py2 {
		p.str(string(data), true)
	} else {
		p.bytes(data)
	}
	return p.op('t', 'b')
}

// batch writes a whole ImageNet32 batch dict.
func batchPickle(dtype string, shape []int, data []byte, labels []int, py2 bool) []byte {
	var p pk
	p.op(0x80, 2, '}', '(')
	p.str("data", py2).array(dtype, "|", shape, data, py2)
	p.str("labels", py2).op(']', '(')
	for _, y := range labels {
		p.int(y)
	}
	p.op('e', 'u', '.')
	return p.Bytes()
}

func tinyPixels() []byte { return synth(3, 3, 32, 32, 1).Images }

func TestImageNet32Python2Pickle(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "val_data"), batchPickle("u1", []int{3, 3072}, tinyPixels(), []int{1, 1000, 17}, true))
	d, err := ImageNet32File(path)
	if err != nil {
		t.Fatal(err)
	}
	checkTiny(t, d)
	// Shape N×3×32×32 is accepted too.
	path = writeFile(t, filepath.Join(dir, "b"), batchPickle("u1", []int{3, 3, 32, 32}, tinyPixels(), []int{1, 1000, 17}, false))
	if d, err = ImageNet32File(path); err != nil {
		t.Fatal(err)
	}
	checkTiny(t, d)
}

func TestImageNet32Folder(t *testing.T) {
	p3, err := os.ReadFile("testdata/imagenet32_p3.pkl")
	if err != nil {
		t.Fatal(err)
	}
	npz, err := os.ReadFile("testdata/imagenet32.npz")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i := 1; i <= 10; i++ {
		if i%2 == 0 {
			writeFile(t, filepath.Join(dir, "Imagenet32_train", fmt.Sprintf("train_data_batch_%d", i)), p3)
		} else {
			writeFile(t, filepath.Join(dir, "Imagenet32_train_npz", fmt.Sprintf("train_data_batch_%d.npz", i)), npz)
		}
	}
	writeFile(t, filepath.Join(dir, "val_data"), p3)
	var m strings.Builder
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&m, "n%08d %d name_%d\n", i, i, i)
	}
	writeFile(t, filepath.Join(dir, "map_clsloc.txt"), []byte(m.String()))

	d, err := ImageNet32(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if d.N != 30 || d.NumClasses() != 1000 || d.Part != "train" || d.Name != "imagenet32" {
		t.Fatalf("%d images, %d classes, part %q", d.N, d.NumClasses(), d.Part)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	checkTiny(t, d.Subset([]int{27, 28, 29}))
	if d.Classes[0] != "name 1" || d.Classes[999] != "name 1000" {
		t.Errorf("class names %q ... %q", d.Classes[0], d.Classes[999])
	}
	v, err := Load("imagenet32", dir, false)
	if err != nil {
		t.Fatal(err)
	}
	checkTiny(t, v)
	if v.Part != "test" {
		t.Errorf("part %q", v.Part)
	}

	// A missing training file is an error naming it.
	os.Remove(filepath.Join(dir, "Imagenet32_train_npz", "train_data_batch_7.npz"))
	_, err = ImageNet32(dir, true)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "train_data_batch_7") {
		t.Errorf("error %v", err)
	}
	// A malformed map_clsloc.txt is an error naming it.
	path := writeFile(t, filepath.Join(dir, "map_clsloc.txt"), []byte("n01 1 a\nn02 1 b\n"))
	_, err = ImageNet32(dir, false)
	wantFormatErr(t, err, path, "class index 1 appears twice")
	writeFile(t, path, []byte("n01 1 a\n"))
	_, err = ImageNet32(dir, false)
	wantFormatErr(t, err, path, "no name for class index 2")
	if _, err := ImageNet32("", true); err == nil {
		t.Error("no error for an empty dir")
	}
}

// npzBytes builds a .npz archive of .npy members given as raw bytes.
func npzBytes(t *testing.T, members map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, content := range members {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(content)
	}
	zw.Close()
	return b.Bytes()
}

// npyBytes builds a version-1 .npy file.
func npyBytes(header string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func TestImageNet32Malformed(t *testing.T) {
	pixels := tinyPixels()
	labels := []int{1, 2, 3}
	goodLabels := npyBytes("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", make([]byte, 24))
	binary.LittleEndian.PutUint64(goodLabels[len(goodLabels)-24:], 1)
	binary.LittleEndian.PutUint64(goodLabels[len(goodLabels)-16:], 1)
	binary.LittleEndian.PutUint64(goodLabels[len(goodLabels)-8:], 1)
	goodData := npyBytes("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 3072), }", pixels)
	listPickle := (&pk{}).op(0x80, 2, ']', '.').Bytes()
	noLabels := (&pk{}).op(0x80, 2, '}').str("data", false).array("u1", "|", []int{3, 3072}, pixels, false).op('s', '.').Bytes()
	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"label 0", batchPickle("u1", []int{3, 3072}, pixels, []int{1, 0, 5}, false), "label 0 of image 1 out of range 1..1000"},
		{"label 1001", batchPickle("u1", []int{3, 3072}, pixels, []int{1, 2, 1001}, false), "label 1001 of image 2 out of range 1..1000"},
		{"label count", batchPickle("u1", []int{3, 3072}, pixels, []int{1, 2}, false), "label count mismatch: 2 labels for 3 images"},
		{"image size", batchPickle("u1", []int{4, 2304}, pixels, labels, false), "wrong image size"},
		{"dtype", batchPickle("f4", []int{3, 768}, pixels, labels, false), "dtype f4, want uint8"},
		{"data size", batchPickle("u1", []int{3, 3072}, pixels[:100], labels, false), "needs 9216 bytes, has 100"},
		{"not a dict", listPickle, "pickle holds a list"},
		{"no labels", noLabels, "lacks 'data' or 'labels'"},
		{"empty", nil, "truncated"},
		{"text pickle", []byte("(dp0\nS'data'\np1\n."), "unsupported opcode"},
		{"evil global", (&pk{}).op(0x80, 2).global("os", "system").str("true", false).op(0x85, 'R', '.').Bytes(), "unsupported global os.system"},
		{"memo", (&pk{}).op(0x80, 2, 'h', 5, '.').Bytes(), "memo entry 5"},
		{"underflow", (&pk{}).op(0x80, 2, 't', '.').Bytes(), "no MARK"},
		{"no stop", (&pk{}).op(0x80, 2, '}').Bytes(), "no STOP"},
		{"huge bytes", (&pk{}).op(0x80, 4, 0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '.').Bytes(), "truncated"},
		{"huge frame", (&pk{}).op(0x80, 4, 0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '.').Bytes(), "truncated"},
		{"protocol 6", (&pk{}).op(0x80, 6, '}', '.').Bytes(), "protocol 6"},
		{"npz no labels", npzBytes(t, map[string][]byte{"data.npy": goodData}), "lacks data.npy or labels.npy"},
		{"npz labels wrong", npzBytes(t, map[string][]byte{"data.npy": goodData, "labels.npy": goodLabels[:len(goodLabels)-8]}), "needs 24 bytes, has 16"},
		{"npz object", npzBytes(t, map[string][]byte{"data.npy": goodData, "labels.npy": npyBytes("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", nil)}), "Python objects"},
		{"npz bad magic", npzBytes(t, map[string][]byte{"data.npy": []byte("nope"), "labels.npy": goodLabels}), "wrong magic"},
		{"npz corrupt", append([]byte("PK\x03\x04"), make([]byte, 40)...), "not a zip archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "train_data_batch_1"), tc.content)
			d, err := ImageNet32File(path)
			if d != nil {
				t.Error("got a dataset with the error")
			}
			wantFormatErr(t, err, path, tc.want)
		})
	}
	// The good npz parts do load.
	path := writeFile(t, filepath.Join(t.TempDir(), "ok.npz"), npzBytes(t, map[string][]byte{"data.npy": goodData, "labels.npy": goodLabels}))
	if _, err := ImageNet32File(path); err != nil {
		t.Errorf("good npz: %v", err)
	}
}

// TestUnpickleTruncatedAndCorrupt cuts and corrupts real pickles: every
// result is an error or a value, never a panic or an internal error.
func TestUnpickleTruncatedAndCorrupt(t *testing.T) {
	for _, name := range []string{"imagenet32_p2.pkl", "imagenet32_p4.pkl", "imagenet32_p5.pkl", "imagenet32_npscalars.pkl"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		check := func(b []byte, what string) {
			_, err := unpickle(b)
			if err != nil && strings.Contains(err.Error(), "internal error") {
				t.Fatalf("%s %s: %v", name, what, err)
			}
		}
		step := 1
		if len(raw) > 20000 {
			step = 7
		}
		for n := 0; n < len(raw); n += step {
			if _, err := unpickle(raw[:n]); err == nil {
				t.Fatalf("%s cut at %d: no error", name, n)
			}
			check(raw[:n], fmt.Sprint("cut at ", n))
		}
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 3000 {
			b := bytes.Clone(raw)
			for range 1 + i%4 {
				// Corrupt the structure rather than the pixels: the first
				// and last 400 bytes.
				at := r.IntN(400)
				if r.IntN(2) == 0 {
					at = len(b) - 1 - at
				}
				b[at] = byte(r.Uint32())
			}
			check(b, fmt.Sprint("corruption ", i))
		}
	}
}

func FuzzUnpickle(f *testing.F) {
	for _, name := range []string{"imagenet32_p3.pkl", "imagenet32_p5.pkl"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add(batchPickle("u1", []int{1, 3072}, make([]byte, 3072), []int{5}, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := unpickle(b)
		if err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatal(err)
		}
	})
}

func TestDecodeLong(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want int64
		ok   bool
	}{
		{nil, 0, true},
		{[]byte{0xff}, -1, true},
		{[]byte{0x80, 0x00}, 128, true},
		{[]byte{0x00, 0x80}, -32768, true},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0}, 1, true},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, -1, true},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0, 1}, 0, false},
	} {
		got, ok := decodeLong(tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("decodeLong(% x) = %d, %v; want %d, %v", tc.b, got, ok, tc.want, tc.ok)
		}
	}
}
