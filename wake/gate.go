package wake

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultIdleCheck is Options.IdleCheck's default.
const DefaultIdleCheck = 2 * time.Second

// keepAlive is how long the subscriber waits for a message before it
// pings; a ping unanswered for as long again means a dead connection.
const keepAlive = 15 * time.Second

// Options configures a Gate.
type Options struct {
	// IdleCheck is how often the gate looks in Redis itself at a queue or
	// a scheduled/retry set when no wake-up came: it bounds how late a task
	// whose wake-up was lost is found, and it is what an idle process
	// costs (about 9 commands per IdleCheck with the worker's three
	// queues). Default DefaultIdleCheck.
	IdleCheck time.Duration
	// Logger receives the subscriber's state changes; discarded when nil.
	Logger *slog.Logger
}

// Gate answers an idle asynq server's polling calls locally (see the
// package doc). Make one per process with NewGate, hand Client(queues) to
// each asynq server instead of the Redis client, and run Run for as long
// as the servers run. It is safe for concurrent use.
type Gate struct {
	rdb  redis.UniversalClient
	idle time.Duration
	log  *slog.Logger
	now  func() time.Time

	mu         sync.Mutex
	subscribed bool
	stopped    bool
	queues     map[string]*queueState
	delayed    map[string]*delayedState
	// changed is closed (and replaced) when a queue may have opened.
	changed chan struct{}
	// released holds, per lock name, the channel Released handed out,
	// closed at the lock's next release message.
	released map[string]chan struct{}

	stats Stats

	// onEvent, when set (tests), is told of "subscribed", "dequeue <q>"
	// (asynq asks for a task), "closed <q>", "wake <q>", "probe <q>",
	// "blocked <q>" and "learned <set key>";
	// it may be called with g.mu held.
	onEvent func(string)
}

// Stats counts what a gate did.
type Stats struct {
	// Passed counts polling calls sent to Redis, Answered those answered
	// locally, Probes the idle checks (one cheap command each), Wakes the
	// wake-ups received.
	Passed, Answered, Probes, Wakes atomic.Int64
}

type queueState struct {
	gen       uint64 // bumped by every wake-up for the queue
	empty     bool   // the last dequeue found nothing…
	emptyGen  uint64 // …at this generation…
	checkedAt time.Time
}

// closed: found empty and no wake-up since.
func (s *queueState) closed() bool { return s.empty && s.gen == s.emptyGen }

type delayedState struct {
	seq       uint64 // bumped by every wake-up for the set
	known     bool   // due is the set's earliest score…
	due       time.Time
	checkedAt time.Time // …read at this time
}

// NewGate returns a Gate on rdb, which stays the caller's.
func NewGate(rdb redis.UniversalClient, opts Options) *Gate {
	if opts.IdleCheck <= 0 {
		opts.IdleCheck = DefaultIdleCheck
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Gate{rdb: rdb, idle: opts.IdleCheck, log: opts.Logger, now: time.Now,
		queues: map[string]*queueState{}, delayed: map[string]*delayedState{}, changed: make(chan struct{}),
		released: map[string]chan struct{}{}}
}

// Stats returns the gate's counters.
func (g *Gate) Stats() *Stats { return &g.stats }

// Client returns the Redis client to give the asynq server that serves
// queues (its Config.Queues names): g's client, with asynq's dequeue and
// forward scripts gated. Every other command goes to Redis unchanged.
func (g *Gate) Client(queues []string) redis.UniversalClient {
	return &gatedClient{UniversalClient: g.rdb, g: g, queues: append([]string(nil), queues...)}
}

// gatedClient intercepts the scripts asynq runs (Script.Run calls EvalSha,
// and Eval when the script is not loaded).
type gatedClient struct {
	redis.UniversalClient
	g      *Gate
	queues []string
}

// EvalSha runs a script by hash, gated.
func (c *gatedClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.g.script(ctx, c.queues, keys, func() *redis.Cmd { return c.UniversalClient.EvalSha(ctx, sha1, keys, args...) })
}

// Eval runs a script, gated.
func (c *gatedClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.g.script(ctx, c.queues, keys, func() *redis.Cmd { return c.UniversalClient.Eval(ctx, script, keys, args...) })
}

// queueOf reads asynq's key "asynq:{<queue>}:<suffix>".
func queueOf(key, suffix string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "asynq:{")
	if !ok {
		return "", false
	}
	q, ok := strings.CutSuffix(rest, "}:"+suffix)
	return q, ok && q != "" && !strings.ContainsAny(q, "{}")
}

