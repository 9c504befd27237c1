package app

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// verify sends a fingerprint's queries to a suspect — an uploaded ONNX file,
// a prediction endpoint or a stored model — and shows the verdict.
type verify struct {
	ui.Compo
	fps    []shared.FingerprintInfo
	models []shared.ModelInfo
	err    error
	loaded bool

	// The form.
	mode     string // upload, endpoint or model
	fp       string
	file     []byte
	fileName string
	reading  bool
	endpoint string
	protocol string
	model    string
	layout   string
	mean     string
	std      string
	scale    string
	theta    string
	// sequential asks the fingerprints in a random order and stops when
	// the calibrated SPRT decides.
	sequential bool

	// The running verification.
	job      string
	stop     context.CancelFunc
	stage    string
	step     int64
	total    int64
	state    shared.JobState
	messages []string
	verdict  *shared.Verdict
	classes  []string
	// trace is the agreement and its interval after each batch of answers
	// of a sequential verification.
	trace []tracePoint

	// history is the completed verifications, newest first.
	history []shared.Job
}

// tracePoint is the evidence after Answered answers.
type tracePoint struct {
	Answered         int64
	Accuracy, Lo, Hi float64
}

func (v *verify) OnMount(ctx ui.Context) {
	v.mode, v.protocol, v.theta = "upload", "auto", "0.7"
	c := newClient("")
	fetchCatalogue(ctx, c, func(l catalogue, err error) {
		v.fps, v.models, v.err, v.loaded = l.fps, l.models, err, true
		if len(l.fps) > 0 {
			v.fp = l.fps[0].ID
		}
		if len(l.models) > 0 {
			v.model = l.models[0].ID
		}
	})
	v.loadHistory(ctx)
}

// loadHistory fetches the completed verifications and their verdicts.
func (v *verify) loadHistory(ctx ui.Context) {
	c := newClient("")
	fetch(ctx, func(ctx context.Context) ([]shared.Job, error) { return c.Jobs(ctx) }, func(js []shared.Job, err error) {
		if err != nil {
			v.err = err
			return
		}
		v.history = v.history[:0]
		for _, j := range js {
			if j.Kind == shared.JobVerify && j.State == shared.JobCompleted && j.Result != nil && j.Result.Verdict != nil {
				v.history = append(v.history, j)
			}
		}
	})
}

// openPast shows a past verification's verdict card.
func (v *verify) openPast(j shared.Job) ui.EventHandler {
	return func(ctx ui.Context, _ ui.Event) {
		if v.stop != nil {
			v.stop()
		}
		vd := j.Result.Verdict
		v.err, v.job, v.state, v.stage, v.messages, v.trace = nil, j.ID, j.State, "verify", nil, nil
		v.verdict, v.step, v.total, v.classes = vd, int64(vd.N), int64(vd.N), nil
		// The class names, for the verdict's grid.
		c, id := newClient(""), j.ID
		load := func(ctx context.Context) (*shared.FingerprintDetail, error) {
			return c.Fingerprint(ctx, vd.Fingerprint)
		}
		fetch(ctx, load, func(d *shared.FingerprintDetail, err error) {
			if err == nil && v.job == id {
				v.classes = d.Classes
			}
		})
	}
}

