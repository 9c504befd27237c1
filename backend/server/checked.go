package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/conferral/conferral/shared"
)

// staleTemp is the age after which a temporary in a shared artifact folder
// is taken for the leftover of a dead writer. Younger ones may belong to a
// job that another machine runs now.
const staleTemp = 24 * time.Hour

// newSharedArtifacts opens an artifact folder that several processes, on
// several machines, write at once (a network filesystem): an artifact
// appears only by the rename of a complete temporary, and a temporary is
// removed only when it is older than staleTemp.
func newSharedArtifacts(dir string) (*artifacts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the artifact folder: %w", err)
	}
	if stale, err := filepath.Glob(filepath.Join(dir, ".tmp-*")); err == nil {
		for _, p := range stale {
			if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > staleTemp {
				os.Remove(p)
			}
		}
	}
	return &artifacts{dir: dir}, nil
}

// verify resolves a stored artifact path in this process's folder (another
// machine may mount the shared folder elsewhere) and checks that the file's
// sha256 is its name. A file checked once is not hashed again unless its
// size or time changes.
func (a *artifacts) verify(stored string) (string, error) {
	base := filepath.Base(stored)
	sum, _, _ := strings.Cut(base, ".")
	if len(sum) != sha256.Size*2 {
		return stored, nil // not content-addressed (a report folder)
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return stored, nil
	}
	path := filepath.Join(a.dir, base)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && a.remote != nil {
		if err := a.remote.fetch(context.Background(), base, a.dir); err != nil {
			return "", err
		}
		f, err = os.Open(path)
	}
	if err != nil {
		return "", fmt.Errorf("artifact %s: %w", sum, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("artifact %s: %w", sum, err)
	}
	key := checkedFile{path: path, size: fi.Size(), mod: fi.ModTime()}
	a.mu.Lock()
	ok := a.checked[key]
	a.mu.Unlock()
	if ok {
		return path, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("artifact %s: reading: %w", sum, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", fmt.Errorf("artifact %s is corrupt: its content hashes to %s", sum, got)
	}
	a.mu.Lock()
	if a.checked == nil {
		a.checked = map[checkedFile]bool{}
	}
	a.checked[key] = true
	a.mu.Unlock()
	return path, nil
}

// checkedFile is a file as verify last saw it.
type checkedFile struct {
	path string
	size int64
	mod  time.Time
}

// artifactCheck caches which artifact files have been verified.
type artifactCheck struct {
	mu      sync.Mutex
	checked map[checkedFile]bool
}

// checkedStore is a Store whose artifact paths are resolved in this
// process's artifact folder and verified against their names before they
// are handed to a reader.
type checkedStore struct {
	Store
	art *artifacts
}

func (c checkedStore) Model(ctx context.Context, id string) (shared.ModelInfo, string, error) {
	m, p, err := c.Store.Model(ctx, id)
	if err != nil {
		return m, p, err
	}
	p, err = c.art.verify(p)
	return m, p, err
}

func (c checkedStore) Fingerprint(ctx context.Context, id string) (shared.FingerprintInfo, string, error) {
	f, p, err := c.Store.Fingerprint(ctx, id)
	if err != nil {
		return f, p, err
	}
	p, err = c.art.verify(p)
	return f, p, err
}

func (c checkedStore) Upload(ctx context.Context, id string) (string, error) {
	p, err := c.Store.Upload(ctx, id)
	if err != nil {
		return p, err
	}
	return c.art.verify(p)
}

// Report resolves a report's folder written by another member of a fleet,
// which may mount the shared folder elsewhere, in this process's mount.
func (c checkedStore) Report(ctx context.Context, name string) (shared.ReportInfo, string, error) {
	r, dir, err := c.Store.Report(ctx, name)
	if err != nil {
		return r, dir, err
	}
	if _, serr := os.Stat(dir); serr != nil {
		if here := filepath.Join(c.art.dir, "reports", filepath.Base(dir)); here != dir {
			if fi, err := os.Stat(here); err == nil && fi.IsDir() {
				return r, here, nil
			}
		}
	}
	return r, dir, nil
}
