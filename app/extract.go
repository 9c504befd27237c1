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

// extraction is the gallery's form that crafts a new fingerprint from
// stored models (an extract job) and follows the job.
type extraction struct {
	open       bool
	name       string
	source     string
	surrogates []string
	references []string
	// twins are references of the source's own architecture and recipe,
	// other seeds (ExtractArgs.Twins): optional.
	twins []string
	// attack is how the candidates are made: shared.AttackCBIM (the
	// default) or shared.AttackNatural, the source's own errors, which
	// take none of C-BIM's settings (ε, loss, best iterate, steps, shift,
	// noise).
	attack            string
	eps, tau, tauSurr string
	candidates, loss  string
	best              bool
	steps             string
	shift, noise      string

	job        string
	jobNatural bool // the job follows natural errors: no C-BIM steps
	stop       context.CancelFunc
	state      shared.JobState
	step       int64
	total      int64
	messages   []string
	err        error
}

// defaults picks the newest source, every stored surrogate and reference
// trained on the same dataset, and every stored twin of the source's
// architecture and recipe.
func (x *extraction) defaults(ms []shared.ModelInfo) {
	// What separated best in docs/results/fingerprint-4x2-taus.
	x.eps, x.tau, x.tauSurr, x.candidates, x.steps = "0.05", "0.5", "1", "100", "50"
	x.loss, x.best = "geometric", true
	x.attack, x.shift, x.noise = shared.AttackCBIM, "0", "0" // no input diversity, as the CLI
	x.surrogates, x.references, x.twins = nil, nil, nil
	var src shared.ModelInfo
	for _, m := range ms {
		if m.Role == shared.RoleSource && x.source == "" {
			x.source, src = m.ID, m
		}
	}
	dataset := src.Dataset
	for _, m := range ms {
		if dataset != "" && m.Dataset != dataset {
			continue
		}
		switch m.Role {
		case shared.RoleSurrogate:
			x.surrogates = append(x.surrogates, m.ID)
		case shared.RoleReference:
			x.references = append(x.references, m.ID)
		case shared.RoleTwin:
			if m.Arch == src.Arch && m.Recipe != "" && m.Recipe == src.Recipe {
				x.twins = append(x.twins, m.ID)
			}
		}
	}
}

// natural says whether the form makes the source's natural errors.
func (x *extraction) natural() bool { return x.attack == shared.AttackNatural }

// The bounds of C-BIM's input diversity (attack.MaxShift and
// attack.CheckDiversity, which the WASM app cannot import).
const (
	maxShift = 8
	maxNoise = 1.0
)

// args reads the form into an extract job's arguments.
func (x *extraction) args() (*shared.ExtractArgs, error) {
	a := &shared.ExtractArgs{Name: strings.TrimSpace(x.name), Source: x.source,
		Surrogates: slices.Clone(x.surrogates), References: slices.Clone(x.references), Twins: slices.Clone(x.twins)}
	switch {
	case x.attack != "" && x.attack != shared.AttackCBIM && !x.natural():
		return nil, fmt.Errorf("make the fingerprint with C-BIM or from natural errors, not %q", x.attack)
	case a.Source == "":
		return nil, fmt.Errorf("choose a source model")
	case len(a.Surrogates) == 0 || len(a.References) == 0:
		return nil, fmt.Errorf("choose at least one surrogate and one reference (conferrability is measured on both)")
	case slices.Contains(a.Surrogates, a.Source) || slices.Contains(a.References, a.Source):
		return nil, fmt.Errorf("the source cannot also be a surrogate or a reference")
	}
	for _, id := range a.Surrogates {
		if slices.Contains(a.References, id) {
			return nil, fmt.Errorf("a model cannot be both a surrogate and a reference")
		}
	}
	for _, id := range a.Twins {
		if id == a.Source || slices.Contains(a.Surrogates, id) || slices.Contains(a.References, id) {
			return nil, fmt.Errorf("a twin cannot also be the source, a surrogate or a reference")
		}
	}
	var err error
	num := func(field, s string, lo, hi float64) float64 {
		if err != nil {
			return 0
		}
		v, perr := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if perr != nil || !(v >= lo && v <= hi) { // NaN is neither
			err = fmt.Errorf("%s must be a number from %g to %g, not %q", field, lo, hi, s)
		}
		return v
	}
	if x.natural() {
		// The candidates are inputs as they are: none of C-BIM's settings
		// apply, and none is sent.
		a.Natural = true
	} else {
		a.Eps = num("ε", x.eps, 0.001, 1)
	}
	tau := num("τ", x.tau, 0, 1)
	a.Tau = &tau
	a.TauSurr = num("τ_S", x.tauSurr, 0, 1)
	a.Candidates = int(num("start points", x.candidates, 1, 100000))
	if a.Natural {
		return a, err
	}
	a.Loss, a.BestIterate = x.loss, x.best
	a.Steps = int(num("steps", x.steps, 1, 10000))
	if s := strings.TrimSpace(x.shift); s != "" && err == nil {
		v, perr := strconv.Atoi(s)
		if perr != nil || v < 0 || v > maxShift {
			err = fmt.Errorf("shift must be a whole number of pixels from 0 to %d, not %q", maxShift, x.shift)
		}
		a.Shift = v
	}
	if strings.TrimSpace(x.noise) != "" {
		a.Noise = num("noise", x.noise, 0, maxNoise)
	}
	return a, err
}

