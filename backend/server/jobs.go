package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// inputError is a request that cannot be run: the API answers 400.
type inputError struct{ error }

func (e inputError) Unwrap() error { return e.error }

func badInput(format string, args ...any) error { return inputError{fmt.Errorf(format, args...)} }

// Submit checks a request, then records the job and queues it in one
// transaction. A database too busy to take it within a few seconds makes
// an error that is errBusy (the API answers 503 with Retry-After).
func (s *Server) Submit(ctx context.Context, req shared.JobRequest) (shared.Job, error) {
	if err := s.check(ctx, &req); err != nil {
		return shared.Job{}, err
	}
	j, err := s.record(ctx, req) // submit.go: one transaction
	if err != nil {
		return shared.Job{}, err
	}
	return s.store.Job(ctx, j.ID)
}

// enqueue puts a recorded job in the queue and links the two. Queueing is
// unique by the job's ID: a job that is already in the queue is not queued
// twice.
func (s *Server) enqueue(ctx context.Context, id string) error {
	res, err := s.river.Insert(ctx, jobArgs{Job: id}, &river.InsertOpts{Queue: s.queue, MaxAttempts: s.cfg.MaxAttempts,
		UniqueOpts: river.UniqueOpts{ByArgs: true}})
	if err != nil {
		return fmt.Errorf("queueing job %s: %w", id, err)
	}
	return s.store.SetQueueID(ctx, id, res.Job.ID)
}

