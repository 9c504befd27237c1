package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/url"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	ui "github.com/maxence-charriere/go-app/v9/pkg/app"

	"github.com/conferral/conferral/shared"
)

// eventReadLimit bounds one websocket message: a verdict event carries every
// item of the verdict (coder/websocket's default is 32 KiB).
const eventReadLimit = 8 << 20

// client talks to the server the page came from, and only to it. Its
// requests go through send: the browser's fetch in app.wasm, net/http
// elsewhere.
type client struct {
	origin string // scheme://host[:port]
}

// newClient returns a client for the page's origin (the browser's
// location); base overrides it (tests, or a server run elsewhere).
func newClient(base string) *client {
	if base == "" && ui.IsClient {
		base = ui.Window().Get("location").Get("origin").String()
	}
	return &client{origin: strings.TrimSuffix(base, "/")}
}

// apiError turns an error answer into a Go error with the server's words.
func apiError(what string, status int, b []byte) error {
	b = b[:min(len(b), 64<<10)]
	var e shared.APIError
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s: %s (HTTP %d)", what, e.Error, status)
	}
	return fmt.Errorf("%s: HTTP %d %s", what, status, strings.TrimSpace(string(b)))
}

// fetch makes one request and returns the answer's body, or an error with
// the server's words when it answers one.
func (c *client) fetch(ctx context.Context, method, path, contentType string, body []byte) ([]byte, error) {
	what := method + " " + path
	status, b, err := send(ctx, method, c.origin+path, contentType, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if status >= 400 {
		return nil, apiError(what, status, b)
	}
	return b, nil
}

func (c *client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	b, err := c.fetch(ctx, method, path, contentType, body)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func (c *client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, "GET", path, "", nil, out)
}

func (c *client) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	return c.do(ctx, "POST", path, "application/json", b, out)
}

// Models lists the stored models.
func (c *client) Models(ctx context.Context) ([]shared.ModelInfo, error) {
	var ms []shared.ModelInfo
	return ms, c.get(ctx, "/api/models", &ms)
}

// Jobs lists the jobs, newest first: the server's largest page (1,000),
// so that the home page's story and the verdict history do not lose a
// demo's first jobs behind the default page of 100.
func (c *client) Jobs(ctx context.Context) ([]shared.Job, error) {
	var js []shared.Job
	return js, c.get(ctx, "/api/jobs?limit=1000", &js)
}

// Job fetches one job.
func (c *client) Job(ctx context.Context, id string) (*shared.Job, error) {
	var j shared.Job
	return &j, c.get(ctx, "/api/jobs/"+url.PathEscape(id), &j)
}

// Start asks for a job.
func (c *client) Start(ctx context.Context, r shared.JobRequest) (*shared.Job, error) {
	var j shared.Job
	return &j, c.postJSON(ctx, "/api/jobs", r, &j)
}

// Cancel stops a job.
func (c *client) Cancel(ctx context.Context, id string) error {
	return c.do(ctx, "POST", "/api/jobs/"+url.PathEscape(id)+"/cancel", "", nil, nil)
}

// Fingerprints lists the stored fingerprints.
func (c *client) Fingerprints(ctx context.Context) ([]shared.FingerprintInfo, error) {
	var fs []shared.FingerprintInfo
	return fs, c.get(ctx, "/api/fingerprints", &fs)
}

// Fingerprint fetches a fingerprint with its items.
func (c *client) Fingerprint(ctx context.Context, id string) (*shared.FingerprintDetail, error) {
	var d shared.FingerprintDetail
	return &d, c.get(ctx, "/api/fingerprints/"+url.PathEscape(id), &d)
}

// Reports lists the experiments' reports.
func (c *client) Reports(ctx context.Context) ([]shared.ReportInfo, error) {
	var rs []shared.ReportInfo
	return rs, c.get(ctx, "/api/reports", &rs)
}

// ReportFile fetches one file of a report (its markdown).
func (c *client) ReportFile(ctx context.Context, name, file string) (string, error) {
	b, err := c.fetch(ctx, "GET", reportFileURL(name, file), "", nil)
	if err != nil {
		return "", err
	}
	return string(b[:min(len(b), 4<<20)]), nil
}

// Verify starts the verification of a stored model or an endpoint.
func (c *client) Verify(ctx context.Context, a shared.VerifyArgs) (*shared.Job, error) {
	var j shared.Job
	return &j, c.postJSON(ctx, "/api/verify", a, &j)
}

