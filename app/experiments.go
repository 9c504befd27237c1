package app

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// experiments renders the studies' reports: their markdown tables and
// their plots.
type experiments struct {
	ui.Compo
	list   []shared.ReportInfo
	open   string
	md     string
	err    error
	loaded bool
}

func (x *experiments) OnMount(ctx ui.Context) {
	c := newClient("")
	fetch(ctx, func(ctx context.Context) ([]shared.ReportInfo, error) { return c.Reports(ctx) },
		func(rs []shared.ReportInfo, err error) {
			x.list, x.err = rs, err
			if err != nil || len(rs) == 0 {
				x.loaded = true
				return
			}
			x.show(ctx, rs[0].Name)
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

// show loads report name's markdown.
func (x *experiments) show(ctx ui.Context, name string) {
	r, ok := x.report(name)
	if !ok {
		return
	}
	md := slices.IndexFunc(r.Files, func(f string) bool { return strings.HasSuffix(f, ".md") })
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (string, error) {
		if md < 0 {
			return "", nil
		}
		return c.ReportFile(ctx, name, r.Files[md])
	}, func(s string, err error) {
		x.open, x.md, x.err, x.loaded = name, s, err, true
	})
}

func (x *experiments) Render() ui.UI {
	return shell("/experiments", x.loaded,
		ui.H1().Text("Experiments"),
		ui.P().Class("lead").Text("The paper's studies at this machine's scale: how conferrable each attack's examples are "+
			"(Table 1), and how well fingerprints tell surrogates from references as ε, τ and the training models change (Table 2)."),
		errorBox(x.err),
		loading(x.loaded, "reports"),
		ui.Div().Body(x.chooser()),
		ui.Div().ID("report").Class("report panel").DataSet("report", x.open).Body(x.body()...),
	)
}

func (x *experiments) chooser() ui.UI {
	if len(x.list) == 0 {
		return ui.If(x.loaded && x.err == nil, ui.P().Class("muted").Text(
			"No report yet: run `conferral experiment conferrability` or `conferral experiment fingerprint`, or start one as a job."))
	}
	opts := make([]ui.UI, len(x.list))
	for i, r := range x.list {
		label := r.Name
		if r.Study != "" {
			label = fmt.Sprintf("%s (%s study)", r.Name, r.Study)
		}
		opts[i] = ui.Option().Value(r.Name).Text(label).Selected(r.Name == x.open)
	}
	return ui.Div().Class("form").Body(ui.Label().Body(ui.Text("report"), ui.Select().ID("report-select").Body(opts...).
		OnChange(func(ctx ui.Context, _ ui.Event) { x.show(ctx, ctx.JSSrc().Get("value").String()) })))
}

// body is the open report: its markdown, then any plot it does not show.
func (x *experiments) body() []ui.UI {
	r, ok := x.report(x.open)
	if !ok {
		return nil
	}
	resolve := func(p string) string {
		if strings.Contains(p, "://") || strings.HasPrefix(p, "/") {
			return ""
		}
		return reportFileURL(r.Name, path.Clean(p))
	}
	out := markdown(x.md, resolve)
	for _, f := range r.Files {
		if strings.HasSuffix(f, ".png") && !strings.Contains(x.md, "("+f+")") {
			out = append(out, ui.Figure().Body(ui.Img().Src(reportFileURL(r.Name, f)).Alt(f), ui.FigCaption().Text(f)))
		}
	}
	return out
}
