package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/conferral/conferral/shared"
)

// committedPrefix starts the name of a committed study's report
// (Config.Results): no report the server writes has a ':' in its name, so
// the two never collide.
const committedPrefix = "results:"

// reportList is GET /api/reports: the server's own reports, then the
// committed studies of Config.Results (read-only).
func (s *Server) reportList(ctx context.Context) (any, error) {
	own, err := s.store.Reports(ctx)
	if err != nil {
		return nil, err
	}
	committed, err := committedReports(s.cfg.Results)
	if err != nil {
		return nil, err
	}
	return append(own, committed...), nil
}

// report resolves a report's name to its record and folder: a committed
// study's (Config.Results) or one the server wrote.
func (s *Server) report(ctx context.Context, name string) (shared.ReportInfo, string, error) {
	if folder, ok := strings.CutPrefix(name, committedPrefix); ok {
		return committedReport(s.cfg.Results, folder)
	}
	return s.store.Report(ctx, name)
}

// committedReports lists the report folders directly under dir: those
// holding a markdown file. An empty dir lists none.
func committedReports(dir string) ([]shared.ReportInfo, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing the committed studies: %w", err)
	}
	var out []shared.ReportInfo
	for _, e := range entries {
		if !e.IsDir() { // a link is not followed
			continue
		}
		r, _, err := committedReport(dir, e.Name())
		if err == nil && slices.ContainsFunc(r.Files, func(f string) bool { return strings.HasSuffix(f, ".md") }) {
			out = append(out, r)
		}
	}
	return out, nil
}

// committedReport reads folder, a plain name of a folder directly under
// dir (never a path: "..", separators and links are refused), as a report:
// its markdown files first, then its PNGs.
func committedReport(dir, folder string) (shared.ReportInfo, string, error) {
	if dir == "" || !nameRE.MatchString(folder) {
		return shared.ReportInfo{}, "", fmt.Errorf("report %q: %w", committedPrefix+folder, ErrNotFound)
	}
	p := filepath.Join(dir, folder)
	st, err := os.Lstat(p)
	if err != nil || !st.IsDir() {
		return shared.ReportInfo{}, "", fmt.Errorf("report %q: %w", committedPrefix+folder, ErrNotFound)
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return shared.ReportInfo{}, "", fmt.Errorf("reading report %s: %w", folder, err)
	}
	study, _, _ := strings.Cut(folder, "-")
	info := shared.ReportInfo{Name: committedPrefix + folder, Study: study, Created: st.ModTime().UTC(), Files: []string{}}
	for _, e := range entries {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".md") || strings.HasSuffix(e.Name(), ".png")) {
			info.Files = append(info.Files, e.Name())
		}
	}
	sort.SliceStable(info.Files, func(i, k int) bool {
		return strings.HasSuffix(info.Files[i], ".md") && !strings.HasSuffix(info.Files[k], ".md")
	})
	return info, p, nil
}
