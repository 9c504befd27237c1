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

// trainArchs are the architectures offered by the training form (the
// CLI's --arch).
func trainArchs() []string {
	return []string{"mlp", "cnn", "resnet20", "resnet56", "vgg16", "vgg19", "densenet", "mobilenetv2"}
}

// models lists the stored models and the training jobs, and follows one job
// live over the websocket.
type models struct {
	ui.Compo
	list   []shared.ModelInfo
	jobs   []shared.Job
	err    error
	loaded bool

	// The training form.
	name, arch, split string
	role, teacher     string
	epochs, limit     int
	recipe            string // the CLI's --recipe syntax; empty: Conferral's
	starting          bool

	// The followed job and what its events said.
	follow   string
	stop     context.CancelFunc
	curve    curve
	watchErr error
}

// curve is a training job's progress as its events tell it.
type curve struct {
	events             int
	stage              string
	state              shared.JobState
	step, total        int64
	lossX, lossY       []float64
	epochs             []float64
	trainAcc, testAcc  []float64
	lastLoss, lastTest float64
	message            string
}

// add folds one event into the curve.
func (c *curve) add(e shared.Event) {
	c.events++
	if e.Stage != "" {
		c.stage = e.Stage
	}
	if e.Total > 0 {
		c.step, c.total = e.Step, e.Total
	}
	switch e.Kind {
	case shared.Progress:
		if l, ok := e.Metrics["loss"]; ok {
			c.lossX = append(c.lossX, float64(e.Step))
			c.lossY = append(c.lossY, l)
			c.lastLoss = l
		}
	case shared.Epoch:
		// A replayed job has no step events (the server records epochs
		// only): the epoch's mean loss stands in where no step reached.
		if l, ok := e.Metrics["loss"]; ok && (len(c.lossX) == 0 || c.lossX[len(c.lossX)-1] < float64(e.Step)) {
			c.lossX, c.lossY, c.lastLoss = append(c.lossX, float64(e.Step)), append(c.lossY, l), l
		}
		c.epochs = append(c.epochs, float64(e.Epoch))
		c.trainAcc = append(c.trainAcc, metric(e.Metrics, "train_acc"))
		c.testAcc = append(c.testAcc, metric(e.Metrics, "test_acc"))
		if v, ok := e.Metrics["test_acc"]; ok {
			c.lastTest = v
		}
	case shared.State:
		c.state = e.State
		if e.Message != "" {
			c.message = e.Message
		}
	case shared.Log, shared.Done:
		if e.Message != "" {
			c.message = e.Message
		}
	}
}

func metric(m map[string]float64, k string) float64 {
	if v, ok := m[k]; ok {
		return v
	}
	return nan()
}

func (p *models) OnMount(ctx ui.Context) {
	p.arch, p.split, p.epochs, p.limit = "mlp", "defender", 1, 500
	p.refresh(ctx)
	if !ui.IsClient {
		return
	}
	// Any job's change of state refreshes the lists.
	c := newClient("")
	ctx.Async(func() {
		err := c.Events(ctx, "", func(e shared.Event) bool {
			if e.Kind == shared.State {
				ctx.Dispatch(func(ctx ui.Context) { p.refresh(ctx) })
			}
			return true
		})
		if err != nil {
			ctx.Dispatch(func(ui.Context) { p.watchErr = err })
		}
	})
}

func (p *models) OnDismount() {
	if p.stop != nil {
		p.stop()
	}
}

// refresh reloads the models and the jobs; the first time, it follows the
// newest training job.
func (p *models) refresh(ctx ui.Context) {
	c := newClient("")
	type lists struct {
		models []shared.ModelInfo
		jobs   []shared.Job
	}
	fetch(ctx, func(ctx context.Context) (lists, error) {
		ms, err := c.Models(ctx)
		if err != nil {
			return lists{}, err
		}
		js, err := c.Jobs(ctx)
		return lists{ms, js}, err
	}, func(l lists, err error) {
		p.err = err
		if err != nil {
			return
		}
		p.list, p.jobs = l.models, nil
		for _, j := range l.jobs {
			if j.Kind == shared.JobTrain || j.Kind == shared.JobDerive {
				p.jobs = append(p.jobs, j)
			}
		}
		if !p.loaded && p.follow == "" && len(p.jobs) > 0 {
			p.watch(ctx, p.jobs[0].ID)
		}
		p.loaded = true
	})
}

