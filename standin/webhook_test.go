package standin_test

import (
	"bufio"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/videoworker/videoworker/standin"
)

const hookSecret = "whsec_standin_test"

// hookReq is one webhook request as a receiver saw it.
type hookReq struct {
	header  http.Header
	body    []byte
	at      time.Time // real time of arrival
	payload struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		CreatedAt int64  `json:"created_at"`
		Delivery  struct {
			Key         string `json:"key"`
			Attempt     int    `json:"attempt"`
			MaxAttempts int    `json:"max_attempts"`
		} `json:"delivery"`
		Data map[string]any `json:"data"`
	}
	sigOK bool // signature verifies with hookSecret
}

func (h hookReq) key() string {
	return h.header.Get("x-ai-stats-delivery-key") + h.header.Get("x-phaseo-delivery-key")
}

// receiver is a webhook endpoint that records every request. answer picks
// the status of the n-th request (0-based); nil answers 200 when the
// signature verifies and 401 otherwise.
type receiver struct {
	ts     *httptest.Server
	answer func(n int, r hookReq) int
	mu     sync.Mutex
	reqs   []hookReq
	notify chan struct{}
}

func newReceiver(t *testing.T, answer func(n int, r hookReq) int) *receiver {
	t.Helper()
	rc := &receiver{answer: answer, notify: make(chan struct{}, 1)}
	rc.ts = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.ts.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := hookReq{header: r.Header.Clone(), body: body, at: time.Now()}
	_ = json.Unmarshal(body, &h.payload)
	ts := r.Header.Get("x-ai-stats-timestamp") + r.Header.Get("x-phaseo-timestamp")
	sig := r.Header.Get("x-ai-stats-signature") + r.Header.Get("x-phaseo-signature")
	h.sigOK = hmac.Equal([]byte(sig), []byte(standin.Sign(hookSecret, ts, body)))
	rc.mu.Lock()
	n := len(rc.reqs)
	rc.reqs = append(rc.reqs, h)
	rc.mu.Unlock()
	select {
	case rc.notify <- struct{}{}:
	default:
	}
	status := http.StatusUnauthorized
	switch {
	case rc.answer != nil:
		status = rc.answer(n, h)
	case h.sigOK:
		status = http.StatusOK
	}
	w.WriteHeader(status)
}

func (rc *receiver) all() []hookReq {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

// wait returns the requests once there are at least n, failing the test
// after timeout.
func (rc *receiver) wait(t *testing.T, n int, timeout time.Duration) []hookReq {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if got := rc.all(); len(got) >= n {
			return got
		}
		select {
		case <-rc.notify:
		case <-deadline.C:
			t.Fatalf("receiver got %d requests after %v, want %d", len(rc.all()), timeout, n)
		}
	}
}

func keys(reqs []hookReq) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.key())
	}
	return out
}

// hookSetup is setup plus a receiver and Close on cleanup.
func hookSetup(t *testing.T, cfg standin.Config, answer func(int, hookReq) int) (*bundle, *receiver) {
	t.Helper()
	b := setup(t, cfg)
	t.Cleanup(b.srv.Close)
	return b, newReceiver(t, answer)
}

// hookJob creates a job whose webhook points at rc with hookSecret.
func (b *bundle) hookJob(t *testing.T, rc *receiver, events ...string) string {
	t.Helper()
	hook := map[string]any{"url": rc.ts.URL + "/hook", "secret": hookSecret}
	if events != nil {
		hook["events"] = events
	}
	return b.create(t, map[string]any{"webhook": hook})["id"].(string)
}

