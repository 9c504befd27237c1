package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/conferral/conferral/shared"
)

// errBusy marks a request refused because the server is too busy now: the
// API answers 503 with a Retry-After. Test with errors.Is.
var errBusy = errors.New("the server is busy; try again shortly")

// busyError is a transient failure: the same request may succeed later.
type busyError struct{ err error }

func (e busyError) Error() string   { return fmt.Sprintf("%v (%v)", errBusy, e.err) }
func (e busyError) Unwrap() []error { return []error{errBusy, e.err} }

// retryAfterSeconds is the Retry-After a busy answer carries.
const retryAfterSeconds = "1"

// transient says whether a database error is worth retrying later: a lock
// or pool wait that ran out, a serialisation failure or deadlock, or too
// many connections.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var se interface{ Code() int }
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			return true
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01", "53300", "55P03", "57P03":
			return true
		}
	}
	return false
}

// submitWait bounds how long a submission waits for the database before
// it is refused as busy (Server.submitWait, when not zero, replaces it).
const submitWait = 10 * time.Second

// jobTx is one transaction of the database that holds the queue: the job's
// record and its row in River's queue are written together, so that a job
// is never recorded without being queued nor queued without its record.
// River's InsertTx takes the driver's own transaction type (*sql.Tx for
// SQLite, pgx.Tx for PostgreSQL), hence one implementation of each.
type jobTx interface {
	exec(ctx context.Context, query string, args ...any) error
	queryInt(ctx context.Context, query string, args ...any) (int64, error)
	// enqueue inserts the queue's job and returns its ID.
	enqueue(ctx context.Context, args jobArgs, opts *river.InsertOpts) (int64, error)
	commit(ctx context.Context) error
	rollback(ctx context.Context)
}

// sqliteJobTx is a jobTx over database/sql: the embedded database (and,
// without a client, any database/sql transaction for insertJob).
type sqliteJobTx struct {
	tx     *sql.Tx
	client *river.Client[*sql.Tx]
}

func (t sqliteJobTx) exec(ctx context.Context, query string, args ...any) error {
	_, err := t.tx.ExecContext(ctx, query, args...)
	return err
}

func (t sqliteJobTx) queryInt(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := t.tx.QueryRowContext(ctx, query, args...).Scan(&n)
	return n, err
}

func (t sqliteJobTx) enqueue(ctx context.Context, args jobArgs, opts *river.InsertOpts) (int64, error) {
	res, err := t.client.InsertTx(ctx, t.tx, args, opts)
	if err != nil {
		return 0, err
	}
	return res.Job.ID, nil
}

func (t sqliteJobTx) commit(context.Context) error { return t.tx.Commit() }
func (t sqliteJobTx) rollback(context.Context)     { t.tx.Rollback() }

// pgJobTx is a jobTx of a fleet's PostgreSQL database. It takes a
// transaction-scoped advisory lock first, so that the fleet's members
// number their jobs one at a time (no two take the same ID).
type pgJobTx struct {
	tx     pgx.Tx
	client *river.Client[pgx.Tx]
}

// jobIDLock is the advisory lock that serialises job numbering ("jobs").
const jobIDLock = 0x6a6f6273

func beginPgJobTx(ctx context.Context, f *fleet) (jobTx, error) {
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, jobIDLock); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	return pgJobTx{tx: tx, client: f.client}, nil
}

func (t pgJobTx) exec(ctx context.Context, query string, args ...any) error {
	_, err := t.tx.Exec(ctx, query, args...)
	return err
}

func (t pgJobTx) queryInt(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := t.tx.QueryRow(ctx, query, args...).Scan(&n)
	return n, err
}

func (t pgJobTx) enqueue(ctx context.Context, args jobArgs, opts *river.InsertOpts) (int64, error) {
	res, err := t.client.InsertTx(ctx, t.tx, args, opts)
	if err != nil {
		return 0, err
	}
	return res.Job.ID, nil
}

func (t pgJobTx) commit(ctx context.Context) error { return t.tx.Commit(ctx) }
func (t pgJobTx) rollback(ctx context.Context)     { t.tx.Rollback(context.WithoutCancel(ctx)) }

// insertJob records a new queued job in tx, numbered one past the highest
// job ID; q rebinds the ? placeholders for the database at hand.
func insertJob(ctx context.Context, tx jobTx, q func(string) string, req shared.JobRequest) (shared.Job, int64, error) {
	j := shared.Job{Kind: req.Kind, State: shared.JobQueued, Args: req, Created: time.Now().UTC()}
	next, err := tx.queryInt(ctx, `SELECT COALESCE(MAX(id), 0) + 1 FROM conferral_jobs`)
	if err != nil {
		return j, 0, fmt.Errorf("numbering the job: %w", err)
	}
	j.ID = fmt.Sprint(next)
	b, err := json.Marshal(j)
	if err != nil {
		return j, 0, fmt.Errorf("recording job %s: %w", j.ID, err)
	}
	if err := tx.exec(ctx, q(`INSERT INTO conferral_jobs (id, state, info, created) VALUES (?, ?, ?, ?)`), next, string(j.State), string(b), stamp(j.Created)); err != nil {
		return j, 0, fmt.Errorf("recording job %s: %w", j.ID, err)
	}
	return j, next, nil
}

// record writes a checked request as a new job, queues it and records its
// first event (queued), all in one transaction, then publishes the event.
// The event lock is held throughout (taken before the database, as emit
// does), so that the job's first event is numbered and published before
// any event of its run.
func (s *Server) record(ctx context.Context, req shared.JobRequest) (shared.Job, error) {
	wait := s.submitWait
	if wait <= 0 {
		wait = submitWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	fail := func(what string, err error) (shared.Job, error) {
		err = fmt.Errorf("%s: %w", what, err)
		if transient(err) {
			return shared.Job{}, busyError{err}
		}
		return shared.Job{}, err
	}
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	tx, err := s.beginJobTx(ctx)
	if err != nil {
		return fail("recording a job", err)
	}
	defer tx.rollback(ctx)
	j, key, err := insertJob(ctx, tx, s.rebind, req)
	if err != nil {
		return fail("recording a job", err)
	}
	qid, err := tx.enqueue(ctx, jobArgs{Job: j.ID}, &river.InsertOpts{Queue: s.queue, MaxAttempts: s.cfg.MaxAttempts,
		UniqueOpts: river.UniqueOpts{ByArgs: true}})
	if err != nil {
		return fail("queueing job "+j.ID, err)
	}
	if err := tx.exec(ctx, s.rebind(`UPDATE conferral_jobs SET queue_id = ? WHERE id = ?`), qid, key); err != nil {
		return fail("linking job "+j.ID+" to the queue", err)
	}
	e := shared.Event{Job: j.ID, Seq: 1, Kind: shared.State, State: shared.JobQueued, Stage: string(j.Kind), Time: j.Created}
	b, err := json.Marshal(e)
	if err != nil {
		return fail("recording job "+j.ID, err)
	}
	if err := tx.exec(ctx, s.rebind(`INSERT INTO conferral_events (job, seq, body) VALUES (?, ?, ?)`), key, e.Seq, string(b)); err != nil {
		return fail("recording job "+j.ID+"'s first event", err)
	}
	if err := tx.commit(ctx); err != nil {
		return fail("recording job "+j.ID, err)
	}
	s.seqs[j.ID] = e.Seq
	s.hub.publish(e)
	return j, nil
}

// writeBusy answers 503 with a Retry-After.
func writeBusy(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", retryAfterSeconds)
	writeJSON(w, http.StatusServiceUnavailable, shared.APIError{Error: msg})
}
