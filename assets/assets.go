// Package assets holds the browser app's static files (CSS, icon), embedded
// so the one conferral binary serves them under /web/.
package assets

import "embed"

// FS holds app.css and icon.png at its root.
//
//go:embed app.css icon.png
var FS embed.FS
