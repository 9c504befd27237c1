package server

import (
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/conferral/conferral/shared"
)

// events is GET /api/events[?job=ID]: a websocket of shared.Event as JSON
// text messages. With a job, the job's recorded events are replayed first,
// then live ones follow without gaps or repeats (by Seq).
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	job := r.URL.Query().Get("job")
	if job != "" {
		if _, err := s.store.Job(r.Context(), job); err != nil {
			s.fail(w, err)
			return
		}
	}
	up := websocket.Upgrader{CheckOrigin: s.originOK}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
	// Subscribe before replaying: an event recorded meanwhile arrives live
	// and is skipped by its sequence number if the replay had it.
	sub := s.hub.subscribe(job)
	defer s.hub.unsubscribe(sub)
	// Reading detects the client going away (and answers pings).
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	write := func(e shared.Event) bool {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteJSON(e) == nil
	}
	var replayed int64
	if job != "" {
		s.seqMu.Lock() // no event is recorded while the replay is read
		evs, err := s.store.Events(r.Context(), job)
		s.seqMu.Unlock()
		if err != nil {
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "reading events"), time.Now().Add(time.Second))
			return
		}
		for _, e := range evs {
			if !write(e) {
				return
			}
			replayed = e.Seq
		}
	}
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case e, ok := <-sub.c:
			if !ok {
				msg := "server shutting down"
				if sub.dropped {
					msg = "too slow: reconnect to replay the job's events"
				}
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, msg), time.Now().Add(time.Second))
				return
			}
			if job != "" && e.Seq <= replayed {
				continue
			}
			if !write(e) {
				return
			}
		case <-ping.C:
			if conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second)) != nil {
				return
			}
		case <-gone:
			return
		case <-r.Context().Done():
			return
		}
	}
}
