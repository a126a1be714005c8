package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/wake"
)

func TestCreateLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const lease = 10 * time.Second

	// look is a job's look as the worker makes it: TryCreateLock, then
	// AcquireCreateLock (which queues it) when the lock is taken.
	look := func(model, job string, wantOK bool, wantHolder string) {
		t.Helper()
		ok, err := b.store.TryCreateLock(b.ctx, model, job, lease)
		if err != nil {
			t.Fatal(err)
		}
		try := jobs.LockTry{Held: true, Holder: job}
		if !ok {
			if try, err = b.store.AcquireCreateLock(b.ctx, model, job, b.clock.Now(), lease); err != nil {
				t.Fatal(err)
			}
		}
		if try.Held != wantOK || try.Holder != wantHolder {
			t.Errorf("look at %s by %s = %+v; want held %v, holder %q", model, job, try, wantOK, wantHolder)
		}
	}
	holder := func(model, want string) {
		t.Helper()
		got, err := b.rdb.Get(b.ctx, "videoworker:create_lock:"+strings.ToLower(model)).Result()
		if errors.Is(err, redis.Nil) {
			got, err = "", nil
		}
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("lock holder of %s = %q, want %q", model, got, want)
		}
	}
	release := func(model, job string) {
		t.Helper()
		if err := b.store.ReleaseCreateLock(b.ctx, model, job); err != nil {
			t.Fatal(err)
		}
	}

	holder("veo-3", "")
	look("veo-3", "j1", true, "j1")
	holder("veo-3", "j1")
	if pttl := b.rdb.PTTL(b.ctx, "videoworker:create_lock:veo-3").Val(); pttl < lease/2 || pttl > lease {
		t.Errorf("lock key PTTL %v, want about the lease %v", pttl, lease)
	}

	// Exclusive across jobs; the waiter learns the holder.
	look("veo-3", "j2", false, "j1")
	// Model names are case-insensitive.
	look("VEO-3", "j2", false, "j1")
	holder("Veo-3", "j1")
	// Other models have their own lock.
	look("sora-2", "j2", true, "j2")

	// Release by a non-holder does nothing.
	release("veo-3", "j2")
	release("veo-3", "")
	holder("veo-3", "j1")

	// Release by the holder, whatever the model's case, hands the lock to
	// the waiter, reserved for a short while, even against a newcomer.
	release("VEO-3", "j1")
	holder("veo-3", "j2")
	if pttl := b.rdb.PTTL(b.ctx, "videoworker:create_lock:veo-3").Val(); pttl > 2*time.Second {
		t.Errorf("handed-over lock's PTTL %v, want a short reservation", pttl)
	}
	look("veo-3", "j3", false, "j2")
	// The waiter takes it with its own lease.
	look("veo-3", "j2", true, "j2")
	if pttl := b.rdb.PTTL(b.ctx, "videoworker:create_lock:veo-3").Val(); pttl < lease/2 {
		t.Errorf("taken lock's PTTL %v, want about the lease %v", pttl, lease)
	}
	holder("sora-2", "j2")
	release("veo-3", "j1") // no longer the holder: does nothing
	holder("veo-3", "j2")
	release("veo-3", "j2")
	holder("veo-3", "j3")
	release("veo-3", "j3") // nobody waits: free
	holder("veo-3", "")
}

func TestCreateLockReentrantExtendsLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if ok, err := b.store.TryCreateLock(b.ctx, "m", "j1", 200*time.Millisecond); err != nil || !ok {
		t.Fatalf("take = %v, %v", ok, err)
	}
	// Its in-doubt create's retry finds the lock its own.
	if ok, err := b.store.TryCreateLock(b.ctx, "m", "j1", time.Minute); err != nil || ok {
		t.Fatalf("SET NX on its own lock = %v, %v; want false", ok, err)
	}
	try, err := b.store.AcquireCreateLock(b.ctx, "M", "j1", b.clock.Now(), time.Minute)
	if err != nil || !try.Held || try.Holder != "j1" {
		t.Fatalf("re-acquire by the holder = %+v, %v; want held by j1", try, err)
	}
	// The lease is now the new one.
	try, err = b.store.AcquireCreateLock(b.ctx, "m", "j2", b.clock.Now(), time.Minute)
	if err != nil || try.Held || try.Holder != "j1" {
		t.Fatalf("waiter = %+v, %v; want not held, holder j1", try, err)
	}
	if pttl := b.rdb.PTTL(b.ctx, "videoworker:create_lock:m").Val(); pttl < 30*time.Second {
		t.Errorf("lock key PTTL %v, want about 1m", pttl)
	}
}

func TestCreateLockLeaseExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const lease = 200 * time.Millisecond
	start := time.Now()
	if ok, err := b.store.TryCreateLock(b.ctx, "m", "crashed", lease); err != nil || !ok {
		t.Fatalf("take = %v, %v", ok, err)
	}

	// Another job waits for the lease to run out, looking every 20 ms,
	// and gives up after a bound.
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for attempt := 1; ; attempt++ {
		try, err := b.store.AcquireCreateLock(b.ctx, "m", "next", b.clock.Now(), lease)
		if err != nil {
			t.Fatal(err)
		}
		if try.Held {
			break
		}
		if try.Holder != "crashed" || try.Ahead != 0 {
			t.Fatalf("attempt %d: %+v; want held by crashed, nobody else waiting", attempt, try)
		}
		select {
		case <-deadline.C:
			t.Fatalf("the lock was still held after 5s (lease %v)", lease)
		case <-b.ctx.Done():
			t.Fatal(b.ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if waited := time.Since(start); waited < lease*3/4 {
		t.Errorf("lock was free after %v, before its %v lease ran out", waited, lease)
	}
	if h, err := b.rdb.Get(b.ctx, "videoworker:create_lock:m").Result(); err != nil || h != "next" {
		t.Errorf("lock holder = %q, %v; want next", h, err)
	}
	// The crashed holder's late release does not free the new holder's lock.
	if err := b.store.ReleaseCreateLock(b.ctx, "m", "crashed"); err != nil {
		t.Fatal(err)
	}
	if h, _ := b.rdb.Get(b.ctx, "videoworker:create_lock:m").Result(); h != "next" {
		t.Errorf("after a stale release the holder is %q, want next", h)
	}
}

// TestCreateLockFirstComeFirstServed: each release hands the lock to the
// waiter with the earliest ticket, whoever looks first; a waiter that
// leaves and comes back keeps its place; one that leaves just as the lock
// is handed to it passes it on; the queue is gone once it is served.
func TestCreateLockFirstComeFirstServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const lease = time.Minute
	t1 := b.clock.Now()
	tickets := map[string]time.Time{"first": t1.Add(time.Millisecond), "second": t1.Add(2 * time.Millisecond), "third": t1.Add(3 * time.Millisecond)}
	try := func(job string) jobs.LockTry {
		t.Helper()
		got, err := b.store.AcquireCreateLock(b.ctx, "m", job, tickets[job], lease)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := func(got, want jobs.LockTry) {
		t.Helper()
		if got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
	release := func(job string) {
		t.Helper()
		if err := b.store.ReleaseCreateLock(b.ctx, "m", job); err != nil {
			t.Fatal(err)
		}
	}
	leave := func(job string) {
		t.Helper()
		if err := b.store.LeaveCreateQueue(b.ctx, "m", job); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := b.store.TryCreateLock(b.ctx, "m", "holder", lease); err != nil || !ok {
		t.Fatalf("take = %v, %v", ok, err)
	}
	// Three waiters, queued by ticket, not by arrival.
	want(try("third"), jobs.LockTry{Holder: "holder"})
	want(try("first"), jobs.LockTry{Holder: "holder"})
	want(try("second"), jobs.LockTry{Holder: "holder", Ahead: 1})
	want(try("third"), jobs.LockTry{Holder: "holder", Ahead: 2})
	// The first leaves (it retries later), and comes back: its place is
	// its ticket.
	leave("first")
	want(try("third"), jobs.LockTry{Holder: "holder", Ahead: 1})
	want(try("first"), jobs.LockTry{Holder: "holder"})
	release("holder")
	// Handed to the first, whoever looks first.
	want(try("third"), jobs.LockTry{Holder: "first", Ahead: 1})
	if ok, _ := b.store.TryCreateLock(b.ctx, "m", "newcomer", lease); ok {
		t.Error("a newcomer took the lock handed to the first waiter")
	}
	want(try("first"), jobs.LockTry{Held: true, Holder: "first"})
	release("first")
	// Handed to the second, which leaves just then: it passes it on.
	leave("second")
	want(try("third"), jobs.LockTry{Held: true, Holder: "third"})
	release("third")
	if n := b.rdb.Exists(b.ctx, "videoworker:create_lock:m", "{videoworker:create_lock:m}:waiters", "{videoworker:create_lock:m}:seen").Val(); n != 0 {
		t.Errorf("%d lock keys left once every waiter was served", n)
	}
}

// TestCreateLockPassesOverStaleWaiter: a waiter that stopped looking (its
// worker died) is not handed the lock once it is stale, and one that died
// after it was handed the lock holds the others up only while the
// reservation lasts.
func TestCreateLockPassesOverStaleWaiter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t1 := b.clock.Now()
	tickets := map[string]time.Time{"dead": t1, "live": t1.Add(time.Millisecond), "dead-later": t1.Add(2 * time.Millisecond), "next": t1.Add(3 * time.Millisecond)}
	acquire := func(job string) jobs.LockTry {
		t.Helper()
		got, err := b.store.AcquireCreateLock(b.ctx, "m", job, tickets[job], time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if ok, err := b.store.TryCreateLock(b.ctx, "m", "holder", time.Minute); err != nil || !ok {
		t.Fatalf("take = %v, %v", ok, err)
	}
	acquire("dead")
	time.Sleep(1200 * time.Millisecond) // liveness is Redis's clock
	acquire("live")
	acquire("dead-later")
	if err := b.store.ReleaseCreateLock(b.ctx, "m", "holder"); err != nil {
		t.Fatal(err)
	}
	// "dead" was last seen 1.2 s ago: passed over.
	if got := acquire("live"); !got.Held {
		t.Fatalf("live = %+v; want the lock, the dead waiter passed over", got)
	}
	// Handed to "dead-later", seen just now, which dies: the others wait
	// for the reservation, not the lease.
	if err := b.store.ReleaseCreateLock(b.ctx, "m", "live"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		got := acquire("next")
		if got.Held {
			break
		}
		if got.Holder != "dead-later" || time.Since(start) > 5*time.Second {
			t.Fatalf("after %v: %+v; want held by dead-later for about a second, then ours", time.Since(start), got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCreateLockReleaseAnnounced: a hand-over announces itself to the
// waiter it goes to (one PUBLISH of wake.ReleasedMessage), whether by
// ReleaseCreateLock or by the transition that saves the video id, and a
// release says nothing when nobody waits.
func TestCreateLockReleaseAnnounced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	model := "announce-" + t.Name() // pub/sub is shared by every database
	sub := b.rdb.Subscribe(b.ctx, wake.Channel)
	defer sub.Close()
	if _, err := sub.Receive(b.ctx); err != nil {
		t.Fatal(err)
	}
	msgs := sub.Channel()
	heard := func(to string) bool {
		t.Helper()
		want := wake.ReleasedMessage(b.store.HandOverName(model, to))
		timer := time.NewTimer(2 * time.Second)
		defer timer.Stop()
		for {
			select {
			case m := <-msgs:
				if m.Payload == want {
					return true
				}
			case <-timer.C:
				return false
			}
		}
	}
	take := func(job string) {
		t.Helper()
		if ok, err := b.store.TryCreateLock(b.ctx, model, job, time.Minute); err != nil || !ok {
			t.Fatalf("take by %s = %v, %v", job, ok, err)
		}
	}
	acquire := func(job string) jobs.LockTry {
		t.Helper()
		got, err := b.store.AcquireCreateLock(b.ctx, model, job, b.clock.Now(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Nobody waits: no announcement.
	take("j1")
	if err := b.store.ReleaseCreateLock(b.ctx, model, "j1"); err != nil {
		t.Fatal(err)
	}
	if heard("j1") || heard("j2") {
		t.Error("a release without waiters was announced")
	}
	// A waiter: ReleaseCreateLock hands over and announces.
	take("j1")
	acquire("j2")
	if err := b.store.ReleaseCreateLock(b.ctx, model, "j1"); err != nil {
		t.Fatal(err)
	}
	if !heard("j2") {
		t.Error("a hand-over by ReleaseCreateLock was not announced")
	}
	// The transition that saves the video id releases and announces too.
	if got := acquire("j2"); !got.Held {
		t.Fatalf("j2 = %+v, want the lock handed to it", got)
	}
	if got := acquire("j3"); got.Held || got.Holder != "j2" {
		t.Fatalf("j3 = %+v, want waiting for j2", got)
	}
	b.create(t, "j2", model)
	if _, err := b.store.Do(b.ctx, "j2", jobs.Adopted{VideoID: "video_j2", Model: model, How: "test"}); err != nil {
		t.Fatal(err)
	}
	if !heard("j3") {
		t.Error("the hand-over by the transition that saved the video id was not announced")
	}
	if got := acquire("j3"); !got.Held {
		t.Errorf("after j2's video was saved, j3 = %+v; want the lock handed to it", got)
	}
}
