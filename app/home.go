package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// homeExamples is how many fingerprints the home page shows.
const homeExamples = 4

// home explains conferrable examples with real fingerprints: while a demo
// runs (or after it), its story step by step, followed live; otherwise the
// stored demo's fingerprint (a fingerprint named "demo"), or the first
// stored one.
type home struct {
	ui.Compo
	fp     *shared.FingerprintDetail
	err    error
	loaded bool

	// The demo's story, told from the jobs and their events.
	jobs     []shared.Job
	live     map[string]shared.Event // each job's latest progress event
	story    demoStory
	hasStory bool
	// The source's training per epoch, from its job's replayed events.
	sourceJob    string
	sourceEpochs epochCurve
	stopSource   context.CancelFunc
	// fpID is the fingerprint shown (or being fetched).
	fpID string
	// A jobs reload is on its way; again asks for one more after it.
	reloading, again bool
}

func (h *home) OnMount(ctx ui.Context) {
	h.live = map[string]shared.Event{}
	h.reload(ctx)
	if !ui.IsClient {
		return
	}
	// Every job's events: progress moves the steps, a change of state
	// brings the jobs again (new jobs, results). A lost connection is
	// opened again, and the jobs reloaded for what it missed.
	c := newClient("")
	add := batched(ctx, func(evs []shared.Event) {
		changed := false
		for _, e := range evs {
			switch e.Kind {
			case shared.Progress, shared.Epoch:
				if e.Total > 0 && e.Seq >= h.live[e.Job].Seq {
					h.live[e.Job] = e
				}
			case shared.State, shared.Crafted, shared.Verdicts:
				changed = true
			}
		}
		if changed {
			h.reload(ctx)
		} else if h.hasStory {
			h.story, _ = findStory(h.jobs, h.live)
		}
	})
	ctx.Async(func() {
		for ctx.Err() == nil {
			c.Events(ctx, "", func(e shared.Event) bool { add(e); return true })
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			ctx.Dispatch(func(ctx ui.Context) { h.reload(ctx) })
		}
	})
}

func (h *home) OnDismount() {
	if h.stopSource != nil {
		h.stopSource()
	}
}

// reload fetches the jobs and tells the story from them, or, without a
// demo, shows a stored fingerprint.
func (h *home) reload(ctx ui.Context) {
	if h.reloading {
		h.again = true
		return
	}
	h.reloading = true
	c := newClient("")
	fetch(ctx, func(ctx context.Context) ([]shared.Job, error) { return c.Jobs(ctx) }, func(js []shared.Job, err error) {
		h.reloading = false
		if h.again {
			h.again = false
			defer h.reload(ctx)
		}
		if err != nil {
			h.err, h.loaded = err, true
			return
		}
		h.jobs, h.err = js, nil
		h.story, h.hasStory = findStory(js, h.live)
		if !h.hasStory {
			h.showStored(ctx)
			return
		}
		h.loaded = true
		if id := h.story.Source.ID; id != h.sourceJob {
			h.watchSource(ctx, id)
		}
		// Only the story's own fingerprint, once C-BIM has made it.
		switch fp := h.story.Fingerprint(); {
		case fp == nil:
			h.fp, h.fpID = nil, ""
		case fp.ID != h.fpID:
			h.fp, h.fpID = nil, fp.ID
			fetch(ctx, func(ctx context.Context) (*shared.FingerprintDetail, error) { return c.Fingerprint(ctx, fp.ID) },
				func(d *shared.FingerprintDetail, err error) {
					if h.fpID == fp.ID {
						h.fp, h.err = d, err
					}
				})
		}
	})
}

// watchSource draws the source's training from its job's events, replayed
// from the start.
func (h *home) watchSource(ctx ui.Context, id string) {
	if h.stopSource != nil {
		h.stopSource()
	}
	h.sourceJob, h.sourceEpochs = id, epochCurve{}
	h.stopSource = watchJob(ctx, id, func(evs []shared.Event) {
		if h.sourceJob != id {
			return
		}
		for _, e := range evs {
			h.sourceEpochs.add(e)
		}
	}, func(ui.Context, *shared.Job, error) {})
}

// showStored shows the stored demo's fingerprint, or the first stored one.
func (h *home) showStored(ctx ui.Context) {
	if h.fpID != "" {
		h.loaded = true
		return
	}
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (*shared.FingerprintDetail, error) {
		fps, err := c.Fingerprints(ctx)
		if err != nil || len(fps) == 0 {
			return nil, err
		}
		pick := fps[0]
		for _, f := range fps {
			if strings.Contains(strings.ToLower(f.Name), "demo") {
				pick = f
				break
			}
		}
		return c.Fingerprint(ctx, pick.ID)
	}, func(d *shared.FingerprintDetail, err error) {
		h.fp, h.err, h.loaded = d, err, true
		if d != nil {
			h.fpID = d.ID
		}
	})
}

