// Package pgtest runs a throwaway PostgreSQL server for tests and
// benchmarks: Debian's postgresql binaries, initdb into a temporary folder,
// postgres on 127.0.0.1 at a free port. As root it runs them as the
// postgres user (PostgreSQL refuses to run as root).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is a running PostgreSQL server.
type Server struct {
	// URL connects to the server's database "conferral" as its superuser.
	URL     string
	dir     string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	done    chan struct{} // closed when postgres has exited
	waitErr error         // postgres's exit, once done is closed
	port    int
	command func(ctx context.Context, name string, args ...string) *exec.Cmd
}

// binDir finds Debian's PostgreSQL binaries (the newest version installed),
// or the folder of initdb on PATH.
func binDir() (string, error) {
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		best, bestV := "", -1
		for _, p := range m {
			v, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
			if err == nil && v > bestV {
				best, bestV = filepath.Dir(p), v
			}
		}
		if best != "" {
			return best, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("pgtest: no PostgreSQL binaries (install the Debian package postgresql: `make deps`)")
}

// Start initialises and starts a server; Stop stops it and removes its
// files. ctx bounds the start only.
func Start(ctx context.Context) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "conferral-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, log: &bytes.Buffer{}}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	// As root, the cluster belongs to the postgres user.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs the postgres user to run PostgreSQL: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	command := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		c := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		if cred != nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return c
	}
	if err := command(ctx, "postgres", "--version").Run(); err != nil {
		return nil, fmt.Errorf("pgtest: running %s/postgres: %w", bin, err)
	}
	initdb := command(ctx, "initdb", "-D", data, "-U", "conferral", "-A", "trust", "-E", "UTF8", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	if err := os.Mkdir(sock, 0o755); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if cred != nil {
		if err := os.Chown(sock, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.port, s.command = port, command
	if err := s.launch(ctx); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The cluster's default database is "postgres"; the tests want their own.
	create := command(ctx, "createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "conferral", "conferral")
	if out, err := create.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: createdb: %w\n%s", err, out)
	}
	s.URL = fmt.Sprintf("postgres://conferral@%s/conferral?sslmode=disable", addr)
	ok = true
	return s, nil
}

// launch starts postgres on the cluster in s.dir and waits until it
// accepts connections; ctx bounds the wait.
func (s *Server) launch(ctx context.Context) error {
	data, sock := filepath.Join(s.dir, "data"), filepath.Join(s.dir, "sock")
	// Not tied to ctx: the server outlives the start.
	s.cmd = s.command(context.Background(), "postgres", "-D", data, "-p", strconv.Itoa(s.port), "-k", sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() { s.waitErr = cmd.Wait(); close(done) }()
	for {
		// Ready means accepting connections, not only listening.
		if s.command(ctx, "pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "-U", "conferral").Run() == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("pgtest: postgres exited at start: %v\n%s", s.waitErr, s.log)
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres did not start: %w\n%s", ctx.Err(), s.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart stops the server as an operator's restart does (fast shutdown:
// every connection dropped, transactions in flight rolled back) and starts
// it again on the same files and port after down, the outage clients see.
// (An immediate shutdown would lose commits: the server runs with
// synchronous_commit off.) ctx bounds the start.
func (s *Server) Restart(ctx context.Context, down time.Duration) error {
	if s.done == nil {
		return errors.New("pgtest: the server is not running")
	}
	s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	time.Sleep(down)
	return s.launch(ctx)
}

// Log is what the server has printed.
func (s *Server) Log() string { return s.log.String() }

// Stop shuts the server down (fast mode) and removes its files.
func (s *Server) Stop() error {
	var err error
	if s.done != nil {
		s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
			err = errors.New("pgtest: postgres did not stop in 30 s; killed")
		}
	}
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil && !strings.Contains(rerr.Error(), "no such file") {
		err = fmt.Errorf("pgtest: %w", rerr)
	}
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