// historyTable lists the past verdicts, each opening its card.
func (v *verify) historyTable() ui.UI {
	if len(v.history) == 0 {
		return ui.If(v.loaded, ui.P().Class("muted").Text("No verification has completed yet."))
	}
	fpName := map[string]string{}
	for _, f := range v.fps {
		fpName[f.ID] = f.Name
	}
	return ui.Table().ID("history-table").Body(
		ui.THead().Body(ui.Tr().Body(ui.Th().Text("job"), ui.Th().Text("suspect"), ui.Th().Text("fingerprint"),
			ui.Th().Text("outcome"), ui.Th().Class("num").Text("fingerprint accuracy"), ui.Th().Text("interval"),
			ui.Th().Class("num").Text("threshold"), ui.Th().Text("finished"), ui.Th().Text(""))),
		ui.TBody().Body(ui.Range(v.history).Slice(func(i int) ui.UI {
			j := v.history[i]
			vd := j.Result.Verdict
			fp := fpName[vd.Fingerprint]
			if fp == "" {
				fp = short(vd.Fingerprint)
			}
			when := ""
			if j.Finished != nil {
				when = j.Finished.Local().Format("2006-01-02 15:04")
			}
			return ui.Tr().DataSet("job", j.ID).DataSet("outcome", vd.Outcome).Body(
				ui.Td().Text("#"+j.ID), ui.Td().Text(vd.Suspect), ui.Td().Text(fp),
				ui.Td().Body(ui.Span().Class("tag outcome-"+vd.Outcome).Text(vd.Outcome)),
				ui.Td().Class("num").Text(fmt.Sprintf("%.2f", vd.Accuracy)),
				ui.Td().Text(fmt.Sprintf("%.2f–%.2f", vd.Interval[0], vd.Interval[1])),
				ui.Td().Class("num").Text(fmt.Sprintf("%.2f", vd.Threshold)),
				ui.Td().Class("muted small").Text(when),
				ui.Td().Body(ui.Button().Class("secondary history-open").Text("open").OnClick(v.openPast(j))),
			)
		})),
	)
}

func (v *verify) OnDismount() {
	if v.stop != nil {
		v.stop()
	}
}

// pickFile reads the chosen ONNX file into memory.
func (v *verify) pickFile(ctx ui.Context, _ ui.Event) {
	files := ctx.JSSrc().Get("files")
	if !files.Truthy() || files.Length() == 0 {
		return
	}
	f := files.Index(0)
	name, size := f.Get("name").String(), f.Get("size").Int()
	v.file, v.fileName, v.reading, v.err = nil, name, true, nil
	f.Call("arrayBuffer").Then(func(buf ui.Value) {
		b := make([]byte, size)
		n := ui.CopyBytesToGo(b, ui.Window().Get("Uint8Array").New(buf))
		ctx.Dispatch(func(ui.Context) {
			if v.fileName == name {
				v.file, v.reading = b[:n], false
			}
		})
	})
}

// run starts the verification and follows its events.
func (v *verify) run(ctx ui.Context, _ ui.Event) {
	if v.stop != nil {
		v.stop()
	}
	v.err, v.job, v.verdict, v.messages, v.state, v.step, v.total, v.stage, v.trace = nil, "", nil, nil, "", 0, 0, "", nil
	theta, err := strconv.ParseFloat(strings.TrimSpace(v.theta), 64)
	if err != nil || theta <= 0 || theta > 1 {
		v.err = fmt.Errorf("θ must be a number in (0, 1], not %q", v.theta)
		return
	}
	if v.fp == "" {
		v.err = fmt.Errorf("choose a fingerprint first")
		return
	}
	c := newClient("")
	var start func(context.Context) (*shared.Job, error)
	switch v.mode {
	case "upload":
		if v.file == nil {
			v.err = fmt.Errorf("choose an ONNX file first")
			return
		}
		fields := map[string]string{"fingerprint": v.fp, "theta": v.theta, "name": v.fileName,
			"layout": v.layout, "mean": v.mean, "std": v.std, "scale": v.scale, "sequential": strconv.FormatBool(v.sequential)}
		file, name := v.file, v.fileName
		start = func(ctx context.Context) (*shared.Job, error) { return c.VerifyUpload(ctx, name, file, fields) }
	case "endpoint":
		if strings.TrimSpace(v.endpoint) == "" {
			v.err = fmt.Errorf("enter the endpoint's URL first")
			return
		}
		a := shared.VerifyArgs{Fingerprint: v.fp, Endpoint: strings.TrimSpace(v.endpoint), Protocol: v.protocol, Theta: theta, Sequential: v.sequential}
		if v.layout != "" || strings.TrimSpace(v.scale) != "" {
			in := &shared.UploadFields{Layout: v.layout}
			if sc := strings.TrimSpace(v.scale); sc != "" {
				if in.Scale, err = strconv.ParseFloat(sc, 64); err != nil || in.Scale <= 0 {
					v.err = fmt.Errorf("the scale must be a positive number, not %q", v.scale)
					return
				}
			}
			a.Input = in
		}
		start = func(ctx context.Context) (*shared.Job, error) { return c.Verify(ctx, a) }
	default:
		a := shared.VerifyArgs{Fingerprint: v.fp, Model: v.model, Theta: theta, Sequential: v.sequential}
		start = func(ctx context.Context) (*shared.Job, error) { return c.Verify(ctx, a) }
	}
	v.state = shared.JobQueued
	fpID := v.fp
	type started struct {
		job     *shared.Job
		classes []string
	}
	fetch(ctx, func(ctx context.Context) (started, error) {
		// The class names, for the verdict's grid.
		d, err := c.Fingerprint(ctx, fpID)
		if err != nil {
			return started{}, err
		}
		j, err := start(ctx)
		return started{j, d.Classes}, err
	}, func(s started, err error) {
		if err != nil {
			v.err, v.state = err, ""
			return
		}
		v.classes = s.classes
		v.follow(ctx, s.job)
	})
}

