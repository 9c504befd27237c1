package server

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
// the folders' below it changed: an added, removed or renamed report, or a
// file added to, removed from or renamed in one (what a listing shows: names,
// and the folder's time as Created). A time too recent to tell a later
// change in the same clock tick from the one seen is not trusted: such a
// listing is not kept.
type committedCache struct {
	mu     sync.Mutex
	dir    string
	stamps []folderStamp // dir's own first (name "."), then the folders' below it
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

// committedDepth is how deep below Config.Results a committed report may
// lie: a study's folder (levers), a part of it (levers/fleet8), a part of
// that (leaveout/lenet/whole-fleet), and one more.
const committedDepth = 4

// walkCommitted calls fn with each folder below dir, parents first and
// each folder's in name order, as a slash-separated path relative to dir:
// at most committedDepth deep, only names a report's may have (nameRE),
// and links not followed.
func walkCommitted(dir string, fn func(folder string, d fs.DirEntry) error) error {
	return fs.WalkDir(os.DirFS(dir), ".", func(folder string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case !d.IsDir(): // a link to a folder is not one (WalkDir does not follow it)
			return nil
		case folder == ".":
			return nil
		case !nameRE.MatchString(d.Name()):
			return fs.SkipDir
		}
		if err := fn(folder, d); err != nil {
			return err
		}
		if strings.Count(folder, "/")+1 >= committedDepth {
			return fs.SkipDir
		}
		return nil
	})
}

// stampFolders returns the modification times of dir and of the folders
// below it that may hold a report (walkCommitted).
func stampFolders(dir string) ([]folderStamp, error) {
	st, err := os.Stat(dir) // dir may be a link; the folders below it may not
	if err != nil {
		return nil, fmt.Errorf("listing the committed studies: %w", err)
	}
	stamps := []folderStamp{{".", st.ModTime()}}
	err = walkCommitted(dir, func(folder string, d fs.DirEntry) error {
		fi, err := d.Info()
		if err != nil {
			return err
		}
		stamps = append(stamps, folderStamp{folder, fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the committed studies: %w", err)
	}
	return stamps, nil
}

// stampsHold says whether every folder of stamps is still a folder with
// the same modification time.
func stampsHold(dir string, stamps []folderStamp) bool {
	for _, f := range stamps {
		stat := os.Lstat
		if f.name == "." {
			stat = os.Stat
		}
		st, err := stat(filepath.Join(dir, filepath.FromSlash(f.name)))
		if err != nil || !st.IsDir() || !st.ModTime().Equal(f.mod) {
			return false
		}
	}
	return true
}

// committedReports lists the report folders below dir: those holding a
// markdown file, named by their path ("levers", "levers/fleet8"), parents
// before the folders in them. An empty dir lists none.
func committedReports(dir string) ([]shared.ReportInfo, error) {
	if dir == "" {
		return nil, nil
	}
	var out []shared.ReportInfo
	err := walkCommitted(dir, func(folder string, _ fs.DirEntry) error {
		if r, _, err := committedReport(dir, folder); err == nil {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the committed studies: %w", err)
	}
	return out, nil
}

// committedReport reads folder, a slash-separated path of a folder below
// dir ("levers/fleet8"), as a report of the files committedFile names: a
// folder without markdown is none. Each step of the path is a name
// (nameRE: no "..", no "." and no separator in it) of a folder, not of a
// link, at most committedDepth of them, so that nothing outside dir is
// reached. The report's study is the top folder's name, the study that
// committed it.
func committedReport(dir, folder string) (shared.ReportInfo, string, error) {
	notFound := fmt.Errorf("report %q: %w", committedPrefix+folder, ErrNotFound)
	steps := strings.Split(folder, "/")
	if dir == "" || len(steps) > committedDepth {
		return shared.ReportInfo{}, "", notFound
	}
	p := dir
	var st os.FileInfo
	for _, step := range steps {
		if !nameRE.MatchString(step) {
			return shared.ReportInfo{}, "", notFound
		}
		p = filepath.Join(p, step)
		var err error
		if st, err = os.Lstat(p); err != nil || !st.IsDir() {
			return shared.ReportInfo{}, "", notFound
		}
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return shared.ReportInfo{}, "", fmt.Errorf("reading report %s: %w", folder, err)
	}
	info := shared.ReportInfo{Name: committedPrefix + folder, Study: steps[0], Created: st.ModTime().UTC(), Files: []string{}}
	for _, e := range entries {
		if _, ok := committedFile(e.Name()); ok && e.Type().IsRegular() {
			info.Files = append(info.Files, e.Name())
		}
	}
	if !slices.ContainsFunc(info.Files, func(f string) bool { return strings.HasSuffix(f, ".md") }) {
		return shared.ReportInfo{}, "", notFound // a folder without markdown is not a report
	}
	slices.SortStableFunc(info.Files, func(a, b string) int {
		ra, _ := committedFile(a)
		rb, _ := committedFile(b)
		return ra - rb
	})
	return info, p, nil
}

// committedFile says whether a committed report serves a file, and where
// it lists it: its markdown first, then its PNG plots, then the plain text
// its markdown links to (a study's COMMAND, a .txt log, a .tsv table).
func committedFile(name string) (rank int, ok bool) {
	switch {
	case strings.HasSuffix(name, ".md"):
		return 0, true
	case strings.HasSuffix(name, ".png"):
		return 1, true
	case plainText(name):
		return 2, true
	}
	return 0, false
}

// plainText says whether a report's file is sent as plain text.
func plainText(name string) bool {
	return name == "COMMAND" || strings.HasSuffix(name, ".txt") || strings.HasSuffix(name, ".tsv")
}
