// Package server is `conferral serve`: an HTTP and websocket API over a
// durable job queue. Training, derivation, extraction, verification and
// experiments run as River jobs; one SQLite file (the embedded default)
// holds the queue and the records of models, fingerprints, reports, jobs
// and their events; artifacts are files named by their sha256 and written
// atomically. The routes are listed in shared/api.go.
//
// Jobs run one at a time per device by default (Config.Workers). A job can
// be cancelled while queued or running. A job that the server's shutdown
// interrupts is queued again and runs from the start when the server is
// back; one that was running when the process died is found at start and
// resumed the same way, or marked interrupted when resuming is off or its
// attempts are spent. A failure is final: what is safe to retry (a remote
// endpoint's refused connections, 5xx and 429 answers) suspect.Remote
// retries itself, and anything else would fail the same way again.
package server

import (
	"cmp"
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite" // the embedded database

	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/shared"
)

// Config configures a Server. Zero values take the defaults in brackets.
type Config struct {
	// Dir holds conferral.db, artifacts/ and reports/ (required).
	Dir string
	// Device runs the jobs' tensor work: auto, cpu, cuda or cuda:N [auto:
	// the first CUDA device if there is one, else the CPU].
	Device string
	// Workers is how many jobs run at once on the device [1].
	Workers int
	// Threads are libtorch's intra-op threads per job [1].
	Threads int
	// SoloThreads are the threads of a job that starts with no other job
	// running or queued, when more than Threads [Threads]: with Workers
	// jobs of one thread each, a lone job (the source, C-BIM) still gets
	// the whole machine.
	SoloThreads int
	// MaxAttempts bounds how often a job is started, resumptions after a
	// restart included [3].
	MaxAttempts int
	// NoResume marks jobs found running after a crash as interrupted
	// instead of queueing them again.
	NoResume bool
	// MaxUpload bounds an uploaded ONNX file in bytes [256 MiB].
	MaxUpload int64
	// ONNXMemory is the memory budget in bytes of one forward pass of an
	// uploaded ONNX model by the importer's static estimate of its
	// intermediate values (onnx.Options.MaxMemory): an upload whose single
	// image needs more is refused before it runs [onnx.DefaultMaxMemory,
	// 1 GiB].
	ONNXMemory int64
	// UploadRetention is how long an accepted upload is kept after it was
	// last uploaded, unless a job that has not ended needs it; a negative
	// value keeps uploads for good [7 days]. Only the embedded database's
	// server removes uploads (a fleet shares them).
	UploadRetention time.Duration
	// MaxHeavy bounds the requests whose work is heavy (an ONNX upload's
	// validation, a fingerprint's detail) that run at once; others are
	// answered 503 with Retry-After [2].
	MaxHeavy int
	// AllowPrivate lets remote endpoints live on loopback, private and
	// link-local addresses (the operator's --allow-private).
	AllowPrivate bool
	// Addr is where the server listens [127.0.0.1:8080]; anything but a
	// loopback address requires Token.
	Addr string
	// Token, when set, is required on every request.
	Token string
	// Origins are the extra origins allowed to open the event websocket
	// (scheme://host[:port]); the server's own origin always is.
	Origins []string
	// Hosts are the extra names (or addresses) the server answers to in
	// a request's Host header, besides where it listens: loopback names
	// and addresses for a loopback Addr; Addr's host, this machine's name
	// and any IP address for a wider one. Any other Host is refused (421),
	// which defeats DNS rebinding.
	Hosts []string
	// App serves "/" (the browser app); nil serves a short text page.
	App http.Handler
	// DataDir is the folder of datasets ("" for where packages put them).
	DataDir string
	// Results is a folder of committed studies' report folders (the
	// repository's docs/results), listed read-only beside the server's own
	// reports as "results:NAME" ("" lists none).
	Results string
	// EndpointTimeout bounds each request to a remote endpoint [30 s].
	EndpointTimeout time.Duration
	// Logger receives the server's and River's logs [discard].
	Logger *slog.Logger
	// Version is reported by /api/health.
	Version string

	// Database is a PostgreSQL URL (postgres://...) holding the queue and
	// the records of a fleet of servers and workers; "" keeps both in
	// Dir/conferral.db (see postgres.go).
	Database string
	// Artifacts, with Database, is where the fleet's artifacts live: a
	// folder every member mounts, or an S3-compatible object store's URL
	// (s3.go) [Dir/artifacts].
	Artifacts string
	// Name is this process's name in the fleet [host-pid].
	Name string
	// Lease is how long a fleet member may stay silent before its running
	// jobs are taken back and run elsewhere [30 s].
	Lease time.Duration
	// NoWork, with Database, runs no jobs here: workers run them.
	NoWork bool
	// JobDevice, with Database, is the kind of device (cpu or cuda) that
	// submitted jobs are queued for, whatever device this process has
	// [Device's kind].
	JobDevice string
}