// follow streams job j's events until it ends, then reads its verdict.
func (v *verify) follow(ctx ui.Context, j *shared.Job) {
	v.job, v.state = j.ID, j.State
	id := j.ID
	v.stop = watchJob(ctx, id, func(evs []shared.Event) {
		if v.job != id {
			return
		}
		for _, e := range evs {
			v.add(e)
		}
	}, func(ctx ui.Context, j *shared.Job, err error) {
		if v.job != id {
			return
		}
		if err != nil {
			v.err = err
			return
		}
		// The verdict is in the finished job (and in its verdict event).
		v.state = j.State
		if j.Result != nil && j.Result.Verdict != nil {
			v.add(shared.Event{Kind: shared.Verdicts, Verdict: j.Result.Verdict})
		}
		v.err = jobError("the verification", j)
		v.loadHistory(ctx)
	})
}

// add folds one event of the verification into the page.
func (v *verify) add(e shared.Event) {
	if e.Stage != "" {
		v.stage = e.Stage
	}
	if e.Total > 0 {
		v.step, v.total = e.Step, e.Total
	}
	if hi, ok := e.Metrics["hi"]; ok && e.Kind == shared.Progress {
		v.trace = append(v.trace, tracePoint{Answered: e.Step, Accuracy: e.Metrics["accuracy"], Lo: e.Metrics["lo"], Hi: hi})
	}
	switch e.Kind {
	case shared.State:
		v.state = e.State
	case shared.Verdicts:
		if e.Verdict != nil {
			v.verdict = e.Verdict
		}
	}
	if vd := v.verdict; vd != nil && v.total == 0 {
		// Every query was answered; the verdict says how many there were.
		v.step, v.total = int64(vd.N), int64(vd.N)
	}
	if e.Message != "" {
		v.messages = append(v.messages, e.Message)
		if len(v.messages) > 50 {
			v.messages = v.messages[len(v.messages)-50:]
		}
	}
}

func (v *verify) Render() ui.UI {
	return shell("/verify", v.loaded,
		ui.H1().Text("Verify a suspect"),
		ui.P().Class("lead").Text("Send a fingerprint's images to a suspect model and compare its answers with your model's. "+
			"Only labels are needed: an ONNX file, a prediction endpoint (KServe v2 or TF Serving) or a stored model."),
		loading(v.loaded, "fingerprints"),
		ui.Div().Class("panel").Body(v.form()),
		errorBox(v.err),
		ui.Div().ID("verify-progress").Body(v.progress()),
		ui.Div().ID("verdict-box").Body(v.card()),
		ui.H2().Text("Past verdicts"),
		ui.Div().ID("verify-history").Body(v.historyTable()),
	)
}

