package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/conferral/conferral/shared"
)

// defaultUploadRetention is how long an accepted upload is kept after its
// last upload when Config.UploadRetention is zero.
const defaultUploadRetention = 7 * 24 * time.Hour

// sweepUploads forgets and removes the uploads last uploaded before
// cutoff, except those a job that has not ended still needs. Each is
// removed under its digest's lock, so an upload of the same bytes arriving
// meanwhile either finds the file or writes it again.
func (s *Server) sweepUploads(ctx context.Context, cutoff time.Time) (removed int, err error) {
	ids, err := s.store.StaleUploads(ctx, cutoff)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	live, err := s.store.JobsIn(ctx, shared.JobQueued, shared.JobRunning)
	if err != nil {
		return 0, err
	}
	needed := map[string]bool{}
	for _, j := range live {
		if j.Args.Verify != nil && j.Args.Verify.Upload != "" {
			needed[j.Args.Verify.Upload] = true
		}
	}
	var errs []error
	for _, id := range ids {
		if needed[id] {
			continue
		}
		if err := s.sweepUpload(ctx, id, cutoff); err != nil {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// sweepUpload removes one stale upload, unless it was uploaded again since
// it was listed.
func (s *Server) sweepUpload(ctx context.Context, id string, cutoff time.Time) error {
	unlock := s.uploads.lock(id)
	defer unlock()
	if ids, err := s.store.StaleUploads(ctx, cutoff); err != nil {
		return err
	} else if !contains(ids, id) {
		return nil // refreshed meanwhile
	}
	path, err := s.store.DeleteUpload(ctx, id)
	if err != nil {
		return err
	}
	// The record's path may be another member's mount: the file is the
	// one named by the digest in this process's artifact folder.
	if err := os.Remove(filepath.Join(s.art.dir, filepath.Base(path))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing upload %s: %w", id, err)
	}
	return nil
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// keepSweeping sweeps stale uploads now and every interval until ctx
// ends; done is closed when it has stopped.
func (s *Server) keepSweeping(ctx context.Context, retention time.Duration, done chan<- struct{}) {
	defer close(done)
	interval := min(max(retention/4, time.Second), time.Hour)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.sweepUploads(ctx, time.Now().Add(-retention)); err != nil {
			s.log.Error("removing stale uploads", "err", err)
		} else if n > 0 {
			s.log.Info("removed stale uploads", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
