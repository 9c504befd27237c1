package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// TestArtifactVerify checks that an artifact is found by its name wherever
// the store recorded it, and refused when its bytes are not what its name
// says.
func TestArtifactVerify(t *testing.T) {
	dir := t.TempDir()
	a, err := newSharedArtifacts(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := []byte("weights of a model")
	sum := sha256.Sum256(good)
	name := hex.EncodeToString(sum[:]) + ".safetensors"
	if err := os.WriteFile(filepath.Join(dir, name), good, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := sha256.Sum256([]byte("what the file should hold"))
	badName := hex.EncodeToString(bad[:]) + ".safetensors"
	if err := os.WriteFile(filepath.Join(dir, badName), []byte("half a fi"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := sha256.Sum256([]byte("never written"))
	cases := []struct {
		name, stored, want, err string
	}{
		{name: "here", stored: filepath.Join(dir, name), want: filepath.Join(dir, name)},
		{name: "mounted elsewhere by the writer", stored: filepath.Join("/mnt/fleet/artifacts", name), want: filepath.Join(dir, name)},
		{name: "corrupt", stored: filepath.Join(dir, badName), err: "is corrupt"},
		{name: "missing", stored: filepath.Join(dir, hex.EncodeToString(missing[:])+".onnx"), err: "no such file"},
		{name: "not content-addressed", stored: "/srv/reports/table1", want: "/srv/reports/table1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second time from the cache of checked files
				got, err := a.verify(tc.stored)
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("verify(%s) = %q, %v; want an error with %q", tc.stored, got, err, tc.err)
					}
					continue
				}
				if err != nil || got != tc.want {
					t.Fatalf("verify(%s) = %q, %v; want %q", tc.stored, got, err, tc.want)
				}
			}
		})
	}
	// A file changed after it was checked is checked again.
	if err := os.WriteFile(filepath.Join(dir, name), []byte("weights of a modem"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(dir, name), later, later)
	if _, err := a.verify(filepath.Join(dir, name)); err == nil || !strings.Contains(err.Error(), "is corrupt") {
		t.Errorf("verify after the file changed: %v, want corrupt", err)
	}
}

// TestSharedArtifactTemps checks that opening a shared folder leaves the
// temporaries of writers that may still be at work, and removes old ones.
func TestSharedArtifactTemps(t *testing.T) {
	dir := t.TempDir()
	fresh, old := filepath.Join(dir, ".tmp-fresh.safetensors"), filepath.Join(dir, ".tmp-old.safetensors")
	for _, p := range []string{fresh, old} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * staleTemp)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := newSharedArtifacts(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh temporary (another worker's file in progress) was removed: %v", err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("a temporary older than %s was kept: %v", staleTemp, err)
	}
}

// TestReportElsewhere checks that a report written by a fleet member that
// mounts the shared folder elsewhere is found in this process's mount.
func TestReportElsewhere(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	ctx := context.Background()
	here := filepath.Join(ts.art.dir, "reports", "study")
	if err := os.MkdirAll(here, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, stored, want string }{
		{"elsewhere", "/mnt/fleet/artifacts/reports/study", here},
		{"here", here, here},
		{"gone", "/mnt/fleet/artifacts/reports/lost", "/mnt/fleet/artifacts/reports/lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := filepath.Base(tc.stored) + "-" + tc.name
			if err := ts.store.PutReport(ctx, shared.ReportInfo{Name: name}, tc.stored); err != nil {
				t.Fatal(err)
			}
			if _, got, err := ts.store.Report(ctx, name); err != nil || got != tc.want {
				t.Errorf("Report(%s) = %q, %v; want %q", name, got, err, tc.want)
			}
		})
	}
}