func (v *verify) form() ui.UI {
	fpOpts := make([]ui.UI, len(v.fps))
	for i, f := range v.fps {
		fpOpts[i] = ui.Option().Value(f.ID).Text(fmt.Sprintf("%s — %d examples, %s", f.Name, f.Count, fingerprintHow(f))).Selected(f.ID == v.fp)
	}
	modelOpts := make([]ui.UI, len(v.models))
	for i, m := range v.models {
		modelOpts[i] = ui.Option().Value(m.ID).Text(fmt.Sprintf("%s (%s, %s)", m.Name, m.Role, m.Arch)).Selected(m.ID == v.model)
	}
	mode := func(val, label string) ui.UI {
		return ui.Label().Style("flex-direction", "row").Style("align-items", "center").Body(
			ui.Input().Type("radio").Name("mode").ID("mode-"+val).Value(val).Checked(v.mode == val).
				OnChange(func(ctx ui.Context, _ ui.Event) { v.mode = val }),
			ui.Text(" "+label))
	}
	fileNote := "no file chosen"
	switch {
	case v.reading:
		fileNote = "reading " + v.fileName + "…"
	case v.file != nil:
		fileNote = fmt.Sprintf("%s, %d KiB", v.fileName, len(v.file)>>10)
	}
	busy := v.job != "" && !v.state.Final() && v.verdict == nil && v.err == nil || v.reading
	return ui.Div().Body(
		ui.Div().Class("form").Body(
			ui.Label().Body(ui.Text("fingerprint"), ui.Select().ID("verify-fp").Body(fpOpts...).OnChange(ctxValue(&v.fp))),
			ui.Label().Body(ui.Text("θ (threshold)"), ui.Input().ID("verify-theta").Size(5).Value(v.theta).OnChange(ctxValue(&v.theta))),
			ui.Label().Style("flex-direction", "row").Style("align-items", "center").Title("Ask the fingerprints in a random order and stop as soon as the calibrated sequential test decides: fewer queries to a paid or watchful endpoint. Needs a calibrated fingerprint.").Body(
				ui.Input().Type("checkbox").ID("verify-sequential").Checked(v.sequential).OnChange(func(ctx ui.Context, _ ui.Event) {
					v.sequential = ctx.JSSrc().Get("checked").Bool()
				}),
				ui.Text(" stop when decided (sequential)")),
		),
		ui.Div().Class("form").Style("margin", "10px 0").Body(
			mode("upload", "upload an ONNX model"), mode("endpoint", "a prediction endpoint"), mode("model", "a stored model")),
		ui.Div().Class("form").Body(
			ui.If(v.mode == "upload",
				ui.Label().Body(ui.Text("ONNX file"), ui.Input().ID("verify-file").Type("file").Accept(".onnx").OnChange(v.pickFile)),
				ui.Span().ID("verify-file-note").Class("muted small").Text(fileNote),
				v.layoutField("from the file"),
				ui.Label().Body(ui.Text("mean (per channel)"), ui.Input().ID("verify-mean").Size(8).Placeholder("none").Value(v.mean).OnChange(ctxValue(&v.mean))),
				ui.Label().Body(ui.Text("std"), ui.Input().ID("verify-std").Size(8).Placeholder("none").Value(v.std).OnChange(ctxValue(&v.std))),
				v.scaleField(),
			).ElseIf(v.mode == "endpoint",
				ui.Label().Body(ui.Text("endpoint URL"), ui.Input().ID("verify-endpoint").Size(60).
					Placeholder("http://host:8080/v2/models/NAME").Value(v.endpoint).OnChange(ctxValue(&v.endpoint))),
				ui.Label().Body(ui.Text("protocol"), ui.Select().ID("verify-protocol").Body(
					ui.Option().Value("auto").Text("from the URL").Selected(v.protocol == "auto"),
					ui.Option().Value("kserve").Text("KServe v2").Selected(v.protocol == "kserve"),
					ui.Option().Value("tfserving").Text("TF Serving").Selected(v.protocol == "tfserving"),
				).OnChange(ctxValue(&v.protocol))),
				v.layoutField("from the endpoint"),
				v.scaleField(),
			).Else(
				ui.Label().Body(ui.Text("model"), ui.Select().ID("verify-model").Body(modelOpts...).OnChange(ctxValue(&v.model))),
			),
		),
		ui.P().Body(ui.Button().ID("verify-run").Text("Verify").Disabled(busy).OnClick(v.run)),
	)
}

