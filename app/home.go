package app

import (
	"context"
	"fmt"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// homeExamples is how many fingerprints the home page shows.
const homeExamples = 4

// home explains conferrable examples with real fingerprints: the stored
// demo's (a fingerprint named "demo"), or the first stored one.
type home struct {
	ui.Compo
	fp     *shared.FingerprintDetail
	err    error
	loaded bool
}

func (h *home) OnMount(ctx ui.Context) {
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
	})
}

func (h *home) Render() ui.UI {
	return shell("/", h.loaded,
		ui.H1().Text("Was your classifier stolen?"),
		ui.P().Class("lead").Text("A model stolen by distillation, extraction or fine-tuning still answers like its source on "+
			"a few special inputs. Conferral crafts such inputs — conferrable adversarial examples — from your model, "+
			"and later asks a suspect model (a file or a prediction endpoint) for its labels of them. A suspect that "+
			"agrees with your model's labels on at least θ = 70% of them is judged a surrogate of it."),
		ui.Div().Class("panel explain").Body(
			ui.H2().Text("What makes an example conferrable"),
			ui.P().Text("An adversarial example is an image changed by a perturbation too small to matter to a person "+
				"so that a model gives it another label (the target). A conferrable one transfers that target only to "+
				"models derived from the source — surrogates — and not to models trained independently on the same "+
				"task — references. C-BIM finds them by attacking an ensemble of surrogates and references at once, "+
				"rewarding the target on the surrogates and penalising it on the references."),
		),
		loading(h.loaded, "the demo fingerprint"),
		errorBox(h.err),
		ui.Div().Body(h.examples()),
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
		rows = append(rows, ui.Div().Class("card home-example").Body(
			ui.Div().Class("imgs").Body(
				figure(itemURL(d.ID, it.Index, "original"), "original: "+className(d.Classes, it.Label), true),
				figure(itemURL(d.ID, it.Index, "perturbation"), fmt.Sprintf("perturbation (ε = %g)", d.Eps), true),
				figure(itemURL(d.ID, it.Index, "fingerprint"), "fingerprint: "+className(d.Classes, it.Target), true),
			),
			ui.Div().Class("meta").Body(
				ui.Div().Body(ui.Text("Source model: "), ui.B().Text(className(d.Classes, it.Target))),
				modelSays(d, it, surr, "a surrogate"),
				modelSays(d, it, ref, "a reference"),
				ui.Div().Class("muted").Text("conferrability "+fmt.Sprintf("%.2f", it.Conferrability)),
			),
		))
	}
	return ui.Div().Body(
		ui.H2().Text(fmt.Sprintf("The fingerprint “%s”: %d examples at ε = %g on %s", d.Name, d.Count, d.Eps, d.Dataset)),
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