// Server is a running `conferral serve`.
type Server struct {
	cfg      Config
	device   torch.Device
	db       *sql.DB
	store    Store
	rebind   func(query string) string // ? placeholders for the database at hand
	art      *artifacts
	reports  string
	hub      *hub
	river    queue
	fleet    *fleet // with Config.Database
	queue    string
	lock     *os.File
	log      *slog.Logger
	stopping atomic.Bool
	// fps holds loaded fingerprint files by path: a path names its bytes
	// (sha256), so a file is read and its commitment checked once.
	fps     sync.Map
	seqMu   sync.Mutex
	seqs    map[string]int64
	handler http.Handler
	hosts   hostPolicy
	// beginJobTx opens the transaction that records and queues a job
	// (submit.go).
	beginJobTx func(ctx context.Context) (jobTx, error)
	submitWait time.Duration // [submitWait]
	uploads    keyLocks      // per upload digest (uploadlock.go)
	heavy      chan struct{} // a slot per heavy request running (Config.MaxHeavy)
	stopSweep  func()        // stops the upload sweeper (retention.go)
	closed     sync.Once
	committed  committedCache // the listing of Config.Results (results.go)
	// life ends when the shutdown begins: waits that must not hold it up
	// (finish's retries while the database is away) end with it.
	life    context.Context
	endLife context.CancelFunc
}

// jobArgs is the River job: the server's own job ID.
type jobArgs struct {
	Job string `json:"job"`
}

func (jobArgs) Kind() string { return "conferral" }

