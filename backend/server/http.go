package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// maxJSON bounds a JSON request body.
const maxJSON = 1 << 20

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.health()) })
	mux.HandleFunc("GET /api/models", s.listOf(func(ctx context.Context) (any, error) { return s.store.Models(ctx) }))
	mux.HandleFunc("GET /api/models/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, _, err := s.store.Model(r.Context(), r.PathValue("id"))
		s.reply(w, m, err)
	})
	mux.HandleFunc("GET /api/jobs", s.jobsPage)
	mux.HandleFunc("GET /api/workers", s.listOf(func(ctx context.Context) (any, error) { return s.workers(ctx) }))
	mux.HandleFunc("GET /api/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, err := s.store.Job(r.Context(), r.PathValue("id"))
		s.reply(w, j, err)
	})
	mux.HandleFunc("POST /api/jobs", func(w http.ResponseWriter, r *http.Request) {
		var req shared.JobRequest
		if err := readJSON(w, r, &req); err != nil {
			s.fail(w, err)
			return
		}
		j, err := s.Submit(r.Context(), req)
		s.replyStatus(w, http.StatusAccepted, j, err)
	})
	mux.HandleFunc("POST /api/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		j, err := s.Cancel(r.Context(), r.PathValue("id"))
		s.reply(w, j, err)
	})
	mux.HandleFunc("GET /api/fingerprints", s.listOf(func(ctx context.Context) (any, error) { return s.store.Fingerprints(ctx) }))
	details := &detailCache{m: map[string]shared.FingerprintDetail{}}
	mux.HandleFunc("GET /api/fingerprints/{id}", s.limitHeavy(always, func(w http.ResponseWriter, r *http.Request) {
		d, err := s.fingerprintDetail(r.Context(), r.PathValue("id"), details)
		s.reply(w, d, err)
	}))
	mux.HandleFunc("GET /api/fingerprints/{id}/file", func(w http.ResponseWriter, r *http.Request) {
		info, path, err := s.store.Fingerprint(r.Context(), r.PathValue("id"))
		if err != nil {
			s.fail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", info.Name+".safetensors"))
		http.ServeFile(w, r, path)
	})
	mux.HandleFunc("GET /api/fingerprints/{id}/items/{i}/{image}", s.itemImage)
	mux.HandleFunc("POST /api/verify", s.limitHeavy(isUpload, s.verify))
	mux.HandleFunc("GET /api/reports", s.listOf(s.reportList)) // results.go
	mux.HandleFunc("GET /api/reports/{name}/{file}", s.reportFile)
	mux.HandleFunc("GET /api/events", s.events)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, fmt.Errorf("%s %s: %w", r.Method, r.URL.Path, ErrNotFound))
	})
	app := s.cfg.App
	if app == nil {
		app = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "conferral serve: the API is under /api/ (see docs/server.md); this build serves no browser app.")
		})
	}
	mux.Handle("/", app)
	return s.guard(mux)
}

