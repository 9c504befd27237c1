package safetensors

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample() *File {
	return &File{
		Metadata: map[string]string{"arch": "cnn", "note": "héllo"},
		Tensors: []Tensor{
			F32("w", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}),
			I64("k", []int64{2}, []int64{-7, 1 << 40}),
			{Name: "img", DType: "U8", Shape: []int64{1, 2, 2}, Data: []byte{0, 1, 254, 255}},
			F32("scalar", []int64{}, []float32{3.5}),
		},
	}
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.safetensors")
	if err := WriteFile(path, sample()); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["note"] != "héllo" || f.Metadata["arch"] != "cnn" {
		t.Errorf("metadata %v", f.Metadata)
	}
	w, _ := f.Get("w")
	if v, err := w.Float32s(); err != nil || v[5] != 6 || len(v) != 6 {
		t.Errorf("w = %v, %v", v, err)
	}
	k, _ := f.Get("k")
	if v, err := k.Int64s(); err != nil || v[0] != -7 || v[1] != 1<<40 {
		t.Errorf("k = %v, %v", v, err)
	}
	if _, err := k.Float32s(); err == nil {
		t.Error("I64 read as F32")
	}
	img, _ := f.Get("img")
	if !bytes.Equal(img.Data, []byte{0, 1, 254, 255}) {
		t.Errorf("img = %v", img.Data)
	}
	// The header is padded to 8 bytes, as the reference implementation does.
	b, _ := os.ReadFile(path)
	if n := binary.LittleEndian.Uint64(b); n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	// No temporary files are left behind.
	if es, _ := os.ReadDir(filepath.Dir(path)); len(es) != 1 {
		t.Errorf("%d files in the folder, want 1", len(es))
	}
}

func TestWriteRejects(t *testing.T) {
	cases := map[string]Tensor{
		"size mismatch": {Name: "x", DType: "F32", Shape: []int64{3}, Data: make([]byte, 8)},
		"unknown dtype": {Name: "x", DType: "F128", Shape: []int64{1}, Data: make([]byte, 16)},
		"reserved name": F32("__metadata__", []int64{1}, []float32{1}),
		"negative dim":  {Name: "x", DType: "U8", Shape: []int64{-1}, Data: nil},
	}
	for name, tensor := range cases {
		t.Run(name, func(t *testing.T) {
			if err := Write(&bytes.Buffer{}, &File{Tensors: []Tensor{tensor}}); err == nil {
				t.Error("accepted")
			}
		})
	}
	if err := Write(&bytes.Buffer{}, &File{Tensors: []Tensor{F32("a", []int64{1}, []float32{1}), F32("a", []int64{1}, []float32{1})}}); err == nil {
		t.Error("duplicate names accepted")
	}
}

// TestReadRejects feeds malformed streams: every one must be an error,
// never a panic or an allocation the file cannot back.
func TestReadRejects(t *testing.T) {
	var good bytes.Buffer
	if err := Write(&good, sample()); err != nil {
		t.Fatal(err)
	}
	g := good.Bytes()
	header := func(h string) []byte {
		b := make([]byte, 8, 8+len(h)+4)
		binary.LittleEndian.PutUint64(b, uint64(len(h)))
		return append(append(b, h...), 0, 0, 0, 0)
	}
	cases := map[string][]byte{
		"empty":              {},
		"short length":       {1, 2, 3},
		"huge header length": append(binary.LittleEndian.AppendUint64(nil, 1<<62), '{', '}'),
		"truncated data":     g[:len(g)-3],
		"trailing bytes":     append(append([]byte{}, g...), 0),
		"not json":           header("nope"),
		"bad metadata":       header(`{"__metadata__":{"a":1}}`),
		"offsets past end":   header(`{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,1000]}}`),
		"gap in offsets":     header(`{"x":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`),
		"shape vs bytes":     header(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`),
		"overflowing shape":  header(`{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Read(bytes.NewReader(b), int64(len(b))); err == nil {
				t.Error("accepted")
			} else if !strings.HasPrefix(err.Error(), "safetensors:") {
				t.Errorf("error %q does not say where it comes from", err)
			}
		})
	}
}

func TestReadFileNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	os.WriteFile(path, []byte("garbage!"), 0o644)
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v does not name %s", err, path)
	}
}
