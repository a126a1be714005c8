package standin

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProgressBucket(t *testing.T) {
	t.Parallel()
	for p, want := range map[int]int{0: 0, 1: 5, 4: 5, 5: 10, 14: 10, 15: 20, 50: 50, 84: 80, 85: 90, 94: 90, 95: 95, 99: 95, 100: 0} {
		if got := progressBucket(p); got != want {
			t.Errorf("progressBucket(%d) = %d, want %d", p, got, want)
		}
	}
	// The thresholds are exactly where the bucket changes.
	var changes []int
	for p := 1; p < 100; p++ {
		if progressBucket(p) != progressBucket(p-1) {
			changes = append(changes, p)
		}
	}
	if !slices.Equal(changes, progressThresholds[:]) {
		t.Errorf("bucket changes at %v, thresholds %v", changes, progressThresholds)
	}
}

func TestEventID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ id, key, want string }{
		{"G-abc123", "video.completed", "evt_video_G-abc123_video_completed"},
		{"G-abc123", "video.progress:50", "evt_video_G-abc123_video_progress_50"},
		{"G-a", "video.status_changed:processing", "evt_video_G-a_video_status_changed_processing"},
		{"G-é!!x", "k", "evt_video_G-_x_k"}, // a run of bad bytes becomes one "_"
		{strings.Repeat("x", 200), "video.created", "evt_video_" + strings.Repeat("x", 150)},
	} {
		if got := eventID(tc.id, tc.key); got != tc.want {
			t.Errorf("eventID(%q, %q) = %q, want %q", tc.id, tc.key, got, tc.want)
		}
	}
}

