package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestCreateLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const lease = 10 * time.Second

	acquire := func(model, job string, wantOK bool, wantHolder string) time.Duration {
		t.Helper()
		ok, holder, ttl, err := b.store.AcquireCreateLock(b.ctx, model, job, lease)
		if err != nil {
			t.Fatal(err)
		}
		if ok != wantOK || holder != wantHolder {
			t.Errorf("AcquireCreateLock(%s, %s) = %v, %q; want %v, %q", model, job, ok, holder, wantOK, wantHolder)
		}
		return ttl
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
	if ttl := acquire("veo-3", "j1", true, "j1"); ttl != lease {
		t.Errorf("holder's ttl %v, want the lease %v", ttl, lease)
	}
	holder("veo-3", "j1")

	// Exclusive across jobs; the waiter learns the holder (in one
	// command: the lease left is not read).
	if ttl := acquire("veo-3", "j2", false, "j1"); ttl != 0 {
		t.Errorf("waiter's ttl %v, want 0 (not read)", ttl)
	}
	// Model names are case-insensitive.
	acquire("VEO-3", "j2", false, "j1")
	holder("Veo-3", "j1")
	// Other models have their own lock.
	acquire("sora-2", "j2", true, "j2")

	// Release by a non-holder does nothing.
	release("veo-3", "j2")
	release("veo-3", "")
	holder("veo-3", "j1")
	acquire("veo-3", "j3", false, "j1")

	// Release by the holder frees it, whatever the model's case.
	release("VEO-3", "j1")
	holder("veo-3", "")
	acquire("veo-3", "j3", true, "j3")
	holder("sora-2", "j2")
	release("veo-3", "j1") // no longer the holder: does nothing
	holder("veo-3", "j3")
}

func TestCreateLockReentrantExtendsLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ok, _, _, err := b.store.AcquireCreateLock(b.ctx, "m", "j1", 200*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("acquire = %v, %v", ok, err)
	}
	ok, h, ttl, err := b.store.AcquireCreateLock(b.ctx, "M", "j1", time.Minute)
	if err != nil || !ok || h != "j1" || ttl != time.Minute {
		t.Fatalf("re-acquire by the holder = %v, %q, %v, %v; want true, j1, 1m", ok, h, ttl, err)
	}
	// The lease is now the new one.
	ok, h, _, err = b.store.AcquireCreateLock(b.ctx, "m", "j2", time.Minute)
	if err != nil || ok || h != "j1" {
		t.Fatalf("waiter = %v, %q, %v; want false, j1", ok, h, err)
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
	ok, _, _, err := b.store.AcquireCreateLock(b.ctx, "m", "crashed", lease)
	if err != nil || !ok {
		t.Fatalf("acquire = %v, %v", ok, err)
	}

	// Another job waits for the lease to run out, in steps of the ttl it is
	// told, and gives up after a bound.
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for attempt := 1; ; attempt++ {
		ok, holder, ttl, err := b.store.AcquireCreateLock(b.ctx, "m", "next", lease)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if holder != "crashed" || ttl > lease {
			t.Fatalf("attempt %d: holder %q ttl %v; want crashed, at most %v", attempt, holder, ttl, lease)
		}
		select {
		case <-deadline.C:
			t.Fatalf("the lock was still held after 5s (lease %v)", lease)
		case <-b.ctx.Done():
			t.Fatal(b.ctx.Err())
		case <-time.After(ttl + time.Millisecond):
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
