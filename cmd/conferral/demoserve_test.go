package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/server"
	"github.com/conferral/conferral/shared"
)

// TestDemo runs the demo's story at toy scale — as jobs of a real server on
// 127.0.0.1, and in this process — and checks that every stage completed,
// both fingerprints (C-BIM's and the source's own mistakes) were
// calibrated by the independent models asked for, and every one of the eight
// suspects got a calibrated verdict from each. With two threads the fleet
// trains two models at once (one thread each): the served demo's jobs
// overlap in time.
func TestDemo(t *testing.T) {
	for _, flavour := range [][]string{{"--serve", "--keep=false", "--addr", "127.0.0.1:0"}, nil} {
		name := "cli"
		if flavour != nil {
			name = "serve"
		}
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			args := append(append([]string{"demo"}, flavour...), "--threads", "2", "--calibration", "12", "--quiet", "--limit", "400", "--epochs", "1", "--out", out,
				"--candidates", "30", "--steps", "10", "--alpha", "0.025", "--eps", "0.25", "--tau", "0.01", "--tau-surr", "0")
			code, stdout, stderr := invoke(t, context.Background(), args...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			wants := []string{"test-surrogate-lenet-0", "test-reference-mlpdrop-2", "calibrated by 12 independent models", "verdicts right", "p = ", "Time: source (1 model)", "fleet (36 models)", "; total ",
				"C-BIM from 30 start points, ε = 0.25", "the source's own mistakes among"}
			if flavour != nil {
				wants = append(wants, "open http://127.0.0.1:")
			}
			for _, want := range wants {
				if !strings.Contains(stdout, want) {
					t.Errorf("the output does not say %q:\n%s", want, stdout)
				}
			}
			if n := strings.Count(stdout, "fingerprint accuracy"); n != 16 {
				t.Errorf("%d verdicts, want 8 by each fingerprint:\n%s", n, stdout)
			}
			if flavour != nil {
				jobs := checkDemoRoles(t, filepath.Join(out, "server"))
				if !overlapping(jobs, shared.JobTrain) {
					t.Errorf("no two training jobs ran at once with --threads 2:\n%v", jobs)
				}
			}
		})
	}
}

// overlapping says whether two jobs of kind ran at the same time.
func overlapping(jobs []shared.Job, kind shared.JobKind) bool {
	for i, a := range jobs {
		for _, b := range jobs[i+1:] {
			if a.Kind == kind && b.Kind == kind && a.Started != nil && b.Started != nil && a.Finished != nil && b.Finished != nil &&
				a.Started.Before(*b.Finished) && b.Started.Before(*a.Finished) {
				return true
			}
		}
	}
	return false
}

// checkDemoRoles reopens the demo's server folder and checks each stored
// model's role: one source, the surrogates, and every model trained
// without the source (references and calibration models) a reference.
// It returns the folder's jobs.
func checkDemoRoles(t *testing.T, dir string) []shared.Job {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := server.New(ctx, server.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/api/models")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var models []shared.ModelInfo
	if err := json.NewDecoder(res.Body).Decode(&models); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, m := range models {
		want := shared.RoleReference
		switch {
		case m.Name == "source":
			want = shared.RoleSource
		case strings.Contains(m.Name, "surrogate"):
			want = shared.RoleSurrogate
		}
		if m.Role != want {
			t.Errorf("model %s has role %q, want %q", m.Name, m.Role, want)
		}
		count[m.Role]++
	}
	if count[shared.RoleSource] != 1 || count[shared.RoleSurrogate] != 12 || count[shared.RoleReference] != 24 {
		t.Errorf("roles %v, want 1 source, 12 surrogates, 24 references", count)
	}
	jr, err := http.Get(srv.URL + "/api/jobs?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer jr.Body.Close()
	var jobs []shared.Job
	if err := json.NewDecoder(jr.Body).Decode(&jobs); err != nil {
		t.Fatal(err)
	}
	return jobs
}
