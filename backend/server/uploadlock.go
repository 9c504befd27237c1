package server

import (
	"io"
	"sync"
)

// keyLocks is a mutex per key (an upload's sha256), dropped when nobody
// holds or waits for it.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu    sync.Mutex
	users int // holders and waiters
}

// lock takes key's mutex and returns its release.
func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// writeUpload stores an uploaded file under its sha256 and returns with
// the digest's lock held: uploads of the same bytes are content-addressed
// to the same file, so everything from placing the file to deciding
// whether it stays (validated and recorded, or removed as refused) is done
// by one upload of those bytes at a time. Without it, a refused upload
// removed the file that an accepted one was still validating.
func (s *Server) writeUpload(r io.Reader) (sum, path string, size int64, unlock func(), err error) {
	tmp, sum, size, err := s.art.stage(r, s.cfg.MaxUpload, ".onnx")
	if err != nil {
		return "", "", 0, nil, err
	}
	unlock = s.uploads.lock(sum)
	if path, err = s.art.place(tmp, sum, ".onnx"); err != nil {
		unlock()
		return "", "", 0, nil, err
	}
	return sum, path, size, unlock, nil
}
