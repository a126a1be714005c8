package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
)

var redisSrv *redistest.Server

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook tests need a real Redis:", err)
		os.Exit(1)
	}
	redisSrv = srv
	code := m.Run()
	stop()
	os.Exit(code)
}

// The worked example of the reference (section 7) verifies.
func TestReferenceExample(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":"evt_video_G-abc123_video_completed","type":"video.completed","created_at":1781712000,"data":{"id":"G-abc123","object":"video","status":"completed"}}`)
	const want = "0f4507e68d77d129cbf162d0010710a299ebd516411190610cc1e62fb5953df2"
	if got := webhook.Sign([]byte("whsec_your_signing_secret"), "1781712000", body); got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	v, err := webhook.NewVerifier([]string{"whsec_your_signing_secret"}, 0, func() time.Time { return time.Unix(1781712000+60, 0) })
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("x-ai-stats-timestamp", "1781712000")
	h.Set("x-ai-stats-signature", want)
	if err := v.Verify(webhook.ReadHeaders(h), body); err != nil {
		t.Fatalf("reference example does not verify: %v", err)
	}
	body[len(body)-3] = 'X'
	if err := v.Verify(webhook.ReadHeaders(h), body); !errors.Is(err, webhook.ErrBadSignature) {
		t.Fatalf("tampered body: %v, want ErrBadSignature", err)
	}
}

const (
	secret    = "whsec_current_secret_0123456789"
	oldSecret = "whsec_previous_secret_987654321"
)

type fixture struct {
	t     *testing.T
	rdb   *redis.Client
	jobs  *jobs.Store
	srv   *httptest.Server
	insp  *asynq.Inspector
	h     *webhook.Handler
	clock *clock
	jobID string
	video string
}

// setup makes a job that owns a video, and a receiver accepting secrets.
func setup(t *testing.T, secrets ...string) *fixture {
	t.Helper()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	store := jobs.NewStore(rdb, "")
	v, err := webhook.NewVerifier(secrets, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	aq := asynq.NewClientFromRedisClient(rdb)
	h := webhook.NewHandler(v, store, aq, nil)
	c := &clock{}
	// The start of a check interval, ahead of the real time so that a
	// check scheduled for the next interval is in the future.
	c.Set(time.Now().Add(time.Hour).Truncate(webhook.CheckInterval))
	h.SetClock(c.Now)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f := &fixture{t: t, rdb: rdb, jobs: store, srv: srv, insp: asynq.NewInspectorFromRedisClient(rdb), h: h, clock: c, jobID: "job-1", video: "G-video1"}
	f.makeJob(f.jobID, f.video)
	return f
}

func (f *fixture) makeJob(id, video string) {
	f.t.Helper()
	ctx := context.Background()
	if _, _, err := f.jobs.Create(ctx, &jobs.Record{ID: id, Request: apiclient.CreateRequest{Model: "m", Prompt: "p"}}); err != nil {
		f.t.Fatal(err)
	}
	if video == "" {
		return
	}
	if _, err := f.jobs.Claim(ctx, video, id); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.jobs.Apply(ctx, id, jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: video, jobs.FieldPollSeq: 1}}); err != nil {
		f.t.Fatal(err)
	}
}

// clock is the receiver's settable clock (status check intervals); the
// signatures' timestamps use the real time.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func payload(video, event, key string) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": "evt_video_" + video + "_" + strings.ReplaceAll(key, ".", "_"), "type": event, "created_at": time.Now().Unix(),
		"delivery": map[string]any{"key": key, "attempt": 1, "max_attempts": 4},
		"data":     map[string]any{"id": video, "object": "video", "status": "completed"},
	})
	return b
}

type delivery struct {
	method, contentType, prefix, secret, query string
	ts                                         int64
	body                                       []byte
	key                                        string
	noSig                                      bool
	// header overrides or adds headers (unsigned, as anyone can).
	header map[string]string
}

