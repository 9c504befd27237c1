package app

import (
	"fmt"
	"slices"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// The names `conferral demo --serve` gives its jobs (cmd/conferral/demo.go):
// the story on the home page is told from them.
const (
	storySourceName      = "source"
	storyFingerprintName = "demo fingerprint"
	// The demo's second fingerprint: the source's own mistakes
	// (FingerprintInfo.Attack shared.AttackNatural), verified like C-BIM's.
	storyNaturalName = "demo natural fingerprint"
)

// Prefixes of the demo fleet's model names, by role.
var (
	storyFleetPrefixes     = []string{"train-surrogate-", "train-reference-", "calibration-"}
	storyAdversaryPrefixes = []string{"test-surrogate-", "test-reference-"}
)

// Step keys, in the story's order.
const (
	stepSource    = "source"
	stepFleet     = "fleet"
	stepCBIM      = "cbim"
	stepNatural   = "natural" // only where the demo made one
	stepAdversary = "adversary"
	stepVerify    = "verify"
)

// storyStep is one step of the demo's story with its jobs' progress.
type storyStep struct {
	Key, Title, Why string
	Jobs            []shared.Job
	// Done and Failed count the step's finished jobs; Frac is the step's
	// share of work done, from its jobs' progress.
	Done, Failed int
	Frac         float64
	Unit         string // what one job makes: "model", "fingerprint", "verdict"
}

// State is waiting (no job yet), running, done or failed.
func (s storyStep) State() string {
	switch {
	case len(s.Jobs) == 0:
		return "waiting"
	case s.Failed > 0:
		return "failed"
	case s.Done == len(s.Jobs):
		return "done"
	}
	return "running"
}

// Count says how many of the step's jobs are done, in its unit.
func (s storyStep) Count() string {
	if len(s.Jobs) == 0 {
		return "not started"
	}
	unit := s.Unit
	if len(s.Jobs) != 1 {
		unit += "s"
	}
	return fmt.Sprintf("%d of %d %s", s.Done, len(s.Jobs), unit)
}

// demoStory is the demo's jobs sorted into its steps.
type demoStory struct {
	Steps []storyStep
	// Source is the source's training job, Extract the extraction's (nil
	// before it is queued).
	Source  *shared.Job
	Extract *shared.Job
	// Natural is the natural fingerprint's extraction (nil where the demo
	// made none), NaturalVerify its verifications of the story's suspects.
	Natural       *shared.Job
	NaturalVerify []shared.Job
	// Derived says, per adversary model ID, whether it is a surrogate of
	// the source (so a verdict on it should say derived); Names are those
	// models' names.
	Derived map[string]bool
	Names   map[string]string
}

// Fingerprint is the story's fingerprint once C-BIM has made it.
func (d *demoStory) Fingerprint() *shared.FingerprintInfo {
	if d.Extract == nil || d.Extract.Result == nil {
		return nil
	}
	return d.Extract.Result.Fingerprint
}

// Running says whether some job of the story has not ended, or a step is
// still to come.
func (d *demoStory) Running() bool {
	for _, s := range d.Steps {
		if st := s.State(); st == "waiting" || st == "running" {
			return true
		}
	}
	return false
}

// storyVerdict is a verdict on one of the adversary's models.
type storyVerdict struct {
	Model   string // the suspect's model ID
	Verdict shared.Verdict
}

// Verdicts are the verdicts with C-BIM's fingerprint, in the order of
// their jobs.
func (d *demoStory) Verdicts() []storyVerdict {
	fp := d.Fingerprint()
	if fp == nil {
		return nil
	}
	return verdictsOf(d.Steps[len(d.Steps)-1].Jobs, fp.ID)
}

// NaturalVerdicts are the verdicts with the natural fingerprint.
func (d *demoStory) NaturalVerdicts() []storyVerdict {
	fp := d.NaturalFingerprint()
	if fp == nil {
		return nil
	}
	return verdictsOf(d.NaturalVerify, fp.ID)
}

// NaturalFingerprint is the story's natural fingerprint once made.
func (d *demoStory) NaturalFingerprint() *shared.FingerprintInfo {
	if d.Natural == nil || d.Natural.Result == nil {
		return nil
	}
	return d.Natural.Result.Fingerprint
}

func verdictsOf(jobs []shared.Job, fp string) []storyVerdict {
	var out []storyVerdict
	for _, j := range jobs {
		if a := j.Args.Verify; j.Result != nil && j.Result.Verdict != nil && a != nil && a.Fingerprint == fp {
			out = append(out, storyVerdict{a.Model, *j.Result.Verdict})
		}
	}
	return out
}

// Truth is what a verdict on model id should say: derived for the
// adversary's surrogates, independent for its references.
func (d *demoStory) Truth(id string) string {
	if d.Derived[id] {
		return shared.OutcomeDerived
	}
	return shared.OutcomeIndependent
}

// findStory tells the newest demo's story from jobs (GET /api/jobs, newest
// first), with live holding the latest progress event of each job, newer
// than the list's; ok is false when no job of a demo is there.
func findStory(jobs []shared.Job, live map[string]shared.Event) (d demoStory, ok bool) {
	src := slices.IndexFunc(jobs, func(j shared.Job) bool {
		return j.Kind == shared.JobTrain && j.Args.Train != nil && j.Args.Train.Name == storySourceName
	})
	if src < 0 {
		return demoStory{}, false
	}
	d.Source = &jobs[src]
	d.Derived, d.Names = map[string]bool{}, map[string]string{}
	// The story's jobs came after its source: oldest first from here.
	var fleet, adversary, extract, natural, verify []shared.Job
	for i := src; i >= 0; i-- {
		j := jobs[i]
		switch {
		case i == src:
		case j.Kind == shared.JobTrain && j.Args.Train != nil && hasPrefix(j.Args.Train.Name, storyFleetPrefixes):
			fleet = append(fleet, j)
		case j.Kind == shared.JobTrain && j.Args.Train != nil && hasPrefix(j.Args.Train.Name, storyAdversaryPrefixes):
			adversary = append(adversary, j)
			if j.Result != nil && len(j.Result.Models) > 0 {
				m := j.Result.Models[0]
				d.Derived[m.ID] = strings.HasPrefix(j.Args.Train.Name, "test-surrogate-")
				d.Names[m.ID] = j.Args.Train.Name
			}
		case j.Kind == shared.JobExtract && j.Args.Extract != nil && j.Args.Extract.Name == storyFingerprintName && j.Args.Extract.Source == storyModel(d.Source):
			extract = []shared.Job{j} // the newest one
		case j.Kind == shared.JobExtract && j.Args.Extract != nil && j.Args.Extract.Name == storyNaturalName && j.Args.Extract.Source == storyModel(d.Source):
			natural = []shared.Job{j}
		}
	}
	if len(extract) > 0 {
		d.Extract = &extract[0]
	}
	if len(natural) > 0 {
		d.Natural = &natural[0]
	}
	// The suspects' verifications, with either fingerprint: all of them
	// are step 5's work.
	fps := map[string]bool{}
	if fp := d.Fingerprint(); fp != nil {
		fps[fp.ID] = true
	}
	nfp := d.NaturalFingerprint()
	if nfp != nil {
		fps[nfp.ID] = true
	}
	for i := src; i >= 0 && len(fps) > 0; i-- {
		j := jobs[i]
		if a := j.Args.Verify; j.Kind == shared.JobVerify && a != nil && fps[a.Fingerprint] {
			if _, ours := d.Derived[a.Model]; ours {
				verify = append(verify, j)
				if nfp != nil && a.Fingerprint == nfp.ID {
					d.NaturalVerify = append(d.NaturalVerify, j)
				}
			}
		}
	}
	d.Steps = []storyStep{
		step(stepSource, "1. The source model", "model", []shared.Job{*d.Source}, live,
			"The defender trains the source model on its half of the training set (the paper splits it between defender and adversary, §6.1). "+
				"This is the model whose theft is to be proved later, from its labels alone."),
		step(stepFleet, "2. The defender's fleet", "model", fleet, live,
			"To learn which adversarial examples only copies inherit, the defender plays both sides: surrogates retrained on the source's labels, "+
				"as a thief would distil it, and references trained on the true labels without it, over several architectures. Calibration models, "+
				"trained without the source as well and never shown to C-BIM, will measure how often independent models agree with the fingerprint by chance."),
		step(stepCBIM, "3. C-BIM crafts the fingerprint", "fingerprint", extract, live,
			"C-BIM (Algorithm 2) perturbs held-out images within ε so that the surrogates take the source's new label and the references do not. "+
				"Examples that pass are conferrable: they transfer to models derived from the source, not to independent ones; the source's label is each one's key. "+
				"The calibration models' agreement then sets the accusing threshold at a chosen false-positive rate."),
	}
	if d.Natural != nil {
		d.Steps = append(d.Steps, step(stepNatural, "3b. A second fingerprint: the source's own mistakes", "fingerprint", natural, live,
			"Beside C-BIM's, the defender keeps held-out images that the source itself gets wrong, unperturbed, with the source's wrong label as each one's key. "+
				"A copy learns its teacher's mistakes, so it repeats them more often than an independent model does; the calibration models again set the threshold. "+
				"This second fingerprint (after SAC-w, Guan et al. 2022) is Conferral's addition, not the paper's; its verdicts on the same suspects appear here as verification reaches them."))
	}
	d.Steps = append(d.Steps,
		step(stepAdversary, "4. The adversary's models", "model", adversary, live,
			"The adversary trains its own models on the other half of the data, which the fingerprint never saw: surrogates stolen by retraining "+
				"on the source's labels, and references trained independently."),
		step(stepVerify, "5. Verification", "verdict", verify, live,
			"Each suspect is asked only for its labels of the fingerprints (Algorithm 1). Its fingerprint accuracy, with a 95 % Clopper–Pearson interval, "+
				"is judged against the calibrated threshold: at or above it the suspect is derived; with the whole interval below it (and below θ, where derived models agree) independent; otherwise inconclusive."),
	)
	return d, true
}

// storyModel is the model a training job made, or "".
func storyModel(j *shared.Job) string {
	if j == nil || j.Result == nil || len(j.Result.Models) == 0 {
		return ""
	}
	return j.Result.Models[0].ID
}

func hasPrefix(s string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(s, p) })
}