func TestSignWorkedExample(t *testing.T) {
	t.Parallel()
	body := `{"id":"evt_video_G-abc123_video_completed","type":"video.completed","created_at":1781712000,"data":{"id":"G-abc123","object":"video","status":"completed"}}`
	if len(body) != 155 {
		t.Fatalf("body is %d bytes, the reference says 155", len(body))
	}
	got := standin.Sign("whsec_your_signing_secret", "1781712000", []byte(body))
	if want := "0f4507e68d77d129cbf162d0010710a299ebd516411190610cc1e62fb5953df2"; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestWebhookRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix, ua string
	}{
		{"", "AI-Stats-Async-Webhook/1.0"},
		{standin.HeaderPrefixPhaseo, "Phaseo-Async-Webhook/1.0"},
	} {
		t.Run(tc.ua, func(t *testing.T) {
			t.Parallel()
			b, rc := hookSetup(t, standin.Config{QueuedFor: time.Second, ProcessingFor: 10 * time.Second, HeaderPrefix: tc.prefix}, nil)
			id := b.hookJob(t, rc, "job.created", "job.completed")
			if n := b.srv.DeliverDue(t.Context()); n != 1 {
				t.Fatalf("DeliverDue at creation = %d, want 1 (video.created)", n)
			}
			b.clock.Advance(10 * time.Second)
			if n := b.srv.DeliverDue(t.Context()); n != 0 {
				t.Errorf("DeliverDue while processing = %d, want 0", n)
			}
			b.clock.Advance(time.Second)
			if n := b.srv.DeliverDue(t.Context()); n != 1 {
				t.Fatalf("DeliverDue at completion = %d, want 1", n)
			}
			reqs := rc.all()
			if got := keys(reqs); !slices.Equal(got, []string{"video.created", "video.completed"}) {
				t.Fatalf("delivery keys = %v", got)
			}
			p := tc.prefix
			if p == "" {
				p = standin.HeaderPrefixAIStats
			}
			for i, phase := range []string{"created", "completed"} {
				r := reqs[i]
				h := r.header
				ts := epoch.Unix() + int64(11*i)
				wantHeaders := map[string]string{
					"Content-Type":     "application/json",
					"User-Agent":       tc.ua,
					p + "timestamp":    strconv.FormatInt(ts, 10),
					p + "event-id":     "evt_video_" + id + "_video_" + phase,
					p + "event-type":   "video." + phase,
					p + "delivery-key": "video." + phase,
					p + "attempt":      "1",
					p + "max-attempts": "4",
					p + "signature":    standin.Sign(hookSecret, strconv.FormatInt(ts, 10), r.body),
					"Authorization":    "",
				}
				for k, v := range wantHeaders {
					if got := h.Get(k); got != v {
						t.Errorf("%s: header %s = %q, want %q", phase, k, got, v)
					}
				}
				if !r.sigOK {
					t.Errorf("%s: signature does not verify", phase)
				}
				want(t, "payload.id", r.payload.ID, "evt_video_"+id+"_video_"+phase)
				want(t, "payload.type", r.payload.Type, "video."+phase)
				want(t, "payload.created_at", r.payload.CreatedAt, ts)
				want(t, "delivery.key", r.payload.Delivery.Key, "video."+phase)
				want(t, "delivery.attempt", r.payload.Delivery.Attempt, 1)
				want(t, "delivery.max_attempts", r.payload.Delivery.MaxAttempts, 4)
				want(t, "data.id", r.payload.Data["id"], id)
				want(t, "data.object", r.payload.Data["object"], "video")
				want(t, "data.kind", r.payload.Data["kind"], "video")
				want(t, "data.polling_url", r.payload.Data["polling_url"], b.ts.URL+"/v1/videos/"+id)
				wantDeep(t, "data.webhook", r.payload.Data["webhook"], map[string]any{
					"url": rc.ts.URL + "/hook", "has_secret": true, "events": []any{"video.created", "video.completed"}})
				if strings.Contains(string(r.body), hookSecret) {
					t.Error("payload contains the secret")
				}
			}
			created, completed := reqs[0].payload.Data, reqs[1].payload.Data
			want(t, "created: data.status", created["status"], "queued")
			if v, ok := created["download_url"]; !ok || v != nil {
				t.Errorf("created: download_url = %v (present %v), want null", v, ok)
			}
			want(t, "completed: data.status", completed["status"], "completed")
			if dl, _ := completed["download_url"].(string); !strings.HasPrefix(dl, b.ts.URL+"/v1/videos/"+id+"/content?download_token=") {
				t.Errorf("completed: download_url = %q", dl)
			}
			want(t, "completed: expires_at", completed["expires_at"], float64(epoch.Add(11*time.Second+900*time.Second).Unix()))
			sum, _ := b.srv.ContentSHA256(id, 0)
			want(t, "completed: asset.sha256", at(completed, "asset", "sha256"), sum)

			// The job records both deliveries.
			v := b.get(t, id)
			want(t, "delivery.total_attempts", at(v, "webhook", "delivery", "total_attempts"), 2.0)
			wantDeep(t, "delivery.delivered_event_types", at(v, "webhook", "delivery", "delivered_event_types"),
				[]any{"video.completed", "video.created"})
			want(t, "delivery.last_attempt_status", at(v, "webhook", "delivery", "last_attempt_status"), "delivered")
			want(t, "delivery.last_response_status", at(v, "webhook", "delivery", "last_response_status"), 200.0)
			want(t, "attempts[1].event_id", at(v, "webhook", "attempts", 1, "event_id"), "evt_video_"+id+"_video_completed")
			want(t, "attempts[1].delivered_at", at(v, "webhook", "attempts", 1, "delivered_at"), "2026-06-10T20:00:11.123Z")
			if val, ok := v["next_webhook_retry_at"]; !ok || val != nil {
				t.Errorf("next_webhook_retry_at = %v (present %v), want null", val, ok)
			}
			want(t, "last_webhook_dispatched_at", v["last_webhook_dispatched_at"], "2026-06-10T20:00:11.123Z")

			st := b.srv.Stats().Webhooks
			want(t, "Attempts", st.Attempts, 2)
			want(t, "Delivered", st.Delivered, 2)
			want(t, "Pending", st.Pending, 0)
			wantDeep(t, "Events", st.Events, map[string]int{"video.created": 1, "video.completed": 1})
			wantDeep(t, "DeliveredEvents", st.DeliveredEvents, map[string]int{"video.created": 1, "video.completed": 1})
			if info, _ := b.srv.Job(id); !info.CompletedAt.Equal(epoch.Add(11 * time.Second)) {
				t.Errorf("JobInfo.CompletedAt = %v", info.CompletedAt)
			}
		})
	}
}