func (f *fixture) send(d delivery) (int, string) {
	f.t.Helper()
	if d.method == "" {
		d.method = http.MethodPost
	}
	if d.contentType == "" {
		d.contentType = "application/json"
	}
	if d.prefix == "" {
		d.prefix = "x-ai-stats-"
	}
	if d.secret == "" {
		d.secret = secret
	}
	if d.ts == 0 {
		d.ts = time.Now().Unix()
	}
	if d.key == "" {
		d.key = "video.completed"
	}
	if d.body == nil {
		d.body = payload(f.video, "video.completed", d.key)
	}
	if d.query == "" {
		d.query = "?job_id=" + f.jobID
	}
	req, err := http.NewRequest(d.method, f.srv.URL+webhook.Path+d.query, bytes.NewReader(d.body))
	if err != nil {
		f.t.Fatal(err)
	}
	ts := strconv.FormatInt(d.ts, 10)
	req.Header.Set("Content-Type", d.contentType)
	if !d.noSig {
		req.Header.Set(d.prefix+"timestamp", ts)
		req.Header.Set(d.prefix+"signature", webhook.Sign([]byte(d.secret), ts, d.body))
	}
	req.Header.Set(d.prefix+"delivery-key", d.key)
	req.Header.Set(d.prefix+"event-type", "video.completed")
	req.Header.Set(d.prefix+"attempt", "1")
	for k, v := range d.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ Status, Reason string }
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r.Status + ": " + r.Reason
}

// snapshot is what a delivery may change: the record (minus its webhook
// counters and update time) and the checks queued.
func (f *fixture) snapshot(id string) (jobs.Record, int) {
	f.t.Helper()
	r, err := f.jobs.Get(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	r.UpdatedAt = time.Time{}
	return *r, f.checks()
}

func (f *fixture) checks() int {
	f.t.Helper()
	info, err := f.insp.GetQueueInfo(tasks.QueuePoll)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return 0 // nothing was ever enqueued
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return info.Pending
}

func TestAcceptedDeliveryChecksTheJobOnce(t *testing.T) {
	t.Parallel()
	for _, prefix := range webhook.HeaderPrefixes {
		t.Run(prefix, func(t *testing.T) {
			t.Parallel()
			f := setup(t, secret)
			if code, msg := f.send(delivery{prefix: prefix}); code != http.StatusOK {
				t.Fatalf("genuine delivery: %d %s", code, msg)
			}
			r, checks := f.snapshot(f.jobID)
			if checks != 1 || r.WebhookDeliveries != 1 || r.LastWebhookEvent != "video.completed" || r.LastWebhookAttempt != 1 || r.LastWebhookAt.IsZero() {
				t.Errorf("after one delivery: checks %d, record %+v", checks, r)
			}
			ti, err := f.insp.GetTaskInfo(tasks.QueuePoll, webhook.CheckTaskID(f.jobID, f.clock.Now()))
			if err != nil {
				t.Fatalf("status check task: %v", err)
			}
			p, err := tasks.Decode[tasks.PollPayload](ti.Payload)
			if err != nil || p.Seq != 0 {
				t.Errorf("the check must be out of chain (seq 0): %+v %v", p, err)
			}
			// The replay is acknowledged and changes nothing but the
			// duplicate counter.
			before, _ := f.snapshot(f.jobID)
			if code, msg := f.send(delivery{prefix: prefix}); code != http.StatusOK || !strings.HasPrefix(msg, "duplicate") {
				t.Fatalf("replayed delivery: %d %s", code, msg)
			}
			after, checks := f.snapshot(f.jobID)
			if checks != 1 || after.WebhookDuplicates != 1 {
				t.Errorf("replay: checks %d, duplicates %d", checks, after.WebhookDuplicates)
			}
			after.WebhookDuplicates = 0
			if d := cmp.Diff(before, after); d != "" {
				t.Errorf("replay changed the job (-before +after):\n%s", d)
			}
		})
	}
}

func TestRejectedDeliveriesChangeNothing(t *testing.T) {
	t.Parallel()
	big := append([]byte(`{"id":"x","data":{"id":"G-video1"},"pad":"`), bytes.Repeat([]byte("a"), webhook.MaxBody)...)
	big = append(big, `"}`...)
	cases := []struct {
		name string
		d    delivery
		want int
	}{
		{"forged signature", delivery{secret: "whsec_attacker_guess_000000000"}, http.StatusUnauthorized},
		{"stale timestamp", delivery{ts: time.Now().Add(-2 * time.Minute).Unix()}, http.StatusUnauthorized},
		{"future timestamp", delivery{ts: time.Now().Add(2 * time.Minute).Unix()}, http.StatusUnauthorized},
		{"missing headers", delivery{noSig: true}, http.StatusBadRequest},
		{"oversized body", delivery{body: big}, http.StatusRequestEntityTooLarge},
		{"malformed JSON", delivery{body: []byte(`{"id":`)}, http.StatusBadRequest},
		{"not a video event", delivery{body: []byte(`{"id":"evt","type":"video.completed","data":{}}`)}, http.StatusBadRequest},
		{"wrong method", delivery{method: http.MethodPut}, http.StatusMethodNotAllowed},
		{"wrong content type", delivery{contentType: "text/plain"}, http.StatusUnsupportedMediaType},
		{"unknown job", delivery{query: "?job_id=nobody", body: payload("G-unowned", "video.completed", "video.completed")}, http.StatusNotFound},
		{"another job's video", delivery{query: "?job_id=nobody"}, http.StatusConflict},
		{"bad job id", delivery{query: "?job_id=../../etc"}, http.StatusBadRequest},
		{"old secret after rotation", delivery{secret: oldSecret}, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, secret)
			before, beforeChecks := f.snapshot(f.jobID)
			code, msg := f.send(tc.d)
			if code != tc.want {
				t.Errorf("status %d (%s), want %d", code, msg, tc.want)
			}
			if !strings.HasPrefix(msg, "rejected: ") || len(msg) < len("rejected: x") {
				t.Errorf("answer %q lacks a reason", msg)
			}
			after, afterChecks := f.snapshot(f.jobID)
			if d := cmp.Diff(before, after); d != "" || afterChecks != beforeChecks {
				t.Errorf("rejected delivery changed the job (checks %d→%d):\n%s", beforeChecks, afterChecks, d)
			}
			if err := f.h.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			stats, err := f.jobs.WebhookStats(context.Background())
			if err != nil || stats["last_rejection"] == "" {
				t.Errorf("rejection not counted fleet-wide: %v %v", stats, err)
			}
		})
	}
}

