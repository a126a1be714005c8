package wake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/videoworker/videoworker/internal/redistest"
)

var redisSrv *redistest.Server

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "wake tests need a real Redis:", err)
		os.Exit(1)
	}
	redisSrv = srv
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// wait bounds every wait on a signal.
const wait = 15 * time.Second

// fixture is one test's gate, its events and an asynq server behind it.
type fixture struct {
	t      *testing.T
	rdb    *redis.Client
	gate   *Gate
	queue  string
	events chan string
	ran    chan string // task payloads, as handled
	aq     *asynq.Client
}

// setup starts a gate on rdb (a fresh database of the shared server when
// nil) and an asynq server on one queue of a name of its own (pub/sub
// channels are shared by every database).
func setup(t *testing.T, rdb *redis.Client, idle time.Duration, handler func(*asynq.Task) error) *fixture {
	t.Helper()
	if rdb == nil {
		rdb = redisSrv.Client(t, redisSrv.NewDB(t))
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	f := &fixture{t: t, rdb: rdb, queue: "q" + hex.EncodeToString(b[:]), events: make(chan string, 10000), ran: make(chan string, 100),
		aq: asynq.NewClientFromRedisClient(rdb)}
	f.gate = NewGate(rdb, Options{IdleCheck: idle})
	f.gate.onEvent = func(e string) {
		select {
		case f.events <- e:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.gate.Run(ctx) }()
	f.waitEvent("subscribed")
	srv := asynq.NewServerFromRedisClient(f.gate.Client([]string{f.queue}), asynq.Config{
		Concurrency: 2, Queues: map[string]int{f.queue: 1}, TaskCheckInterval: 20 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.FatalLevel,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Second },
	})
	if err := srv.Start(asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		f.ran <- string(task.Payload())
		if handler != nil {
			return handler(task)
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Shutdown()
	})
	return f
}

// waitEvent reads events until want arrives.
func (f *fixture) waitEvent(want string) {
	f.t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case e := <-f.events:
			if e == want {
				return
			}
		case <-timer.C:
			f.t.Fatalf("no %q event within %s", want, wait)
		}
	}
}

// waitRan waits for the task with payload p to be handled; it returns the
// events seen meanwhile.
func (f *fixture) waitRan(p string) []string {
	f.t.Helper()
	var seen []string
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case e := <-f.events:
			seen = append(seen, e)
		case got := <-f.ran:
			if got == p {
				// An event sent before the task ran may still be
				// buffered: select picks at random between ready
				// channels, so take what is already there.
				for {
					select {
					case e := <-f.events:
						seen = append(seen, e)
					default:
						return seen
					}
				}
			}
		case <-timer.C:
			f.t.Fatalf("task %q not handled within %s (events %v)", p, wait, seen)
		}
	}
}

// enqueue enqueues a task with payload p in the fixture's queue, without
// announcing it.
func (f *fixture) enqueue(p string) *asynq.TaskInfo {
	f.t.Helper()
	info, err := f.aq.EnqueueContext(f.t.Context(), asynq.NewTask("t", []byte(p)), asynq.Queue(f.queue))
	if err != nil {
		f.t.Fatal(err)
	}
	return info
}

// announce publishes the wake-up for the task info describes.
func (f *fixture) announce(info *asynq.TaskInfo) {
	f.t.Helper()
	if err := NewPublisher(f.rdb).Announce(f.t.Context(), info); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) notRan() {
	f.t.Helper()
	select {
	case p := <-f.ran:
		f.t.Fatalf("task %q handled before its wake-up", p)
	default:
	}
}

// TestWakeUpTakesTaskAtOnce: a server parked in the gate (its queue empty,
// the idle check an hour away) takes a task as soon as it is announced; the
// task sat unseen in Redis until then.
func TestWakeUpTakesTaskAtOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, nil, time.Hour, nil)
	f.waitEvent("blocked " + f.queue)
	info := f.enqueue("a")
	// The server is still parked in the gate: the task is unseen.
	f.notRan()
	f.announce(info)
	seen := f.waitRan("a")
	if !contains(seen, "wake "+f.queue) {
		t.Errorf("task handled without a wake-up (events %v)", seen)
	}
}

