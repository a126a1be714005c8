package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// shared is the package's server, started by TestMain.
var shared *Server

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild() // see TestNoOrphanServer
		return
	}
	s, stop, err := StartMain(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = s
	code := m.Run()
	stop()
	os.Exit(code)
}

func TestStart(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	s := Start(t, Options{Dir: dir, Databases: 16})
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" || port == "6379" || port == "0" {
		t.Errorf("Addr() = %q, want 127.0.0.1 and a free port other than 6379", s.Addr())
	}
	if want := "redis://" + s.Addr() + "/3"; s.URL(3) != want {
		t.Errorf("URL(3) = %q, want %q", s.URL(3), want)
	}
	opt, err := redis.ParseURL(s.URL(3))
	if err != nil || opt.Addr != s.Addr() || opt.DB != 3 {
		t.Errorf("redis.ParseURL(URL(3)) = %+v, %v", opt, err)
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
	}
	c := s.Client(t, 0)
	ctx := t.Context()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"save": "", "appendonly": "no", "databases": "16", "bind": "127.0.0.1", "maxmemory-policy": "noeviction", "dir": dir}
	for k, v := range want {
		got, err := c.ConfigGet(ctx, k).Result()
		if err != nil || got[k] != v {
			t.Errorf("CONFIG GET %s = %v, %v; want %q", k, got, err, v)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, logName)); err != nil {
		t.Errorf("server log missing: %v", err)
	}
}

func TestTwoServers(t *testing.T) {
	t.Parallel()
	a, b := Start(t, Options{}), Start(t, Options{})
	if a.Addr() == b.Addr() || a.Addr() == shared.Addr() {
		t.Fatalf("servers share an address: %s %s %s", a.Addr(), b.Addr(), shared.Addr())
	}
	ctx := t.Context()
	if err := a.Client(t, 0).Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Client(t, 0).Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("key written to one server exists on the other: %d, %v", n, err)
	}
}

// TestNewDB runs parallel subtests against the shared server: each gets a
// database no other running subtest holds, empty at the start.
func TestNewDB(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	held := map[int]string{}
	for i := range 24 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			db := shared.NewDB(t)
			if db < 1 || db >= DefaultDatabases {
				t.Fatalf("NewDB() = %d, want 1..%d", db, DefaultDatabases-1)
			}
			mu.Lock()
			if other, ok := held[db]; ok {
				t.Errorf("database %d handed to %s and %s at once", db, other, t.Name())
			}
			held[db] = t.Name()
			mu.Unlock()
			t.Cleanup(func() { // runs before NewDB's own cleanup releases db
				mu.Lock()
				delete(held, db)
				mu.Unlock()
			})

			c := shared.Client(t, db)
			ctx := t.Context()
			if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
				t.Fatalf("fresh database %d has %d keys (%v)", db, n, err)
			}
			for j := range 10 {
				if err := c.Set(ctx, fmt.Sprint("key", j), t.Name(), 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := c.DBSize(ctx).Result(); err != nil || n != 10 {
				t.Errorf("database %d has %d keys, want only this test's 10 (%v)", db, n, err)
			}
		})
	}
}

func TestNewDBReleaseAndReuse(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Databases: 3})
	var first int
	t.Run("fill", func(t *testing.T) {
		first = s.NewDB(t)
		if err := s.Client(t, first).Set(t.Context(), "left", "over", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
	a := s.NewDB(t)
	if a != first {
		t.Errorf("NewDB after release = %d, want the released %d", a, first)
	}
	if n, err := s.Client(t, a).DBSize(t.Context()).Result(); err != nil || n != 0 {
		t.Errorf("reused database %d has %d keys (%v), want it flushed", a, n, err)
	}
	b := s.NewDB(t)
	if a == b {
		t.Errorf("NewDB handed out %d twice", a)
	}
	// Databases 0..2: only 1 and 2 are handed out, so a third NewDB fails.
	msg := runFake(t, func(tb testing.TB) { s.NewDB(tb) })
	if !strings.Contains(msg, "all 2 databases") {
		t.Errorf("NewDB with every database taken: fatal %q, want 'all 2 databases ... in use'", msg)
	}
}

func TestRestartAppendOnly(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{AppendOnly: true})
	c := s.Client(t, 5)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("Addr after Restart = %s, want %s", s.Addr(), addr)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET after Restart = %q, %v; want v (append-only file)", got, err)
	}
	if got, _ := c.ConfigGet(ctx, "appendfsync").Result(); got["appendfsync"] != "everysec" {
		t.Errorf("appendfsync = %v, want everysec", got)
	}
}

func TestRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	c := s.Client(t, 0)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS after Restart = %d, %v; want 0 (no RDB saves)", n, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "dump.rdb")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dump.rdb written (err %v); saves should be off", err)
	}
}

func TestKillRestart(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{AppendOnly: true})
	c := s.Client(t, 0)
	ctx := t.Context()
	// With appendfsync always the write is on disk before the reply, so a
	// crash right after cannot lose it.
	if err := c.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := ping(s.Addr()); err == nil {
		t.Fatal("server still answers after Kill")
	}
	if err := s.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET after Kill+Restart = %q, %v; want v", got, err)
	}
	if err := c.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Errorf("SET after Kill+Restart: %v", err)
	}
}

func TestKillRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	c := s.Client(t, 0)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS after Kill+Restart = %d, %v; want 0", n, err)
	}
}

func TestStopIdempotent(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	for i := range 2 {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop #%d: %v", i+1, err)
		}
	}
	if err := ping(s.Addr()); err == nil {
		t.Error("server answers after Stop")
	}
}

func TestStopReportsCrash(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	// A crash the test did not ask for.
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if err := s.Stop(); err == nil || !strings.Contains(err.Error(), "had exited") {
		t.Errorf("Stop after an unexpected exit = %v, want an error saying so", err)
	}
}

func TestStartMain(t *testing.T) {
	t.Parallel()
	s, stop, err := StartMain(Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("server not answering: %v", err)
	}
	stop()
	stop()
	if err := ping(s.Addr()); err == nil {
		t.Error("server answers after stop")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory %s not removed (err %v)", dir, err)
	}
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	const want = "redis-server not found on PATH: install it (apt-get install -y redis-server); tests need a real Redis"
	_, _, err := StartMain(Options{})
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrNotFound) {
		t.Errorf("StartMain without redis-server: %v; want %q", err, want)
	}
	if msg := runFake(t, func(tb testing.TB) { Start(tb, Options{}) }); !strings.Contains(msg, want) {
		t.Errorf("Start without redis-server failed the test with %q, want %q", msg, want)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	// An out-of-range option makes redis-server exit at once; the error
	// must carry its complaint.
	s := &Server{opts: Options{Dir: t.TempDir(), Databases: 1 << 40}, bin: bin}
	if s.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if err = s.launch(); err == nil {
		s.Kill()
		t.Fatal("launch with an absurd database count succeeded")
	}
	if !strings.Contains(err.Error(), "log tail") || !strings.Contains(err.Error(), "databases") {
		t.Errorf("launch error does not include the server's complaint:\n%v", err)
	}
}

// fakeTB records the first Fatal instead of failing the real test; its
// cleanups run when the function given to runFake returns or stops.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	cleanups []func()
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	f.cleanups = append(f.cleanups, fn)
	f.mu.Unlock()
}

// runFake runs fn with a fakeTB in its own goroutine and returns the
// message it failed with ("" if it did not).
func runFake(t *testing.T, fn func(tb testing.TB)) string {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f.fatal
}