// step sums the progress of a step's jobs.
func step(key, title, unit string, jobs []shared.Job, live map[string]shared.Event, why string) storyStep {
	s := storyStep{Key: key, Title: title, Why: why, Jobs: jobs, Unit: unit}
	if len(jobs) == 0 {
		return s
	}
	sum := 0.0
	for _, j := range jobs {
		sum += jobFrac(j, live[j.ID])
		switch {
		case j.State == shared.JobCompleted:
			s.Done++
		case j.State.Final():
			s.Failed++
		}
	}
	s.Frac = sum / float64(len(jobs))
	return s
}

// jobFrac is the share of job j done: 1 once it has ended, else its
// latest progress (the live event when newer than the list's).
func jobFrac(j shared.Job, live shared.Event) float64 {
	if j.State.Final() {
		return 1
	}
	p := j.Progress
	if live.Total > 0 && (p == nil || live.Seq >= p.Seq) {
		p = &live
	}
	if j.State != shared.JobRunning || p == nil || p.Total <= 0 {
		return 0
	}
	return min(1, float64(p.Step)/float64(p.Total))
}

// storyView draws the story: a panel per step, the fingerprints once
// C-BIM has made them, and a verdict card per suspect.
func (h *home) storyView() ui.UI {
	d := h.story
	steps := make([]ui.UI, len(d.Steps))
	for i, s := range d.Steps {
		steps[i] = h.stepView(s)
	}
	return ui.Div().ID("story").DataSet("running", d.Running()).Body(
		ui.H2().Text("The demo's story"),
		ui.P().Class("muted").Body(ui.Code().Text("conferral demo --serve"), ui.Text(" runs the paper's experiment as jobs of this server, "+
			"with fewer and smaller models than the paper's, at a scale this machine can afford; each step below follows its jobs live.")),
		ui.Div().Class("story-steps").Body(steps...),
	)
}