// TestEmptyDequeueParks: a dequeue that finds the queue empty in Redis
// parks in the gate itself, rather than return "no task" and leave asynq
// asleep for TaskCheckInterval, when a wake-up coming meanwhile would wait
// for the sleep to end (tasks enqueued one after another, each soon after
// the previous was taken, waited up to 30 ms each).
func TestEmptyDequeueParks(t *testing.T) {
	t.Parallel()
	f := setup(t, nil, time.Hour, nil)
	f.waitEvent("blocked " + f.queue)
	f.announce(f.enqueue("a"))
	seen := f.waitRan("a")
	// After taking "a", asynq asks again: that call finds the queue empty
	// in Redis and must park at once, not be followed by another call.
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for !contains(seen[slices.Index(seen, "wake "+f.queue)+1:], "blocked "+f.queue) {
		select {
		case e := <-f.events:
			seen = append(seen, e)
		case <-timer.C:
			t.Fatalf("the server did not park after taking a task (events %v)", seen)
		}
	}
	after := seen[slices.Index(seen, "wake "+f.queue)+1:]
	calls := 0
	for _, e := range after {
		if e == "dequeue "+f.queue {
			calls++
		}
	}
	if calls != 1 || !contains(after, "closed "+f.queue) {
		t.Errorf("after the task was taken, want one dequeue that found the queue empty and parked; events %v", after)
	}
}

// TestLostWakeUpFoundAtIdleCheck: a task enqueued without a wake-up is
// found by the gate's idle check.
func TestLostWakeUpFoundAtIdleCheck(t *testing.T) {
	t.Parallel()
	f := setup(t, nil, 300*time.Millisecond, nil)
	f.waitEvent("blocked " + f.queue)
	if _, err := f.aq.EnqueueContext(t.Context(), asynq.NewTask("t", []byte("b")), asynq.Queue(f.queue)); err != nil {
		t.Fatal(err)
	}
	seen := f.waitRan("b")
	if !contains(seen, "probe "+f.queue) || contains(seen, "wake "+f.queue) {
		t.Errorf("want the task found by an idle check, without a wake-up; events %v", seen)
	}
}

// TestScheduledTaskForwardedWhenDue: the gate learns that the scheduled
// set is empty, then a task scheduled a second ahead and announced is
// forwarded when due, with the idle check an hour away.
func TestScheduledTaskForwardedWhenDue(t *testing.T) {
	t.Parallel()
	f := setup(t, nil, time.Hour, nil)
	key := queuePrefix(f.queue) + "scheduled"
	f.waitEvent("learned " + key)
	info, err := NewEnqueuer(f.rdb, true).EnqueueContext(t.Context(), asynq.NewTask("t", []byte("c")), asynq.Queue(f.queue), asynq.ProcessIn(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStateScheduled {
		t.Fatalf("state %v, want scheduled", info.State)
	}
	f.waitRan("c")
}

// TestRetryForwardedWhenDue: a task that fails is retried after its retry
// delay although no wake-up announces the retry (the gate saw the task
// go to the retry set).
func TestRetryForwardedWhenDue(t *testing.T) {
	t.Parallel()
	var failed atomic.Bool
	f := setup(t, nil, time.Hour, func(*asynq.Task) error {
		if !failed.Swap(true) {
			return errors.New("first attempt fails")
		}
		return nil
	})
	f.waitEvent("learned " + queuePrefix(f.queue) + "retry")
	if _, err := NewEnqueuer(f.rdb, true).EnqueueContext(t.Context(), asynq.NewTask("t", []byte("d")), asynq.Queue(f.queue), asynq.MaxRetry(1)); err != nil {
		t.Fatal(err)
	}
	f.waitRan("d")
	f.waitRan("d") // the retry
}

// TestResubscribesAfterRedisRestart: after Redis restarts, the gate
// subscribes again by itself and hears wake-ups.
func TestResubscribesAfterRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t, 0)
	f := setup(t, rdb, time.Hour, nil)
	f.waitEvent("blocked " + f.queue)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	f.waitEvent("subscribed")
	// The queue was forgotten on resubscribing; let it close again.
	f.waitEvent("blocked " + f.queue)
	info, err := f.aq.EnqueueContext(t.Context(), asynq.NewTask("t", []byte("e")), asynq.Queue(f.queue))
	if err != nil {
		t.Fatal(err)
	}
	f.notRan()
	if err := NewPublisher(rdb).Announce(t.Context(), info); err != nil {
		t.Fatal(err)
	}
	f.waitRan("e")
}

