package server

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// TestUploadRetention sweeps uploads past their retention: one whose
// verification is done goes (record and file), one that a queued job
// still needs stays, and the same bytes can be uploaded again afterwards.
func TestUploadRetention(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir, UploadRetention: -1}) // swept by hand below
	ctx := context.Background()
	good, err := os.ReadFile("testdata/mlp_28x28.onnx")
	if err != nil {
		t.Fatal(err)
	}
	code, done, e := ts.upload(good, map[string]string{"fingerprint": f.fp.ID})
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, e.Error)
	}
	if j := ts.wait(done.ID); j.State != shared.JobCompleted {
		t.Fatalf("verification of the upload: %s %s", j.State, j.Error)
	}
	donePath, err := ts.store.Upload(ctx, done.Args.Verify.Upload)
	if err != nil {
		t.Fatal(err)
	}
	// Another upload whose job is queued (recorded, not run).
	sum, pendingPath, size, err := ts.art.write(strings.NewReader("bytes a queued job needs"), 1<<10, ".onnx")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.store.PutUpload(ctx, sum, pendingPath, size); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.NewJob(ctx, shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: f.fp.ID, Upload: sum}}); err != nil {
		t.Fatal(err)
	}

	// Nothing is stale yet.
	if n, err := ts.sweepUploads(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("sweeping uploads older than an hour: %d removed, %v", n, err)
	}
	n, err := ts.sweepUploads(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("sweeping every upload: %d removed, %v; want 1", n, err)
	}
	if _, err := ts.store.Upload(ctx, done.Args.Verify.Upload); !errors.Is(err, ErrNotFound) {
		t.Errorf("the swept upload's record: %v, want not found", err)
	}
	if _, err := os.Stat(donePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the swept upload's file: %v, want gone", err)
	}
	if _, err := ts.store.Upload(ctx, sum); err != nil {
		t.Errorf("the upload a queued job needs: %v", err)
	}
	if _, err := os.Stat(pendingPath); err != nil {
		t.Errorf("the file a queued job needs: %v", err)
	}
	if code, j, e := ts.upload(good, map[string]string{"fingerprint": f.fp.ID}); code != http.StatusAccepted {
		t.Errorf("the same bytes again: %d %s", code, e.Error)
	} else if j := ts.wait(j.ID); j.State != shared.JobCompleted {
		t.Errorf("verification of the bytes uploaded again: %s %s", j.State, j.Error)
	}
}

// TestUploadRetentionRuns starts a server with a short retention: its
// sweeper removes an old upload by itself.
func TestUploadRetentionRuns(t *testing.T) {
	dir := t.TempDir()
	ts := start(t, Config{Dir: dir, UploadRetention: 200 * time.Millisecond})
	ctx := context.Background()
	sum, path, size, err := ts.art.write(strings.NewReader("an old upload"), 1<<10, ".onnx")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.store.PutUpload(ctx, sum, path, size); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload was not removed")
		}
	}
	if _, err := ts.store.Upload(ctx, sum); !errors.Is(err, ErrNotFound) {
		t.Errorf("the removed upload's record: %v", err)
	}
}
