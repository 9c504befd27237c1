package app

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// gallery shows a stored fingerprint's examples with filters and sorting.
type gallery struct {
	ui.Compo
	list   []shared.FingerprintInfo
	fp     *shared.FingerprintDetail
	err    error
	loaded bool

	filter galleryFilter

	models  []shared.ModelInfo
	extract extraction
}

// galleryFilter chooses and orders the items shown.
type galleryFilter struct {
	Target   int64   // -1: any
	Label    int64   // -1: any
	MinConf  float64 // conferrability at least this
	Agree    string  // "", "surrogates" (every surrogate agrees), "no-reference" (no reference or twin agrees)
	Sort     string  // "confer-desc" (default), "confer-asc", "index"
	MaxShown int
}

// galleryPage is how many more items "show more" adds.
const galleryPage = 60

func defaultFilter() galleryFilter {
	return galleryFilter{Target: -1, Label: -1, Sort: "confer-desc", MaxShown: galleryPage}
}

// apply returns the items of d that pass f, in f's order.
func (f galleryFilter) apply(d *shared.FingerprintDetail) []shared.FingerprintItem {
	var out []shared.FingerprintItem
	for _, it := range d.Items {
		if f.Target >= 0 && it.Target != f.Target || f.Label >= 0 && it.Label != f.Label || it.Conferrability < f.MinConf {
			continue
		}
		if f.Agree != "" && !agreementHolds(d.Models, it, f.Agree) {
			continue
		}
		out = append(out, it)
	}
	switch f.Sort {
	case "confer-asc":
		slices.SortStableFunc(out, func(a, b shared.FingerprintItem) int { return cmp.Compare(a.Conferrability, b.Conferrability) })
	case "index":
		slices.SortStableFunc(out, func(a, b shared.FingerprintItem) int { return cmp.Compare(a.Index, b.Index) })
	default:
		slices.SortStableFunc(out, func(a, b shared.FingerprintItem) int { return cmp.Compare(b.Conferrability, a.Conferrability) })
	}
	return out
}

// agreementHolds: "surrogates" — every surrogate labels it with the key;
// "no-reference" — no reference does, nor any twin (a reference of the
// source's own architecture and recipe).
func agreementHolds(ms []shared.ModelRef, it shared.FingerprintItem, rule string) bool {
	for i, m := range ms {
		if i >= len(it.Agree) {
			break
		}
		switch {
		case rule == "surrogates" && m.Role == shared.RoleSurrogate && !it.Agree[i]:
			return false
		case rule == "no-reference" && (m.Role == shared.RoleReference || m.Role == shared.RoleTwin) && it.Agree[i]:
			return false
		}
	}
	return true
}

func (g *gallery) OnMount(ctx ui.Context) {
	g.filter = defaultFilter()
	g.reload(ctx, "")
}

func (g *gallery) OnDismount() {
	if g.extract.stop != nil {
		g.extract.stop()
	}
}

// reload fetches the fingerprints and the models, then opens fingerprint
// id (the first one when id is "").
func (g *gallery) reload(ctx ui.Context, id string) {
	c := newClient("")
	fetchCatalogue(ctx, c, func(l catalogue, err error) {
		g.list, g.err = l.fps, err
		if g.models == nil && err == nil {
			g.extract.defaults(l.models)
		}
		g.models = l.models
		if err != nil || len(l.fps) == 0 {
			g.loaded = true
			return
		}
		if id == "" {
			id = l.fps[0].ID
		}
		g.open(ctx, id)
	})
}

// open loads fingerprint id's items.
func (g *gallery) open(ctx ui.Context, id string) {
	c := newClient("")
	fetch(ctx, func(ctx context.Context) (*shared.FingerprintDetail, error) { return c.Fingerprint(ctx, id) },
		func(d *shared.FingerprintDetail, err error) {
			g.fp, g.err, g.loaded = d, err, true
			g.filter = defaultFilter()
		})
}

// naturalWords names what a natural fingerprint is made of.
const naturalWords = "natural errors of the source"

// fingerprintHow says in a few words how f's examples were made: C-BIM's
// within ε, or the source's own errors, unperturbed.
func fingerprintHow(f shared.FingerprintInfo) string {
	if f.Natural() {
		return naturalWords
	}
	return fmt.Sprintf("ε = %g", f.Eps)
}

