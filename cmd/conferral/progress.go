package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/conferral/conferral/shared"
)

// bar draws events as a one-line progress bar on a terminal and as plain
// lines (epochs, logs) otherwise. It is a shared.Reporter.
type bar struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	last     time.Time
	start    map[string]time.Time
	drawn    bool
	quiet    bool
	interval time.Duration
}

func newBar(w io.Writer, quiet bool) *bar {
	tty := false
	if f, ok := w.(*os.File); ok {
		st, err := f.Stat()
		tty = err == nil && st.Mode()&os.ModeCharDevice != 0
	}
	return &bar{w: w, tty: tty, start: map[string]time.Time{}, quiet: quiet, interval: 100 * time.Millisecond}
}

// Report implements shared.Reporter.
func (b *bar) Report(e shared.Event) {
	if b.quiet {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.start[e.Stage]; !ok {
		b.start[e.Stage] = time.Now()
	}
	switch e.Kind {
	case shared.Progress:
		if !b.tty || time.Since(b.last) < b.interval && e.Step != e.Total {
			return
		}
		b.last = time.Now()
		fmt.Fprintf(b.w, "\r\033[K%s", b.line(e))
		b.drawn = true
	default:
		msg := e.Message
		switch {
		case e.Kind == shared.Epoch:
			msg = fmt.Sprintf("epoch %d %s", e.Epoch, metrics(e.Metrics))
		case msg == "" && e.Kind == shared.State && e.State != "":
			msg = string(e.State) // a server job's state change
		case msg == "":
			return // nothing a person would read
		}
		if b.drawn {
			fmt.Fprint(b.w, "\r\033[K")
			b.drawn = false
		}
		fmt.Fprintf(b.w, "%s: %s\n", e.Stage, msg)
	}
}

// line renders "stage [=====>    ] 42% 1.2s/5.0s loss 0.31".
func (b *bar) line(e shared.Event) string {
	const width = 30
	frac := 0.0
	if e.Total > 0 {
		frac = min(1, max(0, float64(e.Step)/float64(e.Total)))
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	if fill < width {
		bar = bar[:fill] + ">" + bar[fill+1:]
	}
	elapsed := time.Since(b.start[e.Stage])
	eta := ""
	if frac > 0 {
		eta = "/" + (time.Duration(float64(elapsed) / frac)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s [%s] %3.0f%% %s%s %s", e.Stage, bar, frac*100, elapsed.Round(time.Second), eta, metrics(e.Metrics))
}

// done clears the bar.
func (b *bar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
		b.drawn = false
	}
}

func metrics(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.4g", k, m[k]))
	}
	return strings.Join(parts, " ")
}
