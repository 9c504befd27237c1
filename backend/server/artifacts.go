package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// artifacts is a folder of files named by their sha256: weights,
// fingerprints and uploads. Files are written under a temporary name in
// the same folder and renamed into place, so a reader never sees half a
// file and a crash leaves at most a stray temporary.
type artifacts struct {
	dir           string
	artifactCheck              // what checked.go has verified
	remote        *objectStore // when dir caches an object store (s3.go)
}

func newArtifacts(dir string) (*artifacts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the artifact folder: %w", err)
	}
	// Temporaries of an earlier run that crashed are garbage.
	if stale, err := filepath.Glob(filepath.Join(dir, ".tmp-*")); err == nil {
		for _, p := range stale {
			os.Remove(p)
		}
	}
	return &artifacts{dir: dir}, nil
}

// temp returns the path of a new temporary file in the folder for a writer
// that wants a path (Model.Save, Fingerprint.Save).
func (a *artifacts) temp(ext string) (string, error) {
	f, err := os.CreateTemp(a.dir, ".tmp-*"+ext)
	if err != nil {
		return "", fmt.Errorf("creating a temporary artifact: %w", err)
	}
	name := f.Name()
	f.Close()
	return name, nil
}

// adopt hashes the finished temporary file and renames it to its sha256
// name, returning the sum and the final path.
func (a *artifacts) adopt(tmp, ext string) (sum, path string, err error) {
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	f, err := os.Open(tmp)
	if err != nil {
		return "", "", fmt.Errorf("hashing an artifact: %w", err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("hashing an artifact: %w", err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	path = filepath.Join(a.dir, sum+ext)
	if err := syncFile(tmp); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", "", fmt.Errorf("storing artifact %s: %w", sum, err)
	}
	if err := syncDir(a.dir); err != nil {
		return "", "", fmt.Errorf("storing artifact %s: %w", sum, err)
	}
	if err := a.publish(path); err != nil {
		return "", "", err
	}
	return sum, path, nil
}

// errTooLarge is a stream longer than its limit.
var errTooLarge = errors.New("too large")

// write copies at most limit bytes of r into a new artifact; a longer
// stream is refused with errTooLarge and leaves nothing behind.
func (a *artifacts) write(r io.Reader, limit int64, ext string) (sum, path string, size int64, err error) {
	tmp, sum, size, err := a.stage(r, limit, ext)
	if err != nil {
		return "", "", 0, err
	}
	if path, err = a.place(tmp, sum, ext); err != nil {
		return "", "", 0, err
	}
	return sum, path, size, nil
}

// stage copies at most limit bytes of r into a temporary file of the
// folder, synced, and returns it with its sha256; a longer stream is
// refused with errTooLarge and leaves nothing behind. place puts it where
// its sum names it.
func (a *artifacts) stage(r io.Reader, limit int64, ext string) (tmp, sum string, size int64, err error) {
	f, err := os.CreateTemp(a.dir, ".tmp-*"+ext)
	if err != nil {
		return "", "", 0, fmt.Errorf("creating a temporary artifact: %w", err)
	}
	tmp = f.Name()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil && size > limit {
		err = fmt.Errorf("more than %d bytes: %w", limit, errTooLarge)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", "", 0, err
	}
	return tmp, hex.EncodeToString(h.Sum(nil)), size, nil
}

// place renames a staged temporary file to its sha256 name, makes the
// rename durable and publishes the file; the temporary is gone either way.
func (a *artifacts) place(tmp, sum, ext string) (string, error) {
	path := filepath.Join(a.dir, sum+ext)
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("storing artifact %s: %w", sum, err)
	}
	if err := syncDir(a.dir); err != nil {
		return "", fmt.Errorf("storing artifact %s: %w", sum, err)
	}
	if err := a.publish(path); err != nil {
		return "", err
	}
	return path, nil
}

// syncDir makes the renames in a folder durable: a rename is a change of
// the folder, which fsync of the file does not cover.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing folder: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing folder: %w", err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	return nil
}
