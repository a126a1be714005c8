package jobs_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
)

// redisSrv is the package's real redis-server; each test takes its own
// database from it.
var redisSrv *redistest.Server

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "jobs tests need a real redis-server:", err)
		os.Exit(1)
	}
	redisSrv = srv
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// t0 is the fake clock's start: a time with sub-millisecond digits, so
// that tests see what the store keeps of them.
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 589_793_238, time.UTC)

// clock is a settable clock, safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// bundle is one test's world: its own database, a store on it and the
// store's clock.
type bundle struct {
	ctx   context.Context
	rdb   *redis.Client
	store *jobs.Store
	clock *clock
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	rdb := redisSrv.Client(tb, redisSrv.NewDB(tb))
	c := &clock{now: t0}
	st := jobs.NewStore(rdb, "")
	st.SetClock(c.Now)
	return &bundle{ctx: tb.Context(), rdb: rdb, store: st, clock: c}
}

// create stores a queued job with id and model, failing the test on error.
func (b *bundle) create(tb testing.TB, id, model string) *jobs.Record {
	tb.Helper()
	rec := &jobs.Record{ID: id}
	rec.Request.Model = model
	rec.Request.Prompt = "a prompt"
	created, got, err := b.store.Create(b.ctx, rec)
	if err != nil || !created {
		tb.Fatalf("Create(%s) = %v, %v; want created", id, created, err)
	}
	return got
}

// get reads a record, failing the test on error.
func (b *bundle) get(tb testing.TB, id string) *jobs.Record {
	tb.Helper()
	rec, err := b.store.Get(b.ctx, id)
	if err != nil {
		tb.Fatalf("Get(%s): %v", id, err)
	}
	return rec
}

// apply applies c, failing the test on error.
func (b *bundle) apply(tb testing.TB, id string, c jobs.Change) jobs.Outcome {
	tb.Helper()
	out, err := b.store.Apply(b.ctx, id, c)
	if err != nil {
		tb.Fatalf("Apply(%s, %+v): %v", id, c, err)
	}
	return out
}

// events reads a job's whole history, failing the test on error.
func (b *bundle) events(tb testing.TB, id string) []jobs.Event {
	tb.Helper()
	evs, err := b.store.Events(b.ctx, id, 0)
	if err != nil {
		tb.Fatalf("Events(%s): %v", id, err)
	}
	return evs
}