// TestWebhookScale creates 20,000 jobs with webhooks while 100,000 idle
// webhook jobs sit in the scheduler, and checks that every completion is
// delivered, signed, once, in bounded time, with at most two evaluations
// per job: the scheduler pops due jobs from a heap and never scans.
//
// Normally the jobs are created through ServeHTTP and delivered over real
// HTTP (about 2 s for the 20,000 deliveries on two cores). The race
// detector makes HTTP, JSON and HMAC 5 to 10 times slower, so under it the
// test checks the same properties with 5,000 jobs among 25,000 idle ones,
// created through the internal fast path and delivered by an in-memory
// transport that calls the receiver's handler directly.
func TestWebhookScale(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	t.Parallel()
	n, idle := 20_000, 100_000
	if raceEnabled {
		n, idle = 5_000, 25_000
	}
	const secret = "whsec_scale"

	var mu sync.Mutex
	seen := make(map[string]bool, n)
	bad, dups := 0, 0
	done := make(chan struct{})
	receive := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ok := hmac.Equal([]byte(r.Header.Get("x-ai-stats-signature")),
			[]byte(Sign(secret, r.Header.Get("x-ai-stats-timestamp"), body)))
		id := r.Header.Get("x-ai-stats-event-id")
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			bad++
		}
		if seen[id] {
			dups++
			return
		}
		seen[id] = true
		if len(seen) == n {
			close(done)
		}
	})
	rc := httptest.NewServer(receive)
	t.Cleanup(rc.Close)

	cfg := Config{APIKey: "k", ProcessingFor: 200 * time.Millisecond, ContentSize: 1 << 10}
	if raceEnabled {
		cfg.WebhookTransport = handlerTransport{receive}
	}
	s := New(cfg, nil)
	t.Cleanup(s.Close)

	// Idle jobs through the internal fast path: they finish in an hour.
	now := time.Now()
	p := createParams{model: "m/x", prompt: "p", seconds: 8, size: "720p", width: 1280, height: 720, samples: 1, audio: -1,
		webhook: &webhook{url: rc.URL + "/hook", events: defaultHooks, secret: secret}}
	s.mu.Lock()
	for range idle {
		j := s.addJobLocked(p, "", now)
		j.endAt = now.Add(time.Hour)
		s.watchLocked(j, "http://standin.test", now)
	}
	s.mu.Unlock()
	s.DeliverDue(t.Context()) // first look at the idle jobs: nothing to send
	s.Start()

	start := time.Now()
	if raceEnabled {
		s.mu.Lock()
		for range n {
			s.watchLocked(s.addJobLocked(p, "", time.Now()), "http://standin.test", time.Now())
		}
		s.mu.Unlock()
		s.wakeLoop()
	} else {
		body := fmt.Sprintf(`{"model":"google/veo-3.1-lite","prompt":"scale","webhook":{"url":%q,"secret":%q}}`, rc.URL+"/hook", secret)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < n; i += 4 {
					req := httptest.NewRequest(http.MethodPost, "/v1/videos", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer k")
					rec := httptest.NewRecorder()
					s.ServeHTTP(rec, req)
					if rec.Code != http.StatusAccepted {
						t.Errorf("create: %d %s", rec.Code, rec.Body)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	created := time.Since(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second): // generous: the machine may be shared
		mu.Lock()
		got := len(seen)
		mu.Unlock() // not held into Fatalf: Close waits for the handler
		t.Fatalf("%d of %d delivered after 60 s; %+v", got, n, s.Stats().Webhooks)
	}
	took := time.Since(start)
	waitFor(t, func() bool { return s.Stats().Webhooks.Pending == 0 })

	s.mu.Lock()
	evals := s.hooks.evals
	s.mu.Unlock()
	st := s.Stats().Webhooks
	t.Logf("race=%v: created %d jobs in %v; all delivered %v after the first create; %d evaluations for %d webhook jobs",
		raceEnabled, n, created, took, evals, n+idle)
	if evals > 2*(n+idle) {
		t.Errorf("%d evaluations for %d jobs: the scheduler scans", evals, n+idle)
	}
	if st.Attempts != n || st.Delivered != n {
		t.Errorf("stats = %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if bad > 0 || dups > 0 {
		t.Errorf("%d bad signatures, %d duplicates", bad, dups)
	}
}

// handlerTransport serves requests with a handler in memory. Header names
// are canonicalised as net/http's server would (the stand-in sends them in
// lowercase).
type handlerTransport struct{ h http.Handler }

func (ht handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	in := req.Clone(req.Context())
	in.Header = http.Header{}
	for k, vs := range req.Header {
		for _, v := range vs {
			in.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	ht.h.ServeHTTP(rec, in)
	return rec.Result(), nil
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDeliverDueCancelled leaves an attempt cut short by its context queued
// and unrecorded.
func TestDeliverDueCancelled(t *testing.T) {
	t.Parallel()
	s := New(Config{APIKey: "k", WebhookFaults: WebhookFaults{Latency: time.Hour}}, nil)
	t.Cleanup(s.Close)
	now := time.Now()
	s.mu.Lock()
	j := s.addJobLocked(createParams{model: "m/x", prompt: "p", seconds: 8, samples: 1, audio: -1,
		webhook: &webhook{url: "http://127.0.0.1:9/", events: defaultHooks, secret: "s"}}, "", now)
	s.watchLocked(j, "http://standin.test", now)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if n := s.DeliverDue(ctx); n != 0 {
		t.Errorf("DeliverDue = %d", n)
	}
	st := s.Stats().Webhooks
	if st.Attempts != 0 || st.Pending != 1 {
		t.Errorf("stats = %+v", st)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hooks.deliveries) != 1 || j.hook.inflight {
		t.Errorf("attempt not requeued: %d queued, inflight %v", len(s.hooks.deliveries), j.hook.inflight)
	}
}

// TestWebhookDataSnapshot checks that an event's data is the job as it was
// when the event was raised, not when the attempt is made.
func TestWebhookDataSnapshot(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var statuses []string
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			Data struct {
				Status string `json:"status"`
			} `json:"data"`
		}
		_ = json.NewDecoder(r.Body).Decode(&p)
		mu.Lock()
		statuses = append(statuses, p.Data.Status)
		mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(rc.Close)
	now := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	s := New(Config{APIKey: "k", QueuedFor: time.Second, ProcessingFor: time.Second,
		Now: func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }}, nil)
	t.Cleanup(s.Close)
	s.mu.Lock()
	j := s.addJobLocked(createParams{model: "m/x", prompt: "p", seconds: 8, samples: 1, audio: -1,
		webhook: &webhook{url: rc.URL, events: []string{"video.created"}, secret: "s"}}, "", now)
	s.watchLocked(j, "http://standin.test", now)
	s.mu.Unlock()
	s.DeliverDue(t.Context())
	clockMu.Lock()
	now = now.Add(time.Hour) // the job is completed by the retry
	clockMu.Unlock()
	s.DeliverDue(t.Context())
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(statuses, []string{"queued", "queued"}) {
		t.Errorf("data.status per attempt = %v", statuses)
	}
}

// TestWebhookMemory measures what a job with a webhook costs while it
// waits in the scheduler. Not parallel: the heap measurement needs the
// other tests paused.
func TestWebhookMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("short, or the race detector: heap figures are for normal builds")
	}
	now := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)
	s := New(Config{APIKey: "k", QueuedFor: time.Minute, ProcessingFor: time.Minute, Now: func() time.Time { return now }}, nil)
	p := createParams{model: "google/veo-3.1-lite", prompt: "one shared prompt", seconds: 8, size: "720p", width: 1280, height: 720,
		samples: 1, audio: -1, webhook: &webhook{url: "https://hooks.example.com/v", events: defaultHooks, secret: "whsec_x"}}
	const n = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s.mu.Lock()
	for range n {
		s.watchLocked(s.addJobLocked(p, "", now), "https://api.example.com", now)
	}
	s.mu.Unlock()
	s.DeliverDue(t.Context()) // every job looked at once, then waiting for its end
	runtime.GC()
	runtime.ReadMemStats(&after)
	perJob := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("heap per job with a webhook: %.0f bytes", perJob)
	if perJob > 900 {
		t.Errorf("heap per job with a webhook = %.0f bytes, want at most 900", perJob)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.hooks.due) != n || s.hooks.evals != n {
		t.Errorf("%d jobs scheduled, %d evaluations", len(s.hooks.due), s.hooks.evals)
	}
	runtime.KeepAlive(s)
}
