package app

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// experiments renders the studies' reports: their markdown tables and
// their plots. The report shown, and which of its markdown files, are the
// page's address (/experiments?report=NAME&file=FILE), so that a report's
// links to another report's markdown open it here and the browser's back
// button returns.
type experiments struct {
	ui.Compo
	list   []shared.ReportInfo
	listed bool   // list was fetched
	open   string // the report shown
	file   string // its markdown file shown
	md     string
	err    error
	loaded bool

	study study
}

func (x *experiments) OnMount(ui.Context) {
	x.study = newStudy("conferrability")
}

// OnNav shows the report the address names (the first when it names
// none), fetching the list first unless it holds that report.
func (x *experiments) OnNav(ctx ui.Context) {
	q := ctx.Page().URL().Query()
	name, file := q.Get("report"), q.Get("file")
	if _, ok := x.report(name); x.listed && ok {
		x.show(ctx, name, file)
		return
	}
	x.reload(ctx, name, file)
}

func (x *experiments) OnDismount() {
	if x.study.stop != nil {
		x.study.stop()
	}
}

// reportURL is the page's address that shows file (its main markdown when
// "") of report name.
func reportURL(name, file string) string {
	v := url.Values{"report": {name}}
	if file != "" {
		v.Set("file", file)
	}
	return "/experiments?" + v.Encode()
}

// openReport goes to report name, new since the list was fetched: the
// page's address names it, so that the address always says what is shown.
func (x *experiments) openReport(ctx ui.Context, name string) {
	to := reportURL(name, "")
	if ctx.Page().URL().RequestURI() == to {
		x.reload(ctx, name, "") // the address names it already: going there would do nothing
		return
	}
	ctx.Navigate(to) // OnNav fetches the list, which lacks it
}

// reload fetches the reports and shows file of report name (the first
// report when name is "").
func (x *experiments) reload(ctx ui.Context, name, file string) {
	c := newClient("")
	fetch(ctx, func(ctx context.Context) ([]shared.ReportInfo, error) { return c.Reports(ctx) },
		func(rs []shared.ReportInfo, err error) {
			x.list, x.err, x.listed = rs, err, err == nil
			if err != nil || len(rs) == 0 {
				x.loaded = true
				return
			}
			if name == "" {
				name = rs[0].Name
			}
			x.show(ctx, name, file)
		})
}

// report returns the listed report called name.
func (x *experiments) report(name string) (shared.ReportInfo, bool) {
	i := slices.IndexFunc(x.list, func(r shared.ReportInfo) bool { return r.Name == name })
	if i < 0 {
		return shared.ReportInfo{}, false
	}
	return x.list[i], true
}

// mainFile is the markdown file a report opens at: its README.md, or its
// first markdown file ("" when it has none).
func mainFile(r shared.ReportInfo) string {
	if slices.Contains(r.Files, "README.md") {
		return "README.md"
	}
	if i := slices.IndexFunc(r.Files, func(f string) bool { return strings.HasSuffix(f, ".md") }); i >= 0 {
		return r.Files[i]
	}
	return ""
}

// show loads the markdown file of report name (its main one when "").
func (x *experiments) show(ctx ui.Context, name, file string) {
	r, ok := x.report(name)
	if !ok {
		x.open, x.file, x.md, x.loaded = "", "", "", true
		x.err = fmt.Errorf("no report is called %q", name)
		return
	}
	if file == "" {
		file = mainFile(r)
	}
	if file != "" && (!strings.HasSuffix(file, ".md") || !slices.Contains(r.Files, file)) {
		x.err = fmt.Errorf("report %s has no markdown file %q", name, file)
		file = mainFile(r)
	} else {
		x.err = nil
	}
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (string, error) {
		if file == "" {
			return "", nil
		}
		return c.ReportFile(ctx, name, file)
	}, func(s string, err error) {
		x.open, x.file, x.md, x.loaded = name, file, s, true
		if err != nil {
			x.err = err
		}
	})
}

func (x *experiments) Render() ui.UI {
	return shell("/experiments", x.loaded,
		ui.H1().Text("Experiments"),
		ui.P().Class("lead").Text("The paper's studies at this machine's scale: how conferrable each attack's examples are "+
			"(Table 1), how well fingerprints tell surrogates from references as ε, τ and the training models change (Table 2), "+
			"and whether they survive removal attacks (Tables 4 and 5); beside them, the studies committed with the repository."),
		ui.H2().Text("Run a study"),
		ui.Div().Body(ui.If(x.loaded, x.studyPanel())),
		errorBox(x.err),
		loading(x.loaded, "reports"),
		ui.H2().Text("Reports"),
		ui.Div().Body(x.chooser()),
		ui.Div().ID("report").Class("report panel").DataSet("report", x.open).DataSet("file", x.file).Body(x.body()...),
	)
}