func TestSecretRotation(t *testing.T) {
	t.Parallel()
	f := setup(t, secret, oldSecret)
	for i, s := range []string{secret, oldSecret} {
		key := fmt.Sprintf("video.status_changed:%d", i)
		if code, msg := f.send(delivery{secret: s, key: key, body: payload(f.video, "video.status_changed", key)}); code != http.StatusOK {
			t.Errorf("secret %d during rotation: %d %s", i+1, code, msg)
		}
	}
}

// A genuine delivery replayed against another job's URL is refused: the
// signed body names a video that job does not own.
func TestReplayAgainstAnotherJob(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	f.makeJob("job-2", "G-video2")
	before, checks := f.snapshot("job-2")
	if code, msg := f.send(delivery{query: "?job_id=job-2"}); code != http.StatusConflict {
		t.Errorf("replay to another job: %d %s, want 409", code, msg)
	}
	after, checks2 := f.snapshot("job-2")
	if d := cmp.Diff(before, after); d != "" || checks != checks2 {
		t.Errorf("job-2 changed:\n%s", d)
	}
}

// A job whose create answer is not saved yet: the delivery is acknowledged
// (202) and recorded on the job as early, so that the create step checks
// the job's status as soon as it saves the video id. It queues no check
// itself (there is no video to check) and moves nothing. A replay is a
// duplicate, before and after the id is saved.
func TestEarlyDelivery(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	f.makeJob("job-early", "")
	before, checks := f.snapshot("job-early")
	early := delivery{query: "?job_id=job-early", body: payload("G-not-yet-saved", "video.completed", "video.completed")}
	if code, msg := f.send(early); code != http.StatusAccepted || !strings.HasPrefix(msg, "early") {
		t.Errorf("early delivery: %d %s, want 202 early", code, msg)
	}
	after, checks2 := f.snapshot("job-early")
	if checks != checks2 {
		t.Errorf("early delivery queued %d checks", checks2-checks)
	}
	if after.EarlyWebhookAt.IsZero() || after.EarlyWebhookEvent != "video.completed" || after.EarlyWebhookKey != "video.completed" ||
		after.EarlyWebhookVideo != "G-not-yet-saved" || after.WebhookDeliveries != 1 || after.LastWebhookAt.IsZero() {
		t.Errorf("early delivery not recorded: %+v", after)
	}
	// Nothing else: not the state, not the video id.
	after.EarlyWebhookAt, after.EarlyWebhookEvent, after.EarlyWebhookKey, after.EarlyWebhookVideo = time.Time{}, "", "", ""
	after.WebhookDeliveries, after.LastWebhookAt, after.LastWebhookEvent, after.LastWebhookAttempt = 0, time.Time{}, "", 0
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("early delivery changed the job beyond recording it:\n%s", d)
	}
	hist, err := f.jobs.Events(context.Background(), "job-early", 0)
	if err != nil || hist[len(hist)-1].Event != "webhook_early" {
		t.Errorf("history %+v %v, want a webhook_early line", hist, err)
	}

	if code, msg := f.send(early); code != http.StatusOK || !strings.HasPrefix(msg, "duplicate") {
		t.Errorf("replayed early delivery: %d %s, want 200 duplicate", code, msg)
	}
	// The create step saves the id (and, seeing the early delivery, checks
	// the job). The same delivery replayed now changes nothing either.
	if _, err := f.jobs.Claim(context.Background(), "G-not-yet-saved", "job-early"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.jobs.Apply(context.Background(), "job-early", jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: "G-not-yet-saved", jobs.FieldPollSeq: 1}}); err != nil {
		t.Fatal(err)
	}
	if code, msg := f.send(early); code != http.StatusOK || !strings.HasPrefix(msg, "duplicate") {
		t.Errorf("early delivery replayed after the save: %d %s, want 200 duplicate", code, msg)
	}
	r, checks3 := f.snapshot("job-early")
	if checks3 != checks || r.WebhookDeliveries != 1 || r.WebhookDuplicates != 2 {
		t.Errorf("after replays: checks %d (want %d), deliveries %d, duplicates %d", checks3, checks, r.WebhookDeliveries, r.WebhookDuplicates)
	}
	// Another event of the job now takes the usual path.
	key := "video.status_changed"
	if code, msg := f.send(delivery{query: "?job_id=job-early", key: key, body: payload("G-not-yet-saved", key, key)}); code != http.StatusOK || !strings.HasPrefix(msg, "accepted") {
		t.Errorf("a later event: %d %s, want 200 accepted", code, msg)
	}
	if _, n := f.snapshot("job-early"); n != checks+1 {
		t.Errorf("a later event queued %d checks, want 1", n-checks)
	}
}