// requeueOrphans queues the jobs that were recorded but never linked to
// the queue: the process died between the two steps of Submit.
func (s *Server) requeueOrphans(ctx context.Context) error {
	queued, err := s.store.JobsIn(ctx, shared.JobQueued)
	if err != nil {
		return err
	}
	for _, j := range queued {
		qid, err := s.store.QueueID(ctx, j.ID)
		if err != nil {
			return err
		}
		if qid == 0 {
			if err := s.enqueue(ctx, j.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// Cancel cancels a queued job at once and asks a running one to stop; the
// running job turns cancelled when its work returns. Cancelling a finished
// job changes nothing.
func (s *Server) Cancel(ctx context.Context, id string) (shared.Job, error) {
	j, err := s.store.Job(ctx, id)
	if err != nil || j.State.Final() {
		return j, err
	}
	qid, err := s.store.QueueID(ctx, id)
	if err != nil {
		return j, err
	}
	stopped := qid == 0 // not in the queue yet
	if qid != 0 {
		row, err := s.river.JobCancel(ctx, qid)
		switch {
		case errors.Is(err, river.ErrNotFound):
			stopped = true
		case err != nil:
			return j, fmt.Errorf("cancelling job %s: %w", id, err)
		default:
			stopped = row.State == rivertype.JobStateCancelled
		}
	}
	if stopped {
		return s.finish(ctx, id, shared.JobCancelled, nil, "cancelled by request before it ran")
	}
	return s.store.Job(ctx, id)
}

// finishPatience is how long finish keeps trying to record a job's end
// while the database does not answer.
const finishPatience = 2 * time.Minute

// finish puts a job in a final state (or back in the queue) and reports it.
// The record is written even when ctx is done (a job the shutdown stopped
// still records how it ended), but while the database is away it is tried
// again only until the server begins to shut down (s.life), so that an
// outage does not hold the shutdown up: a record left running is set
// right by the job's next attempt, or by recover at the next start.
func (s *Server) finish(ctx context.Context, id string, st shared.JobState, res *shared.JobResult, msg string) (shared.Job, error) {
	ctx = context.WithoutCancel(ctx)
	msg = s.redact(msg) // clients read it
	now := time.Now().UTC()
	var j shared.Job
	// A database that is away for a moment (a PostgreSQL restart, a
	// network blip) must not leave the record running for good while the
	// queue's row completes: the end is recorded again until it sticks.
	err := retryUnavailable(s.life, finishPatience, s.log.With("job", id), "recording a job's end", func() error {
		var err error
		j, err = s.store.UpdateJob(ctx, id, func(j *shared.Job) {
			j.State, j.Error = st, msg
			if res != nil {
				j.Result = res
			}
			if st.Final() {
				j.Finished = &now
			}
		})
		return err
	})
	if err != nil {
		s.log.Error("recording a job's end", "job", id, "err", err)
		return j, err
	}
	s.emit(ctx, shared.Event{Job: id, Kind: shared.State, State: st, Stage: string(j.Kind), Message: msg})
	return j, nil
}

// retryUnavailable calls try, and calls it again while it fails because
// the database is away (dbUnavailable), waiting 100 ms, then twice as long
// each time up to 2 s, for as long as patience allows. The first call
// always happens; once ctx is done there is no other, and the error is
// ctx's, wrapped with the outage's.
func retryUnavailable(ctx context.Context, patience time.Duration, log *slog.Logger, what string, try func() error) error {
	wait := 100 * time.Millisecond
	for deadline := time.Now().Add(patience); ; {
		err := try()
		if !dbUnavailable(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		if ctx.Err() == nil {
			log.Warn(what+"; trying again", "err", err, "in", wait)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: stopped waiting for the database: %w (%w)", what, context.Cause(ctx), err)
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// worker runs the server's jobs for River.
type worker struct {
	river.WorkerDefaults[jobArgs]
	s *Server
}

// Timeout: none; cancellation comes from the API or the shutdown.
func (w *worker) Timeout(*river.Job[jobArgs]) time.Duration { return -1 }

// NextRetry: soon; only runs the shutdown interrupted come back.
func (w *worker) NextRetry(j *river.Job[jobArgs]) time.Time {
	return time.Now().Add(time.Duration(j.Attempt) * time.Second)
}

func (w *worker) Work(ctx context.Context, j *river.Job[jobArgs]) error {
	if ready, err := w.s.gather(ctx, j.Args.Job); !ready { // fanout.go
		return err
	}
	return w.s.work(ctx, j.Args.Job)
}

// work runs one attempt of a job and records how it ended. The error it
// returns tells River what to do next: nil (done), a plain error (run it
// again), river.JobCancel (never again). Attempts are counted here rather
// than by River, which does not count a run that its shutdown cancelled.
func (s *Server) work(ctx context.Context, id string) error {
	maxAttempts := s.cfg.MaxAttempts
	j, err := s.store.Job(ctx, id)
	if err != nil {
		return river.JobCancel(err)
	}
	if j.State.Final() { // cancelled before River saw it
		return nil
	}
	attempt := j.Attempt + 1
	if attempt > maxAttempts {
		s.finish(ctx, id, shared.JobInterrupted, nil, fmt.Sprintf("interrupted %d times; not started again", j.Attempt))
		return river.JobCancel(errors.New("no attempts left"))
	}
	now := time.Now().UTC()
	j, err = s.store.UpdateJob(ctx, id, func(j *shared.Job) {
		j.State, j.Attempt, j.Started, j.Finished = shared.JobRunning, attempt, &now, nil
	})
	if err != nil {
		return err
	}
	note := ""
	if attempt > 1 {
		note = fmt.Sprintf("attempt %d of %d", attempt, maxAttempts)
	}
	s.emit(ctx, shared.Event{Job: id, Kind: shared.State, State: shared.JobRunning, Stage: string(j.Kind), Message: note})

	res, err := s.runLocked(ctx, j)
	switch {
	case err == nil:
		s.finish(ctx, id, shared.JobCompleted, res, "")
		return nil
	case errors.Is(context.Cause(ctx), errLeaseLost):
		return err // another worker runs the job now and keeps its record
	case errors.Is(context.Cause(ctx), river.ErrJobCancelledRemotely):
		s.finish(ctx, id, shared.JobCancelled, nil, "cancelled by request while running")
		return err
	case s.stopping.Load() && ctx.Err() != nil:
		if attempt < maxAttempts {
			s.finish(ctx, id, shared.JobQueued, nil, fmt.Sprintf("the server stopped during attempt %d; the job runs again from the start when the server is back", attempt))
			return err
		}
		s.finish(ctx, id, shared.JobInterrupted, nil, fmt.Sprintf("the server stopped during attempt %d of %d", attempt, maxAttempts))
		return river.JobCancel(err)
	case dbUnavailable(err) && attempt < maxAttempts:
		// The database went away under the job (its work is redone, and
		// content-addressed artifacts it stored are found again).
		s.finish(ctx, id, shared.JobQueued, nil, fmt.Sprintf("the database was unreachable during attempt %d (%v); the job runs again", attempt, err))
		return err
	default:
		s.finish(ctx, id, shared.JobFailed, nil, err.Error())
		return river.JobCancel(err)
	}
}

// runLocked runs a job on one OS thread (libtorch's thread pool belongs to
// it) and turns a panic into an error.
func (s *Server) runLocked(ctx context.Context, j shared.Job) (res *shared.JobResult, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	threads := s.cfg.Threads
	if s.cfg.SoloThreads > threads && s.alone(ctx, j.ID) {
		threads = s.cfg.SoloThreads
	}
	torch.SetNumThreads(threads) // libtorch's threads are per OS thread
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("job panicked", "job", j.ID, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s job crashed: %v", j.Kind, p)
		}
	}()
	rep := s.reporter(ctx, j.ID)
	rep(shared.Event{Kind: shared.Log, Stage: string(j.Kind), Message: fmt.Sprintf("running on %s (libtorch threads: %d)", s.device, threads)})
	return s.run(ctx, j, rep)
}

// alone says whether job id is the only job running or queued.
func (s *Server) alone(ctx context.Context, id string) bool {
	jobs, err := s.store.JobsIn(ctx, shared.JobRunning, shared.JobQueued)
	if err != nil {
		return false // unsure: the share of a busy machine
	}
	for _, j := range jobs {
		if j.ID != id {
			return false
		}
	}
	return true
}

// recover finds the jobs that a process which died left running: each is
// queued again (River's row made available) unless resuming is off or its
// attempts are spent, in which case it is marked interrupted. The folder
// lock guarantees that no other process is running them.
func (s *Server) recover(ctx context.Context) error {
	running, err := s.store.JobsIn(ctx, shared.JobRunning)
	if err != nil {
		return err
	}
	for _, j := range running {
		qid, err := s.store.QueueID(ctx, j.ID)
		if err != nil {
			return err
		}
		if !s.cfg.NoResume && j.Attempt < s.cfg.MaxAttempts {
			if _, err := s.db.ExecContext(ctx, s.rebind(`UPDATE river_job SET state = 'available' WHERE id = ? AND state = 'running'`), qid); err != nil {
				return fmt.Errorf("resuming job %s: %w", j.ID, err)
			}
			s.finish(ctx, j.ID, shared.JobQueued, nil, fmt.Sprintf("the server stopped while attempt %d ran; resumed from the start", j.Attempt))
			continue
		}
		if _, err := s.db.ExecContext(ctx, s.rebind(`UPDATE river_job SET state = 'cancelled', finalized_at = CURRENT_TIMESTAMP WHERE id = ? AND state NOT IN ('cancelled', 'completed', 'discarded')`), qid); err != nil {
			return fmt.Errorf("marking job %s interrupted: %w", j.ID, err)
		}
		s.finish(ctx, j.ID, shared.JobInterrupted, nil, fmt.Sprintf("the server stopped while attempt %d ran", j.Attempt))
	}
	// A row River fetched just before the crash, whose job had not started.
	if _, err := s.db.ExecContext(ctx, `UPDATE river_job SET state = 'available' WHERE state = 'running'`); err != nil {
		return fmt.Errorf("recovering the queue: %w", err)
	}
	return nil
}

// emit numbers an event, records it unless it is a progress step, and
// publishes it.
func (s *Server) emit(ctx context.Context, e shared.Event) {
	ctx = context.WithoutCancel(ctx)
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.Metrics, e.Message = finiteMetrics(e.Metrics, e.Message)
	s.seqMu.Lock()
	seq, ok := s.seqs[e.Job]
	if !ok || (s.fleet != nil && e.Kind != shared.Progress) { // other processes number the job's events too
		seq = s.lastSeq(ctx, e.Job)
	}
	seq++
	s.seqs[e.Job] = seq
	e.Seq = seq
	if e.Kind != shared.Progress {
		// Recorded under the lock so that a replay never misses an event
		// that a live subscriber got.
		if err := s.store.AddEvent(ctx, e); err != nil {
			s.log.Error("recording an event", "job", e.Job, "err", err)
		}
	}
	s.hub.publish(e)
	s.seqMu.Unlock()
}

// lastSeq is the highest sequence number a job has used.
func (s *Server) lastSeq(ctx context.Context, job string) int64 {
	var last int64
	if evs, err := s.store.Events(ctx, job); err == nil && len(evs) > 0 {
		last = evs[len(evs)-1].Seq
	}
	if j, err := s.store.Job(ctx, job); err == nil && j.Progress != nil {
		last = max(last, j.Progress.Seq)
	}
	return last
}

// reporter is a job's shared.Reporter: it publishes the library's events
// and keeps the latest progress in the job's record. Progress steps are
// thinned to ten a second.
func (s *Server) reporter(ctx context.Context, id string) shared.Reporter {
	var lastPub, lastSave time.Time
	return func(e shared.Event) {
		e.Job = id
		e.Metrics, e.Message = finiteMetrics(e.Metrics, e.Message) // the progress record is JSON too
		if e.Kind == shared.Progress {
			now := time.Now()
			final := e.Total > 0 && e.Step >= e.Total
			if !final && now.Sub(lastPub) < 100*time.Millisecond {
				return
			}
			lastPub = now
			s.emit(ctx, e)
			if final || now.Sub(lastSave) > time.Second {
				lastSave = now
				s.saveProgress(ctx, id, e)
			}
			return
		}
		s.emit(ctx, e)
		if e.Kind == shared.Epoch {
			s.saveProgress(ctx, id, e)
		}
	}
}

func (s *Server) saveProgress(ctx context.Context, id string, e shared.Event) {
	s.seqMu.Lock()
	e.Seq = s.seqs[id]
	s.seqMu.Unlock()
	if _, err := s.store.UpdateJob(context.WithoutCancel(ctx), id, func(j *shared.Job) { j.Progress = &e }); err != nil {
		s.log.Error("recording progress", "job", id, "err", err)
	}
}

// finiteMetrics keeps the metrics JSON can carry and names the others in
// the message: a diverged training's loss is +Inf or NaN, and an event
// holding one could be neither recorded nor sent.
func finiteMetrics(m map[string]float64, msg string) (map[string]float64, string) {
	var bad []string
	for k, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad = append(bad, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if len(bad) == 0 {
		return m, msg
	}
	sort.Strings(bad)
	out := make(map[string]float64, len(m)-len(bad))
	for k, v := range m {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			out[k] = v
		}
	}
	note := "not finite: " + strings.Join(bad, ", ")
	if msg != "" {
		note = msg + " (" + note + ")"
	}
	return out, note
}
