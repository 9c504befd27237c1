// Package e2e drives the Conferral browser app in Debian's headless
// chromium: the real server (backend/server) on 127.0.0.1 with a temporary
// SQLite file, tiny real models trained by its job queue, a real
// fingerprint, and the WASM app built from ./wasm. Each test writes a
// screenshot of its page to docs/screenshots.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	stdpng "image/png"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/conferral/conferral/app"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/server"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// `make screenshots` passes -screenshots ../docs/screenshots; by default the
// screenshots are still taken (and must decode) but land in a temporary
// folder, so that `make test` leaves the tree clean.
var screenshots = flag.String("screenshots", "", "folder for the pages' screenshots (empty: a temporary folder)")

// env is what TestMain sets up for the tests: read-only once the tests run.
type env struct {
	base     string // http://127.0.0.1:PORT
	dir      string // the server's folder
	bin      string // the conferral binary (for serve-model)
	wasm     string // the app.wasm the server serves
	source   shared.ModelInfo
	surr     shared.ModelInfo
	ref      shared.ModelInfo
	fp       shared.FingerprintInfo
	browser  context.Context // a chromedp context that has run once
	requests *requestLog
}

// requestLog records every URL the browser asked for.
type requestLog struct {
	mu   sync.Mutex
	urls []string
}

func (r *requestLog) add(u string) {
	r.mu.Lock()
	r.urls = append(r.urls, u)
	r.mu.Unlock()
}

func (r *requestLog) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.urls...)
}

var e2e env

func TestMain(m *testing.M) {
	flag.Parse()
	code, err := setup(m)
	if err != nil {
		log.Print("e2e setup: ", err)
		code = 1
	}
	os.Exit(code)
}

// setup builds the app and the binary, starts the server, seeds it through
// its API, starts chromium, then runs the tests.
func setup(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "conferral-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	web := filepath.Join(tmp, "web")
	e2e.wasm = filepath.Join(web, "app.wasm")
	e2e.dir, e2e.bin = filepath.Join(tmp, "server"), filepath.Join(tmp, "conferral")

	// Build app.wasm and the conferral binary side by side.
	builds := []*exec.Cmd{
		exec.Command(goTool(), "build", "-o", e2e.wasm, "../wasm"),
		exec.Command(goTool(), "build", "-o", e2e.bin, "../cmd/conferral"),
	}
	builds[0].Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, c := range builds {
		wg.Go(func() {
			if out, err := c.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%s: %w\n%s", strings.Join(c.Args, " "), err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}

	torch.SetNumThreads(1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv, err := server.New(ctx, server.Config{Dir: e2e.dir, Device: "cpu", Threads: 1, Workers: 1,
		Addr: "127.0.0.1:0", AllowPrivate: true, App: app.Handler(web), Results: filepath.Join("..", "docs", "results")})
	if err != nil {
		return 0, fmt.Errorf("starting the server: %w", err)
	}
	addr := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(ctx, func(a string) { addr <- a }) }()
	select {
	case a := <-addr:
		e2e.base = "http://" + a
	case err := <-served:
		return 0, fmt.Errorf("serving: %w", err)
	}
	defer func() { stop(); <-served }()

	if err := seed(ctx); err != nil {
		return 0, err
	}

	// One headless chromium for all tests, with a fresh profile (the
	// service worker caches the app).
	profile := filepath.Join(tmp, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium()),
		chromedp.UserDataDir(profile),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	e2e.requests = &requestLog{}
	// The first run starts the browser: no timeout on it.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		return 0, fmt.Errorf("starting chromium: %w", err)
	}
	e2e.browser = bctx
	return m.Run(), nil
}

func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

func chromium() string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "chromium"
}

// seed trains a source, a surrogate and a reference (one-epoch MLPs on 2,000
// Fashion-MNIST images) and crafts a fingerprint, all as jobs of the
// running server, through its HTTP API.
func seed(ctx context.Context) error {
	data := shared.DataArgs{Limit: 2000}
	train := func(a shared.TrainArgs) (shared.ModelInfo, error) {
		a.Arch, a.Epochs = "mlp", 1
		j, err := runJob(ctx, shared.JobRequest{Kind: shared.JobTrain, Train: &a})
		if err != nil {
			return shared.ModelInfo{}, fmt.Errorf("training %s: %w", a.Name, err)
		}
		return j.Result.Models[0], nil
	}
	var err error
	if e2e.source, err = train(shared.TrainArgs{DataArgs: data, Name: "e2e-source", Seed: 1}); err != nil {
		return err
	}
	if e2e.surr, err = train(shared.TrainArgs{DataArgs: data, Name: "e2e-surrogate", Teacher: e2e.source.ID, Seed: 2}); err != nil {
		return err
	}
	ref := data
	ref.Split = "adversary"
	if e2e.ref, err = train(shared.TrainArgs{DataArgs: ref, Name: "e2e-reference", Role: shared.RoleReference, Seed: 3}); err != nil {
		return err
	}
	j, err := runJob(ctx, shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: data, Name: "e2e-demo", Source: e2e.source.ID,
		Surrogates: []string{e2e.surr.ID}, References: []string{e2e.ref.ID},
		Eps: 0.15, Steps: 20, Candidates: 64, Tau: new(1.0), Seed: 1,
	}})
	if err != nil {
		return fmt.Errorf("extracting the fingerprint: %w", err)
	}
	e2e.fp = *j.Result.Fingerprint
	if e2e.fp.Count < 4 {
		return fmt.Errorf("the fingerprint has %d examples; the tests need at least 4", e2e.fp.Count)
	}
	return nil
}

