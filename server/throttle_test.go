package server_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/tasks"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type authFixture struct {
	t        *testing.T
	srv      *httptest.Server
	clock    *fakeClock
	throttle *server.LoginThrottle
	log      *syncBuffer
}

// setupAuth serves the job API with a throttle on a fake clock; trusted
// are the proxies whose X-Forwarded-For counts (the test client connects
// from 127.0.0.1).
func setupAuth(t *testing.T, p server.ThrottlePolicy, trusted string) *authFixture {
	t.Helper()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	auth, err := server.NewAuth(apiToken, viewer+":"+viewPass+":viewer,"+opUser+":"+opPass+":operator")
	if err != nil {
		t.Fatal(err)
	}
	proxies, err := server.ParseTrustedProxies(trusted)
	if err != nil {
		t.Fatal(err)
	}
	f := &authFixture{t: t, clock: newFakeClock(), log: &syncBuffer{}}
	f.throttle = server.NewLoginThrottle(p, f.clock.Now)
	log := slog.New(slog.NewJSONHandler(f.log, nil))
	f.srv = httptest.NewServer(server.New(server.Deps{Redis: rdb, Producer: tasks.NewClient(rdb, tasks.ClientOptions{}), Auth: auth,
		Logger: log, Throttle: f.throttle, TrustedProxies: proxies}))
	t.Cleanup(f.srv.Close)
	return f
}

// get reads the job list as c from the client address xff (sent as
// X-Forwarded-For when not empty); it returns the status and Retry-After.
func (f *authFixture) get(c creds, xff string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest("GET", f.srv.URL+"/v1/jobs?limit=1", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	c(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func TestLoginThrottlePerAddress(t *testing.T) {
	t.Parallel()
	f := setupAuth(t, server.ThrottlePolicy{}, "127.0.0.1") // defaults: 10 failures, then 1 s doubling
	const attacker, other = "203.0.113.7", "198.51.100.20"
	for i := range 10 {
		if code, _ := f.get(basic(opUser, fmt.Sprintf("guess-%d", i)), attacker); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	// Locked out: even the right password is refused, unchecked.
	if code, ra := f.get(basic(opUser, opPass), attacker); code != http.StatusTooManyRequests || ra != "1" {
		t.Errorf("right password after 10 failures: %d Retry-After %q, want 429 and 1", code, ra)
	}
	if code, ra := f.get(bearer(apiToken), attacker); code != http.StatusTooManyRequests || ra == "" {
		t.Errorf("right token from the locked address: %d Retry-After %q, want 429", code, ra)
	}
	// Another address is unaffected, also for the same user.
	if code, _ := f.get(basic(opUser, opPass), other); code != http.StatusOK {
		t.Errorf("another address: %d, want 200", code)
	}
	// The lockout passes; the next failure locks twice as long.
	f.clock.Advance(time.Second)
	if code, _ := f.get(basic(opUser, opPass), attacker); code != http.StatusOK {
		t.Errorf("after the lockout: %d, want 200", code)
	}
	if code, _ := f.get(basic(opUser, "guess-11"), attacker); code != http.StatusUnauthorized {
		t.Errorf("guess 11: %d, want 401", code)
	}
	if code, ra := f.get(basic(opUser, opPass), attacker); code != http.StatusTooManyRequests || ra != "2" {
		t.Errorf("after guess 11: %d Retry-After %q, want 429 and 2", code, ra)
	}

	// Bearer tokens count per address the same way.
	const tokenGuesser = "2001:db8::1"
	for i := range 10 {
		if code, _ := f.get(bearer(fmt.Sprintf("tok_guess_%016d", i)), tokenGuesser); code != http.StatusUnauthorized {
			t.Fatalf("token guess %d: %d, want 401", i, code)
		}
	}
	// The same /64 is the same client.
	if code, ra := f.get(bearer(apiToken), "2001:db8::2"); code != http.StatusTooManyRequests || ra != "1" {
		t.Errorf("right token after 10 wrong ones: %d Retry-After %q, want 429 and 1", code, ra)
	}

	// Each failure is logged with the address and the user, never the
	// secret; the access log names both too.
	logs := f.log.String()
	if !strings.Contains(logs, `"msg":"login failed","client":"203.0.113.7","user":"otto","auth":"basic"`) ||
		!strings.Contains(logs, `"msg":"login failed","client":"2001:db8::1","user":"","auth":"bearer"`) {
		t.Errorf("failures not logged with client and user:\n%s", logs)
	}
	if !strings.Contains(logs, `"status":429,`) || !strings.Contains(logs, `"client":"198.51.100.20","user":"otto"`) {
		t.Errorf("access log lacks client and user:\n%s", logs)
	}
	for _, secret := range []string{"guess-", "tok_guess_", opPass, apiToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%s…) reached the log", secret)
		}
	}
}

// Failures for one user from many addresses lock that user out, not the
// others.
func TestLoginThrottlePerUser(t *testing.T) {
	t.Parallel()
	f := setupAuth(t, server.ThrottlePolicy{AddrFailures: 10, UserFailures: 30}, "127.0.0.0/8")
	for i := range 30 {
		if code, _ := f.get(basic(opUser, "wrong-password"), fmt.Sprintf("192.0.2.%d", i/5)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	if code, ra := f.get(basic(opUser, opPass), "198.51.100.1"); code != http.StatusTooManyRequests || ra != "1" {
		t.Errorf("user after 30 failures from 6 addresses: %d Retry-After %q, want 429 and 1", code, ra)
	}
	if code, _ := f.get(basic(viewer, viewPass), "198.51.100.1"); code != http.StatusOK {
		t.Errorf("another user: %d, want 200", code)
	}
}

// X-Forwarded-For counts only from a trusted proxy: from anyone else, a
// new value per attempt does not make a new client.
func TestLoginThrottleIgnoresForwardedForFromStrangers(t *testing.T) {
	t.Parallel()
	f := setupAuth(t, server.ThrottlePolicy{}, "10.0.0.0/8") // the test client (127.0.0.1) is no proxy
	for i := range 10 {
		if code, _ := f.get(basic("nobody", "wrong-password"), fmt.Sprintf("192.0.2.%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	if code, _ := f.get(basic(opUser, opPass), "192.0.2.200"); code != http.StatusTooManyRequests {
		t.Errorf("a new X-Forwarded-For from an untrusted peer: %d, want 429", code)
	}
	if logs := f.log.String(); !strings.Contains(logs, `"client":"127.0.0.1","user":"nobody"`) || strings.Contains(logs, "192.0.2.") {
		t.Errorf("log names a forwarded address from an untrusted peer:\n%s", logs)
	}
}

// The table is capped: a flood from ever new addresses and user names
// keeps at most MaxEntries, and old entries are forgotten.
func TestLoginThrottleBounded(t *testing.T) {
	t.Parallel()
	c := newFakeClock()
	th := server.NewLoginThrottle(server.ThrottlePolicy{MaxEntries: 50, Forget: time.Minute}, c.Now)
	for i := range 1000 {
		server.ThrottleFail(th, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), fmt.Sprintf("user-%d", i))
	}
	if n := th.Len(); n != 50 {
		t.Errorf("%d entries after 1,000 new clients, want the cap of 50", n)
	}
	c.Advance(2 * time.Minute)
	for i := range 10 {
		server.ThrottleFail(th, netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), "")
	}
	if n := th.Len(); n > 50-4*10+10 {
		t.Errorf("%d entries a while later, want the forgotten ones swept", n)
	}
}
