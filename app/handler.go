//go:build !wasm

package app

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/assets"
)

// wasmLengthHeader carries app.wasm's uncompressed size, so the loading
// screen can show progress while the gzipped file downloads.
const wasmLengthHeader = "X-Wasm-Content-Length"

// Handler serves the browser app: the prerendered pages, go-app's loader
// files, the embedded assets under /web/ and webDir/app.wasm (built by
// `make web`, or `GOOS=js GOARCH=wasm go build -o WEBDIR/app.wasm ./wasm`).
// Mount it at "/" beside the API.
func Handler(webDir string) http.Handler {
	Routes()
	return &ui.Handler{
		Name:                    "Conferral",
		ShortName:               "Conferral",
		Title:                   "Conferral — fingerprints for image classifiers",
		Description:             "Prove whether a suspect image classifier was stolen, with conferrable adversarial examples.",
		Icon:                    ui.Icon{Default: "/web/icon.png", Large: "/web/icon.png", SVG: "/web/icon.svg"},
		Styles:                  []string{"/web/app.css"},
		BackgroundColor:         "#1f2a44",
		ThemeColor:              "#1f2a44",
		LoadingLabel:            "Loading Conferral {progress}%",
		Resources:               &resources{webDir: webDir, assets: http.FileServerFS(assets.FS)},
		WasmContentLengthHeader: wasmLengthHeader,
	}
}

// resources tells go-app where its static files live: everything under
// /web/ comes from the embedded assets, except app.wasm, which is read from
// webDir and sent gzipped to browsers that accept it.
type resources struct {
	webDir string
	assets http.Handler

	mu   sync.Mutex
	gz   []byte // gzipped app.wasm, for the file of modTime and size
	raw  int64
	mod  time.Time
	size int64
}

func (r *resources) Package() string { return "" }
func (r *resources) Static() string  { return "" }
func (r *resources) AppWASM() string { return "/web/app.wasm" }

func (r *resources) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/web/app.wasm" {
		req2 := *req
		u := *req.URL
		u.Path = strings.TrimPrefix(req.URL.Path, "/web")
		req2.URL = &u
		if _, err := fs.Stat(assets.FS, strings.TrimPrefix(u.Path, "/")); err != nil || u.Path == "/" {
			http.NotFound(w, req)
			return
		}
		r.assets.ServeHTTP(w, &req2)
		return
	}
	path := filepath.Join(r.webDir, "app.wasm")
	if !strings.Contains(req.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Type", "application/wasm")
		http.ServeFile(w, req, path)
		return
	}
	gz, raw, err := r.gzipped(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/wasm")
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Set("Vary", "Accept-Encoding")
	w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
	w.Header().Set(wasmLengthHeader, strconv.FormatInt(raw, 10))
	if req.Method != http.MethodHead {
		w.Write(gz)
	}
}

// gzipped returns app.wasm compressed, compressing again only when the file
// changed.
func (r *resources) gzipped(path string) ([]byte, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("app.wasm is not built (make web): %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gz != nil && st.ModTime().Equal(r.mod) && st.Size() == r.size {
		return r.gz, r.raw, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("reading app.wasm: %w", err)
	}
	gz, err := Gzip(b)
	if err != nil {
		return nil, 0, err
	}
	r.gz, r.raw, r.mod, r.size = gz, int64(len(b)), st.ModTime(), st.Size()
	return gz, r.raw, nil
}

// Gzip compresses b at the best compression, as app.wasm is sent (and
// measured by `make bench`).
func Gzip(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("compressing app.wasm: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing app.wasm: %w", err)
	}
	return buf.Bytes(), nil
}
