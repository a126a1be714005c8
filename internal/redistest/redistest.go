// Package redistest runs a real redis-server for tests.
//
// Each server is a child process of the test binary listening on a free
// loopback port (never 6379, never the machine's own Redis), with its own
// data directory and no RDB snapshots. Tests share one server per package
// and isolate themselves by database number rather than by flushing a
// shared database:
//
//	var srv *redistest.Server
//
//	func TestMain(m *testing.M) {
//		s, stop, err := redistest.StartMain(redistest.Options{})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		srv = s
//		code := m.Run()
//		stop()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		rdb := srv.Client(t, srv.NewDB(t))
//		...
//	}
//
// Tests that stop, kill or restart Redis start their own server with [Start].
//
// A missing redis-server binary fails the test (it is never skipped): the
// tests need a real Redis.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned (and reported by Start) when redis-server is not
// on PATH.
var ErrNotFound = errors.New("redis-server not found on PATH: install it (apt-get install -y redis-server); tests need a real Redis")

const (
	// DefaultDatabases is the number of databases a server has unless
	// Options.Databases says otherwise; NewDB hands out 1..N-1.
	DefaultDatabases = 1024

	readyTimeout = 10 * time.Second
	stopTimeout  = 15 * time.Second
	bindAttempts = 5
	logName      = "redis-server.log"
)

// Options configure a server.
type Options struct {
	// AppendOnly turns on the append-only file (appendonly yes, appendfsync
	// everysec), so data survives Stop/Restart.
	AppendOnly bool
	// Dir is the server's working and data directory; "" means a new
	// temporary directory (t.TempDir for Start, removed by StartMain's stop
	// function). The server's output goes to Dir/redis-server.log.
	Dir string
	// Databases is the number of databases; 0 means DefaultDatabases.
	Databases int
}

// Server is a running (or stopped) redis-server. Its methods are safe for
// concurrent use.
type Server struct {
	opts Options // Dir and Databases filled in
	bin  string
	port int

	mu   sync.Mutex // guards proc; held for the whole of Stop, Kill and Restart
	proc *process   // nil when stopped

	dbMu  sync.Mutex
	inUse []bool // by database number; 0 is never handed out
}

// process is one run of redis-server.
type process struct {
	cmd       *exec.Cmd
	done      chan struct{} // closed once the process has been waited for
	err       error         // cmd.Wait's error, valid after done
	logOffset int64         // where this run's output starts in the log
}

// Start starts a server for one test; t.Cleanup stops it (and reports an
// error if it had died on its own). It fails the test if the server cannot
// start, with the server's log tail in the message.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := start(opts)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return s
}

// StartMain starts a server for a whole package from TestMain, where there
// is no testing.TB. It returns the server and a stop function that stops it
// and removes the temporary directory it created (stop may be called more
// than once and reports problems on stderr). On error nothing is left
// running.
func StartMain(opts Options) (*Server, func(), error) {
	var tmp string
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "redistest-")
		if err != nil {
			return nil, nil, fmt.Errorf("redistest: %w", err)
		}
		tmp, opts.Dir = d, d
	}
	s, err := start(opts)
	if err != nil {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		return nil, nil, fmt.Errorf("redistest: %w", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := s.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
			}
			if tmp != "" {
				if err := os.RemoveAll(tmp); err != nil {
					fmt.Fprintf(os.Stderr, "redistest: %v\n", err)
				}
			}
		})
	}
	return s, stop, nil
}

func start(opts Options) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotFound
	}
	if opts.Databases <= 0 {
		opts.Databases = DefaultDatabases
	}
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, bin: bin, inUse: make([]bool, opts.Databases)}
	for attempt := 1; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		err = s.launch()
		if err == nil {
			return s, nil
		}
		// Another process took the port between our probe and the bind.
		if !errors.Is(err, errAddrInUse) || attempt == bindAttempts {
			return nil, err
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 6379 {
			return port, nil
		}
	}
	return 0, errors.New("find a free port: only got 6379")
}

var errAddrInUse = errors.New("address already in use")