// TestWebhookRetrySchedule fails every attempt and walks a fake clock
// through the documented schedule.
func TestWebhookRetrySchedule(t *testing.T) {
	t.Parallel()
	b, rc := hookSetup(t, standin.Config{}, func(int, hookReq) int { return http.StatusInternalServerError })
	id := b.hookJob(t, rc) // completed at once; default events
	var retryAt []string
	for i, wait := range []time.Duration{0, time.Minute, 5 * time.Minute, 15 * time.Minute} {
		if wait > 0 {
			b.clock.Advance(wait - time.Second)
			if n := b.srv.DeliverDue(t.Context()); n != 0 {
				t.Fatalf("attempt %d: %d attempts 1 s early", i+1, n)
			}
			b.clock.Advance(time.Second)
		}
		if n := b.srv.DeliverDue(t.Context()); n != 1 {
			t.Fatalf("attempt %d: DeliverDue = %d, want 1", i+1, n)
		}
		v := b.get(t, id)
		status := "scheduled_retry"
		if i == 3 {
			status = "failed_permanently"
		}
		want(t, "attempt status", at(v, "webhook", "attempts", i, "status"), status)
		want(t, "response_status", at(v, "webhook", "attempts", i, "response_status"), 500.0)
		want(t, "error_message", at(v, "webhook", "attempts", i, "error_message"), "Webhook returned HTTP 500")
		next, _ := v["next_webhook_retry_at"].(string)
		retryAt = append(retryAt, next)
	}
	wantDeep(t, "next_webhook_retry_at after each attempt", retryAt, []string{
		"2026-06-10T20:01:00.123Z", "2026-06-10T20:06:00.123Z", "2026-06-10T20:21:00.123Z", ""})
	b.clock.Advance(time.Hour)
	if n := b.srv.DeliverDue(t.Context()); n != 0 {
		t.Errorf("%d attempts after the last", n)
	}
	reqs := rc.all()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	for i, r := range reqs {
		want(t, "event id", r.header.Get("x-ai-stats-event-id"), "evt_video_"+id+"_video_completed")
		want(t, "payload id", r.payload.ID, "evt_video_"+id+"_video_completed")
		want(t, "attempt header", r.header.Get("x-ai-stats-attempt"), strconv.Itoa(i+1))
		want(t, "payload attempt", r.payload.Delivery.Attempt, i+1)
		want(t, "created_at (stable)", r.payload.CreatedAt, epoch.Unix())
		if !r.sigOK {
			t.Errorf("attempt %d: bad signature", i+1)
		}
	}
	want(t, "timestamp of attempt 4", reqs[3].header.Get("x-ai-stats-timestamp"), strconv.FormatInt(epoch.Add(21*time.Minute).Unix(), 10))
	v := b.get(t, id)
	want(t, "pending_retries", at(v, "webhook", "delivery", "pending_retries"), 0.0)
	want(t, "delivered_events", at(v, "webhook", "delivery", "delivered_events"), 0.0)
	st := b.srv.Stats().Webhooks
	if diff := cmp.Diff(standin.WebhookStats{
		Events: map[string]int{"video.completed": 1}, DeliveredEvents: map[string]int{},
		Attempts: 4, Failed: 4, Retried: 3, FailedPermanently: 1,
	}, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// TestWebhookRetryBackground runs the scaled schedule on the real clock
// with the background loop.
func TestWebhookRetryBackground(t *testing.T) {
	t.Parallel()
	b := &bundle{}
	rc := newReceiver(t, func(n int, _ hookReq) int {
		if n < 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	b.srv = standin.New(standin.Config{APIKey: testKey, WebhookTimeScale: 0.001}, nil)
	b.ts = newServer(t, b.srv)
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	id := b.hookJob(t, rc)
	reqs := rc.wait(t, 4, 5*time.Second)
	for i, d := range []time.Duration{60, 300, 900} {
		gap := reqs[i+1].at.Sub(reqs[i].at)
		t.Logf("gap before attempt %d: %v (scheduled %v)", i+2, gap, d*time.Millisecond)
		if gap < d*time.Millisecond || gap > d*time.Millisecond+750*time.Millisecond {
			t.Errorf("gap before attempt %d = %v, want about %v", i+2, gap, d*time.Millisecond)
		}
	}
	if got := keys(reqs); !slices.Equal(got, []string{"video.completed", "video.completed", "video.completed", "video.completed"}) {
		t.Errorf("keys = %v", got)
	}
	waitFor(t, func() bool { return b.srv.Stats().Webhooks.Pending == 0 })
	want(t, "last_attempt_status", at(b.get(t, id), "webhook", "delivery", "last_attempt_status"), "delivered")
	if st := b.srv.Stats().Webhooks; st.Delivered != 1 || st.Failed != 3 || st.Retried != 3 {
		t.Errorf("stats = %+v", st)
	}
}

// waitFor polls cond until it holds, failing after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 5 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestWebhookFailureKinds(t *testing.T) {
	t.Parallel()
	t.Run("redirect", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		followed := 0
		mux := http.NewServeMux()
		mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/moved", http.StatusTemporaryRedirect)
		})
		mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			followed++
			mu.Unlock()
		})
		hook := newServer(t, mux)
		b := setup(t, standin.Config{})
		t.Cleanup(b.srv.Close)
		id := b.create(t, map[string]any{"webhook": map[string]any{"url": hook.URL + "/hook", "secret": hookSecret}})["id"].(string)
		if n := b.srv.DeliverDue(t.Context()); n != 1 {
			t.Fatalf("DeliverDue = %d", n)
		}
		mu.Lock()
		if followed != 0 {
			t.Error("the redirect was followed")
		}
		mu.Unlock()
		v := b.get(t, id)
		want(t, "status", at(v, "webhook", "attempts", 0, "status"), "scheduled_retry")
		want(t, "response_status", at(v, "webhook", "attempts", 0, "response_status"), 307.0)
		want(t, "error_message", at(v, "webhook", "attempts", 0, "error_message"), "Webhook redirects are not allowed")
	})
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		dead := httptest.NewServer(http.NotFoundHandler())
		url := dead.URL
		dead.Close()
		b := setup(t, standin.Config{})
		t.Cleanup(b.srv.Close)
		id := b.create(t, map[string]any{"webhook": map[string]any{"url": url, "secret": hookSecret}})["id"].(string)
		b.srv.DeliverDue(t.Context())
		v := b.get(t, id)
		want(t, "status", at(v, "webhook", "attempts", 0, "status"), "scheduled_retry")
		if _, ok := at(v, "webhook", "attempts", 0, "response_status").(float64); ok {
			t.Error("response_status set without a response")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		b := setup(t, standin.Config{WebhookTimeScale: 0.001})
		t.Cleanup(b.srv.Close)
		slow := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // so that net/http notices the hang-up
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}))
		id := b.create(t, map[string]any{"webhook": map[string]any{"url": slow.URL, "secret": hookSecret}})["id"].(string)
		start := time.Now()
		b.srv.DeliverDue(t.Context())
		took := time.Since(start)
		if took < time.Second || took > 5*time.Second {
			t.Errorf("timed out after %v, want the 1 s floor", took)
		}
		want(t, "error_message", at(b.get(t, id), "webhook", "attempts", 0, "error_message"), "Webhook request timed out after 1000ms")
	})
}