// guard checks the token and, for requests that change something, that a
// browser's Origin is this server's (or an allowed one).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// DNS rebinding: a page whose name resolves to this machine
		// comes with its own name in Host.
		if !s.hosts.allows(r.Host) {
			msg := fmt.Sprintf("this server does not answer to host %q (serve --hosts adds names)", r.Host)
			if strings.HasPrefix(r.URL.Path, "/api/") {
				writeJSON(w, http.StatusMisdirectedRequest, shared.APIError{Error: msg})
			} else {
				http.Error(w, msg, http.StatusMisdirectedRequest)
			}
			return
		}
		// A page served elsewhere (Config.Origins) may call the API.
		if o := r.Header.Get("Origin"); o != "" && s.extraOrigin(o) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", o)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Add("Vary", "Origin")
			if r.Method == http.MethodOptions {
				h.Set("Access-Control-Allow-Methods", "GET, POST")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="conferral"`)
			if strings.HasPrefix(r.URL.Path, "/api/") {
				writeJSON(w, http.StatusUnauthorized, shared.APIError{Error: "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN"})
			} else {
				http.Error(w, "conferral serve: open this page with ?token=TOKEN (printed when the server started)", http.StatusUnauthorized)
			}
			return
		}
		if t := r.URL.Query().Get("token"); t != "" && s.cfg.Token != "" && !strings.HasPrefix(r.URL.Path, "/api/") {
			http.SetCookie(w, &http.Cookie{Name: "conferral_token", Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !s.originOK(r) {
			writeJSON(w, http.StatusForbidden, shared.APIError{Error: fmt.Sprintf("origin %q may not call this server", r.Header.Get("Origin"))})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// originOK accepts requests without an Origin (not from a browser page),
// from the server's own origin, and from Config.Origins. The own origin is
// an http(s) origin whose host the server answers to (hostPolicy) and
// whose host and port are those of the request: r.Host alone would be
// whatever name a rebinding attacker's page has.
func (s *Server) originOK(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	if s.extraOrigin(o) {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	return s.hosts.allows(u.Host) && s.hosts.allows(r.Host) && strings.EqualFold(u.Host, r.Host)
}

// extraOrigin says whether o is one of Config.Origins.
func (s *Server) extraOrigin(o string) bool {
	return slices.ContainsFunc(s.cfg.Origins, func(a string) bool { return strings.EqualFold(strings.TrimRight(a, "/"), o) })
}

func (s *Server) listOf(f func(context.Context) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r.Context())
		s.reply(w, v, err)
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return badInput("want a JSON body (Content-Type: application/json), got %q", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body over %d bytes: %w", mbe.Limit, errTooLarge)
		}
		return badInput("reading the request: %v", err)
	}
	// One JSON value, then nothing: a second value is not ignored.
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body over %d bytes: %w", mbe.Limit, errTooLarge)
		}
		return badInput("reading the request: data after the JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	s.replyStatus(w, http.StatusOK, v, err)
}

func (s *Server) replyStatus(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, status, v)
}

// fail answers an error with the status its kind calls for; the message
// names files relative to the server's folders (redact).
func (s *Server) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, errBusy) {
		writeBusy(w, s.redact(err.Error()))
		return
	}
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, new(inputError)):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, errTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, suspect.ErrRefused):
		status = http.StatusBadRequest
	}
	writeJSON(w, status, shared.APIError{Error: s.redact(err.Error())})
}

// redact takes this server's folders out of a message shown to a client:
// a path in the artifact or report folder becomes artifacts/NAME or
// reports/NAME, and one elsewhere in the data folder is made relative to
// it. Where the server keeps its files is none of a client's business.
func (s *Server) redact(msg string) string {
	type swap struct{ from, to string }
	var swaps []swap
	add := func(dir, to string) {
		if dir == "" {
			return
		}
		dirs := []string{filepath.Clean(dir)}
		if abs, err := filepath.Abs(dir); err == nil && abs != dirs[0] {
			dirs = append(dirs, abs)
		}
		for _, d := range dirs {
			swaps = append(swaps, swap{d + string(filepath.Separator), to})
		}
	}
	if s.art != nil {
		add(s.art.dir, "artifacts/")
	}
	add(s.reports, "reports/")
	add(s.cfg.Dir, "")
	// Longer folders first: the artifact folder lies inside the data folder.
	slices.SortStableFunc(swaps, func(a, b swap) int { return len(b.from) - len(a.from) })
	for _, sw := range swaps {
		msg = strings.ReplaceAll(msg, sw.from, sw.to)
	}
	return msg
}

// detailCache keeps computed fingerprint details: labelling the items runs
// every training model. A detail is keyed by the fingerprint and the
// models stored when it was computed.
type detailCache struct {
	mu sync.Mutex
	m  map[string]shared.FingerprintDetail
}

// openFingerprint returns a stored fingerprint's record and its file,
// loaded once per process. Callers must not change the fingerprint.
func (s *Server) openFingerprint(ctx context.Context, id string) (shared.FingerprintInfo, *fingerprint.Fingerprint, error) {
	info, path, err := s.store.Fingerprint(ctx, id)
	if err != nil {
		return info, nil, err
	}
	if fp, ok := s.fps.Load(path); ok {
		return info, fp.(*fingerprint.Fingerprint), nil
	}
	fp, err := fingerprint.Load(path)
	if err != nil {
		return info, nil, err
	}
	s.fps.Store(path, fp)
	return info, fp, nil
}

// fingerprintDetail loads a fingerprint and labels its items with the
// stored training models it names.
func (s *Server) fingerprintDetail(ctx context.Context, id string, cache *detailCache) (shared.FingerprintDetail, error) {
	var d shared.FingerprintDetail
	info, fp, err := s.openFingerprint(ctx, id)
	if err != nil {
		return d, err
	}
	d.FingerprintInfo, d.Classes, d.Models = info, fp.Meta.Classes, []shared.ModelRef{}
	d.Attack = attackOf(fp.Meta) // the file says, whatever the record says
	var paths []string
	for _, group := range []struct {
		role string
		ids  []string
	}{{shared.RoleSurrogate, fp.Meta.Surrogates}, {shared.RoleReference, fp.Meta.References}, {shared.RoleTwin, fp.Meta.Twins}} {
		for _, mid := range group.ids {
			mi, mpath, err := s.store.Model(ctx, mid)
			if errors.Is(err, ErrNotFound) {
				continue // made elsewhere: not stored here
			}
			if err != nil {
				return d, err
			}
			paths = append(paths, mpath)
			d.Models = append(d.Models, shared.ModelRef{ID: mid, Name: mi.Name, Arch: mi.Arch, Role: group.role})
		}
	}
	key := id
	for _, m := range d.Models {
		key += "," + m.ID
	}
	cache.mu.Lock()
	cached, ok := cache.m[key]
	cache.mu.Unlock()
	if ok {
		return cached, nil
	}
	var models []fingerprint.Model
	defer func() {
		for _, m := range models {
			m.(*nn.Model).Free()
		}
	}()
	for i, p := range paths {
		m, _, err := nn.Load(p, s.device)
		if err != nil {
			return d, fmt.Errorf("loading model %s: %w", d.Models[i].Name, err)
		}
		models = append(models, m)
	}
	labels, err := fingerprint.Labels(ctx, models, suspect.Images{X: fp.Float32(), N: fp.N, C: fp.C, H: fp.H, W: fp.W})
	if err != nil {
		return d, err
	}
	for i := range fp.N {
		it := shared.FingerprintItem{Index: i, Label: fp.Labels[i], Target: fp.Keys[i], Conferrability: finite(fp.Confer[i]),
			Labels: make([]int64, len(models)), Agree: make([]bool, len(models))}
		for m := range models {
			it.Labels[m] = labels[m][i]
			it.Agree[m] = labels[m][i] == fp.Keys[i]
		}
		d.Items = append(d.Items, it)
	}
	cache.mu.Lock()
	cache.m[key] = d
	cache.mu.Unlock()
	return d, nil
}

// itemImage draws one fingerprint item, upscaled to about 224 pixels.
func (s *Server) itemImage(w http.ResponseWriter, r *http.Request) {
	_, fp, err := s.openFingerprint(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	i, err := strconv.Atoi(r.PathValue("i"))
	if err != nil || i < 0 || i >= fp.N {
		s.fail(w, fmt.Errorf("item %q of a fingerprint of %d: %w", r.PathValue("i"), fp.N, ErrNotFound))
		return
	}
	per := fp.ImageSize()
	adv, orig := fp.Images[i*per:(i+1)*per], fp.Originals[i*per:(i+1)*per]
	k := max(1, min(16, 224/max(fp.H, 1)))
	var img = fingerprint.Pixel(adv, fp.C, fp.H, fp.W)
	switch r.PathValue("image") {
	case "original.png":
		img = fingerprint.Pixel(orig, fp.C, fp.H, fp.W)
	case "perturbation.png":
		img = fingerprint.Heatmap(adv, orig, fp.C, fp.H, fp.W, fp.Meta.Eps)
	case "fingerprint.png":
	default:
		s.fail(w, fmt.Errorf("image %q (want original.png, perturbation.png or fingerprint.png): %w", r.PathValue("image"), ErrNotFound))
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable") // the ID is the content's hash
	png.Encode(w, fingerprint.Upscale(img, k))
}

// reportFile serves one file of a report folder: its markdown or PNGs, or
// a committed report's plain text.
func (s *Server) reportFile(w http.ResponseWriter, r *http.Request) {
	info, dir, err := s.report(r.Context(), r.PathValue("name")) // results.go
	if err != nil {
		s.fail(w, err)
		return
	}
	file := r.PathValue("file")
	if !slices.Contains(info.Files, file) || filepath.Base(file) != file {
		s.fail(w, fmt.Errorf("report %s has no file %q: %w", info.Name, file, ErrNotFound))
		return
	}
	p := filepath.Join(dir, file)
	if _, err := os.Stat(p); err != nil {
		s.fail(w, fmt.Errorf("report %s: %s: %w", info.Name, file, ErrNotFound))
		return
	}
	switch {
	case strings.HasSuffix(file, ".md"):
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	case plainText(file): // results.go: never sniffed into HTML
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFile(w, r, p)
}

// limitHeavy runs h for requests that heavy says are heavy only while
// one of Config.MaxHeavy slots is free, and answers 503 with Retry-After
// otherwise: each costs up to gigabytes (an upload's validation holds the
// model and runs it), so they are bounded in number, not queued.
func (s *Server) limitHeavy(heavy func(*http.Request) bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !heavy(r) {
			h(w, r)
			return
		}
		select {
		case s.heavy <- struct{}{}:
			defer func() { <-s.heavy }()
			h(w, r)
		default:
			writeBusy(w, fmt.Sprintf("%v: %d heavy requests (uploads, fingerprint details) are running, the most at once", errBusy, cap(s.heavy)))
		}
	}
}

func always(*http.Request) bool { return true }

// isUpload says whether a request carries a multipart upload.
func isUpload(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data")
}

// Pages of GET /api/jobs.
const (
	defaultJobsPage = 100
	maxJobsPage     = 1000
)

// jobsPage is GET /api/jobs[?limit=N][&before=ID]: the newest jobs first,
// at most limit of them (100 by default, 1,000 at most), numbered below
// before. A full page carries a Link header to the next one.
func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultJobsPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxJobsPage {
			s.fail(w, badInput("limit %q: want 1 to %d", v, maxJobsPage))
			return
		}
		limit = n
	}
	var before int64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			s.fail(w, badInput("before %q: want a job ID", v))
			return
		}
		before = n
	}
	jobs, err := s.store.JobsPage(r.Context(), before, limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	if len(jobs) == limit {
		w.Header().Set("Link", fmt.Sprintf(`</api/jobs?before=%s&limit=%d>; rel="next"`, jobs[len(jobs)-1].ID, limit))
	}
	writeJSON(w, http.StatusOK, jobs)
}
