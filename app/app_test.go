//go:build !wasm

package app

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

func TestMarkdown(t *testing.T) {
	resolve := func(p string) string {
		if strings.Contains(p, "://") {
			return ""
		}
		return "/r/" + p
	}
	cases := []struct {
		name, md string
		want     []string // substrings of the HTML, in order
		not      []string
	}{
		{"heading and paragraph", "# Title\n\nSome **bold** and `code`\nwrapped.", []string{"<h2>Title</h2>", "<p>Some <b>bold</b> and <code>code</code> wrapped.</p>"}, nil},
		{"table", "| a | b |\n|---|---:|\n| x | 0.5 |\n| **y** | 12% |\n",
			[]string{"<th>a</th>", "<td>x</td>", `<td class="num">0.5</td>`, "<td><b>y</b></td>", `<td class="num">12%</td>`}, nil},
		{"image", "![plot](roc.png)", []string{`<p><img `, `src="/r/roc.png"`}, nil},
		{"image's alt text", "![plot](roc.png)", []string{`<p><img `, `alt="plot"`}, nil}, // attributes come in any order
		{"outside image refused", "![x](https://example.com/x.png)", []string{"[image: x]"}, []string{"example.com"}},
		{"indented code", "Run:\n\n    conferral demo\n    --threads 1\n\nDone.", []string{"<pre><code>conferral demo\n--threads 1</code></pre>", "<p>Done.</p>"}, nil},
		{"fenced code", "```\n| not a table |\n```", []string{"<pre><code>| not a table |</code></pre>"}, []string{"<table"}},
		{"list and link", "- one\n- [two](b.md)\n", []string{"<ul>", "<li>one</li>", `<li><a href="/r/b.md">two</a></li>`}, nil},
		{"item over several lines", "- one\n  goes on\nlazily\n- two\n| a |\n|---|\n| b |\n",
			[]string{"<li>one goes on lazily</li>", "<li>two</li>", "</ul>", "<table"}, nil},
		{"emphasis", "*mixed* and **bold**, 2 * 3 * 4", []string{"<em>mixed</em> and <b>bold</b>, 2 * 3 * 4"}, nil},
		{"unresolved link is its text", "see [the log](run.txt)", []string{`<span `, `title="run.txt"`, `>the log</span>`}, []string{"<a"}},
		{"absolute link kept", "[paper](https://example.com/p)", []string{`<a href="https://example.com/p">paper</a>`}, nil},
		{"markup is text", "<script>alert(1)</script>", []string{"&lt;script&gt;"}, []string{"<script>"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// go-app puts each node on its own line.
			link := func(p string) string {
				if strings.HasSuffix(p, ".md") {
					return resolve(p)
				}
				return ""
			}
			html := ui.HTMLString(ui.Div().Body(markdown(c.md, resolve, link)...))
			html = strings.NewReplacer(">\n", ">", "\n<", "<").Replace(html)
			at := 0
			for _, w := range c.want {
				i := strings.Index(html[at:], w)
				if i < 0 {
					t.Fatalf("%q not found (in order) in\n%s", w, html)
				}
				at += i + len(w)
			}
			for _, n := range c.not {
				if strings.Contains(html, n) {
					t.Errorf("%q found in\n%s", n, html)
				}
			}
		})
	}
}

// svgDoc is what the tests read back from lineChart.
type svgDoc struct {
	Width     int `xml:"width,attr"`
	Polylines []struct {
		Name   string `xml:"data-name,attr"`
		Points string `xml:"points,attr"`
	} `xml:"polyline"`
	Circles []struct{} `xml:"circle"`
	Texts   []string   `xml:"text"`
}