func (g *gallery) Render() ui.UI {
	lead := "Each fingerprint is an original image plus a perturbation within ε (shown amplified as a " +
		"heat-map) that makes the source model answer the target label. Conferrability is how much more often the " +
		"training surrogates give that target than the training references do."
	if g.fp != nil && g.fp.Natural() {
		lead = "This fingerprint is made of natural errors of the source: test images, unperturbed, that the source model " +
			"labels wrongly. Its key is the source's wrong label, which a model derived from the source tends to repeat and " +
			"an independent model rarely shares. Conferrability is how much more often the training surrogates give that " +
			"label than the training references do."
	}
	return shell("/fingerprints", g.loaded,
		ui.H1().Text("Fingerprints"),
		ui.P().Class("lead").ID("gallery-lead").Text(lead),
		errorBox(g.err),
		loading(g.loaded, "fingerprints"),
		ui.Div().Body(g.chooser()),
		ui.Div().Body(ui.If(g.loaded, g.extractPanel())),
		ui.Div().Body(g.body()),
	)
}

func (g *gallery) chooser() ui.UI {
	if len(g.list) == 0 {
		return ui.If(g.loaded && g.err == nil, ui.P().Class("muted").Text("No fingerprint is stored yet."))
	}
	opts := make([]ui.UI, len(g.list))
	for i, f := range g.list {
		label := fmt.Sprintf("%s — %d examples, %s, τ = %g (%s)", f.Name, f.Count, fingerprintHow(f), f.Tau, short(f.ID))
		opts[i] = ui.Option().Value(f.ID).Text(label).Selected(g.fp != nil && g.fp.ID == f.ID)
	}
	return ui.Div().Class("form").Body(
		ui.Label().Body(ui.Text("fingerprint"), ui.Select().ID("fp-select").Body(opts...).
			OnChange(func(ctx ui.Context, _ ui.Event) { g.open(ctx, ctx.JSSrc().Get("value").String()) })),
	)
}

func (g *gallery) body() ui.UI {
	d := g.fp
	if d == nil {
		return ui.Div()
	}
	items := g.filter.apply(d)
	shown := items[:min(len(items), g.filter.MaxShown)]
	classOpts := func(sel int64) []ui.UI {
		opts := []ui.UI{ui.Option().Value("-1").Text("any").Selected(sel < 0)}
		for i, c := range d.Classes {
			opts = append(opts, ui.Option().Value(strconv.Itoa(i)).Text(c).Selected(int64(i) == sel))
		}
		return opts
	}
	setInt := func(dst *int64) ui.EventHandler {
		return func(ctx ui.Context, _ ui.Event) {
			if v, err := strconv.ParseInt(ctx.JSSrc().Get("value").String(), 10, 64); err == nil {
				*dst = v
			}
		}
	}
	return ui.Div().Body(
		ui.Div().Class("panel").Body(
			ui.Div().Class("stats").Body(
				stat("examples", strconv.Itoa(d.Count)), madeBy(d.FingerprintInfo), stat("τ", fmt.Sprintf("%g", d.Tau)), stat("τ_S", fmt.Sprintf("%g", d.TauSurr)),
				stat("start points", strconv.Itoa(d.Candidates)), stat("reference rate", fmt.Sprintf("%.2f", d.ReferenceRate)),
				stat("source", d.SourceArch+" "+short(d.Source)),
			),
			ui.P().Class("small muted").Text("sha256 commitment "+d.Commitment),
			ui.A().ID("fp-download").Class("button").Href(fileURL(d.ID)).Attr("download", d.Name+".safetensors").
				Text("Download the fingerprint file"),
		),
		ui.Div().Class("form panel").Body(
			ui.Label().Body(ui.Text("target label"), ui.Select().ID("filter-target").Body(classOpts(g.filter.Target)...).OnChange(setInt(&g.filter.Target))),
			ui.Label().Body(ui.Text("original label"), ui.Select().ID("filter-label").Body(classOpts(g.filter.Label)...).OnChange(setInt(&g.filter.Label))),
			ui.Label().Body(ui.Text("agreement"), ui.Select().ID("filter-agree").Body(
				ui.Option().Value("").Text("any").Selected(g.filter.Agree == ""),
				ui.Option().Value("surrogates").Text("every surrogate agrees").Selected(g.filter.Agree == "surrogates"),
				ui.Option().Value("no-reference").Text("no reference agrees").Selected(g.filter.Agree == "no-reference"),
			).OnChange(ctxValue(&g.filter.Agree))),
			ui.Label().Body(ui.Text(fmt.Sprintf("conferrability ≥ %.2f", g.filter.MinConf)),
				ui.Input().ID("filter-conf").Type("range").Min(0).Max(1).Step(0.05).Value(g.filter.MinConf).
					OnInput(func(ctx ui.Context, _ ui.Event) {
						if v, err := strconv.ParseFloat(ctx.JSSrc().Get("value").String(), 64); err == nil {
							g.filter.MinConf = v
						}
					})),
			ui.Label().Body(ui.Text("sort by"), ui.Select().ID("sort").Body(
				ui.Option().Value("confer-desc").Text("conferrability, highest first").Selected(g.filter.Sort == "confer-desc"),
				ui.Option().Value("confer-asc").Text("conferrability, lowest first").Selected(g.filter.Sort == "confer-asc"),
				ui.Option().Value("index").Text("index").Selected(g.filter.Sort == "index"),
			).OnChange(ctxValue(&g.filter.Sort))),
		),
		ui.P().ID("gallery-count").Class("muted").DataSet("shown", len(shown)).DataSet("matching", len(items)).
			Text(fmt.Sprintf("%d of %d examples match; showing %d.", len(items), len(d.Items), len(shown))),
		ui.Div().ID("gallery").Class("gallery").Body(ui.Range(shown).Slice(func(i int) ui.UI { return itemCard(d, shown[i]) })),
		ui.If(len(shown) < len(items), ui.P().Body(ui.Button().ID("gallery-more").Class("secondary").
			Text(fmt.Sprintf("Show %d more", min(galleryPage, len(items)-len(shown)))).
			OnClick(func(ui.Context, ui.Event) { g.filter.MaxShown += galleryPage }))),
	)
}

