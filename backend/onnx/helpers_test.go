package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/torch"
)

func TestMain(m *testing.M) {
	torch.SetNumThreads(min(runtime.NumCPU(), 2))
	os.Exit(m.Run())
}

// readNpy reads a little-endian float32 or int64 .npy file in C order.
func readNpy(t *testing.T, path string) (f32 []float32, i64 []int64, shape []int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 10 || string(b[1:6]) != "NUMPY" {
		t.Fatalf("%s: not an npy file", path)
	}
	var hl, off int
	if b[6] == 1 {
		hl, off = int(binary.LittleEndian.Uint16(b[8:])), 10
	} else {
		hl, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	}
	header := string(b[off : off+hl])
	data := b[off+hl:]
	if strings.Contains(header, "'fortran_order': True") {
		t.Fatalf("%s: Fortran order", path)
	}
	m := regexp.MustCompile(`'shape': \(([^)]*)\)`).FindStringSubmatch(header)
	if m == nil {
		t.Fatalf("%s: no shape in %q", path, header)
	}
	for _, f := range strings.Split(m[1], ",") {
		if f = strings.TrimSpace(f); f != "" {
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			shape = append(shape, v)
		}
	}
	switch {
	case strings.Contains(header, "'<f4'"):
		f32 = make([]float32, len(data)/4)
		for i := range f32 {
			f32[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case strings.Contains(header, "'<i8'"):
		i64 = make([]int64, len(data)/8)
		for i := range i64 {
			i64[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
	default:
		t.Fatalf("%s: dtype in %q not supported", path, header)
	}
	return f32, i64, shape
}

// allClose compares got with want elementwise: |g−w| ≤ atol + rtol·|w|.
func allClose(got, want []float32, atol, rtol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	worst, at := 0.0, -1
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(w) && math.IsNaN(g) || math.IsInf(w, 0) && g == w {
			continue
		}
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return fmt.Errorf("element %d is %v, want %v", i, g, w)
		}
		d := math.Abs(g-w) / (atol + rtol*math.Abs(w))
		if d > worst {
			worst, at = d, i
		}
	}
	if worst > 1 {
		return fmt.Errorf("element %d: got %v, want %v (%.3g× the tolerance)", at, got[at], want[at], worst)
	}
	return nil
}

// maxAbsDiff is the largest |got−want|.
func maxAbsDiff(got, want []float32) float64 {
	m := 0.0
	for i := range got {
		m = max(m, math.Abs(float64(got[i])-float64(want[i])))
	}
	return m
}