// stepView is one step: its sentence, progress and what it has made.
func (h *home) stepView(s storyStep) ui.UI {
	state := s.State()
	var extra ui.UI = ui.Div()
	switch s.Key {
	case stepSource:
		extra = h.sourceChart()
	case stepFleet, stepAdversary:
		extra = modelTags(s.Jobs)
	case stepCBIM:
		extra = ui.Div().Body(h.examples())
	case stepNatural:
		extra = h.naturalView()
	case stepVerify:
		extra = h.verdictCards()
	}
	running := ""
	var failures []ui.UI
	for _, j := range s.Jobs {
		switch {
		case j.State == shared.JobRunning && running == "":
			running = jobLabel(j)
			if p := h.live[j.ID]; p.Stage != "" {
				running += ": " + p.Stage
			}
		case j.State.Final() && j.State != shared.JobCompleted:
			failures = append(failures, ui.Div().Class("error-text small").Text(fmt.Sprintf("%s %s: %s", jobLabel(j), j.State, j.Error)))
		}
	}
	return ui.Div().Class("panel story-step "+state).ID("step-"+s.Key).DataSet("state", state).
		DataSet("done", s.Done).DataSet("jobs", len(s.Jobs)).DataSet("frac", fmt.Sprintf("%.3f", s.Frac)).Body(
		ui.Div().Class("row").Body(
			ui.H3().Text(s.Title),
			ui.Span().Class("tag step-state").Text(state),
		),
		ui.P().Class("why").Text(s.Why),
		ui.Div().Class("row").Body(
			ui.Div().Class("bar").Body(ui.Div().Style("width", pct(s.Frac))),
			ui.Span().Class("step-count").Text(s.Count()),
			ui.Span().Class("muted small").Text(running),
		),
		ui.Div().Class("step-failures").Body(failures...),
		extra,
	)
}