func stat(name, value string) ui.UI {
	return ui.Div().Body(ui.B().Text(value), ui.Span().Class("muted small").Text(name))
}

// madeBy is the statistic that says how the examples were made: C-BIM's ε,
// or no perturbation at all.
func madeBy(f shared.FingerprintInfo) ui.UI {
	if f.Natural() {
		return stat("unperturbed", naturalWords)
	}
	return stat("ε (L∞)", fmt.Sprintf("%g", f.Eps))
}

// itemCard shows one conferrable example with every training model's answer.
func itemCard(d *shared.FingerprintDetail, it shared.FingerprintItem) ui.UI {
	tags := make([]ui.UI, 0, len(d.Models))
	for i, m := range d.Models {
		if i >= len(it.Labels) {
			break
		}
		cls := "tag disagree"
		if i < len(it.Agree) && it.Agree[i] {
			cls = "tag agree"
		}
		role := m.Role // "sur", "ref", "twin"
		if len(role) > 4 {
			role = role[:3]
		}
		tags = append(tags, ui.Span().Class(cls).Title(fmt.Sprintf("%s (%s) says %s", m.Name, m.Role, className(d.Classes, it.Labels[i]))).
			Text(fmt.Sprintf("%s %s: %s", role, m.Arch, className(d.Classes, it.Labels[i]))))
	}
	card := ui.Div().Class("card item").DataSet("index", it.Index).DataSet("confer", fmt.Sprintf("%.4f", it.Conferrability))
	confer := ui.Span().Class("muted").Text(fmt.Sprintf("  conferrability %.2f", it.Conferrability))
	if d.Natural() {
		// The image is its original: there is no perturbation to show, only
		// the true label and the source's wrong one.
		return card.DataSet("attack", shared.AttackNatural).Body(
			ui.Div().Class("imgs").Body(
				figure(itemURL(d.ID, it.Index, "original"), "unperturbed: "+className(d.Classes, it.Label), false),
			),
			ui.Div().Class("meta").Body(
				ui.Div().Body(ui.Text("#"+strconv.Itoa(it.Index)+" true label "), ui.B().Text(className(d.Classes, it.Label)),
					ui.Text(", the source says "), ui.B().Text(className(d.Classes, it.Target)), confer),
				ui.Div().Body(tags...),
			),
		)
	}
	return card.Body(
		ui.Div().Class("imgs").Body(
			figure(itemURL(d.ID, it.Index, "original"), "original", false),
			figure(itemURL(d.ID, it.Index, "perturbation"), "perturbation ×", false),
			figure(itemURL(d.ID, it.Index, "fingerprint"), "fingerprint", false),
		),
		ui.Div().Class("meta").Body(
			ui.Div().Body(ui.Text("#"+strconv.Itoa(it.Index)+" "), ui.B().Text(className(d.Classes, it.Label)),
				ui.Text(" → "), ui.B().Text(className(d.Classes, it.Target)), confer),
			ui.Div().Body(tags...),
		),
	)
}
