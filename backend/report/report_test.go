package report

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"
)

// TestPlotsArePNGs writes every kind of plot, undefined points included,
// and decodes the result.
func TestPlotsArePNGs(t *testing.T) {
	dir := Dir(t.TempDir())
	s := []Series{
		{Name: "a", X: []float64{0.05, 0.1, 0.15}, Y: []float64{0.2, math.NaN(), 0.4}},
		{Name: "b", X: []float64{0.05, 0.1, 0.15}, Y: []float64{0.1, 0.2, 0.3}},
	}
	cases := map[string]func(path string) error{
		"lines.png": func(p string) error { return Lines(p, "t", "x", "y", s) },
		"roc.png": func(p string) error {
			return ROC(p, "roc", []Series{{Name: "r", X: []float64{0, 0.5, 1}, Y: []float64{0, 1, 1}}})
		},
		"scatter.png": func(p string) error { return Scatter(p, "s", "x", "y", s, 0.7, "θ") },
		"hist.png": func(p string) error {
			return Histogram(p, "h", "v", "fraction", []Series{{Name: "a", Y: []float64{0, 0.5, 1, 1}}, {Name: "b", Y: []float64{0.2}}}, 10)
		},
	}
	for name, write := range cases {
		t.Run(name, func(t *testing.T) {
			path := dir.Path(name)
			if err := write(path); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 200 {
				t.Errorf("plot is only %v", r)
			}
		})
	}
}

func TestTable(t *testing.T) {
	var b strings.Builder
	Table(&b, []string{"a", "b"}, [][]string{{"1", "2"}, {"3", "4"}})
	want := "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