func (h *home) Render() ui.UI {
	return shell("/", h.loaded,
		ui.H1().Text("Was your classifier stolen?"),
		ui.P().Class("lead").Text("A model stolen by distillation, extraction or fine-tuning still answers like its source on "+
			"a few special inputs. Conferral crafts such inputs — conferrable adversarial examples — from your model, "+
			"and later asks a suspect model (a file or a prediction endpoint) for its labels of them. How often independently "+
			"trained models agree with those labels is measured first (calibration); a suspect that agrees clearly more often "+
			"than they do, at a chosen false-positive rate, is judged derived from your model, one that clearly agrees less, "+
			"independent, and one whose interval straddles the threshold, inconclusive. Without a calibration the paper's "+
			"fixed threshold θ = 70% stands in, with no error rate behind it."),
		ui.Div().Class("panel explain").Body(
			ui.H2().Text("What makes an example conferrable"),
			ui.P().Text("An adversarial example is an image changed by a perturbation too small to matter to a person "+
				"so that a model gives it another label (the target). A conferrable one transfers that target only to "+
				"models derived from the source — surrogates — and not to models trained independently on the same "+
				"task — references. C-BIM finds them by attacking an ensemble of surrogates and references at once, "+
				"rewarding the target on the surrogates and penalising it on the references."),
		),
		loading(h.loaded, "the demo's story and fingerprints"),
		errorBox(h.err),
		ui.Div().Body(ui.If(h.hasStory, h.storyView()).Else(h.examples())),
		ui.P().Body(
			ui.A().Class("button").Href("/fingerprints").Text("All fingerprints"), ui.Text(" "),
			ui.A().Class("button secondary").Href("/verify").Text("Verify a suspect"),
		),
	)
}

// examples shows the first fingerprints with how one surrogate and one
// reference label them.
func (h *home) examples() ui.UI {
	d := h.fp
	if d == nil && h.hasStory {
		return ui.P().Class("muted").ID("no-fingerprint-yet").Text("The fingerprints appear here when C-BIM has made them.")
	}
	if d == nil {
		return ui.If(h.loaded && h.err == nil, ui.P().Class("muted").ID("no-fingerprint").Text(
			"No fingerprint is stored yet: run `conferral demo`, or start an extraction, to see real ones here."))
	}
	surr, ref := -1, -1
	for i, m := range d.Models {
		if m.Role == shared.RoleSurrogate && surr < 0 {
			surr = i
		}
		if m.Role == shared.RoleReference && ref < 0 {
			ref = i
		}
	}
	rows := []ui.UI{}
	for _, it := range d.Items[:min(homeExamples, len(d.Items))] {
		var imgs ui.UI
		if d.Natural() { // the image is its original: no perturbation to show
			imgs = ui.Div().Class("imgs").Body(
				figure(itemURL(d.ID, it.Index, "original"), "unperturbed, true label: "+className(d.Classes, it.Label), true),
			)
		} else {
			imgs = ui.Div().Class("imgs").Body(
				figure(itemURL(d.ID, it.Index, "original"), "original: "+className(d.Classes, it.Label), true),
				figure(itemURL(d.ID, it.Index, "perturbation"), fmt.Sprintf("perturbation (ε = %g)", d.Eps), true),
				figure(itemURL(d.ID, it.Index, "fingerprint"), "fingerprint: "+className(d.Classes, it.Target), true),
			)
		}
		rows = append(rows, ui.Div().Class("card home-example").Body(
			imgs,
			ui.Div().Class("meta").Body(
				ui.Div().Body(ui.Text("Source model: "), ui.B().Text(className(d.Classes, it.Target))),
				modelSays(d, it, surr, "a surrogate"),
				modelSays(d, it, ref, "a reference"),
				ui.Div().Class("muted").Text("conferrability "+fmt.Sprintf("%.2f", it.Conferrability)),
			),
		))
	}
	title := fmt.Sprintf("The fingerprint “%s”: %d examples at ε = %g on %s", d.Name, d.Count, d.Eps, d.Dataset)
	if d.Natural() {
		title = fmt.Sprintf("The fingerprint “%s”: %d %s on %s (test images it labels wrongly, unperturbed)", d.Name, d.Count, naturalWords, d.Dataset)
	}
	return ui.Div().Body(
		ui.H2().Text(title),
		ui.Div().Class("gallery").Body(rows...),
	)
}

// modelSays tells how model m (an index into d.Models) labels item it.
func modelSays(d *shared.FingerprintDetail, it shared.FingerprintItem, m int, who string) ui.UI {
	if m < 0 || m >= len(it.Labels) {
		return ui.Div().Class("muted").Text("no stored " + strings.TrimPrefix(who, "a ") + " to ask")
	}
	agree := m < len(it.Agree) && it.Agree[m]
	cls, word := "tag disagree", "disagrees"
	if agree {
		cls, word = "tag agree", "agrees"
	}
	return ui.Div().Body(
		ui.Text(fmt.Sprintf("%s (%s, %s): ", strings.ToUpper(who[:1])+who[1:], d.Models[m].Name, d.Models[m].Arch)),
		ui.B().Text(className(d.Classes, it.Labels[m])), ui.Text(" "),
		ui.Span().Class(cls).Text(word),
	)
}

// figure is a pixel image with a caption.
func figure(src, caption string, big bool) ui.UI {
	cls := "px"
	if big {
		cls = "px big"
	}
	return ui.Figure().Body(ui.Img().Class(cls).Src(src).Alt(caption), ui.FigCaption().Text(caption))
}
