package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/conferral/conferral/app"
	"github.com/conferral/conferral/backend/server"
)

func runServe(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	apply := common(fs, e)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on; anything but loopback requires a token")
	dir := fs.String("dir", "conferral-data", "folder of the database (conferral.db), artifacts and reports")
	token := fs.String("token", "", "token every request must carry (generated and printed when --addr is not loopback and none is given)")
	allowPrivate := fs.Bool("allow-private", false, "let remote endpoints live on loopback, private and link-local addresses")
	workers := fs.Int("workers", 1, "jobs run at once on the device")
	solo := fs.Int("solo-threads", 0, "libtorch threads of a job that starts with no other job running or queued, when more than --threads (e.g. --workers 2 --threads 1 --solo-threads 2)")
	maxUpload := fs.Int64("max-upload", 256<<20, "largest ONNX upload in bytes")
	uploadRetention := fs.Duration("upload-retention", 7*24*time.Hour, "how long an accepted ONNX upload is kept after it was last uploaded, unless a job still needs it (negative: for good)")
	onnxMemory := onnxMemoryFlag(fs)
	maxHeavy := fs.Int("max-heavy", 2, "heavy requests (ONNX uploads, fingerprint details) run at once; more are answered 503 with Retry-After")
	origins := fs.String("origins", "", "comma-separated extra origins (scheme://host:port) allowed to use the API from a browser")
	hosts := fs.String("hosts", "", "comma-separated extra names the server answers to in the Host header (it answers to where it listens: loopback names and addresses for a loopback --addr); others are refused, which defeats DNS rebinding")
	noResume := fs.Bool("no-resume", false, "mark jobs that a crash interrupted as interrupted instead of running them again")
	web := fs.String("web", "bin/web", "folder of the browser app's app.wasm (`make web`)")
	dataDir := fs.String("data-dir", "", "dataset folder (default: where the Debian package or module puts it)")
	verbose := fs.Bool("v", false, "log the queue's activity")
	database := fs.String("database", "", "PostgreSQL URL (postgres://...) for a fleet: `conferral worker`s share its queue (default: SQLite in --dir)")
	artifacts := fs.String("artifacts", "", "artifact folder; with --database, one every worker mounts, or an object store s3://host[:port]/bucket[/prefix] (default: DIR/artifacts)")
	coordinator := fs.Bool("coordinator", false, "with --database: run no jobs here, only workers do")
	jobsDevice := fs.String("jobs-device", "", "with --database: queue jobs for workers of this kind of device, cpu or cuda (default: --device)")
	lease := fs.Duration("lease", 30*time.Second, "with --database: how long a fleet member may stay silent before its jobs run elsewhere")
	results := fs.String("results", "", "folder of committed studies' report folders, listed read-only beside the server's own (default: docs/results when it exists)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := apply(); err != nil {
		return err
	}
	threads, _ := strconv.Atoi(fs.Lookup("threads").Value.String())
	if *solo < 0 || *workers < 1 {
		return usagef("--workers %d, --solo-threads %d: want at least 1 worker and no negative thread count", *workers, *solo)
	}
	if *token == "" && !isLoopback(*addr) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		*token = hex.EncodeToString(b)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	var extra []string
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			extra = append(extra, o)
		}
	}
	var names []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			names = append(names, h)
		}
	}
	s, err := server.New(ctx, server.Config{
		Dir: *dir, Device: e.device.String(), Workers: *workers, Threads: threads, SoloThreads: *solo, NoResume: *noResume,
		MaxUpload: *maxUpload, ONNXMemory: int64(*onnxMemory), MaxHeavy: *maxHeavy, UploadRetention: *uploadRetention, AllowPrivate: *allowPrivate, Addr: *addr, Token: *token, Origins: extra, Hosts: names,
		App: app.Handler(*web), DataDir: *dataDir, Results: resultsDir(*results), Version: "dev",
		Database: *database, Artifacts: *artifacts, NoWork: *coordinator, Lease: *lease, JobDevice: *jobsDevice,
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return err
	}
	return s.ListenAndServe(ctx, func(bound string) {
		u := "http://" + bound + "/"
		if *token != "" {
			u += "?token=" + *token
		}
		fmt.Fprintf(e.stdout, "conferral serve: %s (data in %s, jobs on %s; Ctrl-C stops)\n", u, *dir, e.device)
	})
}

// resultsDir is the folder of committed studies a server lists beside its
// own reports: the one given, else the repository's docs/results when the
// server runs in a checkout, else none.
func resultsDir(given string) string {
	if given != "" {
		return given
	}
	d := filepath.Join("docs", "results")
	if st, err := os.Stat(d); err == nil && st.IsDir() {
		return d
	}
	return ""
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
