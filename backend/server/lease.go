package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/conferral/conferral/shared"
)

// Leases. Every member of a fleet writes a heartbeat into conferral_workers
// every quarter of the lease. A running job's lease is its runner's
// heartbeat: when the member whose River client ID is last in the job's
// attempted_by has not beaten for a whole lease, it is taken for dead and
// any member's reaper takes the job back (one reaper at a time, under an
// advisory lock). The reaper cancels the dead attempt's River row and, in
// the same transaction, queues a new row for the same job, unless the job's
// attempts are spent; a dead attempt's row can therefore never be marked
// done by a member that was only slow. A member that cannot beat for a
// lease, or whose job was taken back, stops that job itself and records
// nothing for it (errLeaseLost).

// errLeaseLost is the cause of a job's cancellation when its lease ran out.
var errLeaseLost = errors.New("the job's lease ran out: another worker runs it now")

// reapLock is the advisory lock held by the one reaper at work.
const reapLock = 0x72656170 // "reap"

// loop beats, checks this member's leases and reaps, every quarter lease.
func (f *fleet) loop(ctx context.Context, s *Server) {
	defer close(f.done)
	go f.relay(ctx, s)
	t := time.NewTicker(f.lease / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.beat(ctx, s); err != nil && ctx.Err() == nil {
			s.log.Warn("fleet heartbeat", "worker", f.name, "err", err)
		}
		f.fence(ctx, s)
		if err := f.reap(ctx, s); err != nil && ctx.Err() == nil {
			s.log.Warn("fleet reaper", "worker", f.name, "err", err)
		}
	}
}

// beat records that this member is alive, in the database's clock.
func (f *fleet) beat(ctx context.Context, s *Server) error {
	slots := s.cfg.Workers
	if s.cfg.NoWork {
		slots = 0
	}
	_, err := f.pool.Exec(ctx, `INSERT INTO conferral_workers (id, host, device, slots, started, heartbeat)
		VALUES ($1, $2, $3, $4, now(), now())
		ON CONFLICT (id) DO UPDATE SET heartbeat = now()`, f.name, f.host, s.device.String(), slots)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.lastBeat = time.Now()
	f.mu.Unlock()
	return nil
}

// fence stops this member's attempts whose lease is lost: all of them when
// no heartbeat got through for a lease, or those whose River row is no
// longer this member's running attempt (a reaper took it back).
func (f *fleet) fence(ctx context.Context, s *Server) {
	f.mu.Lock()
	ids := make([]int64, 0, len(f.running))
	for id := range f.running {
		ids = append(ids, id)
	}
	stale := time.Since(f.lastBeat) > f.lease
	f.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	lost := map[int64]bool{}
	if stale {
		for _, id := range ids {
			lost[id] = true
		}
	} else {
		rows, err := f.pool.Query(ctx, `SELECT id FROM river_job WHERE id = ANY($1) AND state = 'running'
			AND attempted_by[array_length(attempted_by, 1)] = $2`, ids, f.name)
		if err != nil {
			return // try again at the next beat; the lease decides
		}
		held, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return
		}
		for _, id := range ids {
			lost[id] = true
		}
		for _, id := range held {
			delete(lost, id)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range lost {
		if c, ok := f.running[id]; ok {
			s.log.Warn("lease lost: stopping the job", "worker", f.name, "queue_id", id)
			c(errLeaseLost)
		}
	}
}

// staleAttempt is a running River row whose runner stopped beating.
type staleAttempt struct {
	ID      int64
	Attempt int
	Owner   string
	Queue   string
	Args    []byte
}

// reap takes back the jobs of members whose lease ran out.
func (f *fleet) reap(ctx context.Context, s *Server) error {
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, reapLock).Scan(&got); err != nil || !got {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, reapLock)
	lease := f.lease.Seconds()
	rows, err := conn.Query(ctx, `SELECT j.id, j.attempt, COALESCE(j.attempted_by[array_length(j.attempted_by, 1)], ''), j.queue, j.args
		FROM river_job j
		WHERE j.state = 'running' AND j.kind = $1
		  AND j.attempted_at < now() - make_interval(secs => $2)
		  AND NOT EXISTS (SELECT 1 FROM conferral_workers w
			WHERE w.id = j.attempted_by[array_length(j.attempted_by, 1)]
			  AND w.heartbeat > now() - make_interval(secs => $2))`, jobArgs{}.Kind(), lease)
	if err != nil {
		return fmt.Errorf("finding stale jobs: %w", err)
	}
	stale, err := pgx.CollectRows(rows, pgx.RowToStructByPos[staleAttempt])
	if err != nil {
		return fmt.Errorf("finding stale jobs: %w", err)
	}
	for _, a := range stale {
		if err := f.takeBack(ctx, s, a); err != nil {
			return err
		}
	}
	// A dead member stays listed (not alive) for ten leases, then leaves
	// the list once none of its jobs is left to take back.
	_, err = conn.Exec(ctx, `DELETE FROM conferral_workers w WHERE heartbeat < now() - make_interval(secs => $1)
		AND NOT EXISTS (SELECT 1 FROM river_job j WHERE j.state = 'running' AND j.attempted_by[array_length(j.attempted_by, 1)] = w.id)`, 10*lease)
	return err
}