// runJob submits a job and waits for it to end.
func runJob(ctx context.Context, req shared.JobRequest) (*shared.Job, error) {
	var j shared.Job
	if err := call(ctx, http.MethodPost, "/api/jobs", req, &j); err != nil {
		return nil, err
	}
	return waitJob(ctx, j.ID)
}

// waitJob polls a job until it is final; it fails unless it completed.
func waitJob(ctx context.Context, id string) (*shared.Job, error) {
	return waitJobAt(ctx, e2e.base, id)
}

// waitJobAt is waitJob on the server at base.
func waitJobAt(ctx context.Context, base, id string) (*shared.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		var j shared.Job
		if err := callAt(ctx, base, http.MethodGet, "/api/jobs/"+id, nil, &j); err != nil {
			return nil, err
		}
		if j.State.Final() {
			if j.State != shared.JobCompleted || j.Result == nil {
				return nil, fmt.Errorf("job %s %s: %s", id, j.State, j.Error)
			}
			return &j, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for job %s: %w", id, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// call does one API request.
func call(ctx context.Context, method, path string, in, out any) error {
	return callAt(ctx, e2e.base, method, path, in, out)
}

// callAt does one API request to the server at base.
func callAt(ctx context.Context, base, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// tab opens a new tab of the shared browser for one test.
func tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(e2e.browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	// Record every request of the tab (chromedp enables the network domain).
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			e2e.requests.add(e.Request.URL)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// open navigates to path and waits until the WASM app has loaded the page's
// data: only the browser sets data-loaded, the server's prerendering never.
func open(t *testing.T, ctx context.Context, path, page string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(e2e.base+path)); err != nil {
		t.Fatalf("navigating to %s: %v", path, err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('main[data-page=%q][data-loaded=true]') !== null`, page), "the "+page+" page to load")
}

// waitFor polls a JavaScript predicate until it holds.
func waitFor(t *testing.T, ctx context.Context, predicate, what string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingTimeout(2*time.Minute))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main') ? document.querySelector('main').innerText.slice(0, 2000) : document.body.innerText.slice(0, 2000)`))
		t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, body)
	}
}

// set types value into the field sel and fires its change event, which is
// when go-app reads a field.
func set(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.SetValue(sel, value),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).dispatchEvent(new Event('change'))`, sel)),
	)
}

// eval evaluates a JavaScript expression.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// imagesLoaded is a predicate: every image matched by sel has loaded.
func imagesLoaded(sel string) string {
	return fmt.Sprintf(`(() => { const im = [...document.querySelectorAll(%q)]; return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0); })()`, sel)
}

// shoot writes a full-page screenshot to the screenshots folder.
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := *screenshots
	if dir == "" {
		dir = t.TempDir()
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if _, err := stdpng.DecodeConfig(bytes.NewReader(png)); err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHomeLoadsFromWASM(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/", "home")
	// The WASM app, not the prerendered page, is running.
	if !eval[bool](t, ctx, `typeof goappNav === 'function' || typeof Go === 'function'`) {
		t.Error("the go-app runtime is not loaded")
	}
	waitFor(t, ctx, imagesLoaded(".home-example img"), "the demo fingerprint's images")
	got := eval[struct {
		Examples int
		Text     string
	}](t, ctx, `({Examples: document.querySelectorAll('.home-example').length, Text: document.querySelector('main').innerText})`)
	if got.Examples != 4 {
		t.Errorf("home shows %d examples, want 4", got.Examples)
	}
	for _, want := range []string{"e2e-demo", "A surrogate (e2e-surrogate, mlp)", "A reference (e2e-reference, mlp)", "Source model:"} {
		if !strings.Contains(got.Text, want) {
			t.Errorf("home page lacks %q", want)
		}
	}
	shoot(t, ctx, "home")
}

func TestModelsAndLiveTraining(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/models", "models")
	rows := eval[[]string](t, ctx, `[...document.querySelectorAll('#models-table tbody tr')].map(r => r.dataset.model)`)
	for _, m := range []shared.ModelInfo{e2e.source, e2e.surr, e2e.ref} {
		found := false
		for _, r := range rows {
			found = found || r == m.ID
		}
		if !found {
			t.Errorf("the model list lacks %s (%s)", m.Name, m.ID)
		}
	}
	acc := eval[string](t, ctx, fmt.Sprintf(`document.querySelector('tr[data-model=%q] td.acc').innerText`, e2e.source.ID))
	if want := fmt.Sprintf("%.4f", e2e.source.TestAcc); acc != want {
		t.Errorf("source accuracy shown as %q, want %q", acc, want)
	}

	// Start a small job from the page and watch its events arrive.
	if err := chromedp.Do(ctx,
		set(`#train-name`, "e2e-live"), set(`#train-limit`, "1000"), set(`#train-epochs`, "2"),
		chromedp.Click(`#train-start`),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `(() => { const l = document.querySelector('#job-live [data-events]'); return l && Number(l.dataset.events) > 3 && l.dataset.state === 'running'; })()`,
		"progress events of the running job")
	waitFor(t, ctx, `(() => { const l = document.querySelector('#job-live [data-events]'); return l && l.dataset.state === 'completed'; })()`,
		"the job to complete")
	live := eval[struct {
		Job      string
		Events   int
		Progress string
		Loss     int
		Dots     int
	}](t, ctx, `(() => { const l = document.querySelector('#job-live [data-events]'); return {
		Job: l.dataset.job, Events: Number(l.dataset.events), Progress: document.querySelector('#job-progress').innerText,
		Loss: document.querySelectorAll('#job-live polyline[data-name=loss]').length,
		Dots: document.querySelectorAll('#job-live svg[aria-label=accuracy] circle').length}; })()`)
	j, err := waitJob(context.Background(), live.Job)
	if err != nil {
		t.Fatal(err)
	}
	if j.Args.Train == nil || j.Args.Train.Name != "e2e-live" || j.Args.Train.Limit != 1000 || j.Args.Train.Epochs != 2 {
		t.Errorf("the page started %+v, want the form's name, limit and epochs", j.Args.Train)
	}
	if j.Progress == nil || live.Progress != fmt.Sprintf("step %d of %d", j.Progress.Total, j.Progress.Total) {
		t.Errorf("page shows %q at the end, job's last progress %+v", live.Progress, j.Progress)
	}
	if live.Loss != 1 || live.Dots != 4 {
		t.Errorf("charts: %d loss lines, %d accuracy points; want 1 and 4 (train and test, 2 epochs)", live.Loss, live.Dots)
	}
	// The new model joins the list when the job ends.
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('tr[data-model=%q]') !== null`, j.Result.Models[0].ID), "the new model in the list")
	shoot(t, ctx, "models")

	// A long job started from the page is cancelled from the page.
	if err := chromedp.Do(ctx,
		set(`#train-name`, "e2e-cancel"), set(`#train-limit`, "2000"), set(`#train-epochs`, "50"),
		chromedp.Click(`#train-start`),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`(() => { const l = document.querySelector('#job-live [data-job]'); return l && l.dataset.job !== %q && document.querySelector('tr[data-job="' + l.dataset.job + '"] button.cancel') !== null; })()`, live.Job),
		"the new job's cancel button")
	long := eval[string](t, ctx, `document.querySelector('#job-live [data-job]').dataset.job`)
	if err := chromedp.Do(ctx, chromedp.Click(fmt.Sprintf(`tr[data-job=%q] button.cancel`, long))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('tr[data-job=%q] td.state').innerText.startsWith('cancelled')`, long), "the job to show as cancelled")
	var cancelled shared.Job
	if err := call(context.Background(), http.MethodGet, "/api/jobs/"+long, nil, &cancelled); err != nil {
		t.Fatal(err)
	}
	if cancelled.State != shared.JobCancelled || cancelled.Args.Train == nil || cancelled.Args.Train.Name != "e2e-cancel" {
		t.Errorf("job %s: %s, %+v; want the cancelled e2e-cancel", long, cancelled.State, cancelled.Args.Train)
	}
}

func TestGallery(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/fingerprints", "fingerprints")
	waitFor(t, ctx, imagesLoaded("#gallery img"), "the gallery's images")
	type item struct {
		Index  int
		Confer float64
		Imgs   int
		Tags   int
	}
	items := func() []item {
		return eval[[]item](t, ctx, `[...document.querySelectorAll('#gallery .item')].map(c => ({Index: Number(c.dataset.index),
			Confer: Number(c.dataset.confer), Imgs: c.querySelectorAll('img').length, Tags: c.querySelectorAll('.tag').length}))`)
	}
	got := items()
	if len(got) != e2e.fp.Count {
		t.Fatalf("gallery shows %d items, the fingerprint has %d", len(got), e2e.fp.Count)
	}
	for i, it := range got {
		if it.Imgs != 3 || it.Tags != 2 {
			t.Errorf("item %d: %d images and %d agreement tags, want 3 and 2", it.Index, it.Imgs, it.Tags)
		}
		if i > 0 && it.Confer > got[i-1].Confer {
			t.Errorf("items are not sorted by conferrability: %v after %v", it.Confer, got[i-1].Confer)
		}
	}
	// Sorting by index and filtering by a target class.
	if err := chromedp.Do(ctx, set(`#sort`, "index")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `(() => { const ix = [...document.querySelectorAll('#gallery .item')].map(c => Number(c.dataset.index)); return ix.every((v, i) => i === 0 || v > ix[i-1]); })()`,
		"items sorted by index")
	var detail shared.FingerprintDetail
	if err := call(context.Background(), http.MethodGet, "/api/fingerprints/"+e2e.fp.ID, nil, &detail); err != nil {
		t.Fatal(err)
	}
	target := detail.Items[0].Target
	want := 0
	for _, it := range detail.Items {
		if it.Target == target {
			want++
		}
	}
	if err := chromedp.Do(ctx, set(`#filter-target`, fmt.Sprint(target))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll('#gallery .item').length === %d`, want), fmt.Sprintf("%d items of target %d", want, target))
	// The download link serves the fingerprint file itself.
	href := eval[string](t, ctx, `document.querySelector('#fp-download').href`)
	resp, err := http.Get(href)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("conferral-fingerprint/1")) {
		t.Errorf("download %s: HTTP %d, %d bytes, not a fingerprint file", href, resp.StatusCode, len(b))
	}
	if err := chromedp.Do(ctx, set(`#filter-target`, "-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, imagesLoaded("#gallery img"), "the gallery's images")
	shoot(t, ctx, "fingerprints")
}

