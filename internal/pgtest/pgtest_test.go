package pgtest

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStart starts a real server, queries it with psql and stops it.
func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "psql"), s.URL, "-tAc", "SELECT 40 + 2").CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "42" {
		t.Errorf("SELECT 40 + 2 = %q, want 42", got)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(filepath.Join(bin, "psql"), s.URL, "-tAc", "SELECT 1").Run(); err == nil {
		t.Error("the server still answers after Stop")
	}
}

// TestRestart keeps what was committed across a restart, on the same URL,
// and drops the connections open during it.
func TestRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	bin, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	psql := func(sql string) (string, error) {
		out, err := exec.Command(filepath.Join(bin, "psql"), s.URL, "-tAc", sql).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := psql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	// A session open across the restart loses its connection.
	held := exec.Command(filepath.Join(bin, "psql"), s.URL, "-tAc", "SELECT pg_sleep(60)")
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := s.Restart(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %.1f s", time.Since(start).Seconds())
	if err := held.Wait(); err == nil {
		t.Error("a session open across the restart ended without an error")
	}
	if got, err := psql("SELECT v FROM t"); err != nil || got != "42" {
		t.Errorf("after the restart: %q, %v; want 42", got, err)
	}
}
