package server

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// ThrottlePolicy says how failed logins are throttled. Zero fields take
// the defaults named on each.
type ThrottlePolicy struct {
	// AddrFailures is how many failed logins (Basic or bearer) one client
	// address may make before it is locked out (default 10).
	AddrFailures int
	// UserFailures is the same for one user name, from any address
	// (default 30: higher, so that a stranger needs three addresses'
	// worth of failures to lock a user out).
	UserFailures int
	// BaseLock is the first lockout; each further failure doubles it, up
	// to MaxLock (defaults 1 s and 15 min).
	BaseLock, MaxLock time.Duration
	// Forget is how long after its latest failure an address or user
	// starts afresh, once its lockout has ended (default 1 h).
	Forget time.Duration
	// MaxEntries caps the table (default 10,000 addresses and users);
	// when it is full the entry whose latest failure is oldest goes.
	MaxEntries int
}

func (p ThrottlePolicy) withDefaults() ThrottlePolicy {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&p.AddrFailures, 10)
	def(&p.UserFailures, 30)
	def(&p.MaxEntries, 10_000)
	defDur(&p.BaseLock, time.Second)
	defDur(&p.MaxLock, 15*time.Minute)
	defDur(&p.Forget, time.Hour)
	return p
}

// LoginThrottle counts failed logins per client address and per user name
// and locks either out for a while after too many: a lockout starts at
// BaseLock after the limit's failure and doubles with every further one.
// Attempts during a lockout are refused without checking the credentials
// (429 with Retry-After), even right ones, and do not count. The table
// lives in the memory of one server process: behind a load balancer each
// process throttles on its own. Its size is capped. It is safe for
// concurrent use.
type LoginThrottle struct {
	p   ThrottlePolicy
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // of *throttleEntry
	order   list.List                // latest failure first
}

type throttleEntry struct {
	key         string
	failures    int
	last        time.Time // latest failure
	lockedUntil time.Time
}

// NewLoginThrottle returns a throttle applying p. now may be nil
// (time.Now).
func NewLoginThrottle(p ThrottlePolicy, now func() time.Time) *LoginThrottle {
	if now == nil {
		now = time.Now
	}
	return &LoginThrottle{p: p.withDefaults(), now: now, entries: map[string]*list.Element{}}
}

// throttleKeys are the table keys of a login attempt: its client address
// (IPv6 by /64, what one host usually holds) and, for Basic, the user
// name (at most 64 bytes of it).
type throttleKeys struct{ addr, user string }

func keysOf(client netip.Addr, user string, basic bool) throttleKeys {
	var k throttleKeys
	if client.IsValid() {
		if client.Is6() {
			p, _ := client.Prefix(64)
			k.addr = "a:" + p.String()
		} else {
			k.addr = "a:" + client.String()
		}
	}
	if basic {
		if len(user) > 64 {
			user = user[:64]
		}
		k.user = "u:" + user
	}
	return k
}

// Locked returns how long the attempt with keys k must still wait, or 0.
func (t *LoginThrottle) Locked(k throttleKeys) time.Duration {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, key := range [...]string{k.addr, k.user} {
		if el, ok := t.entries[key]; ok && key != "" {
			if d := el.Value.(*throttleEntry).lockedUntil.Sub(now); d > wait {
				wait = d
			}
		}
	}
	return wait
}

// Fail counts a failed login with keys k. It returns the failures counted
// for the address (for the user when there is no address) and the lockout
// that has now (0 when none).
func (t *LoginThrottle) Fail(k throttleKeys) (failures int, lock time.Duration) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	for _, x := range [...]struct {
		key   string
		limit int
	}{{k.user, t.p.UserFailures}, {k.addr, t.p.AddrFailures}} {
		if x.key == "" {
			continue
		}
		e := t.touch(x.key, now)
		if now.Sub(e.last) >= t.p.Forget && !now.Before(e.lockedUntil) {
			e.failures = 0 // forgotten, not yet swept
		}
		e.failures++
		e.last = now
		if over := e.failures - x.limit; over >= 0 {
			e.lockedUntil = now.Add(t.lockFor(over))
		}
		failures, lock = e.failures, max(0, e.lockedUntil.Sub(now))
	}
	return failures, lock
}

// lockFor is the lockout after the limit's failure and over more:
// BaseLock doubled over times, at most MaxLock.
func (t *LoginThrottle) lockFor(over int) time.Duration {
	d := t.p.BaseLock
	for ; over > 0 && d < t.p.MaxLock; over-- {
		d *= 2
	}
	return min(d, t.p.MaxLock)
}

// Succeed forgets the failures of the user of k (a right password ends a
// user's streak; the address's count only decays, so that a working login
// cannot buy more guesses at another user's password).
func (t *LoginThrottle) Succeed(k throttleKeys) {
	if k.user == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.entries[k.user]; ok {
		t.order.Remove(el)
		delete(t.entries, k.user)
	}
}

// Len returns how many addresses and users the table holds.
func (t *LoginThrottle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// touch returns key's entry, made and moved to the front; a full table
// loses its oldest entry first.
func (t *LoginThrottle) touch(key string, now time.Time) *throttleEntry {
	if el, ok := t.entries[key]; ok {
		t.order.MoveToFront(el)
		return el.Value.(*throttleEntry)
	}
	for len(t.entries) >= t.p.MaxEntries {
		t.remove(t.order.Back())
	}
	e := &throttleEntry{key: key}
	t.entries[key] = t.order.PushFront(e)
	return e
}

// sweep drops a few entries whose latest failure is old enough to be
// forgotten, oldest first: amortised, it keeps the table to the entries
// of the last Forget.
func (t *LoginThrottle) sweep(now time.Time) {
	for range 4 {
		el := t.order.Back()
		if el == nil {
			return
		}
		e := el.Value.(*throttleEntry)
		if now.Sub(e.last) < t.p.Forget || now.Before(e.lockedUntil) {
			return
		}
		t.remove(el)
	}
}

func (t *LoginThrottle) remove(el *list.Element) {
	delete(t.entries, el.Value.(*throttleEntry).key)
	t.order.Remove(el)
}
