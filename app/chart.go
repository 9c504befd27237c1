package app

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// series is one line of a chart.
type series struct {
	Name, Color string
	X, Y        []float64
}

// chart describes a line chart drawn as SVG by lineChart.
type chart struct {
	Title  string
	XLabel string
	// XInt puts x ticks on whole numbers only (steps, epochs).
	XInt          bool
	Width, Height int
	// YMin and YMax fix the y range when YMax > YMin (accuracy: 0..1);
	// otherwise it is fitted to the data.
	YMin, YMax float64
	Series     []series
}

// lineChart draws c as a standalone SVG element: axes with four ticks each,
// one polyline (and a dot per point, so single points show) per series, and
// a legend. Non-finite points are skipped.
func lineChart(c chart) string {
	w, h := float64(c.Width), float64(c.Height)
	const left, right, top, bottom = 46.0, 12.0, 24.0, 30.0
	pw, ph := w-left-right, h-top-bottom
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for i := range min(len(s.X), len(s.Y)) {
			x, y := s.X[i], s.Y[i]
			if !finite(x) || !finite(y) {
				continue
			}
			xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	empty := xmin > xmax
	if empty {
		xmin, xmax, ymin, ymax = 0, 1, 0, 1
	}
	if c.YMax > c.YMin {
		ymin, ymax = c.YMin, c.YMax
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	if ymax == ymin {
		ymin, ymax = ymin-0.5, ymax+0.5
	}
	px := func(x float64) float64 { return left + (x-xmin)/(xmax-xmin)*pw }
	py := func(y float64) float64 { return top + (1-(y-ymin)/(ymax-ymin))*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		c.Width, c.Height, c.Width, c.Height, html.EscapeString(c.Title))
	fmt.Fprintf(&b, `<text x="%g" y="15" style="font-weight:600;fill:#1b2233">%s</text>`, left, html.EscapeString(c.Title))
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#dde1ec"/>`, left, top, pw, ph)
	for i := 0; i <= 4; i++ {
		y := ymin + (ymax-ymin)*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#eef0f5"/>`, left, left+pw, py(y), py(y))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end">%s</text>`, left-4, py(y)+4, tick(y))
	}
	lastTick := math.NaN()
	for i := 0; i <= 4; i++ {
		x := xmin + (xmax-xmin)*float64(i)/4
		if c.XInt {
			if x = math.Round(x); x == lastTick || x < xmin || x > xmax {
				continue
			}
			lastTick = x
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`, px(x), top+ph+14, tick(x))
	}
	if c.XLabel != "" {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`, left+pw/2, h-3, html.EscapeString(c.XLabel))
	}
	if empty {
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">no data yet</text>`, left+pw/2, top+ph/2)
	}
	lx := left + pw
	for i := len(c.Series) - 1; i >= 0; i-- {
		s := c.Series[i]
		var pts []string
		for j := range min(len(s.X), len(s.Y)) {
			if finite(s.X[j]) && finite(s.Y[j]) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[j]), py(s.Y[j])))
			}
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline class="series" data-name="%s" fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`,
				html.EscapeString(s.Name), s.Color, strings.Join(pts, " "))
		}
		if len(pts) <= 40 {
			for _, p := range pts {
				x, y, _ := strings.Cut(p, ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`, x, y, s.Color)
			}
		}
		// Legend, right-aligned above the plot.
		label := html.EscapeString(s.Name)
		lx -= float64(len(s.Name))*6.2 + 22
		fmt.Fprintf(&b, `<rect x="%.1f" y="7" width="10" height="10" fill="%s"/><text x="%.1f" y="16">%s</text>`, lx, s.Color, lx+13, label)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// thin keeps at most n points of s, evenly spaced, always the last one: a
// chart a few hundred pixels wide shows no more.
func thin(s series, n int) series {
	m := min(len(s.X), len(s.Y))
	if m <= n || n < 2 {
		return s
	}
	out := series{Name: s.Name, Color: s.Color, X: make([]float64, 0, n), Y: make([]float64, 0, n)}
	for i := range n {
		j := i * (m - 1) / (n - 1)
		out.X, out.Y = append(out.X, s.X[j]), append(out.Y, s.Y[j])
	}
	return out
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// tick formats an axis value briefly.
func tick(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 10 || v == math.Trunc(v):
		return fmt.Sprintf("%.4g", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func nan() float64 { return math.NaN() }
