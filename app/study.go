package app

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// studyKind is a study the server runs as a job, and what the form calls
// it.
type studyKind struct{ kind, label string }

// studyKinds lists the studies in the form's order.
func studyKinds() []studyKind {
	return []studyKind{
		{"conferrability", "conferrability of attacks (Table 1)"},
		{"fingerprint", "fingerprints: AUC and gap (Table 2)"},
		{"robustness", "robustness to removal attacks (Tables 4 and 5)"},
	}
}

// study is the form that runs one of the paper's studies as a job, and the
// running job.
type study struct {
	kind, name, archs, epsSweep string
	limit, per, epochs, points  int
	focus                       string // the robustness study's fingerprint ε
	full                        bool   // the robustness study at full strength

	job      string
	stop     context.CancelFunc
	state    shared.JobState
	stage    string
	step     int64
	total    int64
	progress int // progress events received (replayed from the job's start)
	messages []string
	err      error
}

// newStudy is the form's setting for a study at first: a demo that ends
// in a minute or two on a laptop's CPU (one epoch of one MLP per role on
// 1,000 images).
func newStudy(kind string) study {
	s := study{kind: kind, archs: "mlp", per: 1, epochs: 1, limit: 1000, points: 50}
	switch kind {
	case "conferrability", "fingerprint":
		s.epsSweep = "0.1,0.15"
	case "robustness":
		s.points, s.focus = 100, "0.15"
	}
	return s
}

// uses says whether the study reads a field of the form: the robustness
// study sweeps no ε (the server refuses a sweep) but takes the
// fingerprint's ε.
func (s *study) uses(field string) bool {
	switch field {
	case "eps":
		return s.kind != "robustness"
	case "focus", "full":
		return s.kind == "robustness"
	}
	return true
}

// setKind switches the form to another study: a field still at the old
// study's first value takes the new one's.
func (s *study) setKind(kind string) {
	old, nu := newStudy(s.kind), newStudy(kind)
	s.kind = kind
	for _, f := range []struct{ at, was, is *int }{{&s.limit, &old.limit, &nu.limit}, {&s.per, &old.per, &nu.per},
		{&s.epochs, &old.epochs, &nu.epochs}, {&s.points, &old.points, &nu.points}} {
		if *f.at == *f.was {
			*f.at = *f.is
		}
	}
	for _, f := range []struct{ at, was, is *string }{{&s.archs, &old.archs, &nu.archs},
		{&s.epsSweep, &old.epsSweep, &nu.epsSweep}, {&s.focus, &old.focus, &nu.focus}} {
		if *f.at == *f.was {
			*f.at = *f.is
		}
	}
}

// args reads the form into the job's arguments, refusing what the server
// would refuse before anything trains.
func (s *study) args() (*shared.ExperimentArgs, error) {
	a := &shared.ExperimentArgs{Study: s.kind, Name: strings.TrimSpace(s.name), Limit: s.limit, Per: s.per, Epochs: s.epochs, Points: s.points}
	if !slices.ContainsFunc(studyKinds(), func(k studyKind) bool { return k.kind == a.Study }) {
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
	if s.uses("eps") {
		for _, f := range strings.Split(s.epsSweep, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			v, err := strconv.ParseFloat(f, 64)
			if err != nil || !(v > 0 && v <= 1) {
				return nil, fmt.Errorf("ε values must be numbers in (0, 1], not %q", f)
			}
			a.EpsSweep = append(a.EpsSweep, v)
		}
	}
	if s.uses("focus") {
		if f := strings.TrimSpace(s.focus); f != "" {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil || !(v > 0 && v <= 1) {
				return nil, fmt.Errorf("the fingerprint's ε must be a number in (0, 1], not %q", f)
			}
			a.Focus = v
		}
	}
	a.Full = s.uses("full") && s.full
	return a, nil
}

// apply takes a batch of the job's events.
func (s *study) apply(evs []shared.Event) {
	for _, e := range evs {
		if e.Stage != "" {
			s.stage = e.Stage
		}
		if e.Total > 0 {
			s.step, s.total = e.Step, e.Total
			s.progress++
		}
		if e.Kind == shared.State {
			s.state = e.State
		}
		if e.Kind == shared.Log || e.Kind == shared.Done {
			s.messages = append(s.messages, e.Message)
		}
	}
	s.messages = keepLog(s.messages)
}

// busy says whether the form's job is still running.
func (s *study) busy() bool { return s.job != "" && !s.state.Final() && s.err == nil }

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
	s.job, s.state, s.stage, s.step, s.total, s.progress, s.messages = "", shared.JobQueued, "", 0, 0, 0, nil
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
			if s.job == id {
				s.apply(evs)
			}
		}, func(ctx ui.Context, j *shared.Job, err error) {
			if s.job != id {
				return
			}
			if err != nil {
				s.err = err
				return
			}
			s.state = j.State
			if j.State != shared.JobCancelled { // a cancel is what was asked: no error
				s.err = jobError("the study", j)
			}
			if s.err == nil && j.Result != nil && j.Result.Report != nil {
				x.openReport(ctx, j.Result.Report.Name)
			}
		})
	})
}