func TestLineChart(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name             string
		c                chart
		lines, dots      int
		points           []int // points per polyline, in drawing order
		text, absentText string
	}{
		{"empty", chart{Title: "loss", Width: 300, Height: 200}, 0, 0, nil, "no data yet", ""},
		{"one point draws a dot", chart{Title: "acc", Width: 300, Height: 200, YMax: 1,
			Series: []series{{Name: "test", Color: "#000", X: []float64{1}, Y: []float64{0.5}}}}, 0, 1, nil, "test", "no data yet"},
		{"non-finite points skipped", chart{Title: "loss", Width: 300, Height: 200,
			Series: []series{{Name: "loss", Color: "#000", X: []float64{1, 2, 3, 4}, Y: []float64{2, nan, math.Inf(1), 1}}}}, 1, 2, []int{2}, "loss", ""},
		{"whole-number ticks", chart{Title: "accuracy", XLabel: "epoch", XInt: true, Width: 300, Height: 200, YMax: 1,
			Series: []series{{Name: "test", Color: "#000", X: []float64{1, 2}, Y: []float64{0.4, 0.5}}}}, 1, 2, []int{2}, "0.25|0.50|0.75|1|1|2|epoch", "1.25"},
		{"two series", chart{Title: "accuracy", Width: 300, Height: 200, YMax: 1, Series: []series{
			{Name: "train", Color: "#111", X: []float64{1, 2, 3}, Y: []float64{0.1, 0.5, 0.9}},
			{Name: "test", Color: "#222", X: []float64{1, 2, 3}, Y: []float64{0.2, 0.4, 0.8}}}}, 2, 6, []int{3, 3}, "train", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := lineChart(c.c)
			var d svgDoc
			if err := xml.Unmarshal([]byte(s), &d); err != nil {
				t.Fatalf("not XML: %v\n%s", err, s)
			}
			if d.Width != c.c.Width || len(d.Polylines) != c.lines || len(d.Circles) != c.dots {
				t.Fatalf("width %d, %d lines, %d dots; want %d, %d, %d", d.Width, len(d.Polylines), len(d.Circles), c.c.Width, c.lines, c.dots)
			}
			for i, p := range d.Polylines {
				pts := strings.Fields(p.Points)
				if len(pts) != c.points[i] {
					t.Errorf("line %s has %d points, want %d", p.Name, len(pts), c.points[i])
				}
				for _, xy := range pts {
					var x, y float64
					if _, err := fmt.Sscanf(xy, "%f,%f", &x, &y); err != nil || x < 46 || x > float64(c.c.Width) || y < 24 || y > float64(c.c.Height) {
						t.Errorf("point %q outside the plot (%v)", xy, err)
					}
				}
			}
			all := strings.Join(d.Texts, "|")
			if !strings.Contains(all, c.text) || c.absentText != "" && strings.Contains(all, c.absentText) {
				t.Errorf("texts %q: want %q, not %q", all, c.text, c.absentText)
			}
		})
	}
}