// modelFile is a stored model's weights in the server's artifact folder.
func modelFile(t *testing.T, id string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(e2e.dir, "artifacts", id+".*"))
	if err != nil || len(m) != 1 {
		t.Fatalf("finding model %s's file: %v %v", id, m, err)
	}
	return m[0]
}

// openVerify opens the Verify page with the setup's fingerprint chosen.
func openVerify(t *testing.T, ctx context.Context) {
	t.Helper()
	open(t, ctx, "/verify", "verify")
	if err := chromedp.Do(ctx, set(`#verify-fp`, e2e.fp.ID)); err != nil {
		t.Fatal(err)
	}
}

// verdictFromPage waits for the verdict card and reads it.
type pageVerdict struct {
	Surrogate bool
	Outcome   string
	Accuracy  float64
	Title     string
	Cells     int
	Agree     int
	Text      string
}

func readVerdict(t *testing.T, ctx context.Context) pageVerdict {
	t.Helper()
	waitFor(t, ctx, `document.querySelector('#verdict') !== null`, "the verdict")
	waitFor(t, ctx, imagesLoaded("#verdict .grid img"), "the verdict's fingerprints")
	return eval[pageVerdict](t, ctx, `(() => { const v = document.querySelector('#verdict'); return {
		Surrogate: v.dataset.surrogate === 'true', Outcome: v.dataset.outcome, Accuracy: Number(v.dataset.accuracy),
		Title: document.querySelector('#verdict-title').innerText,
		Cells: v.querySelectorAll('.grid .cell').length, Agree: v.querySelectorAll('.grid .cell.agree').length,
		Text: v.innerText}; })()`)
}

