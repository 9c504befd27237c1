package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/conferral/conferral/shared"
)

// ErrNotFound is returned by a Store for an ID it does not hold.
var ErrNotFound = errors.New("not found")

// Store keeps what the server knows: models, fingerprints, reports, uploads,
// jobs and their events. Artifacts themselves are files (see artifacts.go);
// the store keeps their paths. sqlStore implements it over database/sql with
// SQL that SQLite and Postgres both accept, so that the queue and the
// records can move to Postgres together.
type Store interface {
	PutModel(ctx context.Context, m shared.ModelInfo, path string) error
	Model(ctx context.Context, id string) (shared.ModelInfo, string, error)
	Models(ctx context.Context) ([]shared.ModelInfo, error)

	PutFingerprint(ctx context.Context, f shared.FingerprintInfo, path string) error
	Fingerprint(ctx context.Context, id string) (shared.FingerprintInfo, string, error)
	Fingerprints(ctx context.Context) ([]shared.FingerprintInfo, error)

	PutReport(ctx context.Context, r shared.ReportInfo, dir string) error
	Report(ctx context.Context, name string) (shared.ReportInfo, string, error)
	Reports(ctx context.Context) ([]shared.ReportInfo, error)

	// PutUpload records an accepted upload, or refreshes the time of one
	// recorded before (its last use, for the retention policy).
	PutUpload(ctx context.Context, id, path string, size int64) error
	Upload(ctx context.Context, id string) (string, error)
	// StaleUploads lists the uploads last recorded before t.
	StaleUploads(ctx context.Context, t time.Time) ([]string, error)
	// DeleteUpload forgets an upload's record and returns its path.
	DeleteUpload(ctx context.Context, id string) (string, error)

	// NewJob records a queued job and returns its ID.
	NewJob(ctx context.Context, req shared.JobRequest) (shared.Job, error)
	// SetQueueID links a job to its row in the queue.
	SetQueueID(ctx context.Context, id string, queueID int64) error
	QueueID(ctx context.Context, id string) (int64, error)
	Job(ctx context.Context, id string) (shared.Job, error)
	Jobs(ctx context.Context) ([]shared.Job, error)
	// JobsPage lists at most limit jobs numbered below before (any when
	// before is 0), newest first.
	JobsPage(ctx context.Context, before int64, limit int) ([]shared.Job, error)
	// UpdateJob applies f to the job and writes it back.
	UpdateJob(ctx context.Context, id string, f func(*shared.Job)) (shared.Job, error)
	// JobsIn lists the jobs in the given states.
	JobsIn(ctx context.Context, states ...shared.JobState) ([]shared.Job, error)

	// AddEvent records a job's event (e.Job and e.Seq set).
	AddEvent(ctx context.Context, e shared.Event) error
	// Events returns a job's recorded events in order.
	Events(ctx context.Context, job string) ([]shared.Event, error)
}