// launch starts redis-server on s.port and waits until it answers PING.
// The caller holds s.mu or owns s exclusively.
func (s *Server) launch() error {
	logPath := filepath.Join(s.opts.Dir, logName)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fi, err := logf.Stat()
	if err != nil {
		logf.Close()
		return err
	}
	aof := "no"
	if s.opts.AppendOnly {
		aof = "yes"
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", aof,
		"--dir", s.opts.Dir,
		"--databases", strconv.Itoa(s.opts.Databases),
		"--maxmemory-policy", "noeviction",
		"--protected-mode", "no",
		"--daemonize", "no",
	}
	if s.opts.AppendOnly {
		args = append(args, "--appendfsync", "everysec")
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.opts.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	logf.Close() // the child has its own copy
	p := &process{cmd: cmd, done: make(chan struct{}), logOffset: fi.Size()}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := s.waitReady(p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		tail := s.logTail(p)
		if strings.Contains(tail, "Address already in use") {
			err = errAddrInUse
		}
		return fmt.Errorf("redis-server on %s did not come up: %w\n--- log tail (%s) ---\n%s", s.Addr(), err, logPath, tail)
	}
	s.proc = p
	return nil
}

func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("process exited: %v", p.err)
		default:
		}
		if last = ping(s.Addr()); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v: %w", readyTimeout, last)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ping sends one inline PING and expects +PONG (a server still loading its
// AOF answers -LOADING).
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// logTail returns the last lines this run wrote to the log.
func (s *Server) logTail(p *process) string {
	const max = 4 << 10
	b, err := os.ReadFile(filepath.Join(s.opts.Dir, logName))
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if p.logOffset <= int64(len(b)) {
		b = b[p.logOffset:]
	}
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "(empty)"
	}
	return strings.TrimRight(string(b), "\n")
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns "redis://127.0.0.1:PORT/DB".
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr(), db) }

// Dir returns the server's data directory.
func (s *Server) Dir() string { return s.opts.Dir }

// NewDB hands out a database number no other test holds (1 or above; 0 is
// left to code that ignores database numbers), flushed so that it is empty.
// At cleanup it is flushed again (if the server is running) and released.
// NewDB fails the test when every database is taken or the server does not
// answer.
func (s *Server) NewDB(t testing.TB) int {
	t.Helper()
	s.dbMu.Lock()
	db := -1
	for i := 1; i < len(s.inUse); i++ {
		if !s.inUse[i] {
			db, s.inUse[i] = i, true
			break
		}
	}
	s.dbMu.Unlock()
	if db < 0 {
		t.Fatalf("redistest: all %d databases of %s are in use (raise Options.Databases)", len(s.inUse)-1, s.Addr())
	}
	release := func() {
		s.dbMu.Lock()
		s.inUse[db] = false
		s.dbMu.Unlock()
	}
	if err := s.flush(db); err != nil {
		release()
		t.Fatalf("redistest: prepare database %d: %v", db, err)
	}
	t.Cleanup(func() {
		if s.running() {
			if err := s.flush(db); err != nil {
				// Keep the number out of circulation; it is flushed again
				// anyway before being handed out.
				t.Errorf("redistest: flush database %d: %v", db, err)
				return
			}
		}
		release()
	})
	return db
}

func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

func (s *Server) flush(db int) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db, DialTimeout: 2 * time.Second, MaxRetries: 1, PoolSize: 1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.FlushDB(ctx).Err()
}

// Client returns a go-redis client for database db, closed at cleanup.
func (s *Server) Client(t testing.TB, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db})
	t.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the server down with SIGTERM (with the default options no data
// is saved; with AppendOnly the append-only file is flushed) and waits for
// it to exit, killing it after 15 s. Stopping a stopped server does nothing.
// Stop reports an error if the server had already exited with a failure.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("redis-server on %s had exited: %v\n--- log tail ---\n%s", s.Addr(), p.err, s.logTail(p))
		}
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("redis-server on %s did not stop within %v and was killed\n--- log tail ---\n%s", s.Addr(), stopTimeout, s.logTail(p))
	}
	if p.err != nil {
		return fmt.Errorf("redis-server on %s: unclean shutdown: %v\n--- log tail ---\n%s", s.Addr(), p.err, s.logTail(p))
	}
	return nil
}

// Restart stops the server (if running) and starts it again on the same port
// and directory. With AppendOnly the data survives; without it the server
// comes back empty. Existing go-redis clients reconnect by themselves.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		return err
	}
	var err error
	for attempt := 1; attempt <= bindAttempts; attempt++ {
		if err = s.launch(); !errors.Is(err, errAddrInUse) {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port cannot change: wait for it
	}
	if err != nil {
		return fmt.Errorf("redistest: restart: %w", err)
	}
	return nil
}

// Kill sends SIGKILL, as a crash would, and waits for the process to exit.
// Data not yet written to the append-only file is lost. Killing a stopped
// server does nothing.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("redistest: kill: %w", err)
	}
	<-p.done
	return nil
}