// jobLabel names a job by what it makes.
func jobLabel(j shared.Job) string {
	switch {
	case j.Args.Train != nil && j.Args.Train.Name != "":
		return j.Args.Train.Name
	case j.Args.Extract != nil && j.Args.Extract.Name != "":
		return j.Args.Extract.Name
	}
	return string(j.Kind) + " #" + j.ID
}

// modelTags lists a step's models with their test accuracy once trained.
func modelTags(jobs []shared.Job) ui.UI {
	tags := make([]ui.UI, len(jobs))
	for i, j := range jobs {
		text, cls := jobLabel(j), "tag model-tag "+string(j.State)
		if j.Result != nil && len(j.Result.Models) > 0 {
			text += fmt.Sprintf(" %.2f", j.Result.Models[0].TestAcc)
		}
		tags[i] = ui.Span().Class(cls).Title(string(j.State)).Text(text)
	}
	return ui.Div().Class("model-tags").Body(tags...)
}

// sourceChart is the source's training, epoch by epoch, from its job's
// recorded events (replayed when the page opens).
func (h *home) sourceChart() ui.UI {
	e := h.sourceEpochs
	return ui.Div().Class("row").DataSet("epochs", len(e.x)).Body(
		ui.Raw(lineChart(chart{Title: "source: loss", XLabel: "epoch", XInt: true, Width: 420, Height: 180,
			Series: []series{{Name: "loss", Color: "#2f6fd6", X: e.x, Y: e.loss}}})),
		ui.Raw(lineChart(chart{Title: "source: accuracy", XLabel: "epoch", XInt: true, Width: 420, Height: 180, YMin: 0, YMax: 1,
			Series: []series{{Name: "train", Color: "#f2a93b", X: e.x, Y: e.train}, {Name: "test", Color: "#1f8a4c", X: e.x, Y: e.test}}})),
	)
}

