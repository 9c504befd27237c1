package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

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
	committed, err := s.committed.reports(s.cfg.Results)
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

// committedCache keeps the listing of the committed studies between
// requests. It is read again when the folder's modification time or one of
// its subfolders' changed: an added, removed or renamed report, or a file
// added to, removed from or renamed in one (what a listing shows: names,
// and the folder's time as Created). A time too recent to tell a later
// change in the same clock tick from the one seen is not trusted: such a
// listing is not kept.
type committedCache struct {
	mu     sync.Mutex
	dir    string
	stamps []folderStamp // dir's own first (name "."), then its subfolders'
	list   []shared.ReportInfo
}

// folderStamp is a folder's modification time when it was read.
type folderStamp struct {
	name string
	mod  time.Time
}

// racyStamp is how recent a modification time may be for a listing read
// with it to be kept: longer than the clock tick of file times (a jiffy on
// Linux, 2 s on FAT).
const racyStamp = 3 * time.Second

// reports returns the committed studies under dir (committedReports), read
// again only when a modification time says they changed. The list is the
// caller's; its reports' Files are shared and not to be changed.
func (c *committedCache) reports(dir string) ([]shared.ReportInfo, error) {
	if dir == "" {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == dir && c.stamps != nil && stampsHold(dir, c.stamps) {
		return slices.Clone(c.list), nil
	}
	c.dir, c.stamps, c.list = "", nil, nil
	now := time.Now()
	stamps, err := stampFolders(dir) // before reading: a change made while reading moves a stamp on
	if err != nil {
		return nil, err
	}
	list, err := committedReports(dir)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(stamps, func(f folderStamp) bool { return f.mod.After(now.Add(-racyStamp)) }) {
		c.dir, c.stamps, c.list = dir, stamps, list
	}
	return slices.Clone(list), nil
}

// stampFolders returns the modification times of dir and of the folders
// directly under it (links are not followed).
func stampFolders(dir string) ([]folderStamp, error) {
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("listing the committed studies: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing the committed studies: %w", err)
	}
	stamps := []folderStamp{{".", st.ModTime()}}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("listing the committed studies: %w", err)
		}
		stamps = append(stamps, folderStamp{e.Name(), fi.ModTime()})
	}
	return stamps, nil
}

// stampsHold says whether every folder of stamps is still a folder with
// the same modification time.
func stampsHold(dir string, stamps []folderStamp) bool {
	for _, f := range stamps {
		st, err := os.Lstat(filepath.Join(dir, f.name))
		if err != nil || !st.IsDir() || !st.ModTime().Equal(f.mod) {
			return false
		}
	}
	return true
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
