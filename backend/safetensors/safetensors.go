// Package safetensors reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header naming each tensor's dtype,
// shape and byte range, free-form string metadata under "__metadata__", and
// the raw little-endian tensor bytes. Conferral stores models and
// fingerprints in it, so files open in any tool that reads safetensors.
package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"unsafe"
)

// MaxHeader bounds the JSON header a reader accepts (100 MB, as the
// reference implementation).
const MaxHeader = 100 << 20

// Tensor is one named array.
type Tensor struct {
	Name  string
	DType string // "F32", "I64", "U8", "BOOL", ...
	Shape []int64
	Data  []byte
}

// File is the content of a safetensors file.
type File struct {
	Metadata map[string]string
	Tensors  []Tensor
}

// Get returns the tensor with the given name.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

func elemSize(dtype string) (int, error) {
	switch dtype {
	case "F64", "I64", "U64":
		return 8, nil
	case "F32", "I32", "U32":
		return 4, nil
	case "F16", "BF16", "I16", "U16":
		return 2, nil
	case "U8", "I8", "BOOL":
		return 1, nil
	}
	return 0, fmt.Errorf("unknown dtype %q", dtype)
}

type entry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// Write encodes f to w. Tensors are written in the order given.
func Write(w io.Writer, f *File) error {
	header := map[string]any{}
	if len(f.Metadata) > 0 {
		header["__metadata__"] = f.Metadata
	}
	var off int64
	for _, t := range f.Tensors {
		if t.Name == "__metadata__" {
			return errors.New("safetensors: a tensor may not be named __metadata__")
		}
		if _, dup := header[t.Name]; dup {
			return fmt.Errorf("safetensors: duplicate tensor %q", t.Name)
		}
		if err := checkSize(t); err != nil {
			return err
		}
		header[t.Name] = entry{DType: t.DType, Shape: shapeOrEmpty(t.Shape), DataOffsets: [2]int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: encoding header: %w", err)
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	bw := bufio.NewWriter(w)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hb)))
	bw.Write(n[:])
	bw.Write(hb)
	for _, t := range f.Tensors {
		bw.Write(t.Data)
	}
	return bw.Flush()
}

func shapeOrEmpty(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}

func checkSize(t Tensor) error {
	es, err := elemSize(t.DType)
	if err != nil {
		return fmt.Errorf("safetensors: tensor %q: %w", t.Name, err)
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return fmt.Errorf("safetensors: tensor %q: shape %v overflows", t.Name, t.Shape)
		}
		n *= d
	}
	if n*int64(es) != int64(len(t.Data)) {
		return fmt.Errorf("safetensors: tensor %q: shape %v of %s needs %d bytes, has %d", t.Name, t.Shape, t.DType, n*int64(es), len(t.Data))
	}
	return nil
}

// Read decodes a safetensors stream of total size size (the size bounds
// every offset, so a hostile header cannot ask for more memory than the
// file holds).
func Read(r io.Reader, size int64) (*File, error) {
	var n [8]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	hl := binary.LittleEndian.Uint64(n[:])
	if hl > MaxHeader || int64(hl) > size-8 {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the file (%d bytes) or the %d-byte limit", hl, size, MaxHeader)
	}
	hb := make([]byte, hl)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, fmt.Errorf("safetensors: reading header: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return nil, fmt.Errorf("safetensors: header is not a JSON object: %w", err)
	}
	f := &File{}
	type named struct {
		name string
		e    entry
	}
	var es []named
	for k, v := range raw {
		if k == "__metadata__" {
			if err := json.Unmarshal(v, &f.Metadata); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var e entry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", k, err)
		}
		es = append(es, named{k, e})
	}
	slices.SortFunc(es, func(a, b named) int { return int(a.e.DataOffsets[0] - b.e.DataOffsets[0]) })
	dataSize := size - 8 - int64(hl)
	var pos int64
	for _, ne := range es {
		e := ne.e
		if e.DataOffsets[0] != pos || e.DataOffsets[1] < e.DataOffsets[0] || e.DataOffsets[1] > dataSize {
			return nil, fmt.Errorf("safetensors: tensor %q: byte range %v is not contiguous within the %d data bytes", ne.name, e.DataOffsets, dataSize)
		}
		t := Tensor{Name: ne.name, DType: e.DType, Shape: e.Shape, Data: make([]byte, e.DataOffsets[1]-e.DataOffsets[0])}
		if err := checkSize(t); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(r, t.Data); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: reading data: %w", ne.name, err)
		}
		pos = e.DataOffsets[1]
		f.Tensors = append(f.Tensors, t)
	}
	if pos != dataSize {
		return nil, fmt.Errorf("safetensors: %d trailing bytes after the last tensor", dataSize-pos)
	}
	return f, nil
}

// ReadFile reads a safetensors file.
func ReadFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	f, err := Read(bufio.NewReader(fh), st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// WriteFile writes f atomically: to a temporary file in the same folder,
// synced, then renamed over path. A crash or a full disk never leaves a
// half-written file under path.
func WriteFile(path string, f *File) error {
	return WriteAtomic(path, func(w io.Writer) error { return Write(w, f) })
}

// WriteAtomic writes path through write, atomically (see WriteFile).
func WriteAtomic(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = write(tmp); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// F32 makes a float32 tensor entry (little-endian hosts only, as libtorch).
func F32(name string, shape []int64, v []float32) Tensor {
	return Tensor{Name: name, DType: "F32", Shape: shape, Data: bytesOf(v)}
}

// I64 makes an int64 tensor entry.
func I64(name string, shape []int64, v []int64) Tensor {
	return Tensor{Name: name, DType: "I64", Shape: shape, Data: bytesOf(v)}
}

func bytesOf[E float32 | int64](v []E) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	return slices.Clone(unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*int(unsafe.Sizeof(v[0]))))
}

// Float32s returns a F32 tensor's values.
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType != "F32" {
		return nil, fmt.Errorf("tensor %q is %s, want F32", t.Name, t.DType)
	}
	return valuesOf[float32](t.Data), nil
}

// Int64s returns an I64 tensor's values.
func (t Tensor) Int64s() ([]int64, error) {
	if t.DType != "I64" {
		return nil, fmt.Errorf("tensor %q is %s, want I64", t.Name, t.DType)
	}
	return valuesOf[int64](t.Data), nil
}

func valuesOf[E float32 | int64](b []byte) []E {
	var e E
	out := make([]E, len(b)/int(unsafe.Sizeof(e)))
	if len(out) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(b)), b)
	}
	return out
}