// schema creates the server's tables; every statement is valid in SQLite
// and Postgres. Records keep their wire form as JSON text beside the
// columns that are looked up.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS conferral_models (
		id TEXT PRIMARY KEY, path TEXT NOT NULL, info TEXT NOT NULL, created TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS conferral_fingerprints (
		id TEXT PRIMARY KEY, path TEXT NOT NULL, info TEXT NOT NULL, created TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS conferral_reports (
		name TEXT PRIMARY KEY, dir TEXT NOT NULL, info TEXT NOT NULL, created TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS conferral_uploads (
		id TEXT PRIMARY KEY, path TEXT NOT NULL, size BIGINT NOT NULL, created TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS conferral_jobs (
		id BIGINT PRIMARY KEY, queue_id BIGINT NOT NULL DEFAULT 0, state TEXT NOT NULL, info TEXT NOT NULL, created TEXT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS conferral_jobs_state ON conferral_jobs (state)`,
	`CREATE TABLE IF NOT EXISTS conferral_events (
		job BIGINT NOT NULL, seq BIGINT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (job, seq))`,
}

// sqlStore is the Store over database/sql. Placeholders are written as ?
// and rebound to $n for Postgres.
type sqlStore struct {
	db       *sql.DB
	postgres bool
}

// newSQLStore creates the tables if needed.
func newSQLStore(ctx context.Context, db *sql.DB, postgres bool) (*sqlStore, error) {
	s := &sqlStore{db: db, postgres: postgres}
	for _, q := range schema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("creating the server's tables: %w", err)
		}
	}
	return s, nil
}

func (s *sqlStore) q(query string) string {
	if !s.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func (s *sqlStore) put(ctx context.Context, table, key string, id, path string, info any, created time.Time) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	col := "path"
	if table == "conferral_reports" {
		col = "dir"
	}
	// An artifact named by its sha256 is the same artifact: keep the first
	// record of it.
	q := fmt.Sprintf(`INSERT INTO %s (%s, %s, info, created) VALUES (?, ?, ?, ?) ON CONFLICT (%s) DO NOTHING`, table, key, col, key)
	if table == "conferral_reports" {
		q = fmt.Sprintf(`INSERT INTO %s (%s, %s, info, created) VALUES (?, ?, ?, ?) ON CONFLICT (%s) DO UPDATE SET info = excluded.info, dir = excluded.dir`, table, key, col, key)
	}
	if _, err := s.db.ExecContext(ctx, s.q(q), id, path, string(b), stamp(created)); err != nil {
		return fmt.Errorf("storing %s %s: %w", strings.TrimPrefix(table, "conferral_"), id, err)
	}
	return nil
}

func (s *sqlStore) get(ctx context.Context, table, key, id string, info any) (string, error) {
	col := "path"
	if table == "conferral_reports" {
		col = "dir"
	}
	var path, body string
	err := s.db.QueryRowContext(ctx, s.q(fmt.Sprintf(`SELECT %s, info FROM %s WHERE %s = ?`, col, table, key)), id).Scan(&path, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%s %q: %w", strings.TrimSuffix(strings.TrimPrefix(table, "conferral_"), "s"), id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading %s %s: %w", strings.TrimPrefix(table, "conferral_"), id, err)
	}
	if err := json.Unmarshal([]byte(body), info); err != nil {
		return "", fmt.Errorf("decoding %s %s: %w", strings.TrimPrefix(table, "conferral_"), id, err)
	}
	return path, nil
}

func list[T any](ctx context.Context, s *sqlStore, query string, args ...any) ([]T, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("listing: %w", err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("listing: %w", err)
		}
		var v T
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return nil, fmt.Errorf("listing: decoding a record: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (s *sqlStore) PutModel(ctx context.Context, m shared.ModelInfo, path string) error {
	return s.put(ctx, "conferral_models", "id", m.ID, path, m, m.Created)
}

func (s *sqlStore) Model(ctx context.Context, id string) (shared.ModelInfo, string, error) {
	var m shared.ModelInfo
	p, err := s.get(ctx, "conferral_models", "id", id, &m)
	return m, p, err
}

func (s *sqlStore) Models(ctx context.Context) ([]shared.ModelInfo, error) {
	return list[shared.ModelInfo](ctx, s, `SELECT info FROM conferral_models ORDER BY created, id`)
}

func (s *sqlStore) PutFingerprint(ctx context.Context, f shared.FingerprintInfo, path string) error {
	return s.put(ctx, "conferral_fingerprints", "id", f.ID, path, f, f.Created)
}

func (s *sqlStore) Fingerprint(ctx context.Context, id string) (shared.FingerprintInfo, string, error) {
	var f shared.FingerprintInfo
	p, err := s.get(ctx, "conferral_fingerprints", "id", id, &f)
	return withAttack(f), p, err
}

func (s *sqlStore) Fingerprints(ctx context.Context) ([]shared.FingerprintInfo, error) {
	fs, err := list[shared.FingerprintInfo](ctx, s, `SELECT info FROM conferral_fingerprints ORDER BY created, id`)
	for i := range fs {
		fs[i] = withAttack(fs[i])
	}
	return fs, err
}

// withAttack fills in the attack of a record written before records said:
// every fingerprint was C-BIM's then.
func withAttack(f shared.FingerprintInfo) shared.FingerprintInfo {
	if f.Attack == "" && f.ID != "" {
		f.Attack = shared.AttackCBIM
	}
	return f
}

func (s *sqlStore) PutReport(ctx context.Context, r shared.ReportInfo, dir string) error {
	return s.put(ctx, "conferral_reports", "name", r.Name, dir, r, r.Created)
}

func (s *sqlStore) Report(ctx context.Context, name string) (shared.ReportInfo, string, error) {
	var r shared.ReportInfo
	d, err := s.get(ctx, "conferral_reports", "name", name, &r)
	return r, d, err
}

func (s *sqlStore) Reports(ctx context.Context) ([]shared.ReportInfo, error) {
	return list[shared.ReportInfo](ctx, s, `SELECT info FROM conferral_reports ORDER BY created, name`)
}

func (s *sqlStore) PutUpload(ctx context.Context, id, path string, size int64) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO conferral_uploads (id, path, size, created) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET created = excluded.created`),
		id, path, size, stamp(time.Now()))
	if err != nil {
		return fmt.Errorf("storing upload %s: %w", id, err)
	}
	return nil
}

func (s *sqlStore) Upload(ctx context.Context, id string) (string, error) {
	var path string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT path FROM conferral_uploads WHERE id = ?`), id).Scan(&path)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("upload %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading upload %s: %w", id, err)
	}
	return path, nil
}

func (s *sqlStore) StaleUploads(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id FROM conferral_uploads WHERE created < ? ORDER BY created`), stamp(t))
	if err != nil {
		return nil, fmt.Errorf("listing uploads: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("listing uploads: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing uploads: %w", err)
	}
	return ids, nil
}

