package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// testBar is a bar writing to a buffer, as newBar makes one for a file.
func testBar(tty, quiet bool, interval time.Duration) (*bar, *bytes.Buffer) {
	var buf bytes.Buffer
	return &bar{w: &buf, tty: tty, start: map[string]time.Time{}, quiet: quiet, interval: interval}, &buf
}

func progress(step, total int64) shared.Event {
	return shared.Event{Kind: shared.Progress, Stage: "train cnn", Step: step, Total: total, Epoch: 1, Metrics: map[string]float64{"loss": 0.5, "lr": 0.01}}
}

func epoch(n int) shared.Event {
	return shared.Event{Kind: shared.Epoch, Stage: "train cnn", Epoch: n, Metrics: map[string]float64{"test_acc": 0.875, "loss": 0.25}}
}

const clearLine = "\r\033[K"

func TestBarTTY(t *testing.T) {
	b, buf := testBar(true, false, 0)
	cases := []struct {
		step, total int64
		pct         string
		fill        int // '=' characters in the 30-wide bar
	}{
		{0, 10, "  0%", 0},
		{1, 10, " 10%", 3},
		{5, 10, " 50%", 15},
		{10, 10, "100%", 30},
		{3, 0, "  0%", 0}, // unknown total
	}
	for _, tc := range cases {
		buf.Reset()
		b.Report(progress(tc.step, tc.total))
		out := buf.String()
		if !strings.HasPrefix(out, clearLine) || strings.Contains(out, "\n") {
			t.Errorf("step %d/%d: %q is not one redrawn line", tc.step, tc.total, out)
		}
		if !strings.Contains(out, "train cnn [") || !strings.Contains(out, tc.pct+" ") || !strings.Contains(out, "loss 0.5") || !strings.Contains(out, "lr 0.01") {
			t.Errorf("step %d/%d: line %q lacks stage, %q or metrics", tc.step, tc.total, out, tc.pct)
		}
		m := regexp.MustCompile(`\[([=> ]*)\]`).FindStringSubmatch(out)
		if m == nil || len(m[1]) != 30 {
			t.Errorf("step %d/%d: no 30-wide bar in %q", tc.step, tc.total, out)
			continue
		}
		if n := strings.Count(m[1], "="); n != tc.fill {
			t.Errorf("step %d/%d: bar %q has %d '=', want %d", tc.step, tc.total, m[1], n, tc.fill)
		}
	}

	// An epoch line clears the bar and ends with a newline.
	buf.Reset()
	b.Report(epoch(1))
	if want := clearLine + "train cnn: epoch 1 loss 0.25 test_acc 0.875\n"; buf.String() != want {
		t.Errorf("epoch after the bar: %q, want %q", buf.String(), want)
	}
	// With the bar cleared, done writes nothing.
	buf.Reset()
	b.done()
	if buf.Len() != 0 {
		t.Errorf("done after an epoch line wrote %q", buf.String())
	}
	// done clears a drawn bar.
	b.Report(progress(2, 10))
	buf.Reset()
	b.done()
	if buf.String() != clearLine {
		t.Errorf("done wrote %q, want a cleared line", buf.String())
	}
}

func TestBarThrottle(t *testing.T) {
	b, buf := testBar(true, false, time.Hour)
	b.Report(progress(1, 100))
	first := buf.Len()
	if first == 0 {
		t.Fatal("first step not drawn")
	}
	for s := int64(2); s < 100; s++ {
		b.Report(progress(s, 100))
	}
	if buf.Len() != first {
		t.Errorf("steps within the interval were drawn: %q", buf.String()[first:])
	}
	b.Report(progress(100, 100))
	if !strings.Contains(buf.String()[first:], "100%") {
		t.Errorf("the last step was not drawn: %q", buf.String())
	}
}

func TestBarNotTTY(t *testing.T) {
	b, buf := testBar(false, false, 0)
	for s := int64(1); s <= 10; s++ {
		b.Report(progress(s, 10))
	}
	if buf.Len() != 0 {
		t.Errorf("progress steps written to a non-terminal: %q", buf.String())
	}
	b.Report(epoch(1))
	b.Report(shared.Event{Kind: shared.Log, Stage: "extract", Message: "42 fingerprints kept"})
	b.Report(epoch(2))
	b.done()
	want := "train cnn: epoch 1 loss 0.25 test_acc 0.875\n" +
		"extract: 42 fingerprints kept\n" +
		"train cnn: epoch 2 loss 0.25 test_acc 0.875\n"
	if buf.String() != want {
		t.Errorf("non-terminal output\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestBarQuiet(t *testing.T) {
	for _, tty := range []bool{true, false} {
		b, buf := testBar(tty, true, 0)
		b.Report(progress(5, 10))
		b.Report(epoch(1))
		b.Report(shared.Event{Kind: shared.Log, Stage: "x", Message: "hello"})
		b.done()
		if buf.Len() != 0 {
			t.Errorf("tty=%v: quiet bar wrote %q", tty, buf.String())
		}
	}
}

// TestNewBar checks that newBar sees a regular file as no terminal.
func TestNewBar(t *testing.T) {
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := newBar(f, false)
	if b.tty {
		t.Error("a regular file taken for a terminal")
	}
	b.Report(progress(1, 2))
	b.Report(epoch(1))
	b.done()
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "train cnn: epoch 1 loss 0.25 test_acc 0.875\n" {
		t.Errorf("file got %q", got)
	}
}
