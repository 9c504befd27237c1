package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"unsafe"

	"google.golang.org/protobuf/proto"

	pb "github.com/conferral/conferral/backend/onnx/onnxpb"
	"github.com/conferral/conferral/backend/torch"
)

// DefaultMaxBytes is the largest file Read accepts when Options.MaxBytes is 0.
const DefaultMaxBytes = 1 << 30

// freeAfter is the file size from which Read returns the file's bytes to
// the system once they are decoded.
const freeAfter = 16 << 20

// maxDepth bounds protobuf message nesting; an image classifier's graph
// needs about eight levels (model, graph, node, attribute, tensor, …), and
// subgraphs (If, Loop) are not supported anyway.
const maxDepth = 32

// Options say how to read a model and how it expects its input.
type Options struct {
	// Layout is "nchw" or "nhwc"; "" reads it from the file (metadata, or
	// the input's shape).
	Layout string
	// Mean and Std normalise the scaled input per channel (one value
	// applies to every channel); nil reads them from the file's metadata,
	// else 0 and 1.
	Mean, Std []float32
	// Scale multiplies pixels in [0,1] before normalisation (255 for models
	// that take 0..255); 0 reads it from the file, else 1.
	Scale float32
	// MaxBytes refuses larger files before reading them; 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// MaxMemory is the budget in bytes of intermediate values one forward
	// pass may hold by the importer's static estimate (MemoryEstimate), and
	// of the constants folded at load: a model whose single image is over
	// it is refused when it is read, before anything runs; a larger batch
	// over it runs in parts that fit when it records no gradients and is
	// refused otherwise. 0 means DefaultMaxMemory.
	MaxMemory int64
}

// Open reads the ONNX model in the file at path.
func Open(path string, o Options) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	m, err := Read(f, st.Size(), o)
	if err != nil {
		return nil, fmt.Errorf("%w (reading %s)", err, path)
	}
	return m, nil
}

// Read parses an ONNX model of size bytes from r, checks its graph and
// loads its weights onto the CPU. A size over o.MaxBytes is refused before
// anything is read; a reader that yields more than size bytes is refused too.
func Read(r io.Reader, size int64, o Options) (*Model, error) {
	mp, err := readProto(r, size, o.MaxBytes)
	if err != nil {
		return nil, err
	}
	return newModel(mp, o)
}

