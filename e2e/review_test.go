package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/conferral/conferral/shared"
)

// TestCommittedStudies: the Experiments page lists the studies committed
// in docs/results beside the server's own reports, and opens one with its
// tables and plots.
func TestCommittedStudies(t *testing.T) {
	dir := filepath.Join("..", "docs", "results")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		if md, _ := filepath.Glob(filepath.Join(dir, e.Name(), "*.md")); e.IsDir() && len(md) > 0 {
			want = append(want, "results:"+e.Name())
		}
	}
	if len(want) < 5 {
		t.Fatalf("docs/results holds %d studies: %q", len(want), want)
	}
	ctx := tab(t)
	open(t, ctx, "/experiments", "experiments")
	options := eval[[]string](t, ctx, `[...document.querySelectorAll('#report-select option')].map(o => o.value)`)
	for _, w := range want {
		if !slices.Contains(options, w) {
			t.Errorf("the reports lack the committed study %s: %q", w, options)
		}
	}
	if text := eval[string](t, ctx, `document.querySelector('main').innerText`); strings.Contains(text, "No report yet") {
		t.Error(`the page says "No report yet" beside committed studies`)
	}
	const study = "results:fingerprint-4x2"
	if err := chromedp.Do(ctx, set(`#report-select`, study)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#report[data-report=%q] table') !== null`, study), "the committed study's tables")
	waitFor(t, ctx, imagesLoaded("#report img"), "the committed study's plots")
	got := eval[struct {
		Head      string
		Committed bool
		Plots     int
	}](t, ctx, `({Head: (document.querySelector('#report h2') || {innerText: ''}).innerText,
		Committed: document.querySelector('#report-committed') !== null, Plots: document.querySelectorAll('#report img').length})`)
	md, err := os.ReadFile(filepath.Join(dir, "fingerprint-4x2", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	title, _, _ := strings.Cut(strings.TrimPrefix(string(md), "# "), "\n")
	if got.Head != title || !got.Committed || got.Plots == 0 {
		t.Errorf("the committed study shows %+v; want the heading %q, the read-only note and its plots", got, title)
	}
}

// TestVerifyHistory: the Verify page lists past verdicts, and each opens
// its card.
func TestVerifyHistory(t *testing.T) {
	j, err := runJob(context.Background(), shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: e2e.fp.ID, Model: e2e.ref.ID}})
	if err != nil {
		t.Fatal(err)
	}
	want := j.Result.Verdict
	ctx := tab(t)
	open(t, ctx, "/verify", "verify")
	row := fmt.Sprintf(`#history-table tr[data-job=%q]`, j.ID)
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector(%q) !== null`, row), "the past verdict in the history")
	text := eval[string](t, ctx, fmt.Sprintf(`document.querySelector(%q).innerText`, row))
	for _, w := range []string{want.Suspect, e2e.fp.Name, want.Outcome, fmt.Sprintf("%.2f", want.Accuracy), fmt.Sprintf("%.2f–%.2f", want.Interval[0], want.Interval[1])} {
		if !strings.Contains(text, w) {
			t.Errorf("the history's row lacks %q: %q", w, text)
		}
	}
	if eval[bool](t, ctx, `document.querySelector('#verdict') !== null`) {
		t.Error("a verdict card is shown before one was opened")
	}
	if err := chromedp.Do(ctx, chromedp.Click(row+` button.history-open`)); err != nil {
		t.Fatal(err)
	}
	v := readVerdict(t, ctx)
	if v.Outcome != want.Outcome || fmt.Sprintf("%.4f", v.Accuracy) != fmt.Sprintf("%.4f", want.Accuracy) || v.Cells != want.N || !strings.Contains(v.Text, want.Suspect) {
		t.Errorf("the opened card %+v; want the job's verdict %s, %.4f on %d, of %s", v, want.Outcome, want.Accuracy, want.N, want.Suspect)
	}
}
