//go:build !wasm

package app

import (
	"strings"
	"testing"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// fingerprintPair is a C-BIM fingerprint and a natural one with one item
// each, as the server describes them.
func fingerprintPair() (cbim, natural *shared.FingerprintDetail) {
	classes := []string{"T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
	models := []shared.ModelRef{{ID: "m1", Name: "surr", Arch: "mlp", Role: shared.RoleSurrogate}, {ID: "m2", Name: "ref", Arch: "mlp", Role: shared.RoleReference}}
	item := shared.FingerprintItem{Index: 0, Label: 6, Target: 0, Conferrability: 0.9, Labels: []int64{0, 6}, Agree: []bool{true, false}}
	cbim = &shared.FingerprintDetail{FingerprintInfo: shared.FingerprintInfo{ID: "c1", Name: "crafted", Attack: shared.AttackCBIM, Eps: 0.05, Tau: 0.5, Count: 1, Dataset: "fashion-mnist"},
		Classes: classes, Models: models, Items: []shared.FingerprintItem{item}}
	natural = &shared.FingerprintDetail{FingerprintInfo: shared.FingerprintInfo{ID: "n1", Name: "errors", Attack: shared.AttackNatural, Tau: 0.5, Count: 1, Dataset: "fashion-mnist"},
		Classes: classes, Models: models, Items: []shared.FingerprintItem{item}}
	return cbim, natural
}

// TestNaturalViews: wherever a fingerprint is described — the gallery's
// chooser, statistics and cards, the home page's examples, Verify's
// fingerprint list — a natural one says it is made of the source's errors
// and shows no ε and no perturbation, only its image with the true label
// and the source's; a C-BIM one is shown as before.
func TestNaturalViews(t *testing.T) {
	cbim, natural := fingerprintPair()
	type view struct {
		name string
		html func(d *shared.FingerprintDetail) string
	}
	views := []view{
		{"gallery chooser", func(d *shared.FingerprintDetail) string {
			return ui.HTMLString((&gallery{list: []shared.FingerprintInfo{d.FingerprintInfo}, fp: d}).chooser())
		}},
		{"gallery lead", func(d *shared.FingerprintDetail) string {
			g := &gallery{fp: d, loaded: true}
			html := ui.HTMLString(g.Render())
			i := strings.Index(html, `id="gallery-lead"`)
			return html[i : i+strings.Index(html[i:], "</p>")]
		}},
		{"gallery statistics and card", func(d *shared.FingerprintDetail) string {
			g := &gallery{fp: d}
			g.filter = defaultFilter()
			return ui.HTMLString(g.body())
		}},
		{"home examples", func(d *shared.FingerprintDetail) string {
			return ui.HTMLString((&home{fp: d, loaded: true}).examples())
		}},
		{"verify's list", func(d *shared.FingerprintDetail) string {
			return ui.HTMLString((&verify{fps: []shared.FingerprintInfo{d.FingerprintInfo}, fp: d.ID, mode: "model"}).form())
		}},
	}
	for _, v := range views {
		t.Run(v.name, func(t *testing.T) {
			html := v.html(cbim)
			if !strings.Contains(html, "ε") || strings.Contains(html, naturalWords) {
				t.Errorf("C-BIM: want ε and no natural errors in\n%s", html)
			}
			html = v.html(natural)
			if !strings.Contains(html, naturalWords) {
				t.Errorf("natural: does not say %q:\n%s", naturalWords, html)
			}
			if strings.Contains(html, "ε") || strings.Contains(html, "perturbation") {
				t.Errorf("natural: speaks of ε or a perturbation:\n%s", html)
			}
			for _, img := range []string{"perturbation.png", "fingerprint.png"} {
				if strings.Contains(html, img) {
					t.Errorf("natural: shows %s, which is blank or the original:\n%s", img, html)
				}
			}
		})
	}

	// A natural card shows its one image with the true label and the
	// source's wrong one; a C-BIM card its three images.
	card := ui.HTMLString(itemCard(natural, natural.Items[0]))
	for _, want := range []string{"n1/items/0/original.png", "true label", "Shirt", "the source says", "T-shirt", `data-attack="natural"`} {
		if !strings.Contains(card, want) {
			t.Errorf("natural card lacks %q:\n%s", want, card)
		}
	}
	if n := strings.Count(card, "<img"); n != 1 {
		t.Errorf("natural card has %d images, want 1:\n%s", n, card)
	}
	card = ui.HTMLString(itemCard(cbim, cbim.Items[0]))
	for _, want := range []string{"c1/items/0/original.png", "c1/items/0/perturbation.png", "c1/items/0/fingerprint.png", "perturbation ×"} {
		if !strings.Contains(card, want) {
			t.Errorf("C-BIM card lacks %q:\n%s", want, card)
		}
	}
	home := ui.HTMLString((&home{fp: natural, loaded: true}).examples())
	if !strings.Contains(home, "unperturbed, true label: Shirt") || !strings.Contains(home, "Source model: ") {
		t.Errorf("natural home example:\n%s", home)
	}
}

// TestExtractionPanel: choosing natural errors greys out C-BIM's settings
// and names what the form makes.
func TestExtractionPanel(t *testing.T) {
	g := &gallery{models: []shared.ModelInfo{{ID: "s", Name: "src", Role: shared.RoleSource}, {ID: "a", Role: shared.RoleSurrogate}, {ID: "b", Role: shared.RoleReference}}}
	g.extract.defaults(g.models)
	g.extract.open = true
	cbimOnly := []string{"ex-eps", "ex-loss", "ex-best", "ex-steps", "ex-shift", "ex-noise"}
	both := []string{"ex-tau", "ex-tau-surr", "ex-candidates"}
	disabled := func(html, id string) bool {
		i := strings.Index(html, `id="`+id+`"`)
		if i < 0 {
			t.Fatalf("no %s in\n%s", id, html)
		}
		tag := html[strings.LastIndex(html[:i], "<"):]
		tag = tag[:strings.Index(tag, ">")]
		// go-app writes a false boolean attribute out as ="false"; the
		// browser gets the property.
		return strings.Contains(tag, "disabled") && !strings.Contains(tag, `disabled="false"`)
	}
	html := ui.HTMLString(g.extractPanel())
	if !strings.Contains(html, "C-BIM, Algorithm 2") || !strings.Contains(html, `data-attack="cbim"`) {
		t.Errorf("the C-BIM form:\n%s", html)
	}
	for _, id := range append(cbimOnly, both...) {
		if disabled(html, id) {
			t.Errorf("C-BIM: %s is disabled", id)
		}
	}
	g.extract.attack = shared.AttackNatural
	html = ui.HTMLString(g.extractPanel())
	if !strings.Contains(html, "Craft a new fingerprint (natural errors of the source)") || !strings.Contains(html, `data-attack="natural"`) {
		t.Errorf("the natural form:\n%s", html)
	}
	for _, id := range cbimOnly {
		if !disabled(html, id) {
			t.Errorf("natural: C-BIM's %s is not disabled", id)
		}
	}
	for _, id := range both {
		if disabled(html, id) {
			t.Errorf("natural: %s, which natural errors use, is disabled", id)
		}
	}
	g.extract.job, g.extract.jobNatural, g.extract.state = "7", true, shared.JobRunning
	if html = ui.HTMLString(g.extractPanel()); strings.Contains(html, "C-BIM step") || !strings.Contains(html, "scoring the source&#39;s errors") {
		t.Errorf("a natural job's progress speaks of C-BIM:\n%s", html)
	}
	g.extract.state = shared.JobCompleted
	if html = ui.HTMLString(g.extractPanel()); !strings.Contains(html, "width:100.0%") {
		t.Errorf("a completed natural job's bar is not full:\n%s", html)
	}
}
