package app

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
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

	study study
}

// study is the form that runs one of the paper's studies as a job, and the
// running job.
type study struct {
	kind, name, archs, epsSweep string
	limit, per, epochs, points  int

	job      string
	stop     context.CancelFunc
	state    shared.JobState
	stage    string
	step     int64
	total    int64
	messages []string
	err      error
}

// args reads the form into the job's arguments.
func (s *study) args() (*shared.ExperimentArgs, error) {
	a := &shared.ExperimentArgs{Study: s.kind, Name: strings.TrimSpace(s.name), Limit: s.limit, Per: s.per, Epochs: s.epochs, Points: s.points}
	if a.Study != "conferrability" && a.Study != "fingerprint" {
		return nil, fmt.Errorf("unknown study %q", s.kind)
	}
	if a.Limit < 0 || a.Per < 1 || a.Epochs < 1 || a.Points < 1 {
		return nil, fmt.Errorf("images must be 0 or more, and models per role, epochs and start points at least 1")
	}
	for _, f := range strings.Split(s.archs, ",") {
		if f = strings.TrimSpace(f); f != "" {
			a.Archs = append(a.Archs, f)
		}
	}
	if len(a.Archs) == 0 {
		return nil, fmt.Errorf("name at least one architecture")
	}
	a.SourceArch = a.Archs[0]
	for _, f := range strings.Split(s.epsSweep, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 || v > 1 {
			return nil, fmt.Errorf("ε values must be numbers in (0, 1], not %q", f)
		}
		a.EpsSweep = append(a.EpsSweep, v)
	}
	return a, nil
}

func (x *experiments) OnMount(ctx ui.Context) {
	x.study = study{kind: "conferrability", archs: "mlp", epsSweep: "0.1,0.15", limit: 1000, per: 1, epochs: 1, points: 50}
	x.reload(ctx, "")
}

func (x *experiments) OnDismount() {
	if x.study.stop != nil {
		x.study.stop()
	}
}

// reload fetches the reports and shows report name (the first when "").
func (x *experiments) reload(ctx ui.Context, name string) {
	c := newClient("")
	fetch(ctx, func(ctx context.Context) ([]shared.ReportInfo, error) { return c.Reports(ctx) },
		func(rs []shared.ReportInfo, err error) {
			x.list, x.err = rs, err
			if err != nil || len(rs) == 0 {
				x.loaded = true
				return
			}
			if name == "" {
				name = rs[0].Name
			}
			x.show(ctx, name)
		})
}

// run starts the form's study and follows it; its report opens when it
// ends.
func (x *experiments) run(ctx ui.Context, _ ui.Event) {
	s := &x.study
	a, err := s.args()
	if s.err = err; err != nil {
		return
	}
	if s.stop != nil {
		s.stop()
	}
	s.job, s.state, s.stage, s.step, s.total, s.messages = "", shared.JobQueued, "", 0, 0, nil
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (*shared.Job, error) {
		return c.Start(ctx, shared.JobRequest{Kind: shared.JobExperiment, Experiment: a})
	}, func(j *shared.Job, err error) {
		if s.err = err; err != nil {
			s.state = ""
			return
		}
		id := j.ID
		s.job = id
		s.stop = watchJob(ctx, id, func(evs []shared.Event) {
			if s.job != id {
				return
			}
			for _, e := range evs {
				if e.Stage != "" {
					s.stage = e.Stage
				}
				if e.Total > 0 {
					s.step, s.total = e.Step, e.Total
				}
				if e.Kind == shared.State {
					s.state = e.State
				}
				if e.Kind == shared.Log || e.Kind == shared.Done {
					s.messages = append(s.messages, e.Message)
				}
			}
			if len(s.messages) > 20 {
				s.messages = s.messages[len(s.messages)-20:]
			}
		}, func(ctx ui.Context, j *shared.Job, err error) {
			if s.job != id {
				return
			}
			if err != nil {
				s.err = err
				return
			}
			s.state, s.err = j.State, jobError("the study", j)
			if s.err == nil && j.Result != nil && j.Result.Report != nil {
				x.reload(ctx, j.Result.Report.Name)
			}
		})
	})
}