// layoutField chooses the suspect's input layout; "" leaves it to the
// file's metadata or the endpoint's.
func (v *verify) layoutField(auto string) ui.UI {
	return ui.Label().Body(ui.Text("input layout"), ui.Select().ID("verify-layout").Body(
		ui.Option().Value("").Text(auto).Selected(v.layout == ""),
		ui.Option().Value("nchw").Text("NCHW").Selected(v.layout == "nchw"),
		ui.Option().Value("nhwc").Text("NHWC").Selected(v.layout == "nhwc"),
	).OnChange(ctxValue(&v.layout)))
}

// scaleField sets what pixels in [0,1] are multiplied by (255 for models
// that take 0..255).
func (v *verify) scaleField() ui.UI {
	return ui.Label().Body(ui.Text("pixel scale"), ui.Input().ID("verify-scale").Size(4).Placeholder("1").Value(v.scale).OnChange(ctxValue(&v.scale)))
}

// progress shows the queries going out.
func (v *verify) progress() ui.UI {
	if v.job == "" && v.state == "" {
		return ui.Div()
	}
	frac := 0.0
	if v.total > 0 {
		frac = float64(v.step) / float64(v.total)
	}
	log := make([]ui.UI, len(v.messages))
	for i, m := range v.messages {
		log[i] = ui.Div().Text(m)
	}
	return ui.Div().Class("panel").DataSet("state", string(v.state)).Body(
		ui.Div().Class("row").Body(
			ui.Span().Text("Job #"+v.job+" "+v.stage),
			ui.Div().Class("bar").Body(ui.Div().Style("width", pct(frac))),
			ui.Span().ID("verify-queries").Text(queries(v.step, v.total, v.state)),
			ui.Span().ID("verify-state").Class("tag").Text(string(v.state)),
		),
		ui.If(len(v.trace) > 0, ui.Div().ID("verify-trace").Body(ui.Raw(traceChart(v.trace, v.total)))),
		ui.If(len(log) > 0, ui.Div().ID("verify-log").Class("log").Body(log...)),
	)
}

// traceChart draws the agreement after each batch of answers with its
// 95 % interval narrowing around it.
func traceChart(ps []tracePoint, total int64) string {
	const w, h, pad = 520.0, 160.0, 28.0
	x := func(n int64) float64 { return pad + float64(n)/float64(max(total, 1))*(w-2*pad) }
	y := func(v float64) float64 { return h - pad - math.Max(0, math.Min(1, v))*(h-2*pad) }
	var band, line strings.Builder
	for i, p := range ps {
		fmt.Fprintf(&band, "%.1f,%.1f ", x(p.Answered), y(p.Hi))
		cmd := "L"
		if i == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&line, "%s%.1f,%.1f ", cmd, x(p.Answered), y(p.Accuracy))
	}
	for i := len(ps) - 1; i >= 0; i-- {
		fmt.Fprintf(&band, "%.1f,%.1f ", x(ps[i].Answered), y(ps[i].Lo))
	}
	return fmt.Sprintf(`<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g">`+
		`<polygon points="%s" fill="#c9d3ea"/><path d="%s" fill="none" stroke="#1b2233" stroke-width="2"/>`+
		`<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#8a93a8"/><line x1="%g" x2="%g" y1="%g" y2="%g" stroke="#8a93a8"/>`+
		`<text x="%g" y="%g" text-anchor="end">1</text><text x="%g" y="%g" text-anchor="end">0</text>`+
		`<text x="%g" y="%g" text-anchor="middle">answers (of %d): agreement and its 95%% interval</text></svg>`,
		w, h, band.String(), line.String(), pad, w-pad, h-pad, h-pad, pad, pad, pad, h-pad,
		pad-4, y(1)+4, pad-4, y(0)+4, w/2, h-6, total)
}