// Early deliveries that call for no check, or reach a job that has ended,
// are acknowledged (202) and change nothing, as before.
func TestEarlyDeliveryIgnored(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	f.makeJob("job-progress", "")
	f.makeJob("job-ended", "")
	if _, err := f.jobs.Apply(context.Background(), "job-ended", jobs.Change{To: jobs.StateFailed}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ job, event string }{{"job-progress", "video.progress"}, {"job-ended", "video.completed"}} {
		before, checks := f.snapshot(tc.job)
		key := tc.event
		if code, msg := f.send(delivery{query: "?job_id=" + tc.job, key: key, body: payload("G-unsaved", tc.event, key)}); code != http.StatusAccepted || !strings.HasPrefix(msg, "ignored") {
			t.Errorf("%s %s: %d %s, want 202 ignored", tc.job, tc.event, code, msg)
		}
		after, checks2 := f.snapshot(tc.job)
		if d := cmp.Diff(before, after); d != "" || checks != checks2 {
			t.Errorf("%s: changed the job:\n%s", tc.job, d)
		}
	}
}

// The receiver read the job without a video id, but the create step saved
// the id before the receiver's conditional update: the delivery takes the
// usual path (checked against the saved id, a status check queued), and
// nothing is recorded as early.
func TestEarlyDeliveryRacesTheSave(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	f.makeJob("job-race", "")
	save := func(video string) func() {
		return func() {
			if _, err := f.jobs.Claim(context.Background(), video, "job-race"); err != nil {
				t.Error(err)
			}
			if _, err := f.jobs.Apply(context.Background(), "job-race", jobs.Change{To: jobs.StateGenerating,
				Set: map[string]any{jobs.FieldVideoID: video, jobs.FieldPollSeq: 1}, IfEqual: map[string]any{jobs.FieldVideoID: ""}}); err != nil {
				t.Error(err)
			}
		}
	}
	f.h.SetBeforeEarly(save("G-race"))
	if code, msg := f.send(delivery{query: "?job_id=job-race", body: payload("G-race", "video.completed", "video.completed")}); code != http.StatusOK || !strings.HasPrefix(msg, "accepted") {
		t.Fatalf("delivery racing the save: %d %s, want 200 accepted", code, msg)
	}
	r, checks := f.snapshot("job-race")
	if checks != 1 || r.WebhookDeliveries != 1 || !r.EarlyWebhookAt.IsZero() {
		t.Errorf("after the race: checks %d, deliveries %d, early at %v; want 1, 1, zero", checks, r.WebhookDeliveries, r.EarlyWebhookAt)
	}
	if _, err := f.insp.GetTaskInfo(tasks.QueuePoll, webhook.CheckTaskID("job-race", f.clock.Now())); err != nil {
		t.Errorf("status check task: %v", err)
	}

	// The same race, but the event names another video than the one saved:
	// refused as a mismatch, nothing changed.
	f.makeJob("job-race2", "")
	f.h.SetBeforeEarly(func() {
		if _, err := f.jobs.Apply(context.Background(), "job-race2", jobs.Change{To: jobs.StateGenerating,
			Set: map[string]any{jobs.FieldVideoID: "G-mine", jobs.FieldPollSeq: 1}}); err != nil {
			t.Error(err)
		}
	})
	if code, msg := f.send(delivery{query: "?job_id=job-race2", body: payload("G-someone-elses", "video.completed", "video.completed")}); code != http.StatusConflict {
		t.Errorf("mismatched delivery racing the save: %d %s, want 409", code, msg)
	}
	if r, _ := f.snapshot("job-race2"); r.WebhookDeliveries != 0 || !r.EarlyWebhookAt.IsZero() {
		t.Errorf("mismatched delivery changed the job: %+v", r)
	}
}