// watch follows job id's events, replayed from its start.
func (p *models) watch(ctx ui.Context, id string) {
	if p.stop != nil {
		p.stop()
	}
	p.follow, p.curve, p.watchErr = id, curve{}, nil
	p.stop = watchJob(ctx, id, func(evs []shared.Event) {
		if p.follow != id {
			return
		}
		for _, e := range evs {
			p.curve.add(e)
		}
	}, func(_ ui.Context, _ *shared.Job, err error) {
		if p.follow == id {
			p.watchErr = err
		}
	})
}

// request is the training job the form asks for (the server checks the
// recipe, and its epochs give way to the form's).
func (p *models) request() shared.JobRequest {
	return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{
		DataArgs: shared.DataArgs{Split: p.split, Limit: p.limit},
		Name:     p.name, Arch: p.arch, Epochs: p.epochs, Role: p.role, Teacher: p.teacher,
		Recipe: strings.TrimSpace(p.recipe),
	}}
}

func (p *models) start(ctx ui.Context, _ ui.Event) {
	p.starting, p.err = true, nil
	req := p.request()
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (*shared.Job, error) { return c.Start(ctx, req) },
		func(j *shared.Job, err error) {
			p.starting, p.err = false, err
			if err == nil {
				p.jobs = append([]shared.Job{*j}, p.jobs...)
				p.watch(ctx, j.ID)
			}
		})
}

// cancel returns a handler that cancels job id.
func (p *models) cancel(id string) ui.EventHandler {
	return func(ctx ui.Context, _ ui.Event) {
		c := newClient("")
		fetch(ctx, func(ctx context.Context) (struct{}, error) { return struct{}{}, c.Cancel(ctx, id) },
			func(_ struct{}, err error) {
				p.err = err
				p.refresh(ctx)
			})
	}
}

func (p *models) Render() ui.UI {
	return shell("/models", p.loaded,
		ui.H1().Text("Models"),
		ui.P().Class("lead").Text("The stored models with their test accuracy: sources you fingerprint, the surrogates and "+
			"references that craft and judge fingerprints, models derived by removal attacks and uploaded suspects."),
		errorBox(p.err),
		loading(p.loaded, "models"),
		ui.Div().Body(p.table()),
		ui.H2().Text("Train a model"),
		ui.Div().Class("panel").Body(p.form()),
		ui.H2().Text("Training jobs"),
		ui.Div().Body(p.jobList()),
		ui.Div().ID("job-live").Body(p.live()),
	)
}

func (p *models) table() ui.UI {
	if len(p.list) == 0 {
		return ui.If(p.loaded, ui.P().Class("muted").Text("No model is stored yet."))
	}
	ms := slices.Clone(p.list)
	slices.SortStableFunc(ms, func(a, b shared.ModelInfo) int { return b.Created.Compare(a.Created) })
	return ui.Table().ID("models-table").Body(
		ui.THead().Body(ui.Tr().Body(
			ui.Th().Text("name"), ui.Th().Text("role"), ui.Th().Text("arch"), ui.Th().Text("dataset"),
			ui.Th().Class("num").Text("test accuracy"), ui.Th().Class("num").Text("parameters"),
			ui.Th().Text("derived by"), ui.Th().Text("recipe"), ui.Th().Text("sha256"),
		)),
		ui.TBody().Body(ui.Range(ms).Slice(func(i int) ui.UI {
			m := ms[i]
			params := ""
			if m.Params > 0 {
				params = fmt.Sprintf("%.2fM", float64(m.Params)/1e6)
			}
			return ui.Tr().DataSet("model", m.ID).Body(
				ui.Td().Text(m.Name), ui.Td().Body(ui.Span().Class("tag").Text(m.Role)), ui.Td().Text(m.Arch),
				ui.Td().Text(m.Dataset), ui.Td().Class("num acc").Text(fmt.Sprintf("%.4f", m.TestAcc)),
				ui.Td().Class("num").Text(params), ui.Td().Text(m.Derivation),
				// The recipe as the CLI's --recipe takes it; long, so it may
				// wrap anywhere.
				ui.Td().Class("small recipe").Style("overflow-wrap", "anywhere").Text(m.Recipe),
				ui.Td().Class("muted small").Text(short(m.SHA256)),
			)
		})),
	)
}