// queries says how far the queries are.
func queries(step, total int64, state shared.JobState) string {
	switch {
	case total > 0:
		return fmt.Sprintf("%d of %d queries answered", step, total)
	case state == shared.JobRunning:
		return "querying the suspect…"
	}
	return "waiting for the queue…"
}

// card is the verdict: its outcome, the fingerprint accuracy with its
// interval against the decision threshold, the p-values of a calibrated
// verdict (none for an uncalibrated one), the grid of agreeing and
// disagreeing fingerprints, and what it means.
func (v *verify) card() ui.UI {
	vd := v.verdict
	if vd == nil {
		return ui.Div()
	}
	cls, title := "verdict unsure", "Inconclusive: the fingerprints cannot decide"
	switch vd.Outcome {
	case shared.OutcomeDerived:
		cls, title = "verdict stolen", "Derived from your model"
	case shared.OutcomeIndependent:
		cls, title = "verdict innocent", "Independent: no evidence of derivation"
	}
	cells := make([]ui.UI, len(vd.Items))
	for i, it := range vd.Items {
		c := "cell disagree"
		if it.Agree {
			c = "cell agree"
		}
		cells[i] = ui.Div().Class(c).Title(fmt.Sprintf("#%d: key %s, suspect says %s", it.Index,
			className(v.classes, it.Key), className(v.classes, it.Label))).Body(
			ui.Img().Src(itemURL(vd.Fingerprint, it.Index, "fingerprint")).Alt(fmt.Sprintf("fingerprint %d", it.Index)))
	}
	stats := []ui.UI{
		stat("fingerprint accuracy", fmt.Sprintf("%.2f", vd.Accuracy)),
		stat(fmt.Sprintf("%.0f%% interval", 100*vd.Confidence), fmt.Sprintf("%.2f–%.2f", vd.Interval[0], vd.Interval[1])),
		stat("agreeing", fmt.Sprintf("%d of %d", vd.Matches, vd.N)),
	}
	if vd.Calibrated && vd.PValue != nil && vd.EmpiricalP != nil && vd.Null != nil {
		stats = append(stats,
			stat(fmt.Sprintf("threshold at %g FPR", vd.Null.FPR), fmt.Sprintf("%.2f", vd.Threshold)),
			stat("p-value (fit)"+decides(vd.Null.Test == shared.TestFit), pvalue(*vd.PValue)),
			stat("p-value (empirical)"+decides(vd.Null.Test == shared.TestEmpirical), pvalue(*vd.EmpiricalP)),
			stat("independent models", fmt.Sprintf("%d, agreeing %.2f ± %.2f", vd.Null.Models, vd.Null.Mean, vd.Null.SD)),
		)
	} else {
		stats = append(stats, stat("threshold θ", fmt.Sprintf("%.2f", vd.Threshold)), stat("calibration", "none: no p-value"))
	}
	if q := vd.Sequential; q != nil {
		stats = append(stats, stat("queries to a decision", fmt.Sprintf("%d (SPRT: %s)", q.Used, q.Decision)))
	}
	if e := vd.Evasion; e != nil {
		stats = append(stats, evasionStat(e))
	}
	commitment := vd.Commitment
	if len(commitment) > 16 {
		commitment = commitment[:16] + "…"
	}
	rule := vd.Rule
	if len(rule) > 16 {
		rule = rule[:16] + "…"
	}
	return ui.Div().Class(cls).ID("verdict").DataSet("surrogate", vd.Surrogate).DataSet("outcome", vd.Outcome).DataSet("accuracy", fmt.Sprintf("%.4f", vd.Accuracy)).Body(
		ui.H2().ID("verdict-title").Text(title),
		ui.P().Class("muted").Text("Suspect: "+vd.Suspect),
		ui.Div().Class("stats").Body(stats...),
		evasionWarning(vd.Evasion),
		ui.Raw(accuracyBar(vd.Accuracy, vd.Interval, vd.Threshold, vd.Theta)),
		ui.P().Class("muted small").ID("verdict-provenance").Text(fmt.Sprintf("Fingerprint commitment %s · %s · decision rule %s", commitment, signerText(vd.Signer), rule)),
		ui.H2().Text("Each fingerprint: green agrees with your model, red does not"),
		ui.Div().Class("grid").Body(cells...),
		ui.H2().Text("What this means"),
		ui.P().Class("explain").Text(plainWords(vd)),
		ui.If(vd.Explanation != "", ui.P().Class("explain muted small").Text(vd.Explanation)),
	)
}

