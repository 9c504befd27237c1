package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/conferral/conferral/shared"
)

// errOutage is what a try returns while the database is away.
var errOutage = fmt.Errorf("updating job 7: %w", pgconn.ErrConnClosed)

// TestRetryUnavailable checks when retryUnavailable calls again: after an
// outage, within its patience, while ctx lives; and that a done ctx ends
// it after the first call, with ctx's error.
func TestRetryUnavailable(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	fails := func(n int, last error) (func() error, *int) {
		calls := 0
		return func() error {
			calls++
			if calls <= n {
				return errOutage
			}
			return last
		}, &calls
	}
	jobError := errors.New("a fault of the record itself")
	for _, tc := range []struct {
		name     string
		outages  int
		last     error
		patience time.Duration
		want     error
		calls    int
	}{
		{"no outage", 0, nil, time.Minute, nil, 1},
		{"two outages, then it sticks", 2, nil, time.Minute, nil, 3},
		{"another error is not retried", 0, jobError, time.Minute, jobError, 1},
		{"an outage past patience", 1000, nil, 0, errOutage, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			try, calls := fails(tc.outages, tc.last)
			err := retryUnavailable(context.Background(), tc.patience, log, "recording", try)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || *calls != tc.calls {
				t.Errorf("%v after %d calls, want %v after %d", err, *calls, tc.want, tc.calls)
			}
		})
	}

	t.Run("done before the first call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		try, calls := fails(1000, nil)
		err := retryUnavailable(ctx, time.Hour, log, "recording", try)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, pgconn.ErrConnClosed) || *calls != 1 {
			t.Errorf("%v after %d calls; want one call, then ctx's error wrapped with the outage's", err, *calls)
		}
	})

	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		second := make(chan struct{})
		calls := 0
		try := func() error {
			if calls++; calls == 2 {
				close(second) // the first wait is over: the next one is cancelled
			}
			return errOutage
		}
		done := make(chan error, 1)
		go func() { done <- retryUnavailable(ctx, time.Hour, log, "recording", try) }()
		<-second
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) || !errors.Is(err, pgconn.ErrConnClosed) {
				t.Errorf("%v; want ctx's error wrapped with the outage's", err)
			}
		case <-time.After(time.Minute): // the waits are at most 2 s; an hour's patience would run on
			t.Fatal("still retrying a minute after its context was cancelled")
		}
	})
}

// downStore is a Store whose database is away when jobs are updated.
type downStore struct {
	Store
	updates chan struct{} // receives a value per update tried
}

func (d downStore) UpdateJob(context.Context, string, func(*shared.Job)) (shared.Job, error) {
	select {
	case d.updates <- struct{}{}:
	default:
	}
	return shared.Job{}, errOutage
}

// TestFinishStopsRetryingAtShutdown: finish keeps recording a job's end
// while the database is away, but the server's shutdown ends its retries
// (with the shutdown's error), so that Close is not held up by an outage.
func TestFinishStopsRetryingAtShutdown(t *testing.T) {
	// Only what finish and the shutdown use: a Server of New would race
	// with its own queue over the store swapped in.
	updates := make(chan struct{}, 1)
	s := &Server{store: downStore{updates: updates}, hub: newHub(), log: slog.New(slog.DiscardHandler)}
	s.life, s.endLife = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.finish(context.Background(), "7", shared.JobFailed, nil, "it broke")
		done <- err
	}()
	<-updates
	<-updates // a retry: finish is waiting on the database
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !errors.Is(err, pgconn.ErrConnClosed) {
			t.Errorf("finish: %v; want the shutdown's cancellation wrapped with the outage", err)
		}
	case <-time.After(time.Minute): // finishPatience is two minutes
		t.Fatal("finish still retrying a minute after the shutdown began")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