// New opens (or creates) the server's folder, recovers the jobs an earlier
// process left running, and starts the queue. Close stops it.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("server: Config.Dir is required")
	}
	dev, err := torch.ParseDevice(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Threads <= 0 {
		cfg.Threads = 1
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxHeavy <= 0 {
		cfg.MaxHeavy = 2
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = 256 << 20
	}
	if cfg.ONNXMemory <= 0 {
		cfg.ONNXMemory = onnx.DefaultMaxMemory
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.EndpointTimeout <= 0 {
		cfg.EndpointTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !loopback(cfg.Addr) && cfg.Token == "" {
		return nil, fmt.Errorf("server: listening on %s (not a loopback address) requires a token", cfg.Addr)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	hosts, err := newHostPolicy(cfg.Addr, cfg.Hosts)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, device: dev, hub: newHub(), log: cfg.Logger, seqs: map[string]int64{},
		queue: queueName(dev), reports: filepath.Join(cfg.Dir, "reports"), hosts: hosts,
		heavy: make(chan struct{}, cfg.MaxHeavy)}
	s.life, s.endLife = context.WithCancel(context.WithoutCancel(ctx))
	ok := false
	defer func() {
		if !ok {
			s.shutdown(context.Background())
		}
	}()
	if IsPostgres(cfg.Database) {
		if err := s.openFleet(ctx); err != nil {
			return nil, err
		}
		s.beginJobTx = func(ctx context.Context) (jobTx, error) { return beginPgJobTx(ctx, s.fleet) }
		s.handler = s.routes()
		ok = true
		return s, nil
	} else if cfg.Database != "" {
		return nil, fmt.Errorf("server: database %q: want a postgres:// URL, or none for SQLite in the folder", cfg.Database)
	} else if cfg.Artifacts != "" {
		return nil, errors.New("server: a separate artifact store is for a fleet (with a postgres:// database); without one, artifacts live in the folder")
	}
	// One process owns the folder: the crash recovery below relies on it.
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.lock = lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil, fmt.Errorf("server: %s is in use by another conferral serve: %w", cfg.Dir, err)
	}
	if s.art, err = newArtifacts(filepath.Join(cfg.Dir, "artifacts")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.reports, 0o755); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	dsn := "file:" + filepath.Join(cfg.Dir, "conferral.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)"
	if s.db, err = sql.Open("sqlite", dsn); err != nil {
		return nil, fmt.Errorf("server: opening the database: %w", err)
	}
	s.db.SetMaxOpenConns(1) // SQLite writes one at a time (riversqlite's advice)
	driver := riversqlite.New(s.db)
	mig, err := rivermigrate.New(driver, nil)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("server: migrating the queue's tables: %w", err)
	}
	st, err := newSQLStore(ctx, s.db, false)
	if err != nil {
		return nil, err
	}
	s.store, s.rebind = checkedStore{st, s.art}, st.q
	if err := s.recover(ctx); err != nil {
		return nil, err
	}
	qcfg := s.riverConfig(cfg)
	qcfg.Queues = map[string]river.QueueConfig{s.queue: {MaxWorkers: cfg.Workers}}
	client, err := river.NewClient(driver, qcfg)
	if err != nil {
		return nil, fmt.Errorf("server: creating the queue client: %w", err)
	}
	s.river = client
	s.beginJobTx = func(ctx context.Context) (jobTx, error) {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return sqliteJobTx{tx: tx, client: client}, nil
	}
	if err := s.river.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, fmt.Errorf("server: starting the queue: %w", err)
	}
	if err := s.requeueOrphans(ctx); err != nil {
		return nil, err
	}
	if retention := cmp.Or(cfg.UploadRetention, defaultUploadRetention); retention > 0 {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		s.stopSweep = func() { cancel(); <-done }
		go s.keepSweeping(sctx, retention, done) // retention.go
	}
	s.handler = s.routes()
	ok = true
	return s, nil
}

// riverConfig is the queue client's configuration that SQLite and
// PostgreSQL share; the caller adds the queues it works.
func (s *Server) riverConfig(cfg Config) *river.Config {
	workers := river.NewWorkers()
	river.AddWorker(workers, &worker{s: s})
	return &river.Config{
		Workers:     workers,
		MaxAttempts: cfg.MaxAttempts,
		JobTimeout:  -1, // training takes what it takes
		// Jobs run for hours: River must not "rescue" a job that is still
		// running. A dead process's jobs are recovered at start (SQLite) or
		// by leases (lease.go, PostgreSQL) instead.
		RescueStuckJobsAfter: 10 * 365 * 24 * time.Hour,
		// Keep River's rows as long as the server's own records.
		CompletedJobRetentionPeriod: -1,
		CancelledJobRetentionPeriod: -1,
		DiscardedJobRetentionPeriod: -1,
		FetchCooldown:               50 * time.Millisecond,
		FetchPollInterval:           250 * time.Millisecond,
		Logger:                      cfg.Logger,
	}
}

// queueName is the queue of a device: jobs that share a device share its
// concurrency limit.
func queueName(d torch.Device) string {
	return "device_" + strings.NewReplacer(":", "_").Replace(d.String())
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler is the server's HTTP handler: the API under /api/ and Config.App
// at "/".
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the queue, interrupting running jobs (they are queued again
// for the next start), and closes the database.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.closed.Do(func() { err = s.shutdown(ctx) })
	return err
}

func (s *Server) shutdown(ctx context.Context) error {
	s.stopping.Store(true)
	s.endLife()
	if s.stopSweep != nil {
		s.stopSweep()
	}
	var errs []error
	if s.river != nil {
		if err := s.river.StopAndCancel(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping the queue: %w", err))
		}
	}
	if s.fleet != nil {
		errs = append(errs, s.fleet.close(ctx))
	}
	s.hub.closeAll()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the database: %w", err))
		}
	}
	if s.lock != nil {
		s.lock.Close()
	}
	return errors.Join(errs...)
}

// ListenAndServe serves on Config.Addr until ctx ends, then shuts the HTTP
// server and the queue down. ready, when not nil, receives the address
// listened on.
func (s *Server) ListenAndServe(ctx context.Context, ready func(addr string)) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr().String())
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		s.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.hub.closeAll() // ends websockets so that Shutdown need not wait for them
	herr := hs.Shutdown(sctx)
	cerr := s.Close(sctx)
	return errors.Join(herr, cerr)
}

// authorized checks the token, if one is required.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	for _, t := range []string{strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), r.URL.Query().Get("token"), cookie(r, "conferral_token")} {
		if t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(s.cfg.Token)) == 1 {
			return true
		}
	}
	return false
}

func cookie(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// health describes the server.
func (s *Server) health() shared.Health {
	return shared.Health{Version: s.cfg.Version, Device: s.device.String(), Workers: s.cfg.Workers,
		MaxUpload: s.cfg.MaxUpload, PrivateEndpoints: s.cfg.AllowPrivate}
}
