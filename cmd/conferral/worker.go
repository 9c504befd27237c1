package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/conferral/conferral/backend/server"
)

// runWorker is `conferral worker`: a member of a fleet that takes jobs from
// the PostgreSQL queue of a `conferral serve --database` and runs them on
// its device, reading and writing artifacts in the shared folder.
func runWorker(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	apply := common(fs, e)
	database := fs.String("database", "", "PostgreSQL URL of the fleet's queue (postgres://user@host:port/db)")
	artifacts := fs.String("artifacts", "", "the fleet's shared artifacts: a folder (the server's --artifacts, mounted here) or an object store, s3://host[:port]/bucket[/prefix] (s3+http:// without TLS)")
	cache := fs.String("cache", "conferral-cache", "with an object store for --artifacts: this worker's folder of copies")
	workers := fs.Int("workers", 1, "jobs run at once on this worker's device")
	name := fs.String("name", "", "this worker's name in the fleet (default host-pid)")
	lease := fs.Duration("lease", 30*time.Second, "how long this worker may stay silent before its jobs are run elsewhere (the same on every member)")
	dataDir := fs.String("data-dir", "", "dataset folder (default: where the Debian package or module puts it)")
	verbose := fs.Bool("v", false, "log the queue's activity")
	onnxMemory := onnxMemoryFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	if !server.IsPostgres(*database) {
		return usagef("--database postgres://... is required (the queue the server shares)")
	}
	if *artifacts == "" {
		return usagef("--artifacts DIR or s3://... is required (what the fleet shares)")
	}
	dir := *artifacts
	if server.IsObjectStore(dir) {
		dir = *cache
	}
	if *workers < 1 {
		return usagef("--workers %d: want 1 or more", *workers)
	}
	threads, _ := strconv.Atoi(fs.Lookup("threads").Value.String())
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	s, err := server.New(ctx, server.Config{
		Dir: dir, Artifacts: *artifacts, Database: *database, Name: *name, Lease: *lease,
		Device: e.device.String(), Workers: *workers, Threads: threads, DataDir: *dataDir, Version: "dev", ONNXMemory: int64(*onnxMemory),
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "conferral worker: taking jobs on %s, %d at a time (artifacts in %s; Ctrl-C stops)\n", e.device, *workers, *artifacts)
	<-ctx.Done()
	// Running jobs are queued again for another worker.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.Close(sctx)
}