func (x *experiments) chooser() ui.UI {
	if len(x.list) == 0 {
		return ui.If(x.loaded && x.err == nil, ui.P().Class("muted").Text(
			"No report yet: run a study above."))
	}
	opts := make([]ui.UI, len(x.list))
	for i, r := range x.list {
		name, committed := committedReport(r.Name)
		label := name
		switch {
		case committed:
			// Its study is the top folder its name starts with
			// (levers/fleet8 is a part of levers): no need to say it twice.
			label = name + " (committed in docs/results)"
		case r.Study != "":
			label = fmt.Sprintf("%s (%s study)", name, r.Study)
		}
		opts[i] = ui.Option().Value(r.Name).Text(label).Selected(r.Name == x.open)
	}
	return ui.Div().Class("form").Body(ui.Label().Body(ui.Text("report"), ui.Select().ID("report-select").Body(opts...).
		OnChange(func(ctx ui.Context, _ ui.Event) { ctx.Navigate(reportURL(ctx.JSSrc().Get("value").String(), "")) })))
}

// committedPrefix starts the name of a committed study's report, as the
// server lists it (read-only) and names it: "results:NAME".
const committedPrefix = "results:"

// committedReport says whether a report is one of the repository's
// committed studies, which the server lists read-only as "results:NAME",
// and returns its name without that prefix.
func committedReport(name string) (string, bool) {
	return strings.CutPrefix(name, committedPrefix)
}

// resolveRef resolves p, a relative address in file of report r, against
// the listed reports: it returns the report whose folder holds the target
// most closely and the target's name in it, or false when no listed report
// has that file. A committed study (results:A) reaches its siblings
// (../B/README.md is results:B's), and a report the server lists in a
// subfolder (results:A/B, or a file B/x.png of results:A) its parent's
// links into that folder; nothing reaches outside the listed reports.
func resolveRef(list []shared.ReportInfo, r shared.ReportInfo, file, p string) (shared.ReportInfo, string, bool) {
	p, _, _ = strings.Cut(p, "#")
	if p == "" || strings.Contains(p, "://") || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?\\") {
		return shared.ReportInfo{}, "", false
	}
	ns, folder := reportFolder(r.Name)
	target := path.Join(folder, path.Dir(file), p)
	if target == ".." || strings.HasPrefix(target, "../") {
		return shared.ReportInfo{}, "", false
	}
	best, bestLen := -1, -1
	for i, q := range list {
		qns, qf := reportFolder(q.Name)
		rest, ok := strings.CutPrefix(target, qf+"/")
		if qns != ns || !ok || !slices.Contains(q.Files, rest) || len(qf) <= bestLen {
			continue
		}
		best, bestLen = i, len(qf)
	}
	if best < 0 {
		return shared.ReportInfo{}, "", false
	}
	_, qf := reportFolder(list[best].Name)
	return list[best], target[len(qf)+1:], true
}

// reportFolder splits a report's name into its kind ("results:" for a
// committed study, "" for the server's own) and its folder.
func reportFolder(name string) (ns, folder string) {
	if f, ok := committedReport(name); ok {
		return committedPrefix, f
	}
	return "", name
}

// body is the open report: the files it can switch between, its markdown,
// then any plot it does not show.
func (x *experiments) body() []ui.UI {
	r, ok := x.report(x.open)
	if !ok {
		return nil
	}
	var out []ui.UI
	if _, committed := committedReport(r.Name); committed {
		out = append(out, ui.P().ID("report-committed").Class("muted small").Text(
			"A study committed with the repository (docs/results), measured with the command it names; read-only."))
	}
	var mds []ui.UI
	for _, f := range r.Files {
		if strings.HasSuffix(f, ".md") {
			a := ui.A().Class("report-file").Href(reportURL(r.Name, f)).Text(f)
			if f == x.file {
				a = a.Class("active")
			}
			mds = append(mds, a, ui.Text(" "))
		}
	}
	if len(mds) > 2 {
		out = append(out, ui.P().ID("report-files").Class("small").Body(append([]ui.UI{ui.Text("files: ")}, mds...)...))
	}
	shown := map[string]bool{} // this report's plots the markdown shows
	image := func(p string) string {
		q, f, ok := resolveRef(x.list, r, x.file, p)
		if !ok || !strings.HasSuffix(f, ".png") {
			return ""
		}
		if q.Name == r.Name {
			shown[f] = true
		}
		return reportFileURL(q.Name, f)
	}
	link := func(p string) string {
		q, f, ok := resolveRef(x.list, r, x.file, p)
		switch {
		case !ok:
			return "" // a file the server does not serve: its name alone
		case strings.HasSuffix(f, ".md"):
			return reportURL(q.Name, f)
		}
		return reportFileURL(q.Name, f) // a plot or a committed study's plain text (COMMAND, .txt, .tsv), as the server sends it
	}
	out = append(out, markdown(x.md, image, link)...)
	if x.file != mainFile(r) {
		return out
	}
	for _, f := range r.Files {
		if strings.HasSuffix(f, ".png") && !shown[f] {
			out = append(out, ui.Figure().Body(ui.Img().Src(reportFileURL(r.Name, f)).Alt(f), ui.FigCaption().Text(f)))
		}
	}
	return out
}