func TestWebhookNoSecret(t *testing.T) {
	t.Parallel()
	b, rc := hookSetup(t, standin.Config{}, nil)
	b.srv.Start()
	id := b.create(t, map[string]any{"webhook": map[string]any{"url": rc.ts.URL, "events": []string{"job.created", "job.completed"}}})["id"].(string)
	if n := b.srv.DeliverDue(t.Context()); n != 0 {
		t.Errorf("DeliverDue = %d", n)
	}
	// A later job with a secret: once its event arrives, the loop has
	// long passed the first job.
	signed := b.hookJob(t, rc)
	reqs := rc.wait(t, 1, 5*time.Second)
	if len(reqs) != 1 || reqs[0].payload.Data["id"] != signed {
		t.Errorf("%d deliveries; want only the signed job's", len(reqs))
	}
	v := b.get(t, id)
	want(t, "has_secret", at(v, "webhook", "has_secret"), false)
	if d := at(v, "webhook", "delivery"); d != nil {
		t.Errorf("delivery = %v", d)
	}
	if st := b.srv.Stats().Webhooks; st.NoSecret != 1 || st.Events["video.created"] != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestWebhookWireHeaders reads the raw request: header names go out in
// lowercase, as the gateway (Node fetch) sends them.
func TestWebhookWireHeaders(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw := make(chan string, 1)
	go func() { // ends when the connection is answered or the listener closes
		conn, err := ln.Accept()
		if err != nil {
			raw <- ""
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(conn, &headBuf{ch: raw})))
		if err == nil {
			_, _ = io.Copy(io.Discard, req.Body)
		}
		_, _ = conn.Write([]byte("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
	}()
	b := setup(t, standin.Config{})
	t.Cleanup(b.srv.Close)
	b.create(t, map[string]any{"webhook": map[string]any{"url": "http://" + ln.Addr().String() + "/hook", "secret": hookSecret}})
	if n := b.srv.DeliverDue(t.Context()); n != 1 {
		t.Fatalf("DeliverDue = %d", n)
	}
	head := <-raw
	for _, name := range []string{"timestamp", "signature", "event-id", "event-type", "delivery-key", "attempt", "max-attempts"} {
		if !strings.Contains(head, "\r\nx-ai-stats-"+name+": ") {
			t.Errorf("no lowercase x-ai-stats-%s line in\n%s", name, head)
		}
	}
	if !strings.HasPrefix(head, "POST /hook HTTP/1.1\r\n") {
		t.Errorf("request line: %q", head[:min(len(head), 40)])
	}
}

// headBuf collects bytes until the end of the header block, then sends
// them on ch once.
type headBuf struct {
	buf  []byte
	ch   chan<- string
	sent bool
}

func (h *headBuf) Write(p []byte) (int, error) {
	if !h.sent {
		h.buf = append(h.buf, p...)
		if i := strings.Index(string(h.buf), "\r\n\r\n"); i >= 0 {
			h.ch <- string(h.buf[:i+2])
			h.sent = true
		}
	}
	return len(p), nil
}

// TestWebhookProgress steps a fake clock second by second through a job
// that subscribes to progress and one that does not.
func TestWebhookProgress(t *testing.T) {
	t.Parallel()
	b, rc := hookSetup(t, standin.Config{QueuedFor: 10 * time.Second, ProcessingFor: 100 * time.Second}, nil)
	a := b.hookJob(t, rc, "job.progress", "video.completed", "status_changed")
	plain := b.hookJob(t, rc)
	for range 120 {
		b.srv.DeliverDue(t.Context())
		b.clock.Advance(time.Second)
	}
	var gotA, gotPlain []string
	for _, r := range rc.all() {
		if !r.sigOK {
			t.Errorf("%s: bad signature", r.key())
		}
		switch r.payload.Data["id"] {
		case a:
			gotA = append(gotA, r.key())
			if r.payload.Type == "video.progress" {
				bucket, _ := strconv.Atoi(strings.TrimPrefix(r.key(), "video.progress:"))
				want(t, r.key()+" data.progress", r.payload.Data["progress"], float64(bucket))
				want(t, r.key()+" data.status", r.payload.Data["status"], "processing")
				want(t, r.key()+" id", r.payload.ID, "evt_video_"+a+"_video_progress_"+strconv.Itoa(bucket))
			}
		case plain:
			gotPlain = append(gotPlain, r.key())
		}
	}
	wantA := []string{"video.status_changed:processing"}
	for _, bk := range []int{5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95} {
		wantA = append(wantA, "video.progress:"+strconv.Itoa(bk))
	}
	wantA = append(wantA, "video.status_changed:completed", "video.completed")
	if diff := cmp.Diff(wantA, gotA); diff != "" {
		t.Errorf("progress subscriber (-want +got):\n%s", diff)
	}
	wantDeep(t, "default subscriber", gotPlain, []string{"video.completed"})
	v := b.get(t, a)
	want(t, "last_webhook_progress", v["last_webhook_progress"], 95.0)
	want(t, "delivered_events", at(v, "webhook", "delivery", "delivered_events"), 14.0)
	if n := len(at(v, "webhook", "attempts").([]any)); n != 10 {
		t.Errorf("%d attempts shown, want the last 10", n)
	}
	want(t, "attempts[9].delivery_key", at(v, "webhook", "attempts", 9, "delivery_key"), "video.completed")
}

func TestWebhookFaults(t *testing.T) {
	t.Parallel()
	t.Run("wrong secret", func(t *testing.T) {
		t.Parallel()
		b, rc := hookSetup(t, standin.Config{WebhookFaults: standin.WebhookFaults{WrongSecretRate: 1}}, nil)
		id := b.hookJob(t, rc)
		b.srv.DeliverDue(t.Context())
		b.srv.SetWebhookFaults(standin.WebhookFaults{})
		b.clock.Advance(time.Minute)
		b.srv.DeliverDue(t.Context())
		reqs := rc.all()
		if len(reqs) != 2 || reqs[0].sigOK || !reqs[1].sigOK {
			t.Fatalf("requests %d; want a bad then a good signature", len(reqs))
		}
		want(t, "rejected", at(b.get(t, id), "webhook", "attempts", 0, "response_status"), 401.0)
		if st := b.srv.Stats().Webhooks; st.WrongSignature != 1 || st.Failed != 1 || st.Delivered != 1 || st.Pending != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
	t.Run("drop", func(t *testing.T) {
		t.Parallel()
		b, rc := hookSetup(t, standin.Config{WebhookFaults: standin.WebhookFaults{DropRate: 1}}, nil)
		id := b.hookJob(t, rc)
		if n := b.srv.DeliverDue(t.Context()); n != 1 {
			t.Errorf("DeliverDue = %d", n)
		}
		b.clock.Advance(time.Hour)
		b.srv.DeliverDue(t.Context())
		if n := len(rc.all()); n != 0 {
			t.Errorf("%d requests, want none", n)
		}
		v := b.get(t, id)
		want(t, "recorded as", at(v, "webhook", "attempts", 0, "status"), "delivered")
		want(t, "pending_retries", at(v, "webhook", "delivery", "pending_retries"), 0.0)
		if st := b.srv.Stats().Webhooks; st.Dropped != 1 || st.Attempts != 1 || st.Delivered != 0 || st.Retried != 0 || st.Pending != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		t.Parallel()
		b, rc := hookSetup(t, standin.Config{WebhookFaults: standin.WebhookFaults{DuplicateRate: 1}}, nil)
		id := b.hookJob(t, rc)
		b.srv.DeliverDue(t.Context())
		reqs := rc.all()
		if len(reqs) != 2 {
			t.Fatalf("%d requests, want 2", len(reqs))
		}
		if diff := cmp.Diff(reqs[0].header, reqs[1].header); diff != "" || string(reqs[0].body) != string(reqs[1].body) {
			t.Errorf("copies differ: %s", diff)
		}
		want(t, "event id", reqs[1].header.Get("x-ai-stats-event-id"), "evt_video_"+id+"_video_completed")
		if st := b.srv.Stats().Webhooks; st.Duplicated != 1 || st.Attempts != 1 || st.Delivered != 1 {
			t.Errorf("stats = %+v", st)
		}
	})
	t.Run("out of order", func(t *testing.T) {
		t.Parallel()
		b, rc := hookSetup(t, standin.Config{ProcessingFor: 100 * time.Second,
			WebhookFaults: standin.WebhookFaults{OutOfOrderRate: 1}}, nil)
		b.hookJob(t, rc, "job.progress", "job.completed")
		b.clock.Advance(50 * time.Second)
		if n := b.srv.DeliverDue(t.Context()); n != 0 {
			t.Errorf("progress:50 was not held back (%d attempts)", n)
		}
		b.clock.Advance(50 * time.Second)
		b.srv.DeliverDue(t.Context())
		wantDeep(t, "order", keys(rc.all()), []string{"video.completed", "video.progress:50"})
		if st := b.srv.Stats().Webhooks; st.Reordered != 1 || st.Delivered != 2 || st.Pending != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
	t.Run("latency", func(t *testing.T) {
		t.Parallel()
		b, rc := hookSetup(t, standin.Config{WebhookFaults: standin.WebhookFaults{Latency: 100 * time.Millisecond}}, nil)
		b.hookJob(t, rc)
		start := time.Now()
		b.srv.DeliverDue(t.Context())
		if took := time.Since(start); took < 100*time.Millisecond {
			t.Errorf("delivered after %v, want at least the 100 ms latency", took)
		}
		if n := len(rc.all()); n != 1 {
			t.Errorf("%d requests", n)
		}
	})
	t.Run("rates", func(t *testing.T) {
		t.Parallel()
		b, rc := hookSetup(t, standin.Config{Seed: 3, WebhookFaults: standin.WebhookFaults{DuplicateRate: 0.5}},
			func(int, hookReq) int { return http.StatusOK })
		for range 200 {
			b.hookJob(t, rc)
		}
		b.srv.DeliverDue(t.Context())
		st := b.srv.Stats().Webhooks
		if st.Duplicated < 70 || st.Duplicated > 130 {
			t.Errorf("%d duplicates of 200 at rate 0.5", st.Duplicated)
		}
		want(t, "requests", len(rc.all()), 200+st.Duplicated)
	})
}

func TestWebhookHoldAndComplete(t *testing.T) {
	t.Parallel()
	b, rc := hookSetup(t, standin.Config{ProcessingFor: 10 * time.Second}, nil)
	a := b.hookJob(t, rc)
	forced := b.hookJob(t, rc)
	b.srv.Hold(true)
	b.clock.Advance(time.Hour)
	if n := b.srv.DeliverDue(t.Context()); n != 0 {
		t.Errorf("%d attempts during the hold", n)
	}
	b.complete(t, forced)
	b.srv.DeliverDue(t.Context())
	if got := rc.all(); len(got) != 1 || got[0].payload.Data["id"] != forced {
		t.Fatalf("after Complete during the hold: %d requests", len(got))
	}
	b.srv.Hold(false)
	b.clock.Advance(10*time.Second - time.Millisecond)
	if n := b.srv.DeliverDue(t.Context()); n != 0 {
		t.Errorf("%d attempts before the held job's remaining time", n)
	}
	b.clock.Advance(time.Millisecond)
	b.srv.DeliverDue(t.Context())
	if got := rc.all(); len(got) != 2 || got[1].payload.Data["id"] != a {
		t.Fatalf("after the release: %d requests", len(got))
	}
}

// TestWebhookPromptness measures, on the real clock with the background
// loop, how long after the transition an event arrives. Not parallel: the
// parallel tests (TestWebhookScale above all) would compete for the CPU.
// The bounds are loose because the machine may be shared; the log shows
// the real lag.
func TestWebhookPromptness(t *testing.T) {
	rc := newReceiver(t, nil)
	srv := standin.New(standin.Config{APIKey: testKey, ProcessingFor: 100 * time.Millisecond}, nil)
	b := &bundle{srv: srv, ts: newServer(t, srv)}
	srv.Start()
	t.Cleanup(srv.Close)
	const n = 9
	for i := range n {
		b.hookJob(t, rc)
		if i%3 == 2 {
			time.Sleep(20 * time.Millisecond) // spread the completions
		}
	}
	var lags []time.Duration
	for _, r := range rc.wait(t, n, 5*time.Second) {
		info, _ := srv.Job(r.payload.Data["id"].(string))
		lag := r.at.Sub(info.CompletedAt)
		if lag < 0 {
			t.Errorf("delivered %v before completion", -lag)
		}
		lags = append(lags, lag)
	}
	slices.Sort(lags)
	t.Logf("completion -> receipt: median %v, worst %v", lags[n/2], lags[n-1])
	// Typically 1 to 5 ms. On an overloaded machine the kernel alone can
	// wake a sleeping process 100 ms late, hence the loose bounds.
	if lags[n/2] > 150*time.Millisecond || lags[n-1] > time.Second {
		t.Errorf("completion -> receipt: median %v, worst %v; want a few ms", lags[n/2], lags[n-1])
	}

	long := b.hookJob(t, rc) // processing for 100 ms: complete it now
	start := time.Now()
	b.complete(t, long)
	r := rc.wait(t, n+1, 5*time.Second)[n]
	t.Logf("Complete -> receipt: %v", r.at.Sub(start))
	if r.payload.Data["id"] != long || r.at.Sub(start) > 250*time.Millisecond {
		t.Errorf("Complete -> receipt took %v", r.at.Sub(start))
	}
}

// TestWebhookCloseNoLeak is not parallel: goleak compares the goroutines
// with those before it, and parallel tests are paused meanwhile.
func TestWebhookCloseNoLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rc := &receiver{notify: make(chan struct{}, 1)}
	rc.ts = httptest.NewServer(http.HandlerFunc(rc.serve))
	defer rc.ts.Close()
	srv := standin.New(standin.Config{APIKey: testKey, ProcessingFor: 20 * time.Millisecond,
		WebhookFaults: standin.WebhookFaults{Latency: 10 * time.Millisecond}}, nil)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	b := &bundle{srv: srv, ts: ts}
	srv.Start()
	srv.Start() // idempotent
	for range 20 {
		b.hookJob(t, rc, "job.created", "job.progress", "job.completed")
	}
	rc.wait(t, 20, 5*time.Second)
	srv.Close()
	srv.Close() // idempotent
	srv.Start() // restarts
	srv.Close()
}