func (p *models) form() ui.UI {
	teachers := []ui.UI{ui.Option().Value("").Text("none: the dataset's labels").Selected(p.teacher == "")}
	for _, m := range p.list {
		teachers = append(teachers, ui.Option().Value(m.ID).Text(m.Name+" ("+m.Arch+")").Selected(p.teacher == m.ID))
	}
	archs := trainArchs()
	opts := make([]ui.UI, len(archs))
	for i, a := range archs {
		opts[i] = ui.Option().Value(a).Text(a).Selected(a == p.arch)
	}
	return ui.Div().Class("form").Body(
		ui.Label().Body(ui.Text("name"), ui.Input().ID("train-name").Placeholder("optional").Value(p.name).
			OnChange(ctxValue(&p.name))),
		ui.Label().Body(ui.Text("architecture"), ui.Select().ID("train-arch").Body(opts...).OnChange(ctxValue(&p.arch))),
		ui.Label().Body(ui.Text("split"), ui.Select().ID("train-split").Body(
			ui.Option().Value("defender").Text("defender").Selected(p.split == "defender"),
			ui.Option().Value("adversary").Text("adversary").Selected(p.split == "adversary"),
		).OnChange(ctxValue(&p.split))),
		ui.Label().Body(ui.Text("role"), ui.Select().ID("train-role").Body(
			ui.Option().Value("").Text("source (or surrogate of a teacher)").Selected(p.role == ""),
			ui.Option().Value(shared.RoleSurrogate).Text("surrogate").Selected(p.role == shared.RoleSurrogate),
			ui.Option().Value(shared.RoleReference).Text("reference").Selected(p.role == shared.RoleReference),
			ui.Option().Value(shared.RoleTwin).Text("twin (the source's architecture and recipe, another seed)").Selected(p.role == shared.RoleTwin),
		).OnChange(ctxValue(&p.role))),
		ui.Label().Body(ui.Text("teacher (labels from)"), ui.Select().ID("train-teacher").Body(teachers...).OnChange(ctxValue(&p.teacher))),
		ui.Label().Body(ui.Text("epochs"), ui.Input().ID("train-epochs").Type("number").Min(1).Max(200).
			Value(p.epochs).OnChange(ctxInt(&p.epochs))),
		ui.Label().Body(ui.Text("images (0: all)"), ui.Input().ID("train-limit").Type("number").Min(0).
			Value(p.limit).OnChange(ctxInt(&p.limit))),
		ui.Label().Body(ui.Text("recipe"), ui.Input().ID("train-recipe").Placeholder("optional, e.g. adamw,lr=0.001,aug=none").
			Value(p.recipe).OnChange(ctxValue(&p.recipe))),
		ui.Button().ID("train-start").Text("Start training").Disabled(p.starting).OnClick(p.start),
	)
}

