package main

import (
	"fmt"
	"os"
	"strings"
)

// manifestEntry is one suspect of a suspects manifest (the zoo's
// suspects.tsv): derived from the source or independent of it, its
// architecture and training recipe, and its file or endpoint URL.
type manifestEntry struct {
	derived            bool
	arch, recipe, spec string
}

// readManifest reads a suspects manifest: one suspect a line,
// "derived|independent, architecture, recipe, file or URL", tab-separated;
// blank lines are skipped. A line of another form is a usage error naming
// it.
func readManifest(path string) ([]manifestEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("suspects manifest: %w", err)
	}
	var out []manifestEntry
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 || (f[0] != "derived" && f[0] != "independent") {
			return nil, usagef("%s:%d: want derived|independent, architecture, recipe and a file or URL, tab-separated", path, n+1)
		}
		out = append(out, manifestEntry{derived: f[0] == "derived", arch: f[1], recipe: f[2], spec: f[3]})
	}
	return out, nil
}