func queuePrefix(q string) string { return "asynq:{" + q + "}:" }

// script dispatches one of asynq's scripts. asynq v0.26's dequeue script
// has the keys pending, paused, active, lease of one queue; its forward
// script the keys scheduled|retry, pending.
func (g *Gate) script(ctx context.Context, served, keys []string, run func() *redis.Cmd) *redis.Cmd {
	if len(keys) == 4 {
		if q, ok := queueOf(keys[0], "pending"); ok && keys[1] == queuePrefix(q)+"paused" && keys[3] == queuePrefix(q)+"lease" {
			return g.dequeue(ctx, served, q, keys[0], run)
		}
	}
	if len(keys) == 2 {
		if q, ok := queueOf(keys[1], "pending"); ok && (keys[0] == queuePrefix(q)+"scheduled" || keys[0] == queuePrefix(q)+"retry") {
			return g.forward(ctx, q, keys[0], run)
		}
	}
	cmd := run()
	if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return cmd
	}
	for _, k := range keys {
		if q, ok := queueOf(k, "pending"); ok {
			// A task went back to pending (a requeue at shutdown).
			g.wake(q)
			g.publish(ctx, pendingMessage(q))
		}
		if _, ok := queueOf(k, "retry"); ok {
			// A failed task waits in the retry set: learn when it is due.
			g.forget(k)
		}
	}
	return cmd
}

// active reports whether the gate may answer calls itself. g.mu held.
func (g *Gate) active() bool { return g.subscribed && !g.stopped }

func (g *Gate) queue(q string) *queueState {
	st := g.queues[q]
	if st == nil {
		st = &queueState{}
		g.queues[q] = st
	}
	return st
}

func (g *Gate) delayedSet(key string) *delayedState {
	d := g.delayed[key]
	if d == nil {
		d = &delayedState{}
		g.delayed[key] = d
	}
	return d
}

// Released returns a channel closed when the lock named name is next
// announced released (ReleasedMessage), or when the gate may have missed
// such a message (it re-subscribed, or stopped), and a function to call
// when the caller stops listening (it forgets the name unless the
// channel was closed meanwhile). The channel is nil, never closed, for a
// nil Gate or while the gate is not subscribed: the caller then polls.
// Listen before the look at the lock that could lead to the
// announcement, so that it is not missed.
func (g *Gate) Released(name string) (<-chan struct{}, func()) {
	if g == nil {
		return nil, func() {}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.active() {
		return nil, func() {}
	}
	ch := g.released[name]
	if ch == nil {
		ch = make(chan struct{})
		g.released[name] = ch
	}
	return ch, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.released[name] == ch {
			delete(g.released, name)
		}
	}
}

// releaseAll closes every channel Released handed out. g.mu held.
func (g *Gate) releaseAll() {
	for name, ch := range g.released {
		close(ch)
		delete(g.released, name)
	}
}

// broadcast wakes the dequeues blocked in the gate. g.mu held.
func (g *Gate) broadcast() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *Gate) event(e string) {
	if g.onEvent != nil {
		g.onEvent(e)
	}
}

func nilCmd() *redis.Cmd              { return redis.NewCmdResult(nil, redis.Nil) }
func intCmd(n int64) *redis.Cmd       { return redis.NewCmdResult(n, nil) }
func farFuture(t time.Time) time.Time { return t.Add(100 * 365 * 24 * time.Hour) }