func (p *models) jobList() ui.UI {
	if len(p.jobs) == 0 {
		return ui.If(p.loaded, ui.P().Class("muted").Text("No training job yet."))
	}
	// A fleet names the member that runs each job; one server does not.
	fleet := slices.ContainsFunc(p.jobs, func(j shared.Job) bool { return j.Worker != "" })
	return ui.Table().ID("jobs-table").Body(
		ui.THead().Body(ui.Tr().Body(ui.Th().Text("job"), ui.Th().Text("kind"), ui.Th().Text("model"),
			ui.Th().Text("state"), ui.Th().Text("progress"), ui.If(fleet, ui.Th().Text("runs on")), ui.Th().Text(""))),
		ui.TBody().Body(ui.Range(p.jobs).Slice(func(i int) ui.UI {
			j := p.jobs[i]
			what := ""
			if a := j.Args.Train; a != nil {
				what = strings.TrimPrefix(strings.Join([]string{a.Name, a.Arch}, " "), " ")
				switch {
				case a.Epochs == 1:
					what += ", 1 epoch"
				case a.Epochs > 1:
					what += fmt.Sprintf(", %d epochs", a.Epochs)
				}
			} else if a := j.Args.Derive; a != nil {
				what = strings.TrimPrefix(a.Name+" "+a.Attack, " ")
			}
			prog := ""
			if e := j.Progress; e != nil && e.Total > 0 {
				prog = fmt.Sprintf("%d / %d", e.Step, e.Total)
			}
			id := j.ID
			return ui.Tr().DataSet("job", j.ID).Body(
				ui.Td().Text("#"+j.ID), ui.Td().Text(string(j.Kind)), ui.Td().Text(what),
				ui.Td().Class("state").Title(j.Error).Body(ui.Text(string(j.State)),
					ui.If(j.Error != "", ui.Div().Class("small error-text").Text(j.Error))),
				ui.Td().Text(prog),
				ui.If(fleet, ui.Td().Class("worker").Title(j.Host).Text(j.Worker)),
				ui.Td().Body(
					ui.Button().Class("secondary").Text("follow").OnClick(func(ctx ui.Context, _ ui.Event) { p.watch(ctx, id) }),
					ui.If(!j.State.Final(), ui.Button().Class("secondary cancel").Text("cancel").OnClick(p.cancel(id))),
				),
			)
		})),
	)
}

// live shows the followed job: its progress and loss and accuracy charts.
func (p *models) live() ui.UI {
	if p.follow == "" {
		return ui.Div()
	}
	c := p.curve
	frac := 0.0
	if c.total > 0 {
		frac = float64(c.step) / float64(c.total)
	}
	return ui.Div().Class("panel").DataSet("job", p.follow).DataSet("events", c.events).DataSet("state", string(c.state)).Body(
		ui.H2().Text("Job #"+p.follow+" "+c.stage),
		ui.Div().Class("row").Body(
			ui.Div().Class("bar").Body(ui.Div().Style("width", pct(frac))),
			ui.Span().ID("job-progress").Text(fmt.Sprintf("step %d of %d", c.step, c.total)),
			ui.Span().ID("job-state").Class("tag").Text(string(c.state)),
			ui.Span().Class("muted").Text(fmt.Sprintf("loss %.4f", c.lastLoss)),
		),
		ui.If(c.message != "", ui.P().Class("muted").Text(c.message)),
		errorBox(p.watchErr),
		ui.Div().Class("row").Body(
			ui.Raw(lineChart(chart{Title: "training loss", XLabel: "step", XInt: true, Width: 520, Height: 220,
				Series: []series{thin(series{Name: "loss", Color: "#2f6fd6", X: c.lossX, Y: c.lossY}, 400)}})),
			ui.Raw(lineChart(chart{Title: "accuracy", XLabel: "epoch", XInt: true, Width: 420, Height: 220, YMin: 0, YMax: 1,
				Series: []series{
					{Name: "train", Color: "#f2a93b", X: c.epochs, Y: c.trainAcc},
					{Name: "test", Color: "#1f8a4c", X: c.epochs, Y: c.testAcc},
				}})),
		),
	)
}

// ctxValue stores an input's value in *dst.
func ctxValue(dst *string) ui.EventHandler {
	return func(ctx ui.Context, _ ui.Event) { *dst = ctx.JSSrc().Get("value").String() }
}

// ctxInt stores an input's integer value in *dst, keeping it on bad input.
func ctxInt(dst *int) ui.EventHandler {
	return func(ctx ui.Context, _ ui.Event) {
		if v, err := strconv.Atoi(ctx.JSSrc().Get("value").String()); err == nil {
			*dst = v
		}
	}
}