// evasionStat is a calibrated verdict's evasion check: how many of the
// suspect's wrong answers (on keys whose label is not the image's true
// class) name the true class, against the floor the check tests at.
func evasionStat(e *shared.Evasion) ui.UI {
	return ui.Div().ID("verdict-evasion").DataSet("evasive", strconv.FormatBool(e.Evasive)).Body(
		ui.B().Text(fmt.Sprintf("%d of %d", e.Truth, e.Wrong)),
		ui.Span().Class("muted small").Text(fmt.Sprintf("evasion check: wrong answers naming the true class (%s; floor %s, p = %s)",
			pct(e.Share), pct(e.Floor), pvalue(e.PValue))),
	)
}

// evasionWarning says why an evasive suspect is not cleared, and that the
// check does not accuse it either; nil where the check passed or was not
// made.
func evasionWarning(e *shared.Evasion) ui.UI {
	if e == nil || !e.Evasive {
		return nil
	}
	return ui.P().Class("warning").ID("verdict-evasive").Text(fmt.Sprintf(
		"Evasion check: only %d of the suspect's %d wrong answers name the image's true class (%s), where the calibration's independent models name it on %s "+
			"and a wrapper answering random labels on %s (p = %s against the floor of %s). Its answers look like a detect-and-evade wrapper's, "+
			"one that spots fingerprint queries and answers them with labels chosen to miss, so it is not cleared. The check never accuses: it only withholds a clearing.",
		e.Truth, e.Wrong, pct(e.Share), pct(e.Mean), pct(e.Random), pvalue(e.PValue), pct(e.Floor)))
}

// decides marks the p-value the decision rests on.
func decides(yes bool) string {
	if yes {
		return ", decides"
	}
	return ""
}

// pvalue formats a p-value, in scientific notation when tiny.
func pvalue(p float64) string {
	if p < 1e-3 {
		return fmt.Sprintf("%.1e", p)
	}
	return fmt.Sprintf("%.3f", p)
}

