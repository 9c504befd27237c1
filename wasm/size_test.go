//go:build !(js && wasm)

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/conferral/conferral/app"
)

// budget is what app.wasm may weigh as sent (gzipped): 3 MB.
const budget = 3_000_000

// TestAppSize builds app.wasm as `make web` does and holds it to the
// budget. It also checks the largest thing the app once carried without
// needing it: net/http's client Transport (dialing, HTTP/2, crypto/tls,
// crypto/x509; about 1.2 MB gzipped), linked by any use of http.Client
// although in a browser every request ends in fetch.
func TestAppSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds app.wasm")
	}
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = "go"
	}
	out := filepath.Join(t.TempDir(), "app.wasm")
	cmd := exec.Command(goTool, "build", "-o", out, ".")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building app.wasm: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := app.Gzip(raw)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("app.wasm: %d bytes, %d gzipped (budget %d)", len(raw), len(gz), budget)
	if len(gz) > budget {
		t.Errorf("app.wasm is %d bytes gzipped, over the budget of %d", len(gz), budget)
	}
	for _, sym := range []string{"net/http.(*Transport).dialConn", "crypto/tls.(*Conn).clientHandshake"} {
		if bytes.Contains(raw, []byte(sym)) {
			t.Errorf("app.wasm links %s: something in the app uses net/http's Client (use send, the browser's fetch)", sym)
		}
	}
}
