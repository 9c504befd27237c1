package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/onnx"
)

// byteSize is a flag holding a number of bytes, written as a whole number
// with an optional unit: B, KiB, MiB, GiB, TiB (powers of 1024; K, M, G and
// T mean the same) or kB, MB, GB, TB (powers of 1000), e.g. 2GiB or 512MiB.
type byteSize int64

func (b *byteSize) String() string {
	if b == nil {
		return ""
	}
	return strings.ReplaceAll(onnx.FormatBytes(int64(*b)), " ", "")
}

func (b *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// parseByteSize reads a positive byte count such as 1073741824, 1GiB or
// 1.5 GiB.
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	mult, ok := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	}[strings.ToLower(unit)]
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || num == "" {
		return 0, fmt.Errorf("%q is not a size (e.g. 1GiB, 512MiB or a number of bytes)", s)
	}
	n := v * mult
	if !(n >= 1) || n > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	return int64(n), nil
}

// onnxMemoryUsage is the help of --onnx-memory.
const onnxMemoryUsage = "memory budget of one forward pass of an ONNX model by the importer's static estimate of its intermediate values, e.g. 2GiB; a model whose single image needs more is refused before it runs, a larger batch runs in parts"

// onnxMemoryFlag defines --onnx-memory on fs (unless it is there already)
// and returns its value.
func onnxMemoryFlag(fs *flag.FlagSet) *byteSize {
	if f := fs.Lookup("onnx-memory"); f != nil {
		return f.Value.(*byteSize)
	}
	b := byteSize(onnx.DefaultMaxMemory)
	fs.Var(&b, "onnx-memory", onnxMemoryUsage)
	return &b
}

var _ flag.Value = (*byteSize)(nil)