// readProto reads and decodes the ModelProto, bounded in size and depth.
func readProto(r io.Reader, size, max int64) (*pb.ModelProto, error) {
	if max <= 0 {
		max = DefaultMaxBytes
	}
	if size < 0 {
		return nil, fmt.Errorf("onnx: negative size %d", size)
	}
	if size > max {
		return nil, fmt.Errorf("onnx: file of %d bytes is over the limit of %d bytes", size, max)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("onnx: reading %d bytes: %w", size, err)
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n > 0 {
		return nil, fmt.Errorf("onnx: file is longer than the %d bytes announced", size)
	}
	if err := checkDepth(buf, maxDepth); err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	mp := &pb.ModelProto{}
	if err := (proto.UnmarshalOptions{RecursionLimit: maxDepth + 8}).Unmarshal(buf, mp); err != nil {
		return nil, fmt.Errorf("onnx: not an ONNX model: %w", err)
	}
	if size >= freeAfter {
		// The decoded model holds its own copy of every byte: give the
		// file's back to the system before the weights are copied into
		// tensors, which the Go heap cannot reuse for them, so a large
		// file costs about twice its size at its peak, not three times.
		debug.FreeOSMemory()
	}
	if mp.Graph == nil {
		return nil, errors.New("onnx: the model has no graph")
	}
	return mp, nil
}

// checkDepth scans protobuf wire format and refuses nesting deeper than
// max. Length-delimited fields are treated as messages when their bytes
// parse as one; strings and packed arrays that happen to parse are counted
// too, which errs on the side of refusing.
func checkDepth(b []byte, max int) error {
	var walk func(b []byte, depth int) bool // reports whether b parsed as a message
	var tooDeep bool
	walk = func(b []byte, depth int) bool {
		if depth > max {
			tooDeep = true
			return false
		}
		for len(b) > 0 {
			tag, n := binary.Uvarint(b)
			if n <= 0 || tag>>3 == 0 {
				return false
			}
			b = b[n:]
			switch tag & 7 {
			case 0:
				_, n := binary.Uvarint(b)
				if n <= 0 {
					return false
				}
				b = b[n:]
			case 1:
				if len(b) < 8 {
					return false
				}
				b = b[8:]
			case 5:
				if len(b) < 4 {
					return false
				}
				b = b[4:]
			case 2:
				l, n := binary.Uvarint(b)
				if n <= 0 || l > uint64(len(b)-n) {
					return false
				}
				sub := b[n : n+int(l)]
				b = b[n+int(l):]
				// Tensor payloads are large and flat: only look inside
				// small fields and ones that start like a message.
				if len(sub) > 0 && len(sub) < 1<<20 {
					walk(sub, depth+1)
					if tooDeep {
						return false
					}
				}
			default:
				return false
			}
		}
		return true
	}
	walk(b, 0)
	if tooDeep {
		return fmt.Errorf("message nesting deeper than %d levels", max)
	}
	return nil
}

// dtypeOf maps an ONNX element type onto the libtorch dtype that holds it.
func dtypeOf(t int32) (torch.DType, error) {
	switch pb.TensorProto_DataType(t) {
	case pb.TensorProto_FLOAT, pb.TensorProto_DOUBLE:
		return torch.Float32, nil
	case pb.TensorProto_INT64, pb.TensorProto_INT32, pb.TensorProto_INT16, pb.TensorProto_INT8,
		pb.TensorProto_UINT16, pb.TensorProto_UINT32, pb.TensorProto_UINT64:
		return torch.Int64, nil
	case pb.TensorProto_UINT8:
		return torch.Uint8, nil
	case pb.TensorProto_BOOL:
		return torch.Bool, nil
	}
	return 0, fmt.Errorf("element type %s is not supported", pb.TensorProto_DataType(t))
}

// littleEndian says whether this machine stores numbers as ONNX's raw
// data does.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32View is raw little-endian float32 bytes seen as float32s without
// a copy (FromSlice copies them into libtorch), or nil when the machine's
// byte order or the bytes' alignment does not allow it: a large file's
// weights then cost one copy less.
func float32View(raw []byte) []float32 {
	if !littleEndian || len(raw) < 4 || uintptr(unsafe.Pointer(&raw[0]))%unsafe.Alignof(float32(0)) != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), len(raw)/4)
}

