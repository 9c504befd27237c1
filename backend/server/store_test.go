package server

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

func TestRebind(t *testing.T) {
	s := &sqlStore{postgres: true}
	for _, tc := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT info FROM t WHERE id = ?`, `SELECT info FROM t WHERE id = $1`},
		{`INSERT INTO t (a, b, c) VALUES (?, ?, ?)`, `INSERT INTO t (a, b, c) VALUES ($1, $2, $3)`},
	} {
		if got := s.q(tc.in); got != tc.want {
			t.Errorf("q(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := (&sqlStore{}).q(tc.in); got != tc.in {
			t.Errorf("SQLite q(%q) = %q, want it unchanged", tc.in, got)
		}
	}
}

func openStore(t *testing.T, path string) (*sqlStore, *sql.DB) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	s, err := newSQLStore(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// TestStoreReopen writes every kind of record, closes the database, and
// reads them back from a new connection.
func TestStoreReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s, db := openStore(t, path)
	now := time.Now().UTC().Truncate(time.Millisecond)
	m := shared.ModelInfo{ID: "aa", Name: "m", Arch: "mlp", Role: shared.RoleSource, TestAcc: 0.8, SHA256: "aa", Created: now}
	if err := s.PutModel(ctx, m, "/x/aa.safetensors"); err != nil {
		t.Fatal(err)
	}
	// The same artifact stored twice keeps its first record.
	if err := s.PutModel(ctx, shared.ModelInfo{ID: "aa", Name: "again", Created: now}, "/y"); err != nil {
		t.Fatal(err)
	}
	fp := shared.FingerprintInfo{ID: "bb", Name: "fp", Count: 7, Created: now}
	if err := s.PutFingerprint(ctx, fp, "/x/bb.safetensors"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutReport(ctx, shared.ReportInfo{Name: "r", Files: []string{"README.md"}, Created: now}, "/x/r"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutUpload(ctx, "cc", "/x/cc.onnx", 10); err != nil {
		t.Fatal(err)
	}
	j1, err := s.NewJob(ctx, shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	j2, err := s.NewJob(ctx, shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: "bb"}})
	if err != nil || j1.ID != "1" || j2.ID != "2" {
		t.Fatalf("job IDs %q, %q (%v), want 1, 2", j1.ID, j2.ID, err)
	}
	if err := s.SetQueueID(ctx, j2.ID, 42); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateJob(ctx, j1.ID, func(j *shared.Job) { j.State, j.Attempt = shared.JobRunning, 1 }); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 3; i++ {
		if err := s.AddEvent(ctx, shared.Event{Job: j1.ID, Seq: i, Kind: shared.Log, Message: "line", Time: now}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddEvent(ctx, shared.Event{Job: j1.ID, Seq: 2, Kind: shared.Log}); err == nil {
		t.Error("an event's sequence number was reused")
	}
	db.Close()

	s, db = openStore(t, path)
	defer db.Close()
	if got, p, err := s.Model(ctx, "aa"); err != nil || got.Name != "m" || p != "/x/aa.safetensors" || !got.Created.Equal(now) {
		t.Errorf("model after reopen: %+v %q %v", got, p, err)
	}
	if got, _, err := s.Fingerprint(ctx, "bb"); err != nil || got.Count != 7 {
		t.Errorf("fingerprint after reopen: %+v %v", got, err)
	}
	if got, d, err := s.Report(ctx, "r"); err != nil || d != "/x/r" || len(got.Files) != 1 {
		t.Errorf("report after reopen: %+v %v", got, err)
	}
	if p, err := s.Upload(ctx, "cc"); err != nil || p != "/x/cc.onnx" {
		t.Errorf("upload after reopen: %q %v", p, err)
	}
	if q, err := s.QueueID(ctx, j2.ID); err != nil || q != 42 {
		t.Errorf("queue ID after reopen: %d %v", q, err)
	}
	running, err := s.JobsIn(ctx, shared.JobRunning)
	if err != nil || len(running) != 1 || running[0].ID != j1.ID || running[0].Args.Train.Name != "a" {
		t.Errorf("running jobs after reopen: %+v %v", running, err)
	}
	if jobs, _ := s.Jobs(ctx); len(jobs) != 2 || jobs[0].ID != "2" {
		t.Errorf("jobs after reopen: %+v", jobs)
	}
	if evs, err := s.Events(ctx, j1.ID); err != nil || len(evs) != 3 || evs[2].Seq != 3 {
		t.Errorf("events after reopen: %+v %v", evs, err)
	}
	for name, err := range map[string]error{
		"model":       func() error { _, _, err := s.Model(ctx, "zz"); return err }(),
		"fingerprint": func() error { _, _, err := s.Fingerprint(ctx, "zz"); return err }(),
		"report":      func() error { _, _, err := s.Report(ctx, "zz"); return err }(),
		"upload":      func() error { _, err := s.Upload(ctx, "zz"); return err }(),
		"job":         func() error { _, err := s.Job(ctx, "99"); return err }(),
		"job ID":      func() error { _, err := s.Job(ctx, "1 OR 1=1"); return err }(),
		"update":      func() error { _, err := s.UpdateJob(ctx, "99", func(*shared.Job) {}); return err }(),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
}
