package server

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/conferral/conferral/backend/torch"
)

// queue is what the server asks of River's client. River's client is
// generic over its driver's transaction type (*sql.Tx for riversqlite,
// pgx.Tx for riverpgxv5); both clients are a queue, so the rest of the
// server does not care which database holds the jobs.
type queue interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	JobCancel(ctx context.Context, jobID int64) (*rivertype.JobRow, error)
	Start(ctx context.Context) error
	StopAndCancel(ctx context.Context) error
}

var (
	_ queue = (*river.Client[*sql.Tx])(nil)
	_ queue = (*river.Client[pgx.Tx])(nil)
)

// IsPostgres says whether a --database value names a PostgreSQL database
// (a postgres:// or postgresql:// URL).
func IsPostgres(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// fleet is the part of a server (or worker) whose queue and records live in
// PostgreSQL, shared with other processes on other machines: its identity
// in the fleet, the heartbeat that keeps its running jobs' leases fresh, and
// the reaper that queues a dead member's jobs again (lease.go).
type fleet struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	name   string // River's client ID: unique in the fleet
	host   string
	lease  time.Duration

	mu       sync.Mutex
	running  map[int64]context.CancelCauseFunc // River job ID → cancels its attempt
	lastBeat time.Time                         // the last heartbeat the database took

	cancel context.CancelFunc
	done   chan struct{}
}

// fleetSchema is the fleet's own table (beside the Store's, which serve
// SQLite and Postgres alike) and the notifications that carry one
// process's events to the websockets of another.
var fleetSchema = []string{
	`CREATE TABLE IF NOT EXISTS conferral_workers (
		id TEXT PRIMARY KEY, host TEXT NOT NULL, device TEXT NOT NULL, slots INT NOT NULL,
		started TIMESTAMPTZ NOT NULL, heartbeat TIMESTAMPTZ NOT NULL)`,
	`CREATE OR REPLACE FUNCTION conferral_notify_event() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('conferral_events', NEW.job::text || ':' || NEW.seq::text);
		RETURN NEW;
	END $$ LANGUAGE plpgsql`,
	`CREATE OR REPLACE TRIGGER conferral_events_notify AFTER INSERT ON conferral_events
		FOR EACH ROW EXECUTE FUNCTION conferral_notify_event()`,
	`CREATE OR REPLACE FUNCTION conferral_notify_job() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('conferral_jobs', NEW.id::text);
		RETURN NEW;
	END $$ LANGUAGE plpgsql`,
	`CREATE OR REPLACE TRIGGER conferral_jobs_notify AFTER UPDATE ON conferral_jobs
		FOR EACH ROW EXECUTE FUNCTION conferral_notify_job()`,
}

// migrateLock serialises schema changes of processes starting together
// (CREATE OR REPLACE is not safe against itself).
const migrateLock = 0x636f6e66 // "conf"

