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