// A genuine delivery about another video, replayed to the URL of a job
// that has no video id yet, is recorded as early (the receiver cannot tell
// yet); it does not make the job's own delivery with the same key a
// duplicate once the id is saved, and it queues nothing by itself.
func TestEarlyDeliveryForAnotherVideo(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	f.makeJob("job-victim", "")
	if code, msg := f.send(delivery{query: "?job_id=job-victim", body: payload("G-stranger", "video.completed", "video.completed")}); code != http.StatusAccepted {
		t.Fatalf("replayed stranger's delivery: %d %s", code, msg)
	}
	if n := f.checks(); n != 0 {
		t.Errorf("%d checks queued by an early delivery", n)
	}
	if _, err := f.jobs.Apply(context.Background(), "job-victim", jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: "G-victim", jobs.FieldPollSeq: 1}}); err != nil {
		t.Fatal(err)
	}
	if code, msg := f.send(delivery{query: "?job_id=job-victim", body: payload("G-victim", "video.completed", "video.completed")}); code != http.StatusOK || !strings.HasPrefix(msg, "accepted") {
		t.Errorf("the job's own delivery: %d %s, want 200 accepted", code, msg)
	}
	if n := f.checks(); n != 1 {
		t.Errorf("%d checks after the job's own delivery, want 1", n)
	}
	// The stranger's delivery again, now that the id is saved: a mismatch.
	if code, msg := f.send(delivery{query: "?job_id=job-victim", body: payload("G-stranger", "video.completed", "video.completed")}); code != http.StatusConflict {
		t.Errorf("stranger's delivery after the save: %d %s, want 409", code, msg)
	}
	if r, _ := f.snapshot("job-victim"); r.State != jobs.StateGenerating || r.VideoID != "G-victim" {
		t.Errorf("job moved: %s %s", r.State, r.VideoID)
	}
}

// Progress ticks are recorded but trigger no status check.
func TestProgressIsRecordedWithoutACheck(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	key := "video.progress:50"
	if code, msg := f.send(delivery{key: key, body: payload(f.video, "video.progress", key)}); code != http.StatusOK {
		t.Fatalf("%d %s", code, msg)
	}
	r, checks := f.snapshot(f.jobID)
	if checks != 0 || r.WebhookDeliveries != 1 {
		t.Errorf("progress: checks %d deliveries %d; want 0 and 1", checks, r.WebhookDeliveries)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("1781712000", "0f4507e68d77d129cbf162d0010710a299ebd516411190610cc1e62fb5953df2", []byte(`{}`))
	f.Add("", "", []byte(nil))
	f.Add("abc", "zz", []byte(`{"id":1}`))
	v, _ := webhook.NewVerifier([]string{"whsec_your_signing_secret"}, time.Hour, func() time.Time { return time.Unix(1781712000, 0) })
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		err := v.Verify(webhook.Headers{Timestamp: ts, Signature: sig}, body)
		if err == nil && sig != webhook.Sign([]byte("whsec_your_signing_secret"), ts, body) {
			t.Fatalf("accepted a signature that is not the HMAC: ts=%q sig=%q", ts, sig)
		}
	})
}