// tensorFromProto converts a TensorProto into a CPU tensor owned by the
// caller, checking that its data matches its dims.
func tensorFromProto(tp *pb.TensorProto) (*torch.Tensor, error) {
	if tp.DataLocation == pb.TensorProto_EXTERNAL || len(tp.ExternalData) > 0 {
		return nil, fmt.Errorf("tensor %q: external data is not supported", tp.Name)
	}
	if tp.Segment != nil {
		return nil, fmt.Errorf("tensor %q: segments are not supported", tp.Name)
	}
	n := int64(1)
	for _, d := range tp.Dims {
		if d < 0 {
			return nil, fmt.Errorf("tensor %q: negative dimension %d", tp.Name, d)
		}
		if d > 0 && n > math.MaxInt32/d {
			return nil, fmt.Errorf("tensor %q: %v elements is too many", tp.Name, tp.Dims)
		}
		n *= d
	}
	dt := pb.TensorProto_DataType(tp.DataType)
	raw := tp.RawData
	count := func(have int) error {
		if int64(have) != n {
			return fmt.Errorf("tensor %q: %d values for dims %v", tp.Name, have, tp.Dims)
		}
		return nil
	}
	rawCount := func(width int) error {
		if len(raw)%width != 0 {
			return fmt.Errorf("tensor %q: %d raw bytes is not a multiple of %d", tp.Name, len(raw), width)
		}
		return count(len(raw) / width)
	}
	shape := tp.Dims
	switch dt {
	case pb.TensorProto_FLOAT, pb.TensorProto_DOUBLE:
		var v []float32
		switch {
		case raw != nil && dt == pb.TensorProto_FLOAT:
			if err := rawCount(4); err != nil {
				return nil, err
			}
			if v = float32View(raw); v == nil {
				v = make([]float32, n)
				for i := range v {
					v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
				}
			}
		case raw != nil:
			if err := rawCount(8); err != nil {
				return nil, err
			}
			v = make([]float32, n)
			for i := range v {
				v[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
			}
		case dt == pb.TensorProto_FLOAT:
			if err := count(len(tp.FloatData)); err != nil {
				return nil, err
			}
			v = tp.FloatData
		default:
			if err := count(len(tp.DoubleData)); err != nil {
				return nil, err
			}
			v = make([]float32, n)
			for i, x := range tp.DoubleData {
				v[i] = float32(x)
			}
		}
		return torch.FromSlice(nil, v, shape...), nil
	case pb.TensorProto_UINT8, pb.TensorProto_BOOL:
		v := make([]uint8, n)
		if raw != nil {
			if err := rawCount(1); err != nil {
				return nil, err
			}
			copy(v, raw)
		} else {
			if err := count(len(tp.Int32Data)); err != nil {
				return nil, err
			}
			for i, x := range tp.Int32Data {
				v[i] = uint8(x)
			}
		}
		if dt == pb.TensorProto_BOOL {
			b := make([]bool, n)
			for i, x := range v {
				b[i] = x != 0
			}
			return torch.FromSlice(nil, b, shape...), nil
		}
		return torch.FromSlice(nil, v, shape...), nil
	}
	if _, err := dtypeOf(tp.DataType); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", tp.Name, err)
	}
	// Integer types, held as int64.
	v := make([]int64, n)
	if raw != nil {
		width, signed := 8, true
		switch dt {
		case pb.TensorProto_INT32:
			width = 4
		case pb.TensorProto_INT16:
			width = 2
		case pb.TensorProto_INT8:
			width = 1
		case pb.TensorProto_UINT16:
			width, signed = 2, false
		case pb.TensorProto_UINT32:
			width, signed = 4, false
		case pb.TensorProto_UINT64:
			signed = false
		}
		if err := rawCount(width); err != nil {
			return nil, err
		}
		for i := range v {
			p := raw[width*i:]
			switch {
			case width == 8:
				v[i] = int64(binary.LittleEndian.Uint64(p))
			case width == 4 && signed:
				v[i] = int64(int32(binary.LittleEndian.Uint32(p)))
			case width == 4:
				v[i] = int64(binary.LittleEndian.Uint32(p))
			case width == 2 && signed:
				v[i] = int64(int16(binary.LittleEndian.Uint16(p)))
			case width == 2:
				v[i] = int64(binary.LittleEndian.Uint16(p))
			default:
				v[i] = int64(int8(p[0]))
			}
		}
	} else {
		switch dt {
		case pb.TensorProto_INT64:
			if err := count(len(tp.Int64Data)); err != nil {
				return nil, err
			}
			copy(v, tp.Int64Data)
		case pb.TensorProto_UINT32, pb.TensorProto_UINT64:
			if err := count(len(tp.Uint64Data)); err != nil {
				return nil, err
			}
			for i, x := range tp.Uint64Data {
				v[i] = int64(x)
			}
		default:
			if err := count(len(tp.Int32Data)); err != nil {
				return nil, err
			}
			for i, x := range tp.Int32Data {
				v[i] = int64(x)
			}
		}
	}
	return torch.FromSlice(nil, v, shape...), nil
}

// ReadTensor decodes a serialised TensorProto (the .pb files of ONNX test
// data) into a CPU tensor owned by the caller.
func ReadTensor(r io.Reader, max int64) (*torch.Tensor, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("onnx: reading tensor: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("onnx: tensor is over the limit of %d bytes", max)
	}
	tp := &pb.TensorProto{}
	if err := proto.Unmarshal(b, tp); err != nil {
		return nil, fmt.Errorf("onnx: not a TensorProto: %w", err)
	}
	t, err := tensorFromProto(tp)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	return t, nil
}

// floatList parses "0.5,0.5,0.5".
func floatList(s string) ([]float32, error) {
	var out []float32
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 32)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%q is not a finite number", f)
		}
		out = append(out, float32(v))
	}
	return out, nil
}

// ParseFloats reads a comma-separated list of numbers, as the --mean and
// --std flags give them; "" is nil.
func ParseFloats(s string) ([]float32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	v, err := floatList(s)
	if err != nil {
		return nil, fmt.Errorf("onnx: %q is not a list of numbers: %w", s, err)
	}
	return v, nil
}
