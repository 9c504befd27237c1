package app

import (
	"context"
	"fmt"
	"strings"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// shell wraps a page: the navigation bar and a main element that says which
// page it is (data-page) and whether the browser has loaded its data
// (data-loaded, set only by the WASM app, so tests can tell a live page
// from the server's prerendering).
func shell(active string, loaded bool, body ...ui.UI) ui.UI {
	links := make([]ui.UI, 0, len(Pages()))
	for _, p := range Pages() {
		a := ui.A().Href(p.Path).Text(p.Title)
		if p.Path == active {
			a = a.Class("active")
		}
		links = append(links, a)
	}
	name := strings.Trim(active, "/")
	if name == "" {
		name = "home"
	}
	return ui.Div().Body(
		ui.Header().Class("top").Body(
			ui.A().Class("brand").Href("/").Body(ui.Img().Src("/web/icon.png").Alt(""), ui.Text("Conferral")),
			ui.Nav().Body(links...),
		),
		ui.Main().DataSet("page", name).DataSet("loaded", loaded && ui.IsClient).Body(body...),
	)
}

// errorBox shows err, or nothing.
func errorBox(err error) ui.UI {
	return ui.If(err != nil, ui.Div().Class("error").Text(errText(err)))
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// loading is shown until a page's data arrives.
func loading(done bool, what string) ui.UI {
	return ui.If(!done, ui.P().Class("status").Text("Loading "+what+"…"))
}

// catalogue is what the gallery and the verify page start from: the stored
// fingerprints and models.
type catalogue struct {
	fps    []shared.FingerprintInfo
	models []shared.ModelInfo
}

// fetchCatalogue loads the catalogue through c and hands it to apply.
func fetchCatalogue(ctx ui.Context, c *client, apply func(catalogue, error)) {
	fetch(ctx, func(ctx context.Context) (catalogue, error) {
		fps, err := c.Fingerprints(ctx)
		if err != nil {
			return catalogue{}, err
		}
		ms, err := c.Models(ctx)
		return catalogue{fps, ms}, err
	}, apply)
}

// fetch runs load off the UI goroutine, then apply on it (which updates the
// component). It does nothing on the server, which only prerenders.
func fetch[T any](ctx ui.Context, load func(context.Context) (T, error), apply func(T, error)) {
	if !ui.IsClient {
		return
	}
	ctx.Async(func() {
		v, err := load(ctx)
		ctx.Dispatch(func(ui.Context) { apply(v, err) })
	})
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

func short(id string) string {
	if len(id) > 10 {
		return id[:10]
	}
	return id
}

// className is the name of class k, or its number.
func className(classes []string, k int64) string {
	if k >= 0 && int(k) < len(classes) {
		return classes[k]
	}
	return fmt.Sprintf("class %d", k)
}