// toggle adds id to or removes it from *list.
func toggle(list *[]string, id string, on bool) {
	i := slices.Index(*list, id)
	switch {
	case on && i < 0:
		*list = append(*list, id)
	case !on && i >= 0:
		*list = slices.Delete(*list, i, i+1)
	}
}

// startExtraction submits the form's job and follows it; when it completes,
// the gallery opens the new fingerprint.
func (g *gallery) startExtraction(ctx ui.Context, _ ui.Event) {
	x := &g.extract
	a, err := x.args()
	if x.err = err; err != nil {
		return
	}
	if x.stop != nil {
		x.stop()
	}
	x.job, x.state, x.step, x.total, x.messages = "", shared.JobQueued, 0, 0, nil
	x.jobNatural = a.Natural
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (*shared.Job, error) {
		return c.Start(ctx, shared.JobRequest{Kind: shared.JobExtract, Extract: a})
	}, func(j *shared.Job, err error) {
		if x.err = err; err != nil {
			x.state = ""
			return
		}
		x.job = j.ID
		id := j.ID
		x.stop = watchJob(ctx, id, func(evs []shared.Event) {
			if x.job != id {
				return
			}
			for _, e := range evs {
				if e.Total > 0 {
					x.step, x.total = e.Step, e.Total
				}
				if e.Kind == shared.State {
					x.state = e.State
				}
				if e.Message != "" {
					x.messages = append(x.messages, e.Message)
				}
			}
			x.messages = keepLog(x.messages)
		}, func(ctx ui.Context, j *shared.Job, err error) {
			if x.job != id {
				return
			}
			if err != nil {
				x.err = err
				return
			}
			x.state, x.err = j.State, jobError("the extraction", j)
			if x.err == nil && j.Result != nil && j.Result.Fingerprint != nil {
				g.reload(ctx, j.Result.Fingerprint.ID)
			}
		})
	})
}

