package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// delivery is one request a test receiver got.
type delivery struct {
	header http.Header
	body   []byte
	event  callback.Event
	at     time.Time
}

// receiver is a real HTTP server that records deliveries and answers
// each with the status answer gives it (n counts the deliveries, from 1).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []delivery
	signal chan struct{}
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter) int) *receiver {
	r := &receiver{signal: make(chan struct{}, 1000)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var ev callback.Event
		_ = json.Unmarshal(b, &ev)
		r.mu.Lock()
		r.got = append(r.got, delivery{header: req.Header.Clone(), body: b, event: ev, at: time.Now()})
		n := len(r.got)
		r.mu.Unlock()
		w.WriteHeader(answer(n, w))
		r.signal <- struct{}{}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// waitFor waits (bounded) until the receiver has n deliveries.
func (r *receiver) waitFor(t *testing.T, n int, limit time.Duration) []delivery {
	t.Helper()
	deadline := time.After(limit)
	for {
		if d := r.deliveries(); len(d) >= n {
			return d
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("receiver got %d deliveries after %s, want %d", len(r.deliveries()), limit, n)
		}
	}
}

var loopback = callback.Policy{AllowLoopback: true}

func callbackConfig(secrets ...string) worker.Config {
	cfg := fastConfig()
	cfg.Callback = worker.CallbackConfig{Secrets: secrets, Policy: loopback, BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond, Timeout: 2 * time.Second}
	return cfg
}

// waitCallback waits (bounded) until the job's callback delivery has
// finished (delivered or failed).
func (e *env) waitCallback(id tasks.JobID, limit time.Duration) *jobs.Record {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r, err := e.jobs.Get(context.Background(), string(id))
		if err != nil {
			e.t.Fatal(err)
		}
		if r.State.Terminal() && !r.CallbackDue() {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s (%s): callback %q after %d attempts (last %d %s), not finished after %s", id, r.State, r.CallbackStatus, r.CallbackAttempts, r.CallbackLastCode, r.CallbackLastError, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCallbackDeliveredSigned: every stored job's terminal state arrives
// once at its callback URL, signed with the first secret, with a stable
// event id, the job's location and sha256; the record says delivered.
// tasks.Client.Wait, with its polling fallback an hour away, returns as
// soon as the job is stored.
func TestCallbackDeliveredSigned(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	rcv := newReceiver(t, func(int, http.ResponseWriter) int { return http.StatusNoContent })
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, WaitPollInterval: time.Hour})
	const n = 3
	ids := make([]tasks.JobID, n)
	for i := range ids {
		id, err := producer.Submit(t.Context(), tasks.Request{JobID: tasks.JobID("cb-" + strconv.Itoa(i)), Video: e.request("cb-" + strconv.Itoa(i)), CallbackURL: rcv.URL + "/hook?token=t0k3n"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	waited := make(chan *jobs.Record, 1)
	go func() {
		rec, err := producer.Wait(t.Context(), ids[0])
		if err != nil {
			t.Errorf("wait: %v", err)
		}
		waited <- rec
	}()
	e.startWorker(callbackConfig("new-secret", "old-secret"), nil)

	select {
	case rec := <-waited:
		if rec == nil || rec.State != jobs.StateStored {
			t.Fatalf("Wait returned %+v, want the stored job", rec)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return after the job was stored (its fallback is an hour away)")
	}
	rcv.waitFor(t, n, 20*time.Second)
	for _, id := range ids {
		rec := e.waitCallback(id, 10*time.Second)
		if rec.CallbackStatus != jobs.CallbackDelivered || rec.CallbackAttempts != 1 || rec.CallbackLastCode != 204 {
			t.Errorf("job %s: callback %q, %d attempts, last http %d; want delivered at the first attempt", id, rec.CallbackStatus, rec.CallbackAttempts, rec.CallbackLastCode)
		}
		if rec.State != jobs.StateStored {
			t.Errorf("job %s: %s, want stored", id, rec.State)
		}
	}
	got := rcv.deliveries()
	perJob := map[string]int{}
	for _, d := range got {
		if err := tasks.VerifyCallback([]string{"new-secret"}, time.Minute, d.header, d.body, time.Now()); err != nil {
			t.Errorf("delivery of %s: %v", d.event.JobID, err)
		}
		if err := tasks.VerifyCallback([]string{"old-secret"}, time.Minute, d.header, d.body, time.Now()); !errors.Is(err, callback.ErrBadSignature) {
			t.Errorf("delivery verified with the second secret (%v): the first one must sign", err)
		}
		perJob[d.event.JobID]++
		rec, err := e.jobs.Get(t.Context(), d.event.JobID)
		if err != nil {
			t.Fatal(err)
		}
		want := d.event.JobID + ":stored:0"
		if d.header.Get("X-Videoworker-Event-Id") != want || d.event.ID != want || d.header.Get("X-Videoworker-Attempt") != "1" {
			t.Errorf("delivery headers %v / event id %q, want event %s attempt 1", d.header, d.event.ID, want)
		}
		if d.event.State != "stored" || d.event.SHA256 == "" || d.event.SHA256 != rec.SHA256 || d.event.Location != rec.Location || d.event.Bytes != rec.Bytes {
			t.Errorf("event %+v does not match the record (sha256 %s, location %s, bytes %d)", d.event, rec.SHA256, rec.Location, rec.Bytes)
		}
		if !rec.SettledCost.Known || d.event.SettledCostUSD != rec.SettledCost.String() || d.event.EstimatedCostUSD != rec.EstimatedCost.String() {
			t.Errorf("event costs estimated %q settled %q; the record's %s and %s", d.event.EstimatedCostUSD, d.event.SettledCostUSD, rec.EstimatedCost, rec.SettledCost)
		}
	}
	for _, id := range ids {
		if perJob[string(id)] != 1 {
			t.Errorf("job %s: %d deliveries, want exactly 1", id, perJob[string(id)])
		}
	}
}

// TestCallbackReceiverDownThenUp: a receiver that answers 503 twice (with
// Retry-After: 0) gets the event at the third attempt, with the same
// event id and attempt numbers 1, 2, 3; each attempt is on the job.
func TestCallbackReceiverDownThenUp(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	rcv := newReceiver(t, func(n int, w http.ResponseWriter) int {
		if n <= 2 {
			w.Header().Set("Retry-After", "0")
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, DefaultCallbackURL: rcv.URL})
	id, err := producer.Submit(t.Context(), tasks.Request{JobID: "down-1", Video: e.request("down-1")})
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(callbackConfig("s3cret"), nil)
	got := rcv.waitFor(t, 3, 20*time.Second)
	rec := e.waitCallback(id, 10*time.Second)
	if rec.CallbackStatus != jobs.CallbackDelivered || rec.CallbackAttempts != 3 || rec.CallbackLastCode != 200 || rec.State != jobs.StateStored {
		t.Errorf("record: %s, callback %q after %d attempts (last http %d); want stored, delivered after 3", rec.State, rec.CallbackStatus, rec.CallbackAttempts, rec.CallbackLastCode)
	}
	for i, d := range got {
		if d.header.Get("X-Videoworker-Event-Id") != "down-1:stored:0" || d.header.Get("X-Videoworker-Attempt") != strconv.Itoa(i+1) {
			t.Errorf("delivery %d: event %q attempt %q", i+1, d.header.Get("X-Videoworker-Event-Id"), d.header.Get("X-Videoworker-Attempt"))
		}
	}
	hist, err := e.jobs.Events(t.Context(), string(id), 0)
	if err != nil {
		t.Fatal(err)
	}
	var attempts []string
	for _, ev := range hist {
		if ev.Event == string(jobs.TCallbackAttempted) {
			attempts = append(attempts, ev.Detail)
		}
	}
	if len(attempts) != 3 || attempts[0] != "retrying, attempt 1, http 503: receiver answered 503" || attempts[2] != "delivered, attempt 3, http 200" {
		t.Errorf("history of attempts: %q", attempts)
	}
	if len(rcv.deliveries()) != 3 {
		t.Errorf("%d deliveries, want 3", len(rcv.deliveries()))
	}
}

// TestCallbackGoneNotRetried: a 410 ends the delivery as failed at once;
// the job stays stored. A job that fails gets its failure delivered.
func TestCallbackGoneNotRetried(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	e := setup(t, cfg)
	rcv := newReceiver(t, func(int, http.ResponseWriter) int { return http.StatusGone })
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, DefaultCallbackURL: rcv.URL})
	id, err := producer.Submit(t.Context(), tasks.Request{JobID: "gone-1", Video: e.request("gone-1")})
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(callbackConfig("s3cret"), nil)
	rec := e.waitCallback(id, 20*time.Second)
	if rec.State != jobs.StateStored || rec.CallbackStatus != jobs.CallbackFailed || rec.CallbackAttempts != 1 || rec.CallbackLastCode != 410 {
		t.Errorf("record: %s, callback %q after %d attempts (last http %d %s); want stored, failed after 1", rec.State, rec.CallbackStatus, rec.CallbackAttempts, rec.CallbackLastCode, rec.CallbackLastError)
	}
	if n := len(rcv.deliveries()); n != 1 {
		t.Errorf("%d deliveries, want 1 (a 410 is not retried)", n)
	}
}

// TestCallbackOfFailedJob: a job the API fails delivers state failed with
// the error code.
func TestCallbackOfFailedJob(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	cfg.FailRate = 1
	e := setup(t, cfg)
	rcv := newReceiver(t, func(int, http.ResponseWriter) int { return http.StatusOK })
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, DefaultCallbackURL: rcv.URL})
	id, err := producer.Submit(t.Context(), tasks.Request{JobID: "fail-1", Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "fail"}})
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(callbackConfig("s3cret"), nil)
	d := rcv.waitFor(t, 1, 20*time.Second)[0]
	rec := e.waitCallback(id, 10*time.Second)
	if d.event.State != "failed" || d.event.ErrorCode == "" || d.event.ErrorCode != rec.ErrorCode || rec.CallbackStatus != jobs.CallbackDelivered {
		t.Errorf("event %+v, record %s %s callback %q", d.event, rec.State, rec.ErrorCode, rec.CallbackStatus)
	}
}

// TestLostCallbackTaskIsRecovered: an ended job whose callback task was
// lost (as a Redis failover could lose it) is in the set of callbacks
// due, and the stranded-job reconciler enqueues its task again; a
// finished delivery leaves the set.
func TestLostCallbackTaskIsRecovered(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	var up atomic.Bool
	rcv := newReceiver(t, func(_ int, w http.ResponseWriter) int {
		if up.Load() {
			return http.StatusOK
		}
		w.Header().Set("Retry-After", "3600")
		return http.StatusServiceUnavailable
	})
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, DefaultCallbackURL: rcv.URL})
	id, err := producer.Submit(t.Context(), tasks.Request{JobID: "lost-cb", Video: e.request("lost-cb")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := callbackConfig("s3cret")
	cfg.Callback.MaxDelay = time.Hour
	cfg.StrandedGrace = time.Nanosecond
	cfg.StrandedCheckInterval = -1 // driven by hand below
	stop := e.startWorker(cfg, nil)
	rcv.waitFor(t, 1, 20*time.Second)
	stop()
	due := func() []string {
		ids, err := e.rdb.SMembers(t.Context(), "videoworker:callbacks_due").Result()
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := due(); len(got) != 1 || got[0] != "lost-cb" {
		t.Fatalf("callbacks due %v, want [lost-cb]", got)
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	if err := insp.DeleteTask(tasks.QueuePoll, tasks.CallbackTaskID("lost-cb:stored:0")); err != nil {
		t.Fatalf("delete the callback task (waiting an hour in the retry set): %v", err)
	}
	up.Store(true)
	w := e.newWorker(cfg, nil)
	if n, err := w.RecoverStranded(t.Context()); err != nil || n != 1 {
		t.Fatalf("RecoverStranded = %d, %v; want the callback task re-enqueued", n, err)
	}
	e.startWorker(cfg, nil)
	rec := e.waitCallback(id, 20*time.Second)
	if rec.CallbackStatus != jobs.CallbackDelivered || rec.CallbackAttempts != 2 {
		t.Errorf("callback %q after %d attempts, want delivered at the second", rec.CallbackStatus, rec.CallbackAttempts)
	}
	if got := due(); len(got) != 0 {
		t.Errorf("callbacks due %v after the delivery, want none", got)
	}
}

// TestCallbackOfCancelledJob: a cancelled job's callback goes once the
// cancel step has recorded the API's answer.
func TestCallbackOfCancelledJob(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	rcv := newReceiver(t, func(int, http.ResponseWriter) int { return http.StatusOK })
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, DefaultCallbackURL: rcv.URL})
	id, err := producer.Submit(t.Context(), tasks.Request{JobID: "cancel-cb", Video: e.request("cancel-cb")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := producer.Cancel(t.Context(), id, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	e.startWorker(callbackConfig("s3cret"), nil)
	d := rcv.waitFor(t, 1, 20*time.Second)[0]
	rec := e.waitCallback(id, 10*time.Second)
	if d.event.State != "cancelled" || d.event.ID != "cancel-cb:cancelled:0" || rec.CancelOutcome == "" || rec.CallbackStatus != jobs.CallbackDelivered {
		t.Errorf("event %+v; record cancel outcome %q, callback %q", d.event, rec.CancelOutcome, rec.CallbackStatus)
	}
}

// TestCallbackRefusedByTheWorkersPolicy: a URL the producer accepted but
// the worker's policy refuses (loopback, here) fails the delivery at once
// without a request; the job keeps its state.
func TestCallbackRefusedByTheWorkersPolicy(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	rcv := newReceiver(t, func(int, http.ResponseWriter) int { return http.StatusOK })
	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{CallbackPolicy: loopback, DefaultCallbackURL: strings.Replace(rcv.URL, "127.0.0.1", "localhost", 1)})
	id, err := producer.Submit(t.Context(), tasks.Request{JobID: "refused-cb", Video: e.request("refused-cb")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := callbackConfig("s3cret")
	cfg.Callback.Policy = callback.Policy{}
	e.startWorker(cfg, nil)
	rec := e.waitCallback(id, 20*time.Second)
	if rec.State != jobs.StateStored || rec.CallbackStatus != jobs.CallbackFailed || rec.CallbackAttempts != 1 || !strings.Contains(rec.CallbackLastError, "not allowed") {
		t.Errorf("record %s, callback %q after %d attempts (%s); want stored, failed at once", rec.State, rec.CallbackStatus, rec.CallbackAttempts, rec.CallbackLastError)
	}
	if n := len(rcv.deliveries()); n != 0 {
		t.Errorf("the receiver got %d requests", n)
	}
}
