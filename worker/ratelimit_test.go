package worker_test

import (
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/ratelimit"
	"github.com/videoworker/videoworker/standin"
)

// arrivals records when each API call reached the stand-in.
type arrivals struct {
	mu    sync.Mutex
	calls []arrival
	next  http.Handler
}

type arrival struct {
	at       time.Time
	endpoint string
	status   int
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	rec := &codeRecorder{ResponseWriter: w, code: 200}
	a.next.ServeHTTP(rec, r)
	a.mu.Lock()
	a.calls = append(a.calls, arrival{at: at, endpoint: metrics.Endpoint(r.Method, r.URL.Path), status: rec.code})
	a.mu.Unlock()
}

func (a *arrivals) of(endpoint string) []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []arrival
	for _, c := range a.calls {
		if c.endpoint == endpoint {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) { c.code = code; c.ResponseWriter.WriteHeader(code) }

// maxInWindow is the most calls in any window of length d.
func maxInWindow(calls []arrival, d time.Duration) int {
	best, j := 0, 0
	for i := range calls {
		for calls[i].at.Sub(calls[j].at) >= d {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// TestFleetRateLimit runs three workers, each with its own API client and
// limiter sharing Redis, and measures the calls at the stand-in.
func TestFleetRateLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	rec := &arrivals{next: e.api}
	hs := httptest.NewServer(rec)
	t.Cleanup(hs.Close)
	limits := map[string]ratelimit.Limit{
		apiclient.ClassCreate: {Rate: 8, Period: time.Second, Burst: 1},
		apiclient.ClassRead:   {Rate: 30, Period: time.Second, Burst: 2},
	}
	for i := 0; i < 3; i++ {
		client, err := apiclient.New(apiclient.Config{BaseURL: hs.URL + "/v1", APIKey: testKey,
			Limiter: ratelimit.New(e.rdb, "videoworker:", limits)})
		if err != nil {
			t.Fatal(err)
		}
		e.startWorker(fastConfig(), client)
	}
	ids := e.submit(24, "google/veo-3.1-lite")
	e.checkStored(e.waitTerminal(ids, 60*time.Second))
	creates := rec.of("create")
	if n := maxInWindow(creates, time.Second); n > 8+1 {
		t.Errorf("%d creates reached the API within one second; the fleet budget is 8/s with a burst of 1", n)
	}
	reads := append(rec.of("get"), rec.of("content")...)
	sort.Slice(reads, func(i, j int) bool { return reads[i].at.Before(reads[j].at) })
	if n := maxInWindow(reads, time.Second); n > 30+2 {
		t.Errorf("%d reads reached the API within one second; the fleet budget is 30/s with a burst of 2", n)
	}
	t.Logf("creates: %d, most in 1 s: %d; reads: %d, most in 1 s: %d", len(creates), maxInWindow(creates, time.Second), len(reads), maxInWindow(reads, time.Second))
}

// TestOne429PausesTheFleet: after the API answers one status check with
// 429 and Retry-After 2 s, no worker sends a status check for 2 s.
func TestOne429PausesTheFleet(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	cfg.ProcessingFor = 6 * time.Second
	e := setup(t, cfg)
	rec := &arrivals{next: e.api}
	hs := httptest.NewServer(rec)
	t.Cleanup(hs.Close)
	for i := 0; i < 3; i++ {
		client, err := apiclient.New(apiclient.Config{BaseURL: hs.URL + "/v1", APIKey: testKey,
			Limiter: ratelimit.New(e.rdb, "videoworker:", nil)})
		if err != nil {
			t.Fatal(err)
		}
		e.startWorker(fastConfig(), client)
	}
	ids := e.submit(12, "google/veo-3.1-lite")
	for _, id := range ids {
		e.waitState(id, "generating", 10*time.Second)
	}
	// Let polling run, then answer status checks with 429 until one lands.
	time.Sleep(300 * time.Millisecond)
	e.api.SetFaults(standin.Faults{RateLimitRate: 1, RetryAfter: 2 * time.Second, Endpoints: []string{standin.EndpointGet}})
	var first time.Time
	deadline := time.Now().Add(10 * time.Second)
	for first.IsZero() {
		for _, c := range rec.of("get") {
			if c.status == http.StatusTooManyRequests {
				first = c.at
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no 429 was served")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.api.SetFaults(standin.Faults{})
	e.checkStored(e.waitTerminal(ids, 60*time.Second))
	// Calls already on the wire when the 429 went out may still arrive
	// just after it; after that, silence for the Retry-After.
	var during []time.Duration
	for _, c := range rec.of("get") {
		if off := c.at.Sub(first); off > 100*time.Millisecond && off < 1900*time.Millisecond {
			during = append(during, off)
		}
	}
	if len(during) > 0 {
		t.Errorf("%d status checks reached the API during the fleet-wide pause (at %v after the 429)", len(during), during)
	}
	var resumed bool
	for _, c := range rec.of("get") {
		if c.at.Sub(first) >= 2*time.Second {
			resumed = true
		}
	}
	if !resumed {
		t.Error("status checks never resumed after the pause")
	}
}