// epochCurve is a training's metrics per epoch.
type epochCurve struct {
	x, loss, train, test []float64
}

// add folds an epoch event in (a replay may bring one twice: the last of
// an epoch wins).
func (c *epochCurve) add(e shared.Event) {
	if e.Kind != shared.Epoch {
		return
	}
	x := float64(e.Epoch)
	if i := slices.Index(c.x, x); i >= 0 {
		c.loss[i], c.train[i], c.test[i] = metric(e.Metrics, "loss"), metric(e.Metrics, "train_acc"), metric(e.Metrics, "test_acc")
		return
	}
	c.x, c.loss = append(c.x, x), append(c.loss, metric(e.Metrics, "loss"))
	c.train, c.test = append(c.train, metric(e.Metrics, "train_acc")), append(c.test, metric(e.Metrics, "test_acc"))
}

// verdictCards is a card per suspect of the story's verification.
func (h *home) verdictCards() ui.UI { return h.cards(h.story.Verdicts()) }

// naturalView is the natural fingerprint in brief and its verdicts.
func (h *home) naturalView() ui.UI {
	fp := h.story.NaturalFingerprint()
	if fp == nil {
		return ui.P().Class("muted").Text("The source's mistakes appear here when the extraction has chosen them.")
	}
	return ui.Div().Body(
		ui.P().Class("small natural-summary").Text(fmt.Sprintf("%d held-out images the source misclassifies, kept where their conferrability on the fleet reaches τ = %.2f; fingerprint %s.",
			fp.Count, fp.Tau, fp.ID[:min(12, len(fp.ID))])),
		h.cards(h.story.NaturalVerdicts()),
	)
}

func (h *home) cards(vs []storyVerdict) ui.UI {
	cards := make([]ui.UI, len(vs))
	for i, v := range vs {
		cards[i] = verdictCard(v.Verdict, h.story.Names[v.Model], h.story.Truth(v.Model))
	}
	return ui.Div().Class("story-verdicts").Body(cards...)
}

// verdictCard is a suspect's verdict in brief, with whether it is right:
// the demo knows which of the adversary's models were stolen (truth).
func verdictCard(v shared.Verdict, name, truth string) ui.UI {
	cls, title := "verdict unsure", "inconclusive"
	switch v.Outcome {
	case shared.OutcomeDerived:
		cls, title = "verdict stolen", "derived"
	case shared.OutcomeIndependent:
		cls, title = "verdict innocent", "independent"
	}
	if name == "" {
		name = v.Suspect
	}
	right := "right: it is " + truth
	if truth != v.Outcome {
		right = "wrong: it is " + truth
	}
	rule := fmt.Sprintf("judged against θ = %.2f (uncalibrated)", v.Threshold)
	if v.Calibrated && v.Null != nil {
		rule = fmt.Sprintf("calibrated threshold %.2f: %d independent models agree %.2f ± %.2f, false-positive rate %g",
			v.Threshold, v.Null.Models, v.Null.Mean, v.Null.SD, v.Null.FPR)
	}
	return ui.Div().Class(cls+" story-verdict").DataSet("suspect", name).DataSet("outcome", v.Outcome).DataSet("truth", truth).Body(
		ui.H3().Text(name+": "+title),
		ui.Div().Class("stats").Body(
			stat("fingerprint accuracy", fmt.Sprintf("%.2f", v.Accuracy)),
			stat(fmt.Sprintf("%.0f%% interval", 100*v.Confidence), fmt.Sprintf("%.2f–%.2f", v.Interval[0], v.Interval[1])),
			stat("threshold", fmt.Sprintf("%.2f", v.Threshold)),
		),
		ui.Raw(accuracyBar(v.Accuracy, v.Interval, v.Threshold, v.Theta)),
		ui.P().Class("small threshold").Text(rule),
		ui.P().Class("small verdict-truth").Text(right),
	)
}
