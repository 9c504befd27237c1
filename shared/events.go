// Package shared holds the wire types that the server and the WASM app both
// use: job events, requests and results. It imports nothing of the backend,
// so it compiles for GOOS=js.
package shared

import "time"

// EventKind says what an Event reports.
type EventKind string

const (
	// Progress is a step of long work: Step of Total done.
	Progress EventKind = "progress"
	// Epoch closes a training epoch with its metrics.
	Epoch EventKind = "epoch"
	// Log is a line of text for a person.
	Log EventKind = "log"
	// Done ends a stage successfully.
	Done EventKind = "done"
	// State is a job's change of state (Event.State, and Event.Message
	// with the error of a failed job).
	State EventKind = "state"
	// Crafted announces a newly crafted fingerprint (Event.Fingerprint).
	Crafted EventKind = "fingerprint"
	// Verdicts announces a verification's verdict (Event.Verdict).
	Verdicts EventKind = "verdict"
)

// Event is one report of long work: the CLI draws its progress bar from
// them and the server streams them to the browser over a websocket.
type Event struct {
	Job     string             `json:"job,omitempty"`
	Kind    EventKind          `json:"kind"`
	Stage   string             `json:"stage"`           // what is running, e.g. "train resnet20"
	Step    int64              `json:"step,omitempty"`  // steps done in this stage
	Total   int64              `json:"total,omitempty"` // steps in this stage, 0 if unknown
	Epoch   int                `json:"epoch,omitempty"`
	Metrics map[string]float64 `json:"metrics,omitempty"` // loss, lr, train_acc, test_acc, ...
	Message string             `json:"message,omitempty"`
	Time    time.Time          `json:"time"`

	// Set by the server only.
	Seq         int64            `json:"seq,omitempty"` // per job, increasing from 1
	State       JobState         `json:"state,omitempty"`
	Fingerprint *FingerprintInfo `json:"fingerprint,omitempty"`
	Verdict     *Verdict         `json:"verdict,omitempty"`
}

// Reporter receives events. A nil Reporter discards them.
type Reporter func(Event)

// Report sends e to r, stamping its time, if r is not nil.
func (r Reporter) Report(e Event) {
	if r == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r(e)
}
