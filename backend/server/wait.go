package server

import (
	"context"
	"errors"
	"time"

	"github.com/conferral/conferral/shared"
)

// Subscribe returns the live events of a job ("" for every job) and a
// function that ends the subscription. The channel is closed when the
// subscriber falls too far behind or the server stops.
func (s *Server) Subscribe(job string) (<-chan shared.Event, func()) {
	sub := s.hub.subscribe(job)
	return sub.c, func() { s.hub.unsubscribe(sub) }
}

// Job returns a job's record.
func (s *Server) Job(ctx context.Context, id string) (shared.Job, error) { return s.store.Job(ctx, id) }

// Wait blocks until a job reaches a final state (or ctx ends) and returns
// its record.
func (s *Server) Wait(ctx context.Context, id string) (shared.Job, error) {
	events, stop := s.Subscribe(id)
	defer func() { stop() }()
	for {
		j, err := s.store.Job(ctx, id)
		if err != nil || j.State.Final() {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case _, ok := <-events:
			if !ok {
				if s.stopping.Load() {
					return j, errors.New("the server stopped")
				}
				stop()
				events, stop = s.Subscribe(id)
			}
		case <-time.After(time.Second): // a missed event costs a second at most
		}
	}
}