// plainWords says what a verdict means to someone who is not a statistician.
func plainWords(vd *shared.Verdict) string {
	s := fmt.Sprintf("The suspect gave your model's label to %d of the %d fingerprints asked (%s; with %.0f%% confidence between %s and %s).",
		vd.Matches, vd.N, pct(vd.Accuracy), 100*vd.Confidence, pct(vd.Interval[0]), pct(vd.Interval[1]))
	if !vd.Calibrated || vd.Null == nil || vd.PValue == nil {
		switch vd.Outcome {
		case shared.OutcomeDerived:
			s += fmt.Sprintf(" Even the low end is at least the paper's threshold θ = %.2f: the suspect behaves like a copy of your model.", vd.Theta)
		case shared.OutcomeIndependent:
			s += fmt.Sprintf(" Even the high end is below the paper's threshold θ = %.2f: the fingerprint does not show that it was derived from your model.", vd.Theta)
		default:
			s += fmt.Sprintf(" That range straddles the paper's threshold θ = %.2f, so the fingerprints cannot decide.", vd.Theta)
		}
		return s + " Nobody has measured how often independently trained models agree with this fingerprint, so there is no p-value and no error rate " +
			"behind this verdict: calibrate the fingerprint (conferral calibrate) with models trained without yours before acting on it."
	}
	null := fmt.Sprintf(" %d models trained without your model (%s) agreed on %s of them on average.", vd.Null.Models, strings.Join(vd.Null.Architectures, ", "), pct(vd.Null.Mean))
	switch vd.Outcome {
	case shared.OutcomeDerived:
		if vd.Null.Test == shared.TestEmpirical {
			above := int(*vd.EmpiricalP*float64(vd.Null.Models+1)+0.5) - 1 // (1 + above)/(N + 1)
			who := "none of them agreed as often"
			if above > 0 {
				who = fmt.Sprintf("only %d of them agreed as often", above)
			}
			s += null + fmt.Sprintf(" The suspect agreed on %s and %s, so it was derived from your model "+
				"(this test accuses at most %g of independent models like these).", pct(vd.Accuracy), who, vd.Null.FPR)
			break
		}
		s += null + fmt.Sprintf(" An independent model would agree this often with probability %s, so the suspect was derived from your model "+
			"(the test accuses at most %g of independent models).", pvalue(*vd.PValue), vd.Null.FPR)
	case shared.OutcomeIndependent:
		s += null + fmt.Sprintf(" Accusing would take %s or more, above everything the suspect's answers allow: no evidence that it was derived from your model.", pct(vd.Threshold))
	default:
		if e := vd.Evasion; e != nil && e.Evasive && vd.Interval[1] < min(vd.Threshold, vd.Theta) {
			s += null + fmt.Sprintf(" The suspect's whole range is below %s, which would clear it, but its wrong answers rarely name the image's true class, "+
				"as if chosen to miss the fingerprints (the evasion check): it is not cleared, and not accused either.", pct(min(vd.Threshold, vd.Theta)))
			break
		}
		s += null + fmt.Sprintf(" Accusing takes %s; clearing needs the whole range below both that and the paper's θ = %s. The suspect's range is between, so the fingerprints cannot decide. More fingerprints would narrow it.",
			pct(vd.Threshold), pct(vd.Theta))
	}
	if len(vd.Null.Warnings) > 0 {
		s += " Caution: " + strings.Join(vd.Null.Warnings, "; ") + "."
	}
	return s
}

// accuracyBar draws the fingerprint accuracy on [0,1] with its interval,
// the decision threshold and the paper's θ marked.
func accuracyBar(acc float64, interval [2]float64, threshold, theta float64) string {
	const w, h, pad = 520.0, 56.0, 10.0
	x := func(v float64) float64 { return pad + math.Max(0, math.Min(1, v))*(w-2*pad) }
	col := "#1f8a4c"
	if interval[0] >= threshold {
		col = "#c0392b"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g">`, w, h)
	fmt.Fprintf(&b, `<rect x="%g" y="8" width="%g" height="14" fill="#e6e9f2" rx="4"/>`, pad, w-2*pad)
	fmt.Fprintf(&b, `<rect x="%g" y="8" width="%g" height="14" fill="%s" rx="4"/>`, pad, x(acc)-pad, col)
	fmt.Fprintf(&b, `<line class="interval" x1="%.1f" x2="%.1f" y1="15" y2="15" stroke="#1b2233" stroke-width="3"/>`, x(interval[0]), x(interval[1]))
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="3" y2="27" stroke="#1b2233" stroke-width="2"/><text x="%.1f" y="38" text-anchor="middle">threshold %.2f</text>`,
		x(threshold), x(threshold), x(threshold), threshold)
	if theta != threshold {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="3" y2="27" stroke="#8a93a8" stroke-width="1" stroke-dasharray="3 2"/><text x="%.1f" y="52" text-anchor="middle" fill="#8a93a8">θ = %.2f</text>`,
			x(theta), x(theta), x(theta), theta)
	}
	fmt.Fprintf(&b, `<text x="%g" y="38">0</text><text x="%g" y="38" text-anchor="end">1</text></svg>`, pad, w-pad)
	return b.String()
}

// signerText says who signed a fingerprint's commitment.
func signerText(signer string) string {
	if signer == "" {
		return "unsigned"
	}
	if len(signer) > 16 {
		signer = signer[:16] + "…"
	}
	return "signed by " + signer
}