// openFleet is New for a PostgreSQL database: the queue's and the server's
// tables live there, artifacts in Config.Artifacts (a folder every member
// of the fleet mounts), and no process owns anything alone, so a dead
// process's jobs are found by their stale leases rather than at start.
func (s *Server) openFleet(ctx context.Context) (err error) {
	cfg := s.cfg
	artDir := cfg.Artifacts
	if artDir == "" || IsObjectStore(artDir) {
		artDir = filepath.Join(cfg.Dir, "artifacts")
	}
	if s.art, err = newSharedArtifacts(artDir); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	// Reports live beside the artifacts, so that every member writes them
	// where the server that shows them reads them (not in an object store:
	// there each process keeps its own).
	s.reports = filepath.Join(artDir, "reports")
	if IsObjectStore(cfg.Artifacts) {
		// The folder is this process's cache of the store.
		if s.art.remote, err = newObjectStore(ctx, cfg.Artifacts); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.reports = filepath.Join(cfg.Dir, "reports")
	}
	if err := os.MkdirAll(s.reports, 0o755); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.Database)
	if err != nil {
		return fmt.Errorf("server: the database URL: %w", err)
	}
	if !strings.Contains(cfg.Database, "pool_max_conns") {
		// River's listener and fetchers, the event relay's listener and the
		// reaper each hold a connection at times: pgx's default of
		// max(4, cores) is tight for them on a small machine.
		pcfg.MaxConns = max(pcfg.MaxConns, 10)
	}
	f := &fleet{lease: cfg.Lease, running: map[int64]context.CancelCauseFunc{}}
	if f.lease <= 0 {
		f.lease = 30 * time.Second
	}
	f.host, _ = os.Hostname()
	if f.host == "" {
		f.host = "unknown"
	}
	f.name = cfg.Name
	if f.name == "" {
		f.name = fmt.Sprintf("%s-%d", f.host, os.Getpid())
	}
	if f.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("server: connecting to the database: %w", err)
	}
	s.fleet = f
	if err := f.pool.Ping(ctx); err != nil {
		return fmt.Errorf("server: connecting to the database: %w", err)
	}
	driver := riverpgxv5.New(f.pool)
	if err := f.migrate(ctx, func(ctx context.Context) error {
		mig, err := rivermigrate.New(driver, nil)
		if err != nil {
			return err
		}
		if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
			return fmt.Errorf("migrating the queue's tables: %w", err)
		}
		// The Store's own connections, through database/sql.
		s.db = stdlib.OpenDB(*pcfg.ConnConfig)
		st, err := newSQLStore(ctx, s.db, true)
		if err != nil {
			return err
		}
		s.store, s.rebind = checkedStore{st, s.art}, st.q
		for _, q := range fleetSchema {
			if _, err := f.pool.Exec(ctx, q); err != nil {
				return fmt.Errorf("creating the fleet's tables: %w", err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("server: %w", err)
	}

	qcfg := s.riverConfig(cfg)
	qcfg.ID = f.name
	qcfg.WorkerMiddleware = []rivertype.WorkerMiddleware{&leaseMiddleware{s: s}}
	// A fleet's queues are per kind of device: a job queued for cuda runs
	// on whichever worker's GPU is free, within that worker's limit.
	jobDev := s.device
	if cfg.JobDevice != "" {
		if jobDev, err = torch.ParseDevice(cfg.JobDevice); err != nil {
			return fmt.Errorf("server: jobs' device: %w", err)
		}
	}
	s.queue = fleetQueue(jobDev)
	if !cfg.NoWork {
		qcfg.Queues = map[string]river.QueueConfig{fleetQueue(s.device): {MaxWorkers: cfg.Workers}}
	}
	if f.client, err = river.NewClient(driver, qcfg); err != nil {
		return fmt.Errorf("server: creating the queue client: %w", err)
	}
	s.river = f.client
	// The first heartbeat precedes the first job this member takes.
	if err := f.beat(ctx, s); err != nil {
		return fmt.Errorf("server: joining the fleet: %w", err)
	}
	if !cfg.NoWork {
		if err := f.client.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("server: starting the queue: %w", err)
		}
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel, f.done = cancel, make(chan struct{})
	go f.loop(loopCtx, s)
	return nil
}

// fleetQueue is the queue of a kind of device in a fleet.
func fleetQueue(d torch.Device) string {
	if d == torch.CPU {
		return "device_cpu"
	}
	return "device_cuda"
}

// migrate runs fn holding the fleet's schema lock.
func (f *fleet) migrate(ctx context.Context, fn func(context.Context) error) error {
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLock); err != nil {
		return fmt.Errorf("locking the schema: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLock)
	return fn(ctx)
}

// close stops the heartbeat, leaves the fleet and closes the connections.
// River has stopped by now: this member runs nothing.
func (f *fleet) close(ctx context.Context) error {
	if f.cancel != nil {
		f.cancel()
		<-f.done
	}
	var err error
	if f.client != nil {
		if _, derr := f.pool.Exec(ctx, `DELETE FROM conferral_workers WHERE id = $1`, f.name); derr != nil {
			err = fmt.Errorf("leaving the fleet: %w", derr)
		}
	}
	f.pool.Close()
	return err
}
