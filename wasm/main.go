// Command wasm is the browser side of the Conferral app. Build it with
//
//	GOOS=js GOARCH=wasm go build -o bin/web/app.wasm ./wasm
//
// (`make web`); `conferral serve` serves it with the pages of package app.
package main

import (
	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/app"
)

func main() {
	app.Routes()
	ui.RunWhenOnBrowser()
}
