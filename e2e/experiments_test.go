package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/conferral/conferral/shared"
)

// click waits for the element sel, then clicks it: a click on an element
// that never comes fails the test rather than waiting for ever.
func click(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector(%q) !== null`, sel), sel)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(cctx, chromedp.Click(sel)); err != nil {
		t.Fatalf("clicking %s: %v", sel, err)
	}
}

// chooseStudy picks a study in the Experiments page's form and waits for
// the form to show it.
func chooseStudy(t *testing.T, ctx context.Context, kind string) {
	t.Helper()
	if err := chromedp.Do(ctx, set(`#study-kind`, kind)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#study').dataset.kind === %q`, kind), "the "+kind+" form")
}

// TestRobustnessStudy runs the robustness study (Tables 4 and 5) from the
// Experiments page at toy scale: the form asks for what that job reads
// (a fingerprint ε, no ε sweep), the page follows the job's progress and
// opens its report, with the table of derived models and the plot.
func TestRobustnessStudy(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/experiments", "experiments")
	chooseStudy(t, ctx, "robustness")
	if !eval[bool](t, ctx, `document.querySelector('#study-eps') === null && document.querySelector('#study-focus') !== null`) {
		t.Error("the robustness form shows an ε sweep, or no fingerprint ε")
	}
	// Bad input is refused on the page, before any job.
	if err := chromedp.Do(ctx, set(`#study-focus`, "1.5"), chromedp.Click(`#study-run`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#study .error') !== null`, "the refusal of ε = 1.5")
	if msg := eval[string](t, ctx, `document.querySelector('#study .error').innerText`); !strings.Contains(msg, "ε") {
		t.Errorf("the refusal says %q", msg)
	}
	if job := eval[string](t, ctx, `document.querySelector('#study').dataset.job`); job != "" {
		t.Errorf("a refused form started job %s", job)
	}

	if err := chromedp.Do(ctx, set(`#study-focus`, "0.15"), set(`#study-name`, "e2e-robustness"), set(`#study-limit`, "300"),
		set(`#study-points`, "100"), chromedp.Click(`#study-run`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#study').dataset.job !== ''`, "the study's job")
	job := eval[string](t, ctx, `document.querySelector('#study').dataset.job`)
	waitFor(t, ctx, `document.querySelector('#study').dataset.state === 'completed'`, "the study to complete")
	j, err := waitJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if a := j.Args.Experiment; a == nil || a.Study != "robustness" || a.Name != "e2e-robustness" || a.Limit != 300 || a.Points != 100 ||
		a.Focus != 0.15 || a.Epochs != 1 || a.Per != 1 || len(a.EpsSweep) != 0 || strings.Join(a.Archs, ",") != "mlp" {
		t.Errorf("the page asked for %+v", a)
	}
	// The page saw the job's progress: its events are replayed from the
	// start, so none can be missed however fast the job ran.
	if n := eval[string](t, ctx, `document.querySelector('#study').dataset.progress`); n == "" || n == "0" {
		t.Errorf("%q progress events shown", n)
	}
	if p := eval[string](t, ctx, `document.querySelector('#study-progress').innerText`); !regexp.MustCompile(`^([1-9]\d*) of ([1-9]\d*)$`).MatchString(p) {
		t.Errorf("progress %q", p)
	}
	waitFor(t, ctx, `document.querySelector('#report[data-report="e2e-robustness"] table') !== null`, "the report's tables")
	if q := eval[string](t, ctx, `location.search`); q != "?report=e2e-robustness" {
		t.Errorf("the page's address says %q while it shows the new report", q)
	}
	waitFor(t, ctx, imagesLoaded("#report img"), "the report's plot")
	got := eval[struct {
		Heads  []string
		Rows   int
		Plots  []string
		Placed int
	}](t, ctx, `({Heads: [...document.querySelectorAll('#report h2, #report h3')].map(h => h.innerText),
		Rows: [...document.querySelectorAll('#report table tbody tr')].length,
		Plots: [...document.querySelectorAll('#report img')].map(i => i.getAttribute('src')),
		Placed: [...document.querySelectorAll('#report p > img')].length})`)
	if len(got.Heads) == 0 || !strings.Contains(got.Heads[0], "Tables 4 and 5") || !containsString(got.Heads, "Derived models") {
		t.Errorf("headings %q", got.Heads)
	}
	if got.Rows < 24 {
		t.Errorf("%d table rows, want at least the 24 attacks of the default plan", got.Rows)
	}
	// The plot is where the markdown puts it, once.
	if len(got.Plots) != 1 || got.Plots[0] != "/api/reports/e2e-robustness/robustness.png" || got.Placed != 1 {
		t.Errorf("plots %q (%d in the text)", got.Plots, got.Placed)
	}
	shoot(t, ctx, "experiments-robustness")
}

// containsString says whether one of list contains s.
func containsString(list []string, s string) bool {
	for _, l := range list {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// TestStudyCancel: a running study stops cleanly when cancelled from the
// page, which then takes another.
func TestStudyCancel(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/experiments", "experiments")
	chooseStudy(t, ctx, "robustness")
	// All 60,000 images: the fleet's first model trains long enough to be
	// cancelled while it runs.
	if err := chromedp.Do(ctx, set(`#study-name`, "e2e-cancelled"), set(`#study-limit`, "0"), chromedp.Click(`#study-run`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, `document.querySelector('#study').dataset.progress > 0 && document.querySelector('#study-cancel') !== null`, "the study's first progress")
	click(t, ctx, `#study-cancel`)
	waitFor(t, ctx, `document.querySelector('#study').dataset.state === 'cancelled'`, "the study to stop")
	got := eval[struct {
		Error, Cancel, Disabled bool
		Report                  string
	}](t, ctx, `({Error: document.querySelector('#study .error') !== null, Cancel: document.querySelector('#study-cancel') !== null,
		Disabled: document.querySelector('#study-run').disabled, Report: document.querySelector('#report').dataset.report})`)
	if got.Error || got.Cancel || got.Disabled || got.Report == "e2e-cancelled" {
		t.Errorf("after the cancel: %+v; want no error, no cancel button, the run button back and no report", got)
	}
	job := eval[string](t, ctx, `document.querySelector('#study').dataset.job`)
	var j shared.Job
	if err := call(context.Background(), "GET", "/api/jobs/"+job, nil, &j); err != nil {
		t.Fatal(err)
	}
	if j.State != shared.JobCancelled {
		t.Errorf("job %s is %s", job, j.State)
	}
}

// mdTables counts the pipe tables of a markdown file outside code, and
// lists its images.
func mdTables(md string) (tables int, images []string) {
	rule := regexp.MustCompile(`^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$`)
	image := regexp.MustCompile(`^!\[[^\]]*\]\(([^)\s]+)\)$`)
	lines := strings.Split(md, "\n")
	fenced := false
	for i, l := range lines {
		tl := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(tl, "```"):
			fenced = !fenced
		case fenced || strings.HasPrefix(l, "    "):
		case strings.HasPrefix(tl, "|") && i+1 < len(lines) && rule.MatchString(strings.TrimSpace(lines[i+1])):
			tables++
		case image.MatchString(tl):
			images = append(images, image.FindStringSubmatch(tl)[1])
		}
	}
	return tables, images
}

// TestCommittedReportsRender opens every committed study the page lists
// and checks that each shows all its tables and its plots where its
// markdown puts them, that its links to other reports open them in the
// page (and the browser's back button returns), and that its links to its
// plain text (COMMAND, .txt, .tsv) get that text from the server.
func TestCommittedReportsRender(t *testing.T) {
	ctx := tab(t)
	open(t, ctx, "/experiments", "experiments")
	names := eval[[]string](t, ctx, `[...document.querySelectorAll('#report-select option')].map(o => o.value).filter(v => v.startsWith('results:'))`)
	if len(names) < 5 {
		t.Fatalf("%d committed studies listed: %q", len(names), names)
	}
	plots, files := 0, 0
	for _, name := range names {
		folder := strings.TrimPrefix(name, "results:")
		md, err := os.ReadFile(filepath.Join("..", "docs", "results", filepath.FromSlash(folder), "README.md"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		tables, images := mdTables(string(md))
		if err := chromedp.Do(ctx, set(`#report-select`, name)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q][data-file="README.md"]') !== null`, name), name)
		if len(images) > 0 {
			waitFor(t, ctx, imagesLoaded("#report p > img"), name+"'s plots")
		}
		got := eval[struct {
			Tables, Placed int
			Missing        bool
			Broken, Files  []string
		}](t, ctx, `({Tables: document.querySelectorAll('#report table').length,
			Placed: document.querySelectorAll('#report p > img').length,
			Missing: document.querySelector('#report').innerText.includes('[image:'),
			Broken: [...document.querySelectorAll('#report a')].map(a => a.getAttribute('href')).filter(h => !h.includes('://') && !h.startsWith('/experiments?') && !h.startsWith('/api/reports/')),
			Files: [...document.querySelectorAll('#report a')].map(a => a.getAttribute('href')).filter(h => h.startsWith('/api/reports/'))})`)
		if got.Tables != tables || got.Placed != len(images) || got.Missing || len(got.Broken) > 0 {
			t.Errorf("%s shows %d tables and %d plots (an image left out: %v, links out of the app: %q); its markdown has %d and %d",
				name, got.Tables, got.Placed, got.Missing, got.Broken, tables, len(images))
		}
		for _, f := range got.Files { // a link to a file the page does not show: the server's, as it is
			servedAsIs(t, name, f)
		}
		files += len(got.Files)
		plots += got.Placed
	}
	if plots == 0 {
		t.Error("no committed study showed a plot")
	}
	if files == 0 {
		t.Error("no committed study linked its plain text (detect-evade links study/COMMAND)")
	}
	nestedReports(t, ctx)

	// A link to another study's markdown opens it here; back returns.
	from, to := "results:detect-evade", "results:evasion"
	open(t, ctx, "/experiments?"+url.Values{"report": {from}}.Encode(), "experiments")
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q]') !== null`, from), "the deep link to "+from)
	link := fmt.Sprintf(`#report a[href=%q]`, "/experiments?"+url.Values{"report": {to}, "file": {"README.md"}}.Encode())
	click(t, ctx, link)
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q] table') !== null`, to), "the linked study")
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`history.back()`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q]') !== null`, from), "the study before the link")

	// A study with several markdown files offers each.
	const levers = "results:levers"
	if err := chromedp.Do(ctx, set(`#report-select`, levers)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q] #report-files') !== null`, levers), "the levers' files")
	click(t, ctx, `#report-files a[href*="file=controls.md"]`)
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q][data-file="controls.md"] table') !== null`, levers), "controls.md's table")

	// The detect-and-evade study, with its links to other studies.
	if err := chromedp.Do(ctx, set(`#report-select`, from)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q] table') !== null`, from), from+"'s tables")
	shoot(t, ctx, "experiments-committed")
}

// servedAsIs checks that a report's link to one of its files the page
// does not show (a study's COMMAND, a .txt log, a .tsv table) gets the
// file from the server, as plain text that the browser may not sniff, or
// as the PNG it is.
func servedAsIs(t *testing.T, report, href string) {
	t.Helper()
	resp, err := http.Get(e2e.base + href)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK || len(b) == 0 || resp.Header.Get("X-Content-Type-Options") != "nosniff" ||
		(ct != "text/plain; charset=utf-8" && ct != "image/png") {
		t.Errorf("%s links %s: %d, %d bytes, %s (%s)", report, href, resp.StatusCode, len(b), ct, resp.Header.Get("X-Content-Type-Options"))
	}
}

// nestedReports checks that the reports committed in subfolders of a
// study (benchmark/fp-1, levers/fleet8, leaveout/lenet/whole-fleet, ...)
// are reachable from the page: listed as reports of their own or as files
// of their study. The server lists only the top folders' own files today;
// until it lists any nested one the test names them, and from then on it
// requires them all.
func nestedReports(t *testing.T, ctx context.Context) {
	t.Helper()
	root := filepath.Join("..", "docs", "results")
	var nested []string // folder/…/README.md below a study's folder
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "README.md" {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if strings.Count(filepath.ToSlash(rel), "/") > 1 {
			nested = append(nested, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var list []shared.ReportInfo
	if err := call(context.Background(), "GET", "/api/reports", nil, &list); err != nil {
		t.Fatal(err)
	}
	reachable := map[string]bool{}
	served := false // the server lists something below a study's folder
	for _, r := range list {
		folder, ok := strings.CutPrefix(r.Name, "results:")
		if !ok {
			continue
		}
		for _, f := range r.Files {
			reachable[folder+"/"+f] = true
			served = served || strings.Contains(f, "/")
		}
		served = served || strings.Contains(folder, "/")
	}
	var missing []string
	for _, n := range nested {
		if !reachable[n] {
			missing = append(missing, n)
		}
	}
	switch {
	case len(missing) > 0 && served:
		t.Errorf("%d nested reports the page cannot reach: %q", len(missing), missing)
	case len(missing) > 0:
		t.Logf("the server lists no nested report yet: %d of %d are out of the page's reach (first %q)", len(missing), len(nested), missing[0])
	}
}