func TestGalleryFilter(t *testing.T) {
	d := &shared.FingerprintDetail{
		Models: []shared.ModelRef{{Role: shared.RoleSurrogate}, {Role: shared.RoleReference}},
		Items: []shared.FingerprintItem{
			{Index: 0, Label: 1, Target: 2, Conferrability: 0.5, Agree: []bool{true, true}},
			{Index: 1, Label: 3, Target: 2, Conferrability: 1.0, Agree: []bool{true, false}},
			{Index: 2, Label: 1, Target: 4, Conferrability: 0.75, Agree: []bool{false, false}},
		},
	}
	cases := []struct {
		name string
		f    func(*galleryFilter)
		want []int
	}{
		{"default: conferrability, highest first", func(*galleryFilter) {}, []int{1, 2, 0}},
		{"lowest first", func(f *galleryFilter) { f.Sort = "confer-asc" }, []int{0, 2, 1}},
		{"by index", func(f *galleryFilter) { f.Sort = "index" }, []int{0, 1, 2}},
		{"target", func(f *galleryFilter) { f.Target = 2 }, []int{1, 0}},
		{"original label", func(f *galleryFilter) { f.Label = 1 }, []int{2, 0}},
		{"min conferrability", func(f *galleryFilter) { f.MinConf = 0.75 }, []int{1, 2}},
		{"every surrogate agrees", func(f *galleryFilter) { f.Agree = "surrogates" }, []int{1, 0}},
		{"no reference agrees", func(f *galleryFilter) { f.Agree = "no-reference" }, []int{1, 2}},
		{"nothing matches", func(f *galleryFilter) { f.Target = 9 }, nil},
	}
	// A twin is a reference to "no reference agrees".
	withTwin := *d
	withTwin.Models = append(slices.Clone(d.Models), shared.ModelRef{Role: shared.RoleTwin})
	withTwin.Items = nil
	for i, it := range d.Items {
		it.Agree = append(slices.Clone(it.Agree), i == 1)
		withTwin.Items = append(withTwin.Items, it)
	}
	f := defaultFilter()
	f.Agree = "no-reference"
	var got []int
	for _, it := range f.apply(&withTwin) {
		got = append(got, it.Index)
	}
	if !slices.Equal(got, []int{2}) {
		t.Errorf("no reference nor twin agrees: got %v, want [2]", got)
	}
	// The card names each model's role: a twin as one.
	withTwin.Classes = []string{"a", "b", "c", "d", "e"}
	withTwin.Models[2].Arch = "mlp"
	for i := range withTwin.Items {
		withTwin.Items[i].Labels = []int64{0, 1, 2}
	}
	if card := ui.HTMLString(itemCard(&withTwin, withTwin.Items[1])); !strings.Contains(card, "twin mlp: c") || !strings.Contains(card, "(twin) says c") {
		t.Errorf("a twin's answer on the card:\n%s", card)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := defaultFilter()
			c.f(&f)
			var got []int
			for _, it := range f.apply(d) {
				got = append(got, it.Index)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestPlainWords(t *testing.T) {
	p := func(v float64) *float64 { return &v }
	null := &shared.Null{Models: 30, Architectures: []string{"cnn", "mlp"}, Mean: 0.3, SD: 0.08, FPR: 0.01, Threshold: 0.52}
	cases := []struct {
		v         shared.Verdict
		want, not []string
	}{
		{shared.Verdict{N: 100, Matches: 60, Accuracy: 0.6, Interval: [2]float64{0.5, 0.7}, Confidence: 0.95, Theta: 0.7, Threshold: 0.52,
			Outcome: shared.OutcomeDerived, Surrogate: true, PValue: p(1e-10), EmpiricalP: p(1.0 / 31), Null: null, Calibrated: true},
			[]string{"60 of the 100", "30 models trained without your model (cnn, mlp)", "1.0e-10", "was derived from your model", "at most 0.01"}, []string{"calibrate the fingerprint"}},
		{shared.Verdict{N: 100, Matches: 30, Accuracy: 0.3, Interval: [2]float64{0.21, 0.4}, Confidence: 0.95, Theta: 0.7, Threshold: 0.52,
			Outcome: shared.OutcomeIndependent, PValue: p(0.5), EmpiricalP: p(0.5), Null: null, Calibrated: true},
			[]string{"no evidence", "52.0%"}, []string{"calibrate the fingerprint"}},
		{shared.Verdict{N: 100, Matches: 50, Accuracy: 0.5, Interval: [2]float64{0.4, 0.6}, Confidence: 0.95, Theta: 0.7, Threshold: 0.52,
			Outcome: shared.OutcomeInconclusive, PValue: p(0.02), EmpiricalP: p(0.05), Null: null, Calibrated: true},
			[]string{"cannot decide", "More fingerprints"}, nil},
		// Uncalibrated: no p-value in any form, and what to do about it.
		{shared.Verdict{N: 40, Matches: 28, Accuracy: 0.7, Interval: [2]float64{0.53, 0.83}, Confidence: 0.95, Theta: 0.7, Threshold: 0.7,
			Outcome: shared.OutcomeInconclusive},
			[]string{"straddles", "no p-value", "conferral calibrate"}, []string{"probability", "e-"}},
		{shared.Verdict{N: 40, Matches: 40, Accuracy: 1, Interval: [2]float64{0.91, 1}, Confidence: 0.95, Theta: 0.7, Threshold: 0.7,
			Outcome: shared.OutcomeDerived, Surrogate: true},
			[]string{"copy of your model", "no p-value", "before acting"}, []string{"probability"}},
	}
	for _, c := range cases {
		got := plainWords(&c.v)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v: %q lacks %q", c.v, got, w)
			}
		}
		for _, w := range c.not {
			if strings.Contains(got, w) {
				t.Errorf("%+v: %q says %q", c.v, got, w)
			}
		}
	}
}

func TestCurve(t *testing.T) {
	var c curve
	for _, e := range []shared.Event{
		{Kind: shared.State, State: shared.JobRunning},
		{Kind: shared.Progress, Stage: "train mlp", Step: 1, Total: 4, Metrics: map[string]float64{"loss": 2.3}},
		{Kind: shared.Progress, Step: 2, Total: 4, Metrics: map[string]float64{"loss": 2.1}},
		{Kind: shared.Epoch, Epoch: 1, Step: 2, Total: 4, Metrics: map[string]float64{"train_acc": 0.3, "test_acc": 0.4}},
		{Kind: shared.Epoch, Epoch: 2, Step: 4, Total: 4, Metrics: map[string]float64{"train_acc": 0.5}},
		{Kind: shared.State, State: shared.JobCompleted},
	} {
		c.add(e)
	}
	if c.events != 6 || c.stage != "train mlp" || c.state != shared.JobCompleted || c.step != 4 || c.total != 4 {
		t.Errorf("curve %+v", c)
	}
	if len(c.lossY) != 2 || c.lastLoss != 2.1 || len(c.epochs) != 2 || c.lastTest != 0.4 || !math.IsNaN(c.testAcc[1]) {
		t.Errorf("series: loss %v, epochs %v, test %v", c.lossY, c.epochs, c.testAcc)
	}
}

// TestCurveReplayed: a finished job's replayed events carry epochs only
// (the server records no step events), and the loss chart takes its
// points from them instead of saying "no data yet".
func TestCurveReplayed(t *testing.T) {
	var c curve
	for _, e := range []shared.Event{
		{Kind: shared.Epoch, Epoch: 1, Step: 235, Total: 470, Metrics: map[string]float64{"loss": 0.61, "train_acc": 0.78}},
		{Kind: shared.Epoch, Epoch: 2, Step: 470, Total: 470, Metrics: map[string]float64{"loss": 0.42, "train_acc": 0.85}},
		{Kind: shared.State, State: shared.JobCompleted},
	} {
		c.add(e)
	}
	if len(c.lossY) != 2 || c.lastLoss != 0.42 || c.lossX[1] != 470 {
		t.Errorf("loss series %v at %v, last %v; want the epochs' losses", c.lossY, c.lossX, c.lastLoss)
	}
	// Live step events are not doubled by the epoch that closes them.
	var live curve
	live.add(shared.Event{Kind: shared.Progress, Step: 235, Total: 470, Metrics: map[string]float64{"loss": 0.6}})
	live.add(shared.Event{Kind: shared.Epoch, Epoch: 1, Step: 235, Total: 470, Metrics: map[string]float64{"loss": 0.61}})
	if len(live.lossY) != 1 {
		t.Errorf("live loss series %v: the epoch event added a point at a step already drawn", live.lossY)
	}
}

func TestHandler(t *testing.T) {
	web := t.TempDir()
	wasm := bytes.Repeat([]byte("\x00asm fake module "), 4096)
	if err := os.WriteFile(filepath.Join(web, "app.wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(web))
	defer srv.Close()
	empty := httptest.NewServer(Handler(t.TempDir()))
	defer empty.Close()

	get := func(base, path string, gz bool) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		} else {
			req.Header.Set("Accept-Encoding", "identity")
		}
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	cases := []struct {
		name, base, path string
		gzip             bool
		status           int
		contains         string
	}{
		{"page prerendered", srv.URL, "/fingerprints", false, 200, `data-page="fingerprints"`},
		{"stylesheet", srv.URL, "/web/app.css", false, 200, "--accent"},
		{"icon", srv.URL, "/web/icon.svg", false, 200, "<svg"},
		{"unknown asset", srv.URL, "/web/nothing.js", false, 404, ""},
		{"asset folder", srv.URL, "/web/", false, 404, ""},
		{"wasm plain", srv.URL, "/web/app.wasm", false, 200, "asm fake module"},
		{"wasm missing", empty.URL, "/web/app.wasm", true, 404, "make web"},
		{"manifest", srv.URL, "/manifest.webmanifest", false, 200, "/web/icon.png"},
		{"service worker's cache list", srv.URL, "/app-worker.js", false, 200, "/web/app.css"},
		{"loader", srv.URL, "/app.js", false, 200, "/web/app.wasm"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b := get(c.base, c.path, c.gzip)
			if resp.StatusCode != c.status || !strings.Contains(string(b), c.contains) {
				t.Errorf("%s: HTTP %d, want %d with %q:\n%.300s", c.path, resp.StatusCode, c.status, c.contains, b)
			}
			if strings.Contains(string(b), "githubusercontent") || strings.Contains(string(b), "https://") && c.path != "/web/app.wasm" {
				t.Errorf("%s points outside the app's origin:\n%.500s", c.path, b)
			}
		})
	}
	t.Run("wasm gzipped", func(t *testing.T) {
		resp, b := get(srv.URL, "/web/app.wasm", true)
		if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get(wasmLengthHeader) != strconv.Itoa(len(wasm)) || len(b) >= len(wasm) {
			t.Fatalf("headers %v, %d bytes", resp.Header, len(b))
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, wasm) {
			t.Errorf("gunzipped %d bytes (%v), want the file's %d", len(got), err, len(wasm))
		}
	})
}

func TestThin(t *testing.T) {
	mk := func(n int) series {
		s := series{Name: "loss"}
		for i := range n {
			s.X, s.Y = append(s.X, float64(i)), append(s.Y, float64(i*i))
		}
		return s
	}
	cases := []struct{ in, n, want int }{{0, 10, 0}, {5, 10, 5}, {10, 10, 10}, {1000, 400, 400}, {2350, 400, 400}}
	for _, c := range cases {
		got := thin(mk(c.in), c.n)
		if len(got.X) != c.want || len(got.Y) != c.want {
			t.Errorf("thin(%d, %d): %d points, want %d", c.in, c.n, len(got.X), c.want)
			continue
		}
		if c.want > 0 && (got.X[0] != 0 || got.X[c.want-1] != float64(c.in-1) || got.Y[c.want-1] != float64((c.in-1)*(c.in-1))) {
			t.Errorf("thin(%d, %d) lost an end: %v … %v", c.in, c.n, got.X[0], got.X[c.want-1])
		}
		if !slices.IsSorted(got.X) {
			t.Errorf("thin(%d, %d) reordered the points", c.in, c.n)
		}
	}
}

func TestExtractionForm(t *testing.T) {
	ms := []shared.ModelInfo{
		{ID: "s", Role: shared.RoleSource, Dataset: "fashion-mnist", Arch: "cnn", Recipe: "adam,epochs=1"},
		{ID: "a", Role: shared.RoleSurrogate, Dataset: "fashion-mnist"},
		{ID: "b", Role: shared.RoleReference, Dataset: "fashion-mnist"},
		{ID: "c", Role: shared.RoleReference, Dataset: "mnist"},
		{ID: "s2", Role: shared.RoleSource, Dataset: "fashion-mnist"},
		{ID: "t", Role: shared.RoleTwin, Dataset: "fashion-mnist", Arch: "cnn", Recipe: "adam,epochs=1"},
		{ID: "t2", Role: shared.RoleTwin, Dataset: "fashion-mnist", Arch: "cnn", Recipe: "sgd,epochs=1"}, // another source's twin
		{ID: "t3", Role: shared.RoleTwin, Dataset: "fashion-mnist", Arch: "mlp", Recipe: "adam,epochs=1"},
	}
	var base extraction
	base.defaults(ms)
	if base.source != "s" || !slices.Equal(base.surrogates, []string{"a"}) || !slices.Equal(base.references, []string{"b"}) || !slices.Equal(base.twins, []string{"t"}) {
		t.Fatalf("defaults: source %q, surrogates %v, references %v, twins %v", base.source, base.surrogates, base.references, base.twins)
	}
	// C-BIM's defaults; a natural extraction's keep τ, τ_S and the start
	// points and send none of C-BIM's settings.
	cbimDefaults := func(a *shared.ExtractArgs) bool {
		return a.Eps == 0.05 && a.Tau != nil && *a.Tau == 0.5 && a.TauSurr == 1 && a.Loss == "geometric" && a.BestIterate && a.Candidates == 100 &&
			a.Steps == 50 && a.Source == "s" && !a.Natural && a.Shift == 0 && a.Noise == 0 && slices.Equal(a.Twins, []string{"t"})
	}
	natural := func(a *shared.ExtractArgs) bool {
		return a.Natural && a.Eps == 0 && a.Alpha == 0 && a.Steps == 0 && a.Loss == "" && !a.BestIterate && a.Dropout == nil && a.Shift == 0 && a.Noise == 0 &&
			a.Tau != nil && *a.Tau == 0.5 && a.TauSurr == 1 && a.Candidates == 100 && a.Source == "s" &&
			slices.Equal(a.Surrogates, []string{"a"}) && slices.Equal(a.References, []string{"b"})
	}
	toNatural := func(x *extraction) { x.attack = shared.AttackNatural }
	cases := []struct {
		name string
		edit func(*extraction)
		err  string
		want func(*shared.ExtractArgs) bool // nil: cbimDefaults
	}{
		{"defaults", func(*extraction) {}, "", nil},
		{"no source", func(x *extraction) { x.source = "" }, "source", nil},
		{"no reference", func(x *extraction) { x.references = nil }, "at least one surrogate and one reference", nil},
		{"source as surrogate", func(x *extraction) { toggle(&x.surrogates, "s", true) }, "the source cannot", nil},
		{"both roles", func(x *extraction) { toggle(&x.references, "a", true) }, "both a surrogate and a reference", nil},
		{"a twin as reference", func(x *extraction) { toggle(&x.twins, "b", true) }, "a twin cannot also be", nil},
		{"the source as twin", func(x *extraction) { toggle(&x.twins, "s", true) }, "a twin cannot also be", nil},
		{"no twins", func(x *extraction) { toggle(&x.twins, "t", false) }, "", func(a *shared.ExtractArgs) bool {
			b := *a
			b.Twins = []string{"t"}
			return len(a.Twins) == 0 && cbimDefaults(&b)
		}},
		{"eps not a number", func(x *extraction) { x.eps = "big" }, "ε must be", nil},
		{"eps out of range", func(x *extraction) { x.eps = "2" }, "ε must be", nil},
		{"tau out of range", func(x *extraction) { x.tau = "-0.1" }, "τ must be", nil},
		{"tau_S out of range", func(x *extraction) { x.tauSurr = "1.5" }, "τ_S must be", nil},
		{"tau not a number", func(x *extraction) { x.tau = "NaN" }, "τ must be", nil},
		{"no start points", func(x *extraction) { x.candidates = "0" }, "start points must be", nil},
		{"toggled off and on", func(x *extraction) { toggle(&x.surrogates, "a", false); toggle(&x.surrogates, "a", true) }, "", nil},
		{"C-BIM is the default", func(x *extraction) { x.attack = "" }, "", nil},
		{"natural errors", toNatural, "", natural},
		{"natural errors ignore C-BIM's settings", func(x *extraction) {
			toNatural(x)
			x.eps, x.steps, x.loss, x.shift, x.noise = "big", "0", "ce", "99", "x"
		}, "", natural},
		{"natural errors still check τ", func(x *extraction) { toNatural(x); x.tau = "2" }, "τ must be", nil},
		{"natural errors still need a reference", func(x *extraction) { toNatural(x); x.references = nil }, "at least one surrogate and one reference", nil},
		{"unknown attack", func(x *extraction) { x.attack = "pgd" }, "C-BIM or from natural errors", nil},
		{"shift and noise", func(x *extraction) { x.shift, x.noise = " 2", "0.1" }, "", func(a *shared.ExtractArgs) bool {
			b := *a
			b.Shift, b.Noise = 0, 0
			return a.Shift == 2 && a.Noise == 0.1 && cbimDefaults(&b)
		}},
		{"blank shift and noise are off", func(x *extraction) { x.shift, x.noise = "", " " }, "", nil},
		{"shift out of range", func(x *extraction) { x.shift = "9" }, "shift must be", nil},
		{"shift not whole", func(x *extraction) { x.shift = "1.5" }, "shift must be", nil},
		{"negative shift", func(x *extraction) { x.shift = "-1" }, "shift must be", nil},
		{"noise out of range", func(x *extraction) { x.noise = "1.5" }, "noise must be", nil},
		{"noise not a number", func(x *extraction) { x.noise = "NaN" }, "noise must be", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := base
			x.surrogates, x.references, x.twins = slices.Clone(base.surrogates), slices.Clone(base.references), slices.Clone(base.twins)
			c.edit(&x)
			a, err := x.args()
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one with %q", err, c.err)
			case c.err == "" && c.want == nil && !cbimDefaults(a), c.err == "" && c.want != nil && !c.want(a):
				t.Errorf("args %+v", a)
			}
		})
	}

	// What the server reads: natural:true and none of C-BIM's settings.
	x := base
	x.attack = shared.AttackNatural
	a, err := x.args()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(shared.JobRequest{Kind: shared.JobExtract, Extract: a})
	if !strings.Contains(string(b), `"natural":true`) {
		t.Errorf("a natural extraction's request %s does not say natural", b)
	}
	for _, cbim := range []string{`"eps"`, `"steps"`, `"loss"`, `"best_iterate"`, `"shift"`, `"noise"`} {
		if strings.Contains(string(b), cbim) {
			t.Errorf("a natural extraction's request %s sends C-BIM's %s", b, cbim)
		}
	}
}

// TestTraceChart draws a sequential verification's evidence: a band from
// every point's upper end back along the lower ends, and a line through
// the agreements.
func TestTraceChart(t *testing.T) {
	ps := []tracePoint{{10, 0.8, 0.44, 0.97}, {20, 0.75, 0.51, 0.91}, {30, 0.77, 0.58, 0.9}}
	svg := traceChart(ps, 100)
	band := svg[strings.Index(svg, `points="`)+8:]
	band = band[:strings.Index(band, `"`)]
	if n := len(strings.Fields(band)); n != 2*len(ps) {
		t.Errorf("band of %d points, want %d: %s", n, 2*len(ps), band)
	}
	if strings.Count(svg, "L") < len(ps)-1 || !strings.Contains(svg, "answers (of 100)") {
		t.Errorf("chart %s", svg)
	}
}