func TestVerifyUploadedONNX(t *testing.T) {
	// The source model itself, exported to ONNX, must be judged a
	// surrogate (it agrees with every key).
	src, _, err := nn.Load(modelFile(t, e2e.source.ID), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Free()
	path := filepath.Join(t.TempDir(), "suspect.onnx")
	if err := onnx.ExportFile(src, path, onnx.ExportOptions{}); err != nil {
		t.Fatal(err)
	}

	ctx := tab(t)
	openVerify(t, ctx)

	// A file that is not ONNX is refused with the server's reason.
	junk := filepath.Join(t.TempDir(), "junk.onnx")
	if err := os.WriteFile(junk, []byte("not an ONNX model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.SetUploadFiles(`#verify-file`, []string{junk})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#verify-file-note').innerText.startsWith('junk.onnx,')`, "the junk file to be read")
	if err := chromedp.Do(ctx, chromedp.Click(`#verify-run`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('main .error') !== null`, "the upload's refusal")
	refusal := eval[string](t, ctx, `document.querySelector('main .error').innerText`)
	if !strings.Contains(refusal, "onnx") && !strings.Contains(refusal, "ONNX") {
		t.Errorf("the refusal does not say what is wrong: %q", refusal)
	}
	if eval[bool](t, ctx, `document.querySelector('#verdict') !== null`) {
		t.Error("a verdict was shown for a file that is not a model")
	}

	if err := chromedp.Do(ctx, chromedp.SetUploadFiles(`#verify-file`, []string{path})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#verify-file-note').innerText.startsWith('suspect.onnx,')`, "the file to be read")
	if err := chromedp.Do(ctx, chromedp.Click(`#verify-run`)); err != nil {
		t.Fatal(err)
	}
	v := readVerdict(t, ctx)
	if eval[bool](t, ctx, `document.querySelector('main .error') !== null`) {
		t.Error("the earlier refusal is still shown")
	}
	if v.Outcome != perfectOutcome() || v.Surrogate != (v.Outcome == shared.OutcomeDerived) || v.Accuracy != 1 || v.Cells != e2e.fp.Count || v.Agree != e2e.fp.Count {
		t.Errorf("verdict on the source's ONNX: %+v; want %s, agreeing on all %d", v, perfectOutcome(), e2e.fp.Count)
	}
	// The fixture's fingerprint is uncalibrated: the card says so and
	// prints no p-value.
	if !strings.Contains(v.Text, "no p-value") || strings.Contains(v.Text, "p-value (fit)") || !strings.Contains(v.Text, "conferral calibrate") {
		t.Errorf("verdict card says %q", v.Text)
	}
	shoot(t, ctx, "verify-upload")
}

func TestVerifyStoredModel(t *testing.T) {
	// The training surrogate agrees with every key (τ = 1).
	ctx := tab(t)
	openVerify(t, ctx)
	// Sequential verification of the uncalibrated fixture is refused,
	// with what to run instead.
	if err := chromedp.Do(ctx,
		chromedp.Click(`#mode-model`),
		chromedp.WaitVisible(`#verify-model`),
		set(`#verify-model`, e2e.surr.ID),
		chromedp.Click(`#verify-sequential`),
		chromedp.Click(`#verify-run`),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('main .error') !== null`, "the sequential request's refusal")
	if refusal := eval[string](t, ctx, `document.querySelector('main .error').innerText`); !strings.Contains(refusal, "no calibration") || !strings.Contains(refusal, "conferral calibrate") {
		t.Errorf("the refusal does not say what is missing: %q", refusal)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(`#verify-sequential`),
		chromedp.Click(`#verify-run`),
	); err != nil {
		t.Fatal(err)
	}
	v := readVerdict(t, ctx)
	if v.Outcome != perfectOutcome() || v.Accuracy != 1 || v.Agree != e2e.fp.Count || !strings.Contains(v.Text, "e2e-surrogate") {
		t.Errorf("verdict on the stored surrogate: %+v; want %s, agreeing on all %d", v, perfectOutcome(), e2e.fp.Count)
	}
}

// perfectOutcome is the uncalibrated verdict on a suspect that agrees on
// every one of the fixture's n fingerprints: derived when the
// Clopper–Pearson lower bound (0.025^(1/n)) reaches θ = 0.7, which takes
// n ≥ 11; inconclusive below.
func perfectOutcome() string {
	if math.Pow(0.025, 1/float64(e2e.fp.Count)) >= 0.7 {
		return shared.OutcomeDerived
	}
	return shared.OutcomeInconclusive
}

func TestVerifyEndpoint(t *testing.T) {
	// The training reference, served by `conferral serve-model`, must not
	// be judged a surrogate: it disagrees with every key (τ = 1).
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(e2e.bin, "serve-model", "--threads", "1", "--model", modelFile(t, e2e.ref.ID), "--addr", addr, "--name", "ref")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	endpoint := "http://" + addr + "/v2/models/ref"
	if err := waitHTTP(endpoint); err != nil {
		t.Fatalf("serve-model did not come up: %v\n%s", err, out.String())
	}

	ctx := tab(t)
	openVerify(t, ctx)
	if err := chromedp.Do(ctx,
		chromedp.Click(`#mode-endpoint`),
		chromedp.WaitVisible(`#verify-endpoint`),
		set(`#verify-endpoint`, endpoint),
		chromedp.Click(`#verify-run`),
	); err != nil {
		t.Fatal(err)
	}
	v := readVerdict(t, ctx)
	// The queries went out to the endpoint, as the job's log tells.
	progress := eval[struct{ Queries, Log string }](t, ctx, `({Queries: document.querySelector('#verify-queries').innerText, Log: document.querySelector('#verify-log').innerText})`)
	if want := fmt.Sprintf("%d of %d queries answered", e2e.fp.Count, e2e.fp.Count); progress.Queries != want {
		t.Errorf("progress says %q, want %q", progress.Queries, want)
	}
	if want := fmt.Sprintf("querying %s with %d fingerprints", endpoint, e2e.fp.Count); !strings.Contains(progress.Log, want) {
		t.Errorf("the log lacks %q:\n%s", want, progress.Log)
	}
	// 0 of n ≥ 4: the interval's upper end, 1 − 0.025^(1/n) ≤ 0.60, is below θ.
	if v.Outcome != shared.OutcomeIndependent || v.Surrogate || v.Accuracy != 0 || v.Cells != e2e.fp.Count || v.Agree != 0 {
		t.Errorf("verdict on the served reference: %+v; want independent, agreeing on none of %d", v, e2e.fp.Count)
	}
	if !strings.Contains(v.Title, "Independent") {
		t.Errorf("verdict card says %q", v.Text)
	}
	shoot(t, ctx, "verify-endpoint")
}

func TestCraftFromGallery(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/fingerprints", "fingerprints")
	if err := chromedp.Do(ctx, chromedp.Click(`#extract-open`), chromedp.WaitVisible(`#extract-start`)); err != nil {
		t.Fatal(err)
	}
	// The form proposes the stored surrogates and references; the test
	// names its source and keeps the run small.
	boxes := eval[map[string]bool](t, ctx, `Object.fromEntries([...document.querySelectorAll('#extract input[type=checkbox]')].map(b => [b.id, b.checked]))`)
	for _, want := range []string{"ex-surrogate-" + e2e.surr.ID[:10], "ex-reference-" + e2e.ref.ID[:10]} {
		if !boxes[want] {
			t.Errorf("%s is not proposed: %v", want, boxes)
		}
	}
	// A model cannot be a surrogate and a reference at once.
	if err := chromedp.Do(ctx, chromedp.Click(`#ex-reference-`+e2e.surr.ID[:10]), chromedp.Click(`#extract-start`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `(document.querySelector('#extract .error') || {innerText: ''}).innerText.includes('both a surrogate and a reference')`, "the form's refusal")
	// Nor a reference and a twin.
	if err := chromedp.Do(ctx, chromedp.Click(`#ex-reference-`+e2e.surr.ID[:10]), chromedp.Click(`#ex-twin-`+e2e.ref.ID[:10]), chromedp.Click(`#extract-start`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `(document.querySelector('#extract .error') || {innerText: ''}).innerText.includes('a twin cannot also be')`, "the form's refusal of a twin")
	if err := chromedp.Do(ctx, chromedp.Click(`#ex-twin-`+e2e.ref.ID[:10]),
		set(`#ex-name`, "e2e-page"), set(`#ex-source`, e2e.source.ID), set(`#ex-candidates`, "32"), set(`#ex-steps`, "10"), set(`#ex-eps`, "0.15"), set(`#ex-tau`, "1"),
		chromedp.Click(`#extract-start`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#extract').dataset.state === 'completed'`, "the extraction to complete")
	progress := eval[string](t, ctx, `document.querySelector('#extract-progress').innerText`)
	if !strings.HasPrefix(progress, "C-BIM step ") || strings.HasPrefix(progress, "C-BIM step 0 ") {
		t.Errorf("progress shown: %q", progress)
	}
	job := eval[string](t, ctx, `document.querySelector('#extract').dataset.job`)
	j, err := waitJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	fp := j.Result.Fingerprint
	if a := j.Args.Extract; a == nil || a.Name != "e2e-page" || a.Source != e2e.source.ID || a.Candidates != 32 || a.Steps != 10 ||
		strings.Join(a.Surrogates, ",") != e2e.surr.ID || strings.Join(a.References, ",") != e2e.ref.ID {
		t.Errorf("the page asked for %+v", a)
	}
	// The gallery opens the new fingerprint.
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#fp-select').value === %q && document.querySelectorAll('#gallery .item').length === %d`, fp.ID, min(fp.Count, 60)),
		"the new fingerprint in the gallery")
}

// TestCraftNaturalFromGallery: natural errors chosen in the form grey out
// C-BIM's settings and send natural:true, and the gallery shows the new
// fingerprint as the source's errors: one unperturbed image per card, no ε.
func TestCraftNaturalFromGallery(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/fingerprints", "fingerprints")
	if err := chromedp.Do(ctx, chromedp.Click(`#extract-open`), chromedp.WaitVisible(`#extract-start`), set(`#ex-attack`, shared.AttackNatural)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#extract').dataset.attack === 'natural' && ['#ex-eps', '#ex-loss', '#ex-best', '#ex-steps', '#ex-shift', '#ex-noise'].every(s => document.querySelector(s).disabled) && !document.querySelector('#ex-tau').disabled`,
		"C-BIM's settings greyed out")
	// τ = τ_S = 0 keeps every error, however the one-epoch models answer.
	if err := chromedp.Do(ctx, set(`#ex-name`, "e2e-natural"), set(`#ex-source`, e2e.source.ID), set(`#ex-candidates`, "16"), set(`#ex-tau`, "0"), set(`#ex-tau-surr`, "0"),
		chromedp.Click(`#extract-start`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#extract').dataset.state === 'completed'`, "the natural extraction to complete")
	j, err := waitJob(context.Background(), eval[string](t, ctx, `document.querySelector('#extract').dataset.job`))
	if err != nil {
		t.Fatal(err)
	}
	if a := j.Args.Extract; a == nil || !a.Natural || a.Eps != 0 || a.Steps != 0 || a.Loss != "" || a.BestIterate || a.Candidates != 16 {
		t.Errorf("the page asked for %+v; want natural errors and none of C-BIM's settings", a)
	}
	fp := j.Result.Fingerprint
	if fp.Attack != shared.AttackNatural {
		t.Fatalf("the job made a %q fingerprint", fp.Attack)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#fp-select').value === %q && document.querySelectorAll('#gallery .item').length === %d`, fp.ID, min(fp.Count, 60)),
		"the natural fingerprint in the gallery")
	waitFor(t, ctx, imagesLoaded("#gallery img"), "the natural fingerprint's images")
	type card struct {
		Attack string
		Imgs   int
		Text   string
	}
	for _, c := range eval[[]card](t, ctx, `[...document.querySelectorAll('#gallery .item')].map(c => ({Attack: c.dataset.attack || '', Imgs: c.querySelectorAll('img').length, Text: c.innerText}))`) {
		if c.Attack != shared.AttackNatural || c.Imgs != 1 || strings.Contains(c.Text, "ε") || strings.Contains(c.Text, "perturbation") || !strings.Contains(c.Text, "the source says") {
			t.Errorf("natural card %+v: want one unperturbed image, the source's label and no ε", c)
		}
	}
	for _, sel := range []string{`.stats`, `#fp-select option:checked`, `#gallery-lead`} {
		if txt := eval[string](t, ctx, `document.querySelector('`+sel+`').innerText`); strings.Contains(txt, "ε") || !strings.Contains(txt, "natural errors of the source") {
			t.Errorf("%s says %q: want natural errors of the source and no ε", sel, txt)
		}
	}
	shoot(t, ctx, "fingerprints-natural")
}

func TestExperiments(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/experiments", "experiments")
	// A tiny conferrability study, run from the page.
	if err := chromedp.Do(ctx, set(`#study-name`, "e2e-conferrability"), set(`#study-limit`, "300"), set(`#study-points`, "16"),
		chromedp.Click(`#study-run`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#study').dataset.state === 'running' && /^[1-9]\d* of [1-9]/.test(document.querySelector('#study-progress').innerText)`,
		"the study's progress")
	waitFor(t, ctx, `document.querySelector('#study').dataset.state === 'completed'`, "the study to complete")
	job := eval[string](t, ctx, `document.querySelector('#study').dataset.job`)
	j, err := waitJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if a := j.Args.Experiment; a == nil || a.Study != "conferrability" || a.Limit != 300 || a.Points != 16 || strings.Join(a.Archs, ",") != "mlp" {
		t.Errorf("the page asked for %+v", a)
	}
	waitFor(t, ctx, `document.querySelector('#report[data-report="e2e-conferrability"] table') !== null`, "the report's tables")
	waitFor(t, ctx, imagesLoaded("#report img"), "the report's plots")
	got := eval[struct {
		Methods []string
		Plots   int
		Heads   []string
	}](t, ctx, `({Methods: [...document.querySelectorAll('#report table')].shift() ? [...document.querySelector('#report table').querySelectorAll('tbody tr')].map(r => r.cells[0].innerText) : [],
		Plots: document.querySelectorAll('#report img').length,
		Heads: [...document.querySelectorAll('#report h2, #report h3')].map(h => h.innerText)})`)
	want := []string{"FGSM", "IGM", "PGD", "DeepFool", "CW-L2", "C-BIM", "C-BIM best iterate"}
	if strings.Join(got.Methods, ",") != strings.Join(want, ",") {
		t.Errorf("Table 1 rows %q, want %q", got.Methods, want)
	}
	if got.Plots != 2 {
		t.Errorf("%d plots shown, want 2 (Figures 4 and 5)", got.Plots)
	}
	if len(got.Heads) == 0 || !strings.HasPrefix(got.Heads[0], "Conferrability") {
		t.Errorf("headings %q", got.Heads)
	}
	shoot(t, ctx, "experiments")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP waits until u answers 200.
func waitHTTP(u string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestOnlyOwnOrigin, the last test of the file, checks that no tab of the
// tests before it asked for anything beyond the server's origin.
func TestOnlyOwnOrigin(t *testing.T) {
	base, _ := url.Parse(e2e.base)
	urls := e2e.requests.all()
	if len(urls) == 0 {
		t.Fatal("no request was recorded")
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			t.Errorf("bad URL %q", raw)
			continue
		}
		switch u.Scheme {
		case "data", "blob", "about":
			continue
		}
		if u.Host != base.Host {
			t.Errorf("the app reached %s, beyond its origin %s", raw, e2e.base)
		}
	}
}

// BenchmarkApp measures what a visitor waits for: app.wasm's size as sent
// (gzipped) and the time from navigation to the home page rendered with its
// data by the WASM app, in a fresh browser context (nothing cached: the
// download, compilation and first render) and again in the same tab
// (app.wasm from the cache). `make bench` runs it.
func BenchmarkApp(b *testing.B) {
	raw, err := os.ReadFile(e2e.wasm)
	if err != nil {
		b.Fatal(err)
	}
	gz, err := app.Gzip(raw)
	if err != nil {
		b.Fatal(err)
	}
	var cold, warm time.Duration
	for b.Loop() {
		ctx, cancel := chromedp.NewContext(e2e.browser, chromedp.WithNewBrowserContext())
		for i, d := range []*time.Duration{&cold, &warm} {
			start := time.Now()
			if err := chromedp.Do(ctx, chromedp.Navigate(e2e.base+"/")); err != nil {
				b.Fatal(err)
			}
			if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`document.querySelectorAll('.home-example img').length > 0 && [...document.querySelectorAll('.home-example img')].every(i => i.complete && i.naturalWidth > 0)`,
				chromedp.WithPollingTimeout(time.Minute))); err != nil {
				b.Fatalf("load %d: %v", i, err)
			}
			*d += time.Since(start)
		}
		cancel()
	}
	b.ReportMetric(float64(len(raw))/(1<<20), "MiB-wasm")
	b.ReportMetric(float64(len(gz))/(1<<20), "MiB-wasm-gzip")
	b.ReportMetric(float64(cold.Milliseconds())/float64(b.N), "ms-cold-render")
	b.ReportMetric(float64(warm.Milliseconds())/float64(b.N), "ms-warm-render")
	b.ReportMetric(0, "ns/op")
}