// studyPanel is the study form and the running study.
func (x *experiments) studyPanel() ui.UI {
	s := &x.study
	frac := 0.0
	if s.total > 0 {
		frac = float64(s.step) / float64(s.total)
	}
	// The log, newest line first.
	log := make([]ui.UI, len(s.messages))
	for i, m := range s.messages {
		log[len(log)-1-i] = ui.Div().Text(m)
	}
	if s.state == shared.JobCompleted && s.total > 0 {
		s.step = s.total // the last progress event may come before the last step's end
	}
	busy := s.job != "" && !s.state.Final() && s.err == nil
	return ui.Div().Class("panel").ID("study").DataSet("job", s.job).DataSet("state", string(s.state)).Body(
		ui.Div().Class("form").Body(
			ui.Label().Body(ui.Text("study"), ui.Select().ID("study-kind").Body(
				ui.Option().Value("conferrability").Text("conferrability of attacks (Table 1)").Selected(s.kind == "conferrability"),
				ui.Option().Value("fingerprint").Text("fingerprints: AUC and gap (Table 2)").Selected(s.kind == "fingerprint"),
			).OnChange(ctxValue(&s.kind))),
			ui.Label().Body(ui.Text("name"), ui.Input().ID("study-name").Placeholder("optional").Value(s.name).OnChange(ctxValue(&s.name))),
			ui.Label().Body(ui.Text("architectures (first: source)"), ui.Input().ID("study-archs").Size(16).Value(s.archs).OnChange(ctxValue(&s.archs))),
			ui.Label().Body(ui.Text("models per role"), ui.Input().ID("study-per").Type("number").Min(1).Value(s.per).OnChange(ctxInt(&s.per))),
			ui.Label().Body(ui.Text("epochs"), ui.Input().ID("study-epochs").Type("number").Min(1).Value(s.epochs).OnChange(ctxInt(&s.epochs))),
			ui.Label().Body(ui.Text("images (0: all)"), ui.Input().ID("study-limit").Type("number").Min(0).Value(s.limit).OnChange(ctxInt(&s.limit))),
			ui.Label().Body(ui.Text("start points"), ui.Input().ID("study-points").Type("number").Min(1).Value(s.points).OnChange(ctxInt(&s.points))),
			ui.Label().Body(ui.Text("ε values"), ui.Input().ID("study-eps").Size(12).Value(s.epsSweep).OnChange(ctxValue(&s.epsSweep))),
			ui.Button().ID("study-run").Text("Run the study").Disabled(busy).OnClick(x.run),
		),
		errorBox(s.err),
		ui.If(s.job != "", ui.Div().Class("row").Style("margin-top", "8px").Body(
			ui.Span().Text("Job #"+s.job+" "+s.stage),
			ui.Div().Class("bar").Body(ui.Div().Style("width", pct(frac))),
			ui.Span().ID("study-progress").Text(fmt.Sprintf("%d of %d", s.step, s.total)),
			ui.Span().ID("study-state").Class("tag").Text(string(s.state)),
		)),
		ui.If(len(log) > 0, ui.Div().Class("log").Style("margin-top", "8px").Body(log...)),
	)
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
		ui.H2().Text("Run a study"),
		ui.Div().Body(ui.If(x.loaded, x.studyPanel())),
		errorBox(x.err),
		loading(x.loaded, "reports"),
		ui.H2().Text("Reports"),
		ui.Div().Body(x.chooser()),
		ui.Div().ID("report").Class("report panel").DataSet("report", x.open).Body(x.body()...),
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
			label = fmt.Sprintf("%s (%s study, committed in docs/results)", name, r.Study)
		case r.Study != "":
			label = fmt.Sprintf("%s (%s study)", name, r.Study)
		}
		opts[i] = ui.Option().Value(r.Name).Text(label).Selected(r.Name == x.open)
	}
	return ui.Div().Class("form").Body(ui.Label().Body(ui.Text("report"), ui.Select().ID("report-select").Body(opts...).
		OnChange(func(ctx ui.Context, _ ui.Event) { x.show(ctx, ctx.JSSrc().Get("value").String()) })))
}

// committedReport says whether a report is one of the repository's
// committed studies, which the server lists read-only as "results:NAME",
// and returns its name without that prefix.
func committedReport(name string) (string, bool) {
	return strings.CutPrefix(name, "results:")
}

// body is the open report: its markdown, then any plot it does not show.
func (x *experiments) body() []ui.UI {
	r, ok := x.report(x.open)
	if !ok {
		return nil
	}
	var note []ui.UI
	if _, committed := committedReport(r.Name); committed {
		note = append(note, ui.P().ID("report-committed").Class("muted small").Text(
			"A study committed with the repository (docs/results), measured with the command it names; read-only."))
	}
	resolve := func(p string) string {
		if strings.Contains(p, "://") || strings.HasPrefix(p, "/") {
			return ""
		}
		return reportFileURL(r.Name, path.Clean(p))
	}
	out := append(note, markdown(x.md, resolve)...)
	for _, f := range r.Files {
		if strings.HasSuffix(f, ".png") && !strings.Contains(x.md, "("+f+")") {
			out = append(out, ui.Figure().Body(ui.Img().Src(reportFileURL(r.Name, f)).Alt(f), ui.FigCaption().Text(f)))
		}
	}
	return out
}