// cancel asks the server to stop the form's job; the watch sees it end.
func (x *experiments) cancel(ctx ui.Context, _ ui.Event) {
	s := &x.study
	id := s.job
	if id == "" {
		return
	}
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, c.Cancel(ctx, id) },
		func(_ struct{}, err error) {
			if s.job == id && err != nil {
				s.err = err
			}
		})
}

// studyPanel is the study form and the running study.
func (x *experiments) studyPanel() ui.UI {
	s := &x.study
	if s.state == shared.JobCompleted && s.total > 0 {
		s.step = s.total // the last progress event may come before the last step's end
	}
	frac := 0.0
	if s.total > 0 {
		frac = float64(s.step) / float64(s.total)
	}
	kinds := make([]ui.UI, 0, 3)
	for _, k := range studyKinds() {
		kinds = append(kinds, ui.Option().Value(k.kind).Text(k.label).Selected(s.kind == k.kind))
	}
	busy := s.busy()
	return ui.Div().Class("panel").ID("study").DataSet("kind", s.kind).DataSet("job", s.job).DataSet("state", string(s.state)).
		DataSet("progress", s.progress).Body(
		ui.Div().Class("form").Body(
			ui.Label().Body(ui.Text("study"), ui.Select().ID("study-kind").Body(kinds...).
				OnChange(func(ctx ui.Context, _ ui.Event) { s.setKind(ctx.JSSrc().Get("value").String()) })),
			ui.Label().Body(ui.Text("name"), ui.Input().ID("study-name").Placeholder("optional").Value(s.name).OnChange(ctxValue(&s.name))),
			ui.Label().Body(ui.Text("architectures (first: source)"), ui.Input().ID("study-archs").Size(16).Value(s.archs).OnChange(ctxValue(&s.archs))),
			ui.Label().Body(ui.Text("models per role"), ui.Input().ID("study-per").Type("number").Min(1).Value(s.per).OnChange(ctxInt(&s.per))),
			ui.Label().Body(ui.Text("epochs"), ui.Input().ID("study-epochs").Type("number").Min(1).Value(s.epochs).OnChange(ctxInt(&s.epochs))),
			ui.Label().Body(ui.Text("images (0: all)"), ui.Input().ID("study-limit").Type("number").Min(0).Value(s.limit).OnChange(ctxInt(&s.limit))),
			ui.Label().Body(ui.Text("start points"), ui.Input().ID("study-points").Type("number").Min(1).Value(s.points).OnChange(ctxInt(&s.points))),
			ui.If(s.uses("eps"), ui.Label().Body(ui.Text("ε values"), ui.Input().ID("study-eps").Size(12).Value(s.epsSweep).OnChange(ctxValue(&s.epsSweep)))),
			ui.If(s.uses("focus"), ui.Label().Body(ui.Text("fingerprint ε"), ui.Input().ID("study-focus").Size(6).Value(s.focus).OnChange(ctxValue(&s.focus)))),
			ui.If(s.uses("full"), ui.Label().Style("flex-direction", "row").Style("align-items", "center").
				Title("Train Ensemble, Knockoff, Papernot and pruning along budgets of epochs until within 5 points of the source, and add fine-pruning, PGD-AT, TRADES and the combined attacks: hours on a CPU.").Body(
				ui.Input().Type("checkbox").ID("study-full").Checked(s.full).OnChange(func(ctx ui.Context, _ ui.Event) {
					s.full = ctx.JSSrc().Get("checked").Bool()
				}),
				ui.Text(" full strength (hours)"))),
			ui.Button().ID("study-run").Text("Run the study").Disabled(busy).OnClick(x.run),
			ui.If(busy && s.job != "", ui.Button().ID("study-cancel").Class("secondary").Text("Cancel").OnClick(x.cancel)),
		),
		ui.If(s.kind == "robustness", ui.P().Class("muted small").Text(
			"Trains the fleet, extracts a fingerprint (at the ε above) from its training models, then derives a model from the "+
				"source by each removal attack of the study's plan (Tables 4 and 5, and those beyond the paper) for the epochs above, "+
				"and measures each one's fingerprint accuracy against its test accuracy.")),
		errorBox(s.err),
		ui.If(s.job != "", ui.Div().Class("row").Style("margin-top", "8px").Body(
			ui.Span().Text("Job #"+s.job+" "+s.stage),
			ui.Div().Class("bar").Body(ui.Div().Style("width", pct(frac))),
			ui.Span().ID("study-progress").Text(fmt.Sprintf("%d of %d", s.step, s.total)),
			ui.Span().ID("study-state").Class("tag").Text(string(s.state)),
		)),
		jobLog(s.messages),
	)
}
