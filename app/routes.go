// Package app is the Conferral browser app: go-app components compiled to
// WASM (./wasm) and prerendered by the server (Handler). The pages talk to
// the server only through the routes and wire types of package shared.
package app

import ui "github.com/maxence-charriere/go-app/v9/pkg/app"

// Page is one entry of the navigation bar.
type Page struct {
	Path, Title string
}

// Pages lists the app's pages in navigation order.
func Pages() []Page {
	return []Page{
		{"/", "Home"},
		{"/models", "Models"},
		{"/fingerprints", "Fingerprints"},
		{"/verify", "Verify"},
		{"/experiments", "Experiments"},
	}
}

// Routes registers the pages with go-app. Both the server (Handler) and the
// WASM entry point call it; calling it again is harmless.
func Routes() {
	ui.RouteFunc("/", func() ui.Composer { return &home{} })
	ui.RouteFunc("/models", func() ui.Composer { return &models{} })
	ui.RouteFunc("/fingerprints", func() ui.Composer { return &gallery{} })
	ui.RouteFunc("/verify", func() ui.Composer { return &verify{} })
	ui.RouteFunc("/experiments", func() ui.Composer { return &experiments{} })
}