func (s *sqlStore) DeleteUpload(ctx context.Context, id string) (string, error) {
	path, err := s.Upload(ctx, id)
	if err != nil {
		return "", err
	}
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM conferral_uploads WHERE id = ?`), id); err != nil {
		return "", fmt.Errorf("forgetting upload %s: %w", id, err)
	}
	return path, nil
}

// NewJob records a queued job under the next job ID, in one transaction
// (on PostgreSQL under the advisory lock that Server.record takes too).
// The server itself records and queues a job together (Server.record);
// this is the record alone.
func (s *sqlStore) NewJob(ctx context.Context, req shared.JobRequest) (shared.Job, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return shared.Job{}, fmt.Errorf("recording a job: %w", err)
	}
	defer tx.Rollback()
	if s.postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, jobIDLock); err != nil {
			return shared.Job{}, fmt.Errorf("recording a job: %w", err)
		}
	}
	j, _, err := insertJob(ctx, sqliteJobTx{tx: tx}, s.q, req)
	if err != nil {
		return j, err
	}
	if err := tx.Commit(); err != nil {
		return j, fmt.Errorf("recording job %s: %w", j.ID, err)
	}
	return j, nil
}

func jobKey(id string) (int64, error) {
	var n int64
	if _, err := fmt.Sscan(id, &n); err != nil || fmt.Sprint(n) != id {
		return 0, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	return n, nil
}

func (s *sqlStore) SetQueueID(ctx context.Context, id string, queueID int64) error {
	k, err := jobKey(id)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE conferral_jobs SET queue_id = ? WHERE id = ?`), queueID, k); err != nil {
		return fmt.Errorf("linking job %s to the queue: %w", id, err)
	}
	return nil
}

func (s *sqlStore) QueueID(ctx context.Context, id string) (int64, error) {
	k, err := jobKey(id)
	if err != nil {
		return 0, err
	}
	var q int64
	err = s.db.QueryRowContext(ctx, s.q(`SELECT queue_id FROM conferral_jobs WHERE id = ?`), k).Scan(&q)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	return q, err
}

func (s *sqlStore) Job(ctx context.Context, id string) (shared.Job, error) {
	var j shared.Job
	k, err := jobKey(id)
	if err != nil {
		return j, err
	}
	var body string
	err = s.db.QueryRowContext(ctx, s.q(`SELECT info FROM conferral_jobs WHERE id = ?`), k).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return j, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return j, fmt.Errorf("reading job %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(body), &j); err != nil {
		return j, fmt.Errorf("decoding job %s: %w", id, err)
	}
	return j, nil
}

func (s *sqlStore) Jobs(ctx context.Context) ([]shared.Job, error) {
	return list[shared.Job](ctx, s, `SELECT info FROM conferral_jobs ORDER BY id DESC`)
}

func (s *sqlStore) JobsPage(ctx context.Context, before int64, limit int) ([]shared.Job, error) {
	if before <= 0 {
		return list[shared.Job](ctx, s, `SELECT info FROM conferral_jobs ORDER BY id DESC LIMIT ?`, limit)
	}
	return list[shared.Job](ctx, s, `SELECT info FROM conferral_jobs WHERE id < ? ORDER BY id DESC LIMIT ?`, before, limit)
}

func (s *sqlStore) JobsIn(ctx context.Context, states ...shared.JobState) ([]shared.Job, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, st := range states {
		args[i] = string(st)
	}
	q := `SELECT info FROM conferral_jobs WHERE state IN (?` + strings.Repeat(", ?", len(states)-1) + `) ORDER BY id`
	return list[shared.Job](ctx, s, q, args...)
}

// UpdateJob reads, changes and writes a job in one transaction.
func (s *sqlStore) UpdateJob(ctx context.Context, id string, f func(*shared.Job)) (shared.Job, error) {
	var j shared.Job
	k, err := jobKey(id)
	if err != nil {
		return j, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return j, fmt.Errorf("updating job %s: %w", id, err)
	}
	defer tx.Rollback()
	var body string
	err = tx.QueryRowContext(ctx, s.q(`SELECT info FROM conferral_jobs WHERE id = ?`), k).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return j, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return j, fmt.Errorf("updating job %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(body), &j); err != nil {
		return j, fmt.Errorf("decoding job %s: %w", id, err)
	}
	f(&j)
	b, err := json.Marshal(j)
	if err != nil {
		return j, err
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE conferral_jobs SET state = ?, info = ? WHERE id = ?`), string(j.State), string(b), k); err != nil {
		return j, fmt.Errorf("updating job %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return j, fmt.Errorf("updating job %s: %w", id, err)
	}
	return j, nil
}

func (s *sqlStore) AddEvent(ctx context.Context, e shared.Event) error {
	k, err := jobKey(e.Job)
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, s.q(`INSERT INTO conferral_events (job, seq, body) VALUES (?, ?, ?)`), k, e.Seq, string(b)); err != nil {
		return fmt.Errorf("recording an event of job %s: %w", e.Job, err)
	}
	return nil
}

func (s *sqlStore) Events(ctx context.Context, job string) ([]shared.Event, error) {
	k, err := jobKey(job)
	if err != nil {
		return nil, err
	}
	return list[shared.Event](ctx, s, `SELECT body FROM conferral_events WHERE job = ? ORDER BY seq`, k)
}
