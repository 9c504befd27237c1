package server

import (
	"sync"

	"github.com/conferral/conferral/shared"
)

// hub fans job events out to websocket subscribers. A subscriber that
// falls behind by more than its buffer is dropped (its channel closed) rather
// than slowing the jobs down or losing events silently; a client reconnects
// and replays the job's recorded events.
type hub struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}
	// last is the highest Seq published per job: an event that another
	// fleet member's relay brings again is dropped.
	last map[string]int64
}

type subscription struct {
	job     string // "" for every job
	c       chan shared.Event
	dropped bool
}

func newHub() *hub {
	return &hub{subs: map[*subscription]struct{}{}, last: map[string]int64{}}
}

// subscribe returns a subscription to job's events ("" for all).
func (h *hub) subscribe(job string) *subscription {
	s := &subscription{job: job, c: make(chan shared.Event, 1024)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.c)
	}
}

func (h *hub) publish(e shared.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Seq > 0 {
		if e.Seq <= h.last[e.Job] {
			return
		}
		h.last[e.Job] = e.Seq
	}
	for s := range h.subs {
		if s.job != "" && s.job != e.Job {
			continue
		}
		select {
		case s.c <- e:
		default:
			s.dropped = true
			delete(h.subs, s)
			close(s.c)
		}
	}
}

// closeAll ends every subscription (server shutdown).
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		delete(h.subs, s)
		close(s.c)
	}
}