// VerifyUpload starts the verification of an uploaded ONNX model.
func (c *client) VerifyUpload(ctx context.Context, filename string, onnx []byte, fields map[string]string) (*shared.Job, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if v == "" {
			continue
		}
		if err := mw.WriteField(k, v); err != nil {
			return nil, fmt.Errorf("uploading %s: %w", filename, err)
		}
	}
	fw, err := mw.CreateFormFile("file", filename)
	if err != nil {
		return nil, fmt.Errorf("uploading %s: %w", filename, err)
	}
	if _, err := fw.Write(onnx); err != nil {
		return nil, fmt.Errorf("uploading %s: %w", filename, err)
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("uploading %s: %w", filename, err)
	}
	var j shared.Job
	return &j, c.do(ctx, "POST", "/api/verify", mw.FormDataContentType(), buf.Bytes(), &j)
}

// Events streams the server's events (one job's when job is not empty,
// replaying those already recorded first) to fn until ctx ends, fn returns
// false or the connection fails.
func (c *client) Events(ctx context.Context, job string, fn func(shared.Event) bool) error {
	u, err := url.Parse(c.origin)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	u.Scheme = map[string]string{"https": "wss"}[u.Scheme]
	if u.Scheme == "" {
		u.Scheme = "ws"
	}
	u.Path = "/api/events"
	if job != "" {
		u.RawQuery = url.Values{"job": {job}}.Encode()
	}
	conn, _, err := websocket.Dial(ctx, u.String(), nil)
	if err != nil {
		return fmt.Errorf("events: connecting to %s: %w", u.Path, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(eventReadLimit)
	for {
		var e shared.Event
		if err := wsjson.Read(ctx, conn, &e); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("events: %w", err)
		}
		if !fn(e) {
			conn.Close(websocket.StatusNormalClosure, "")
			return nil
		}
	}
}

// batched returns an event handler for Events that hands the events to
// apply on the UI goroutine in batches: every event that arrives while a
// batch waits for the UI joins it, so a replay of thousands of events
// renders a few times, not thousands.
func batched(ctx ui.Context, apply func([]shared.Event)) func(shared.Event) {
	var (
		mu      sync.Mutex
		pending []shared.Event
	)
	return func(e shared.Event) {
		mu.Lock()
		defer mu.Unlock()
		pending = append(pending, e)
		if len(pending) > 1 {
			return // a dispatch is on its way
		}
		ctx.Dispatch(func(ui.Context) {
			mu.Lock()
			evs := pending
			pending = nil
			mu.Unlock()
			apply(evs)
		})
	}
}

// jobLogLines is how many of a job's latest messages a form keeps.
const jobLogLines = 20

// keepLog returns a job's messages with only the latest jobLogLines kept.
func keepLog(messages []string) []string {
	if len(messages) > jobLogLines {
		return messages[len(messages)-jobLogLines:]
	}
	return messages
}

// jobLog shows a job's messages, newest line first; nil when there are
// none.
func jobLog(messages []string) ui.UI {
	if len(messages) == 0 {
		return nil
	}
	lines := make([]ui.UI, len(messages))
	for i, m := range messages {
		lines[len(lines)-1-i] = ui.Div().Text(m)
	}
	return ui.Div().Class("log").Style("margin-top", "8px").Body(lines...)
}

// watchJob follows job id's events, replayed from its start, until the job
// ends or the returned function (or ctx) stops the watch. apply gets the
// events in batches on the UI goroutine; then done, also there, gets the
// job as it finished, or the error that ended the watch.
func watchJob(ctx ui.Context, id string, apply func([]shared.Event), done func(ui.Context, *shared.Job, error)) context.CancelFunc {
	wctx, stop := context.WithCancel(ctx)
	c := newClient("")
	add := batched(ctx, apply)
	ctx.Async(func() {
		err := c.Events(wctx, id, func(e shared.Event) bool {
			add(e)
			return !(e.Kind == shared.State && e.State.Final())
		})
		var j *shared.Job
		if err == nil {
			j, err = c.Job(wctx, id)
		}
		if wctx.Err() != nil {
			return // stopped: nobody waits for the answer
		}
		ctx.Dispatch(func(ctx ui.Context) { done(ctx, j, err) })
	})
	return stop
}

// jobError says why a finished job did not complete, or nil.
func jobError(what string, j *shared.Job) error {
	if j == nil || j.State == shared.JobCompleted {
		return nil
	}
	if j.Error == "" {
		return fmt.Errorf("%s %s", what, j.State)
	}
	return fmt.Errorf("%s %s: %s", what, j.State, j.Error)
}

// itemURL is the address of one picture of a fingerprint item: kind is
// original, perturbation or fingerprint.
func itemURL(fp string, i int, kind string) string {
	return fmt.Sprintf("/api/fingerprints/%s/items/%d/%s.png", url.PathEscape(fp), i, kind)
}

// fileURL is the address of a fingerprint's file.
func fileURL(fp string) string {
	return "/api/fingerprints/" + url.PathEscape(fp) + "/file"
}

// reportFileURL is the address of a report's file.
func reportFileURL(name, file string) string {
	return "/api/reports/" + url.PathEscape(name) + "/" + url.PathEscape(file)
}