// dequeue gates asynq's dequeue of queue q for a server serving served.
// A dequeue that finds the queue empty (in Redis, or by an idle check)
// does not return at once when every queue of the server is then closed:
// it parks like a call that found them closed. asynq sleeps
// TaskCheckInterval after every empty dequeue, and a wake-up that arrived
// during that sleep waited for it to end.
func (g *Gate) dequeue(ctx context.Context, served []string, q, pendingKey string, run func() *redis.Cmd) *redis.Cmd {
	if g.onEvent != nil { // no string built per dequeue otherwise
		g.event("dequeue " + q)
	}
	var empty *redis.Cmd // this call's own empty answer from Redis
	for {
		g.mu.Lock()
		if !g.active() {
			g.mu.Unlock()
			return g.dequeueRedis(q, 0, false, run)
		}
		st := g.queue(q)
		now := g.now()
		var cmd *redis.Cmd
		switch {
		case !st.closed():
			gen := st.gen
			g.mu.Unlock()
			cmd = g.dequeueRedis(q, gen, true, run)
		case now.Sub(st.checkedAt) >= g.idle:
			gen := st.gen
			g.mu.Unlock()
			cmd = g.probe(ctx, q, pendingKey, gen, run)
		}
		if cmd != nil {
			if !errors.Is(cmd.Err(), redis.Nil) {
				return cmd
			}
			empty = cmd
			continue // closed now, unless a wake-up came meanwhile
		}
		wait, all := g.allClosed(served, q, now)
		if !all {
			g.mu.Unlock()
			if empty != nil {
				return empty
			}
			g.stats.Answered.Add(1)
			return nilCmd()
		}
		ch := g.changed
		g.mu.Unlock()
		// Every queue of this server is empty: wait here for a wake-up or
		// the next idle check rather than let asynq poll again.
		g.event("blocked " + q)
		t := time.NewTimer(wait)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return redis.NewCmdResult(nil, ctx.Err())
		}
		t.Stop()
	}
}

// allClosed reports whether every served queue (and q) is closed, and the
// time until the first of them is due an idle check. g.mu held.
func (g *Gate) allClosed(served []string, q string, now time.Time) (time.Duration, bool) {
	wait := time.Duration(-1)
	check := func(name string) bool {
		st := g.queues[name]
		if st == nil || !st.closed() {
			return false
		}
		left := g.idle - now.Sub(st.checkedAt)
		if left <= 0 {
			return false
		}
		if wait < 0 || left < wait {
			wait = left
		}
		return true
	}
	if !check(q) {
		return 0, false
	}
	for _, name := range served {
		if !check(name) {
			return 0, false
		}
	}
	return wait, true
}

// dequeueRedis runs the dequeue script and records an empty queue at the
// generation read before the call, so that a wake-up that arrives during
// the call keeps the queue open.
func (g *Gate) dequeueRedis(q string, gen uint64, record bool, run func() *redis.Cmd) *redis.Cmd {
	g.stats.Passed.Add(1)
	cmd := run()
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.queue(q)
	switch {
	case !record:
		st.empty = false
	case errors.Is(cmd.Err(), redis.Nil):
		st.empty, st.emptyGen, st.checkedAt = true, gen, g.now()
		if st.closed() {
			g.event("closed " + q)
		}
	default:
		st.empty = false
	}
	return cmd
}

// probe is a closed queue's idle check: one LLEN, and the dequeue script
// only when the queue has tasks.
func (g *Gate) probe(ctx context.Context, q, pendingKey string, gen uint64, run func() *redis.Cmd) *redis.Cmd {
	g.stats.Probes.Add(1)
	g.event("probe " + q)
	n, err := g.rdb.LLen(ctx, pendingKey).Result()
	if err != nil || n > 0 {
		return g.dequeueRedis(q, gen, true, run)
	}
	g.mu.Lock()
	if st := g.queue(q); st.gen == gen {
		st.checkedAt = g.now()
	}
	g.mu.Unlock()
	return nilCmd()
}

// forward gates asynq's forwarding of the scheduled or retry set key of
// queue q: it runs when the set's earliest task is due, when a wake-up
// changed what the gate knows of the set, or at the idle check (then as
// one ZRANGE first).
func (g *Gate) forward(ctx context.Context, q, key string, run func() *redis.Cmd) *redis.Cmd {
	g.mu.Lock()
	if !g.active() {
		g.mu.Unlock()
		g.stats.Passed.Add(1)
		return run()
	}
	d := g.delayedSet(key)
	now := g.now()
	seq := d.seq
	idleCheck := false
	if d.known && now.Before(d.due) {
		if now.Sub(d.checkedAt) < g.idle {
			g.mu.Unlock()
			g.stats.Answered.Add(1)
			return intCmd(0)
		}
		idleCheck = true
	}
	g.mu.Unlock()
	if idleCheck {
		g.stats.Probes.Add(1)
		due, err := g.earliest(ctx, key, now)
		if err == nil && now.Before(due) {
			g.learn(key, seq, due, now)
			return intCmd(0)
		}
	}
	g.stats.Passed.Add(1)
	cmd := run()
	n, err := cmd.Int64()
	if err != nil {
		return cmd
	}
	if n > 0 {
		// Tasks became pending: this process's servers and every other
		// process's may take them. asynq calls again until none is left.
		g.wake(q)
		g.publish(ctx, pendingMessage(q))
		return cmd
	}
	if due, err := g.earliest(ctx, key, now); err == nil {
		g.learn(key, seq, due, now)
	}
	return cmd
}