// TestReleasedWakesWaiters: a release message closes the channel the
// waiters of that lock hold, and only theirs; the next wait gets a new
// channel. A stopped gate releases every waiter (they poll from then on),
// and a nil gate hands out nil (poll).
func TestReleasedWakesWaiters(t *testing.T) {
	t.Parallel()
	f := setup(t, nil, time.Hour, nil)
	a1, _ := f.gate.Released("lock-a")
	a2, _ := f.gate.Released("lock-a")
	b, _ := f.gate.Released("lock-b")
	if a1 == nil || a1 != a2 {
		t.Fatalf("Released(lock-a) = %v, %v; want one channel for both waiters", a1, a2)
	}
	if err := f.rdb.Publish(t.Context(), Channel, ReleasedMessage("lock-a")).Err(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan struct{}{a1, a2} {
		select {
		case <-ch:
		case <-time.After(wait):
			t.Fatal("a waiter of lock-a was not woken by its release")
		}
	}
	select {
	case <-b:
		t.Fatal("lock-b's waiter woken by lock-a's release")
	default:
	}
	if again, _ := f.gate.Released("lock-a"); again == a1 {
		t.Error("after a release, Released handed out the closed channel again")
	}
	f.gate.stop()
	select {
	case <-b:
	default:
		t.Error("stopping the gate did not release lock-b's waiter")
	}
	if ch, _ := f.gate.Released("lock-b"); ch != nil {
		t.Error("a stopped gate handed out a channel; want nil (poll)")
	}
	var none *Gate
	if ch, done := none.Released("x"); ch != nil {
		t.Error("a nil gate handed out a channel")
	} else {
		done()
	}
}

// TestReleasedForgotten: a waiter that stops listening leaves nothing
// behind (one name per waiting job: the gate would grow with every job
// that ever waited), and does not take away another waiter's channel.
func TestReleasedForgotten(t *testing.T) {
	t.Parallel()
	f := setup(t, nil, time.Hour, nil)
	_, done := f.gate.Released("lock-x job-1")
	done()
	ch, done2 := f.gate.Released("lock-x job-2")
	if err := f.rdb.Publish(t.Context(), Channel, ReleasedMessage("lock-x job-2")).Err(); err != nil {
		t.Fatal(err)
	}
	<-ch
	ch3, done3 := f.gate.Released("lock-x job-2") // a new wait for the same name
	done2()                                       // the old one's done must not drop it
	f.gate.mu.Lock()
	n, kept := len(f.gate.released), f.gate.released["lock-x job-2"] == ch3
	f.gate.mu.Unlock()
	if n != 1 || !kept {
		t.Errorf("names listened for: %d (the new wait kept: %v); want only the new wait's", n, kept)
	}
	done3()
	f.gate.mu.Lock()
	n = len(f.gate.released)
	f.gate.mu.Unlock()
	if n != 0 {
		t.Errorf("%d names left after every waiter stopped", n)
	}
}

func TestParseMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in    string
		kind  string
		queue string
		due   int64
		ok    bool
	}{
		{"p video_poll", "p", "video_poll", 0, true},
		{"s video_poll 1700000000", "s", "video_poll", 1700000000, true},
		{"s video_poll x", "", "", 0, false},
		{ReleasedMessage("vw:create_lock:openai/sora-2"), "u", "vw:create_lock:openai/sora-2", 0, true},
		{"p", "", "", 0, false},
		{"x q", "", "", 0, false},
		{"", "", "", 0, false},
	} {
		kind, q, due, ok := parseMessage(tc.in)
		if kind != tc.kind || q != tc.queue || due != tc.due || ok != tc.ok {
			t.Errorf("parseMessage(%q) = %q %q %d %v, want %q %q %d %v", tc.in, kind, q, due, ok, tc.kind, tc.queue, tc.due, tc.ok)
		}
	}
}

func contains(events []string, e string) bool {
	for _, x := range events {
		if x == e || strings.HasPrefix(x, e+" ") {
			return true
		}
	}
	return false
}