// extractPanel is the form and the running extraction.
func (g *gallery) extractPanel() ui.UI {
	x := &g.extract
	if !x.open {
		return ui.P().Body(ui.Button().ID("extract-open").Class("secondary").Text("Craft a new fingerprint…").
			OnClick(func(ui.Context, ui.Event) { x.open = true }))
	}
	sources := []ui.UI{}
	for _, m := range g.models {
		sources = append(sources, ui.Option().Value(m.ID).Text(fmt.Sprintf("%s (%s, %s, %.3f)", m.Name, m.Role, m.Arch, m.TestAcc)).Selected(m.ID == x.source))
	}
	lossOpts := []ui.UI{}
	for _, l := range []string{"geometric", "linear", "ce"} { // C-BIM's objectives (attack.Losses)
		lossOpts = append(lossOpts, ui.Option().Value(l).Text(l).Selected(l == x.loss))
	}
	boxes := func(kind, title string, list *[]string) ui.UI {
		items := []ui.UI{}
		for _, m := range g.models {
			id := m.ID
			items = append(items, ui.Label().Style("flex-direction", "row").Style("gap", "4px").Body(
				ui.Input().Type("checkbox").ID("ex-"+kind+"-"+short(id)).Checked(slices.Contains(*list, id)).
					OnChange(func(ctx ui.Context, _ ui.Event) { toggle(list, id, ctx.JSSrc().Get("checked").Bool()) }),
				ui.Text(fmt.Sprintf("%s (%s, %s)", m.Name, m.Role, m.Arch))))
		}
		head := ui.B().Text(kind + "s")
		if title != "" {
			head = head.Title(title)
		}
		return ui.Div().Body(head, ui.Div().Style("display", "flex").Style("flex-direction", "column").Body(items...))
	}
	frac := 0.0
	switch {
	case x.total > 0:
		frac = float64(x.step) / float64(x.total)
	case x.state == shared.JobCompleted: // natural errors: no steps to count
		frac = 1
	}
	busy := x.job != "" && !x.state.Final() && x.err == nil
	if x.state == shared.JobCompleted && x.total > 0 {
		x.step = x.total // the last progress event may come before the last step's end
	}
	natural := x.natural()
	title, progress := "Craft a new fingerprint (C-BIM, Algorithm 2)", fmt.Sprintf("C-BIM step %d of %d", x.step, x.total)
	if natural {
		title = "Craft a new fingerprint (natural errors of the source)"
	}
	if x.jobNatural {
		progress = "scoring the source's errors on the training models"
	}
	// C-BIM's own settings: greyed out for natural errors, which take none.
	cbimOnly := "C-BIM only: natural errors are not perturbed"
	cbim := func(l ui.HTMLLabel) ui.UI {
		if natural {
			return l.Class("off").Title(cbimOnly)
		}
		return l
	}
	return ui.Div().Class("panel").ID("extract").DataSet("job", x.job).DataSet("state", string(x.state)).DataSet("attack", x.attack).Body(
		ui.H2().Text(title),
		ui.Div().Class("form").Body(
			ui.Label().Body(ui.Text("name"), ui.Input().ID("ex-name").Placeholder("optional").Value(x.name).OnChange(ctxValue(&x.name))),
			ui.Label().Body(ui.Text("source model"), ui.Select().ID("ex-source").Body(sources...).OnChange(ctxValue(&x.source))),
			ui.Label().Title("C-BIM crafts conferrable adversarial examples; natural errors are test images the source labels wrongly, unperturbed (SAC-w)").Body(
				ui.Text("examples"), ui.Select().ID("ex-attack").Body(
					ui.Option().Value(shared.AttackCBIM).Text("C-BIM adversarial examples").Selected(!natural),
					ui.Option().Value(shared.AttackNatural).Text("natural errors of the source").Selected(natural),
				).OnChange(ctxValue(&x.attack))),
			cbim(ui.Label().Body(ui.Text("ε (L∞)"), ui.Input().ID("ex-eps").Size(5).Value(x.eps).Disabled(natural).OnChange(ctxValue(&x.eps)))),
			ui.Label().Body(ui.Text("τ"), ui.Input().ID("ex-tau").Size(4).Value(x.tau).OnChange(ctxValue(&x.tau))),
			ui.Label().Title("share of the training surrogates that must carry an example's key").Body(ui.Text("τ_S"), ui.Input().ID("ex-tau-surr").Size(4).Value(x.tauSurr).OnChange(ctxValue(&x.tauSurr))),
			cbim(ui.Label().Body(ui.Text("loss"), ui.Select().ID("ex-loss").Body(lossOpts...).Disabled(natural).OnChange(ctxValue(&x.loss)))),
			cbim(ui.Label().Style("flex-direction", "row").Style("gap", "4px").Body(
				ui.Input().Type("checkbox").ID("ex-best").Checked(x.best).Disabled(natural).
					OnChange(func(ctx ui.Context, _ ui.Event) { x.best = ctx.JSSrc().Get("checked").Bool() }),
				ui.Text("best iterate"))),
			ui.Label().Body(ui.Text("start points"), ui.Input().ID("ex-candidates").Size(6).Value(x.candidates).OnChange(ctxValue(&x.candidates))),
			cbim(ui.Label().Body(ui.Text("steps"), ui.Input().ID("ex-steps").Size(5).Value(x.steps).Disabled(natural).OnChange(ctxValue(&x.steps)))),
			cbim(ui.Label().Title(fmt.Sprintf("input diversity: each C-BIM step attacks the image moved by up to this many pixels (0 to %d)", maxShift)).Body(
				ui.Text("shift"), ui.Input().ID("ex-shift").Size(3).Value(x.shift).Disabled(natural).OnChange(ctxValue(&x.shift)))),
			cbim(ui.Label().Title("input diversity: each C-BIM step adds Gaussian noise of this standard deviation (0 to 1)").Body(
				ui.Text("noise"), ui.Input().ID("ex-noise").Size(4).Value(x.noise).Disabled(natural).OnChange(ctxValue(&x.noise)))),
		),
		ui.Div().Class("row").Style("margin", "10px 0").Body(boxes("surrogate", "", &x.surrogates), boxes("reference", "", &x.references),
			boxes("twin", "optional: models of the source's own architecture and recipe, other seeds, trained without it; a key must be rare among them too", &x.twins)),
		ui.Button().ID("extract-start").Text("Craft").Disabled(busy).OnClick(g.startExtraction),
		errorBox(x.err),
		ui.If(x.job != "", ui.Div().Class("row").Style("margin-top", "8px").Body(
			ui.Span().Text("Job #"+x.job),
			ui.Div().Class("bar").Body(ui.Div().Style("width", pct(frac))),
			ui.Span().ID("extract-progress").Text(progress),
			ui.Span().ID("extract-state").Class("tag").Text(string(x.state)),
		)),
		jobLog(x.messages),
	)
}
