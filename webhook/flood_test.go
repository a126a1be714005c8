package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/webhook"
)

// commandCounter counts the Redis commands a client sends; with fail set
// it fails them instead (as a Redis that is down would).
type commandCounter struct {
	n    atomic.Int64
	fail atomic.Bool
}

var errRedisDown = errors.New("test: Redis is down")

// count counts cmd unless it sets up a new connection (SELECT, CLIENT
// SETINFO, HELLO), which the pool does when it likes.
func (c *commandCounter) count(cmd redis.Cmder) {
	switch cmd.Name() {
	case "select", "client", "hello", "auth":
	default:
		c.n.Add(1)
	}
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if c.fail.Load() {
			return errRedisDown
		}
		c.count(cmd)
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if c.fail.Load() {
			return errRedisDown
		}
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return next(ctx, cmds)
	}
}

type floodFixture struct {
	t     *testing.T
	h     *webhook.Handler
	jobs  *jobs.Store
	cmds  *commandCounter
	log   *bytes.Buffer
	clock *clock
}

func setupFlood(t *testing.T) *floodFixture {
	t.Helper()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	f := &floodFixture{t: t, jobs: jobs.NewStore(rdb, ""), cmds: &commandCounter{}, log: &bytes.Buffer{}, clock: &clock{}}
	if err := rdb.Ping(t.Context()).Err(); err != nil { // connect before counting
		t.Fatal(err)
	}
	rdb.AddHook(f.cmds)
	v, err := webhook.NewVerifier([]string{secret}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.h = webhook.NewHandler(v, f.jobs, asynq.NewClientFromRedisClient(rdb), slog.New(slog.NewJSONHandler(f.log, nil)))
	f.clock.Set(time.Now())
	f.h.SetClock(f.clock.Now)
	return f
}

// forge sends a delivery for a job that is not signed with the secret
// (how: "signature", "timestamp" or "headers").
func (f *floodFixture) forge(how string) {
	f.t.Helper()
	body := payload("G-video1", "video.completed", "video.completed")
	req := httptest.NewRequest(http.MethodPost, webhook.Path+"?job_id=job-1", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	ts := time.Now().Unix()
	sec := secret
	switch how {
	case "signature":
		sec = "whsec_attacker_guess_000000000"
	case "timestamp":
		ts -= 3600
	}
	if how != "headers" {
		req.Header.Set("x-ai-stats-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("x-ai-stats-signature", webhook.Sign([]byte(sec), strconv.FormatInt(ts, 10), body))
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	if rec.Code/100 != 4 {
		f.t.Fatalf("forged (%s): %d", how, rec.Code)
	}
}

type logLine struct {
	Msg        string
	Outcome    string
	Suppressed int
}

func (f *floodFixture) lines() []logLine {
	var out []logLine
	for _, l := range strings.Split(strings.TrimSpace(f.log.String()), "\n") {
		var ll logLine
		if l != "" && json.Unmarshal([]byte(l), &ll) == nil {
			out = append(out, ll)
		}
	}
	return out
}

// A flood of 1,000 forged requests costs no Redis command and one log line
// per kind of rejection; the counts still reach Redis, for the dashboard,
// in one round trip per flush.
func TestForgedFloodIsCountedInMemory(t *testing.T) {
	t.Parallel()
	f := setupFlood(t)
	for i := range 1000 {
		switch {
		case i%10 < 6:
			f.forge("signature")
		case i%10 < 9:
			f.forge("timestamp")
		default:
			f.forge("headers")
		}
	}
	if n := f.cmds.n.Load(); n != 0 {
		t.Errorf("%d Redis commands for 1,000 forged requests, want 0 before the flush", n)
	}
	if l := f.lines(); len(l) != 3 {
		t.Errorf("%d log lines for 1,000 forged requests, want 3 (one per kind): %+v", len(l), l)
	}
	// A while later, one more line says how many were left out.
	f.clock.Advance(webhook.LogEvery)
	f.forge("signature")
	if l := f.lines(); len(l) != 4 || l[3].Outcome != webhook.OutcomeBadSignature || l[3].Suppressed != 599 {
		t.Errorf("log lines %+v, want a 4th saying 599 bad signatures were suppressed", l)
	}

	if err := f.h.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := f.cmds.n.Load(); n > 4 {
		t.Errorf("the flush sent %d Redis commands, want at most 4 (3 counters and the latest rejection)", n)
	}
	stats, err := f.jobs.WebhookStats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if stats[webhook.OutcomeBadSignature] != "601" || stats[webhook.OutcomeBadTimestamp] != "300" || stats[webhook.OutcomeBadRequest] != "100" ||
		!strings.HasPrefix(stats["last_rejection"], "bad_signature: ") || stats["last_rejection_at"] == "" {
		t.Errorf("counters after the flush: %v", stats)
	}
	before := f.cmds.n.Load()
	if err := f.h.Flush(t.Context()); err != nil || f.cmds.n.Load() != before {
		t.Errorf("a flush with nothing counted sent %d commands (%v)", f.cmds.n.Load()-before, err)
	}
}

// Run flushes when it stops: counts of the last moments are not lost.
func TestRunFlushesOnStop(t *testing.T) {
	t.Parallel()
	f := setupFlood(t)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); f.h.Run(ctx) }()
	for range 10 {
		f.forge("signature")
	}
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if stats, err := f.jobs.WebhookStats(t.Context()); err != nil || stats[webhook.OutcomeBadSignature] != "10" {
		t.Errorf("counters after Run stopped: %v %v, want 10 bad signatures", stats, err)
	}
}

// A rejection after a quiet spell reaches Redis at once, without waiting
// for the interval.
func TestRunWritesALoneRejectionAtOnce(t *testing.T) {
	t.Parallel()
	f := setupFlood(t)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); f.h.Run(ctx) }()
	defer func() { stop(); <-done }()
	f.forge("signature")
	deadline := time.Now().Add(webhook.FlushInterval / 2)
	for {
		stats, err := f.jobs.WebhookStats(t.Context())
		if err == nil && stats[webhook.OutcomeBadSignature] == "1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a lone rejection not written within %v: %v %v", webhook.FlushInterval/2, stats, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A flush that fails keeps the counts for the next one.
func TestFlushFailureKeepsCounts(t *testing.T) {
	t.Parallel()
	f := setupFlood(t)
	f.forge("signature")
	f.cmds.fail.Store(true)
	if err := f.h.Flush(t.Context()); !errors.Is(err, errRedisDown) {
		t.Fatalf("flush while Redis is down: %v", err)
	}
	f.cmds.fail.Store(false)
	f.forge("timestamp")
	if err := f.h.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	stats, err := f.jobs.WebhookStats(t.Context())
	if err != nil || stats[webhook.OutcomeBadSignature] != "1" || stats[webhook.OutcomeBadTimestamp] != "1" || !strings.HasPrefix(stats["last_rejection"], "bad_timestamp") {
		t.Errorf("counters after a failed and a good flush: %v %v", stats, err)
	}
}