// takeBack queues a dead member's job again, or marks it interrupted when
// its attempts are spent (or resuming is off), and cancels the dead
// attempt's row. The job's record is written first: if this process dies
// in between, the row is still stale and the next reaper finishes the work.
func (f *fleet) takeBack(ctx context.Context, s *Server, a staleAttempt) error {
	var args jobArgs
	if err := json.Unmarshal(a.Args, &args); err != nil {
		return fmt.Errorf("reading queue row %d: %w", a.ID, err)
	}
	j, err := s.store.Job(ctx, args.Job)
	if err != nil {
		return fmt.Errorf("taking back job %s: %w", args.Job, err)
	}
	requeue := !j.State.Final() && !s.cfg.NoResume && j.Attempt < s.cfg.MaxAttempts
	switch {
	case j.State.Final():
	case requeue:
		s.finish(ctx, j.ID, shared.JobQueued, nil, fmt.Sprintf("worker %s stopped answering during attempt %d; the job runs again from the start on another worker", a.Owner, j.Attempt))
	default:
		s.finish(ctx, j.ID, shared.JobInterrupted, nil, fmt.Sprintf("worker %s stopped answering during attempt %d of %d", a.Owner, j.Attempt, s.cfg.MaxAttempts))
	}
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("taking back job %s: %w", j.ID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	tag, err := tx.Exec(ctx, `UPDATE river_job SET state = 'cancelled', finalized_at = now()
		WHERE id = $1 AND state = 'running' AND attempt = $2`, a.ID, a.Attempt)
	if err != nil {
		return fmt.Errorf("taking back job %s: %w", j.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return nil // it finished or was taken back meanwhile
	}
	if requeue {
		res, err := f.client.InsertTx(ctx, tx, jobArgs{Job: j.ID}, &river.InsertOpts{Queue: a.Queue, MaxAttempts: s.cfg.MaxAttempts})
		if err != nil {
			return fmt.Errorf("queueing job %s again: %w", j.ID, err)
		}
		k, err := strconv.ParseInt(j.ID, 10, 64)
		if err != nil {
			return fmt.Errorf("job %q: %w", j.ID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE conferral_jobs SET queue_id = $1 WHERE id = $2`, res.Job.ID, k); err != nil {
			return fmt.Errorf("queueing job %s again: %w", j.ID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("taking back job %s: %w", j.ID, err)
	}
	s.log.Info("took back a dead worker's job", "job", j.ID, "worker", a.Owner, "requeued", requeue)
	return nil
}

// leaseMiddleware wraps every attempt this member runs: it holds the
// attempt's cancellation for the fence and records on the job which worker
// and host run it (the browser shows them).
type leaseMiddleware struct {
	river.WorkerMiddlewareDefaults
	s *Server
}

func (m *leaseMiddleware) Work(ctx context.Context, row *rivertype.JobRow, inner func(context.Context) error) error {
	f := m.s.fleet
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f.mu.Lock()
	f.running[row.ID] = cancel
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.running, row.ID)
		f.mu.Unlock()
	}()
	var args jobArgs
	if err := json.Unmarshal(row.EncodedArgs, &args); err == nil {
		if _, err := m.s.store.UpdateJob(ctx, args.Job, func(j *shared.Job) {
			if !j.State.Final() {
				j.Worker, j.Host = f.name, f.host
			}
		}); err != nil && !errors.Is(err, ErrNotFound) {
			return err // River tries again
		}
	}
	return inner(ctx)
}

// relay carries the events other members record to this process's
// websockets: the database notifies every recorded event and every change
// of a job's record (progress is kept there), and the hub drops what it
// has already published.
func (f *fleet) relay(ctx context.Context, s *Server) {
	for ctx.Err() == nil {
		if err := f.listen(ctx, s); err != nil && ctx.Err() == nil {
			s.log.Warn("fleet event relay", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (f *fleet) listen(ctx context.Context, s *Server) error {
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, ch := range []string{"conferral_events", "conferral_jobs"} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	defer conn.Exec(context.WithoutCancel(ctx), "UNLISTEN *")
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case "conferral_events":
			job, seq, ok := cutSeq(n.Payload)
			if !ok {
				continue
			}
			var body string
			k, _ := strconv.ParseInt(job, 10, 64)
			if err := f.pool.QueryRow(ctx, `SELECT body FROM conferral_events WHERE job = $1 AND seq = $2`, k, seq).Scan(&body); err != nil {
				continue
			}
			var e shared.Event
			if json.Unmarshal([]byte(body), &e) == nil {
				s.hub.publish(e)
			}
		case "conferral_jobs":
			j, err := s.store.Job(ctx, n.Payload)
			if err == nil && j.Progress != nil && j.Progress.Kind == shared.Progress {
				s.hub.publish(*j.Progress)
			}
		}
	}
}

func cutSeq(p string) (job string, seq int64, ok bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == ':' {
			n, err := strconv.ParseInt(p[i+1:], 10, 64)
			return p[:i], n, err == nil
		}
	}
	return "", 0, false
}

// workers lists the fleet's members with the jobs each runs now.
func (f *fleet) workers(ctx context.Context) ([]shared.Worker, error) {
	rows, err := f.pool.Query(ctx, `SELECT w.id, w.host, w.device, w.slots, w.started, w.heartbeat,
			w.heartbeat > now() - make_interval(secs => $1),
			COALESCE((SELECT array_agg(j.args->>'job' ORDER BY j.id) FROM river_job j
				WHERE j.state = 'running' AND j.attempted_by[array_length(j.attempted_by, 1)] = w.id), '{}')
		FROM conferral_workers w ORDER BY w.started, w.id`, f.lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("listing the fleet: %w", err)
	}
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[shared.Worker])
	if err != nil {
		return nil, fmt.Errorf("listing the fleet: %w", err)
	}
	return ws, nil
}

// workers lists the processes that run jobs: the fleet's members, or this
// server alone (with the jobs it runs).
func (s *Server) workers(ctx context.Context) ([]shared.Worker, error) {
	if s.fleet != nil {
		return s.fleet.workers(ctx)
	}
	running, err := s.store.JobsIn(ctx, shared.JobRunning)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	w := shared.Worker{ID: "serve", Host: host, Device: s.device.String(), Slots: s.cfg.Workers,
		Heartbeat: time.Now().UTC(), Alive: true, Jobs: []string{}}
	for _, j := range running {
		w.Jobs = append(w.Jobs, j.ID)
	}
	return []shared.Worker{w}, nil
}
