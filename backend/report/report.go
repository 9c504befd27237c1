// Package report writes experiment reports: markdown tables and PNG plots
// (line charts, ROC curves, scatter plots with a threshold, histograms),
// each with the command and seeds that reproduce it.
package report

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Series is a named sequence of points.
type Series struct {
	Name string
	X, Y []float64
}

// xys returns the points, leaving out undefined ones (NaN, ±Inf: an AUC
// without fingerprints, say).
func (s Series) xys() plotter.XYs {
	var pts plotter.XYs
	for i := range s.X {
		if math.IsNaN(s.X[i]) || math.IsNaN(s.Y[i]) || math.IsInf(s.X[i], 0) || math.IsInf(s.Y[i], 0) {
			continue
		}
		pts = append(pts, plotter.XY{X: s.X[i], Y: s.Y[i]})
	}
	return pts
}

func save(p *plot.Plot, path string) error {
	if err := p.Save(6*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("writing plot %s: %w", path, err)
	}
	return nil
}

func newPlot(title, xl, yl string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xl, yl
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// Lines plots each series as a line with points.
func Lines(path, title, xl, yl string, series []Series) error {
	p := newPlot(title, xl, yl)
	for i, s := range series {
		l, pts, err := plotter.NewLinePoints(s.xys())
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(s.Name, l, pts)
	}
	return save(p, path)
}

// ROC plots ROC curves with the diagonal of chance.
func ROC(path, title string, curves []Series) error {
	diag := Series{Name: "chance", X: []float64{0, 1}, Y: []float64{0, 1}}
	p := newPlot(title, "false-positive rate (references verified)", "true-positive rate (surrogates verified)")
	for i, s := range append(curves, diag) {
		l, err := plotter.NewLine(s.xys())
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		l.Color = plotutil.Color(i)
		if s.Name == "chance" {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
			l.Color = color.Gray{Y: 150}
		}
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1.02
	p.Legend.Top = false // the curves hug the top left; the legend goes bottom right
	return save(p, path)
}

// Scatter plots groups of points and a horizontal threshold line at y = h
// (no line when h is NaN).
func Scatter(path, title, xl, yl string, groups []Series, h float64, hName string) error {
	p := newPlot(title, xl, yl)
	for i, g := range groups {
		s, err := plotter.NewScatter(g.xys())
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		s.Color, s.Shape = plotutil.Color(i), plotutil.Shape(i)
		s.Radius = vg.Points(4)
		p.Add(s)
		p.Legend.Add(g.Name, s)
	}
	// Models cluster at high test accuracy, on the right: keep the legend
	// out of their way.
	p.Legend.Left, p.Legend.Top = true, true
	if h == h {
		p.Y.Min = 0
		xmin, xmax := p.X.Min, p.X.Max
		l, err := plotter.NewLine(plotter.XYs{{X: xmin, Y: h}, {X: xmax, Y: h}})
		if err == nil {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			p.Add(l)
			p.Legend.Add(hName, l)
		}
	}
	return save(p, path)
}

// Histogram plots the distribution of values in bins over [0,1].
// yl names what the fractions are of ("fraction of examples").
func Histogram(path, title, xl, yl string, groups []Series, bins int) error {
	p := newPlot(title, xl, yl)
	w := vg.Points(18 / float64(max(len(groups), 1)))
	for i, g := range groups {
		counts := make(plotter.Values, bins)
		for _, v := range g.Y {
			b := min(int(v*float64(bins)), bins-1)
			counts[max(b, 0)]++
		}
		for b := range counts {
			if len(g.Y) > 0 {
				counts[b] /= float64(len(g.Y))
			}
		}
		bar, err := plotter.NewBarChart(counts, w)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		bar.Color = plotutil.Color(i)
		bar.Offset = vg.Points(float64(i)*18/float64(len(groups))) - vg.Points(9)
		p.Add(bar)
		p.Legend.Add(g.Name, bar)
	}
	labels := make([]string, bins)
	format := "%.1f"
	if bins > 10 {
		format = "%.2f" // 0.05 steps would read 0.1, 0.1
	}
	for b := range labels {
		labels[b] = fmt.Sprintf(format, float64(b)/float64(bins))
	}
	p.NominalX(labels...)
	return save(p, path)
}

// Table renders a markdown table.
func Table(w io.Writer, header []string, rows [][]string) {
	fmt.Fprintf(w, "| %s |\n|", strings.Join(header, " | "))
	for range header {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

// Dir is a report folder.
type Dir string

// Path returns a file's path in the folder.
func (d Dir) Path(name string) string { return filepath.Join(string(d), name) }

// Create makes the folder.
func (d Dir) Create() error { return os.MkdirAll(string(d), 0o755) }