// earliest reads the due time of the set's first task (far in the future
// for an empty set). asynq's scores are Unix seconds, and a task is due
// once the current second reaches its score.
func (g *Gate) earliest(ctx context.Context, key string, now time.Time) (time.Time, error) {
	zs, err := g.rdb.ZRangeWithScores(ctx, key, 0, 0).Result()
	if err != nil {
		return time.Time{}, err
	}
	if len(zs) == 0 {
		return farFuture(now), nil
	}
	return time.Unix(int64(zs[0].Score), 0), nil
}

// learn records the set's earliest due time, unless a wake-up about the
// set arrived since seq was read.
func (g *Gate) learn(key string, seq uint64, due, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d := g.delayedSet(key); d.seq == seq {
		d.known, d.due, d.checkedAt = true, due, at
		g.event("learned " + key)
	}
}

// forget makes the set's next forward go to Redis.
func (g *Gate) forget(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	d := g.delayedSet(key)
	d.seq++
	d.known = false
}

// wake opens queue q.
func (g *Gate) wake(q string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, ok := g.queues[q]; ok {
		st.gen++
		g.broadcast()
	}
}

func (g *Gate) publish(ctx context.Context, msg string) {
	if err := g.rdb.Publish(ctx, Channel, msg).Err(); err != nil {
		g.log.DebugContext(ctx, "wake: publish", "err", err.Error())
	}
}

// handle applies a wake-up.
func (g *Gate) handle(payload string) {
	kind, q, due, ok := parseMessage(payload)
	if !ok {
		return
	}
	g.stats.Wakes.Add(1)
	switch kind {
	case kindPending:
		g.event("wake " + q) // before the wake-up, so a test sees it before the task runs
		g.wake(q)
	case kindReleased:
		g.mu.Lock()
		if ch, ok := g.released[q]; ok {
			close(ch)
			delete(g.released, q)
		}
		g.mu.Unlock()
	case kindScheduled:
		g.mu.Lock()
		if d, ok := g.delayed[queuePrefix(q)+"scheduled"]; ok {
			d.seq++
			if t := time.Unix(due, 0); d.known && t.Before(d.due) {
				d.due = t
			}
		}
		g.mu.Unlock()
	}
}

// setSubscribed records the subscriber's state. On (re)subscribing the
// gate forgets what it knew: wake-ups may have been missed meanwhile.
func (g *Gate) setSubscribed(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.subscribed == on {
		return
	}
	g.subscribed = on
	for _, st := range g.queues {
		st.gen++
	}
	g.releaseAll()
	for _, d := range g.delayed {
		d.seq++
		d.known = false
	}
	g.broadcast()
	if on {
		g.log.Debug("wake: subscribed")
		g.event("subscribed")
	} else {
		g.log.Debug("wake: not subscribed; polling plainly until it is again")
	}
}

// stop makes the gate pass every call through and releases blocked calls.
func (g *Gate) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	g.subscribed = false
	g.broadcast()
	g.releaseAll()
}

// Run subscribes to wake-ups and applies them until ctx ends; then the gate
// lets every call through (so that asynq's shutdown is not held up). Run
// it once, in a goroutine that the servers' owner waits for. It
// re-subscribes by itself after Redis restarts or fails over.
func (g *Gate) Run(ctx context.Context) {
	defer g.stop()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := g.subscribe(ctx)
		g.setSubscribed(false)
		if ctx.Err() != nil {
			return
		}
		g.log.Debug("wake: subscriber", "err", err.Error())
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, time.Second)
	}
}

// errDead is a subscriber connection that did not answer a ping.
var errDead = errors.New("wake: subscriber connection did not answer a ping")

// subscribe holds one subscription until its connection fails.
func (g *Gate) subscribe(ctx context.Context) error {
	ps := g.rdb.Subscribe(ctx, Channel)
	defer ps.Close()
	// A receive waits for up to keepAlive whatever ctx says; closing the
	// subscription ends it at once.
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, keepAlive)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if pinged {
				return errDead
			}
			pinged = true
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				g.setSubscribed(true)
			}
		case *redis.Message:
			g.handle(m.Payload)
		}
	}
}
