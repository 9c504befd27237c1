// Package assets holds the browser app's static files (CSS, icon), embedded
// so the one conferral binary serves them under /web/.
package assets

import "embed"

// FS holds app.css, icon.png and icon.svg at its root.
//
//go:embed app.css icon.png icon.svg
var FS embed.FS
