package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
)

const webhookSecret = "whsec_pages_test_0123456789"

type pagesFixture struct {
	*fixture
	insp *asynq.Inspector
	// client never follows redirects.
	client *http.Client
}

// setupPages serves everything: job API, dashboard, monitoring and the
// webhook receiver (with a secret), on a Redis database of its own.
func setupPages(t *testing.T, tune ...func(redis.UniversalClient, *server.Deps)) *pagesFixture {
	t.Helper()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	auth, err := server.NewAuth(apiToken, viewer+":"+viewPass+":viewer,"+opUser+":"+opPass+":operator")
	if err != nil {
		t.Fatal(err)
	}
	disk, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := jobs.NewStore(rdb, "")
	v, err := webhook.NewVerifier([]string{webhookSecret}, 5*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	producer := tasks.NewClient(rdb, tasks.ClientOptions{})
	deps := server.Deps{Redis: rdb, Store: disk, Producer: producer, Auth: auth, Jobs: store,
		Monitoring: true, Webhooks: webhook.NewHandler(v, store, asynq.NewClientFromRedisClient(rdb), nil)}
	for _, f := range tune {
		f(rdb, &deps)
	}
	srv := httptest.NewServer(server.New(deps))
	t.Cleanup(srv.Close)
	return &pagesFixture{
		fixture: &fixture{t: t, srv: srv, producer: producer, store: store},
		insp:    asynq.NewInspectorFromRedisClient(rdb),
		client:  &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// do makes a browser-like request (same-origin for writes unless hdr says
// otherwise) and returns the answer with its body read.
func (f *pagesFixture) do(method, path string, c creds, hdr ...string) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Origin", f.srv.URL)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c(req)
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (f *pagesFixture) submit(id string, video apiclient.CreateRequest) {
	f.t.Helper()
	if _, err := f.producer.Submit(f.t.Context(), tasks.Request{JobID: tasks.JobID(id), Video: video}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *pagesFixture) move(id string, to jobs.State, set map[string]any) {
	f.t.Helper()
	out, err := f.store.Apply(f.t.Context(), id, jobs.Change{To: to, Set: set, Event: "test", Detail: "moved to " + string(to)})
	if err != nil || !out.Applied {
		f.t.Fatalf("move %s to %s: %v %+v", id, to, err, out)
	}
}

func (f *pagesFixture) state(id string) jobs.State {
	f.t.Helper()
	rec, err := f.producer.Status(f.t.Context(), tasks.JobID(id))
	if err != nil {
		f.t.Fatal(err)
	}
	return rec.State
}

const failMsg = "the model refused: <b>unsafe</b> prompt"

// seed stores jobs in most states, webhook deliveries and fleet-wide
// webhook counters, and returns each job's state.
func (f *pagesFixture) seed() map[string]jobs.State {
	t := f.t
	ctx := t.Context()
	for _, id := range []string{"q1", "g1", "s1", "f1", "t1", "c1"} {
		f.submit(id, reqOf("google/veo-3.1-lite", "prompt of "+id))
	}
	f.submit("x1", reqOf("openai/sora-2", `<script>alert("x1")</script>`))
	f.move("g1", jobs.StateGenerating, map[string]any{jobs.FieldVideoID: "vid_g1", jobs.FieldAPIStatus: "processing", jobs.FieldProgress: 40, jobs.FieldPollSeq: 3, jobs.FieldPolls: 3})
	f.move("s1", jobs.StateStored, map[string]any{jobs.FieldVideoID: "vid_s1", jobs.FieldAPIStatus: "completed", jobs.FieldPolls: 7,
		jobs.FieldLocation: "file:///srv/videos/s1.mp4", jobs.FieldBytes: 1234,
		jobs.FieldCompletedAt: time.Now().Add(-150 * time.Millisecond), jobs.FieldStoredAt: time.Now()})
	f.move("f1", jobs.StateFailed, map[string]any{jobs.FieldVideoID: "vid_f1", jobs.FieldErrorCode: "generation_failed", jobs.FieldError: failMsg,
		jobs.FieldFailedStep: "generation", jobs.FieldPolls: 2, jobs.FieldEstimatedCost: apiclient.Cost{Micros: 400_000, Known: true},
		jobs.FieldSettledCost: apiclient.Cost{Known: true}, jobs.FieldBillingState: "void"})
	f.move("t1", jobs.StateTimedOut, map[string]any{jobs.FieldErrorCode: "deadline_exceeded", jobs.FieldError: "deadline passed", jobs.FieldFailedStep: "poll"})
	if _, err := f.producer.Cancel(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	for _, d := range []jobs.WebhookDelivery{{Key: "k1", EventType: "video.progress", Attempt: 1}, {Key: "k2", EventType: "video.completed", Attempt: 2}, {Key: "k2", EventType: "video.completed", Attempt: 2}} {
		if _, err := f.store.RecordWebhook(ctx, "s1", d); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range []struct{ outcome, reason string }{{"accepted", ""}, {"accepted", ""}, {"duplicate", ""}, {"bad_signature", "webhook signature does not verify"}} {
		if err := f.store.CountWebhookOutcome(ctx, o.outcome, o.reason); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]jobs.State{"q1": jobs.StateQueued, "x1": jobs.StateQueued, "g1": jobs.StateGenerating, "s1": jobs.StateStored,
		"f1": jobs.StateFailed, "t1": jobs.StateTimedOut, "c1": jobs.StateCancelled}
}

func checkPageHeaders(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	h := resp.Header
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: CSP %q lacks %q", what, csp, want)
		}
	}
	if strings.Contains(csp, "script-src") || strings.Contains(csp, "unsafe") {
		t.Errorf("%s: CSP allows scripts or unsafe sources: %q", what, csp)
	}
	for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", what, k, got, want)
		}
	}
}

func TestDashboardShowsJobsStatesFailuresAndWebhooks(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	want := f.seed()

	resp, body := f.do("GET", "/", basic(viewer, viewPass))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard: %d\n%s", resp.StatusCode, body)
	}
	checkPageHeaders(t, "dashboard", resp)
	for id, st := range want {
		if !strings.Contains(body, fmt.Sprintf(`data-job-id="%s" data-state="%s"`, id, st)) {
			t.Errorf("dashboard lacks job %s in state %s", id, st)
		}
	}
	counts := map[jobs.State]int{}
	for _, st := range want {
		counts[st]++
	}
	for _, st := range jobs.AllStates {
		if !strings.Contains(body, fmt.Sprintf(`data-state="%s" data-count="%d"`, st, counts[st])) {
			t.Errorf("dashboard: count of %s is not %d", st, counts[st])
		}
	}
	for _, s := range []string{
		"the model refused: &lt;b&gt;unsafe&lt;/b&gt; prompt", "generation_failed", "deadline_exceeded", // failures, escaped
		"file:///srv/videos/s1.mp4",                        // storage location
		"bad_signature: webhook signature does not verify", // last rejection
		"video.completed #2",                               // per job: last event and attempt
		"poll:g1:3",                                        // the in-flight job's task id
		`href="/monitoring/queues/video_poll?status=scheduled"`,
		`href="/jobs/f1"`,
		`<meta http-equiv="refresh" content="5">`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("dashboard lacks %q", s)
		}
	}
	if strings.Contains(body, "<b>unsafe</b>") {
		t.Error("dashboard does not escape an error message")
	}
	for outcome, n := range map[string]int{"accepted": 2, "duplicate": 1, "bad_signature": 1, "bad_timestamp": 0} {
		re := regexp.MustCompile(fmt.Sprintf(`data-outcome="%s"><th>%s</th><td class="[^"]*">%d</td>`, outcome, outcome, n))
		if !re.MatchString(body) {
			t.Errorf("webhook counter %s is not %d", outcome, n)
		}
	}
	// s1: two deliveries, one duplicate.
	if !regexp.MustCompile(`data-job-id="s1"[\s\S]*?<td>2 <span class="muted">\+1 dup</span>`).MatchString(body) {
		t.Error("dashboard does not show s1's deliveries and duplicates")
	}
	// The charts: jobs finished in the last hour by state, the stored
	// job's times, the in-flight job's progress; webhook deliveries once
	// a second read of the counters gives a difference.
	for chart, want := range map[string][]string{
		"chart-finished": {`data-series="stored" data-n="1"`, `data-series="failed" data-n="1"`, `data-series="timed_out" data-n="1"`,
			`data-series="cancelled" data-n="1"`, "4 jobs ended in the last hour: 1 stored, 1 failed, 1 timed_out, 1 cancelled."},
		"chart-completion": {`<title>100ms–200ms: 1 jobs</title>`, "1 job: p50 1"},
		"chart-submit":     {`data-n="1"`},
	} {
		fig := figure(body, chart)
		for _, s := range append(want, `aria-labelledby="`+chart+`-t `+chart+`-d"`) {
			if !strings.Contains(fig, s) {
				t.Errorf("chart %s lacks %q:\n%s", chart, s, fig)
			}
		}
	}
	if fig := figure(body, "chart-webhooks"); !strings.Contains(fig, "Collecting") {
		t.Errorf("the webhook chart is not collecting on its first read:\n%s", fig)
	}
	if !regexp.MustCompile(`data-job-id="g1"[\s\S]*?<progress max="100" value="40"`).MatchString(body) {
		t.Error("the in-flight job g1 has no progress bar at 40%")
	}
	for _, o := range []string{"accepted", "accepted", "accepted", "bad_timestamp"} {
		if err := f.store.CountWebhookOutcome(t.Context(), o, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, paused := f.do("GET", "/?refresh=off", basic(viewer, viewPass))
	if strings.Contains(paused, `http-equiv="refresh"`) {
		t.Error("refresh=off still reloads")
	}
	if fig := figure(paused, "chart-webhooks"); !strings.Contains(fig, `data-series="accepted" data-n="3"`) ||
		!strings.Contains(fig, `data-series="bad_timestamp" data-n="1"`) || !strings.Contains(fig, "4 deliveries in the minutes observed: 3 accepted, 1 bad_timestamp.") {
		t.Errorf("the webhook chart does not show the deliveries between two reads:\n%s", fig)
	}
	// The stylesheet is served; nothing else lives under /assets.
	if resp, _ := f.do("GET", "/assets/pages.css", none); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// figure returns the chart with the given id from a page.
func figure(page, id string) string {
	_, fig, ok := strings.Cut(page, `<figure class="chart" id="`+id+`">`)
	if !ok {
		return ""
	}
	fig, _, _ = strings.Cut(fig, "</figure>")
	return fig
}

func TestJobPage(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	f.seed()

	resp, body := f.do("GET", "/jobs/f1", basic(viewer, viewPass))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job page: %d\n%s", resp.StatusCode, body)
	}
	checkPageHeaders(t, "job page", resp)
	for _, s := range []string{
		`data-state="failed"`, "the model refused: &lt;b&gt;unsafe&lt;/b&gt; prompt", "generation_failed",
		`data-field="video_id"><th>video_id</th><td>vid_f1</td>`, `data-field="failed_step"`, `data-field="submitted_at"`,
		`<th>estimated_cost_usd</th><td>0.40</td>`, `<th>settled_cost_usd</th><td>0.00</td>`, `<th>billing_state</th><td>void</td>`,
		`&#34;model&#34;: &#34;google/veo-3.1-lite&#34;`, // the request
		"submitted", "moved to failed", // history
		`data-task-id="create:f1"`, `href="/monitoring/queues/video_create/tasks/create:f1"`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("job page lacks %q", s)
		}
	}
	if strings.Contains(body, "<form") {
		t.Error("a viewer sees action buttons")
	}
	if strings.Contains(body, `data-task-id="download:f1"`) {
		t.Error("a job whose generation failed lists a download task")
	}
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("a finished job's page reloads itself")
	}

	if _, body := f.do("GET", "/jobs/s1", basic(viewer, viewPass)); !strings.Contains(body, `data-task-id="download:s1"`) || !strings.Contains(body, "file:///srv/videos/s1.mp4") {
		t.Error("a stored job's page lacks its download task or location")
	}
	_, body = f.do("GET", "/jobs/x1", basic(viewer, viewPass))
	if !strings.Contains(body, `&#34;prompt&#34;: &#34;&lt;script&gt;alert(\&#34;x1\&#34;)&lt;/script&gt;&#34;`) || strings.Contains(body, "<script>") {
		t.Errorf("the prompt is not shown escaped:\n%s", body)
	}

	_, body = f.do("GET", "/jobs/f1", basic(opUser, opPass))
	if !strings.Contains(body, `action="/jobs/f1/retry"`) || strings.Contains(body, `action="/jobs/f1/cancel"`) {
		t.Error("an operator should see Retry (and no Cancel) on a failed job")
	}
	_, body = f.do("GET", "/jobs/g1", basic(opUser, opPass))
	if !strings.Contains(body, `action="/jobs/g1/cancel"`) || strings.Contains(body, `action="/jobs/g1/retry"`) {
		t.Error("an operator should see Cancel (and no Retry) on a running job")
	}
	if !strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("a running job's page does not reload itself")
	}
	for _, path := range []string{"/jobs/nope", "/jobs/a%2Fb", "/jobs/" + strings.Repeat("x", 200)} {
		if resp, _ := f.do("GET", path, basic(viewer, viewPass)); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestPagesAuthAndActions(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	f.seed()

	for _, path := range []string{"/", "/jobs/g1", "/monitoring/"} {
		resp, _ := f.do("GET", path, none)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET %s without credentials: %d %q, want 401 with a Basic challenge", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if resp, _ := f.do("GET", path, basic(viewer, "wrong-password")); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password: %d", path, resp.StatusCode)
		}
	}
	if resp, _ := f.do("POST", "/jobs/g1/cancel", none); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST cancel without credentials: %d", resp.StatusCode)
	}

	// Viewers read but never act.
	for _, path := range []string{"/jobs/g1/cancel", "/jobs/f1/retry"} {
		if resp, _ := f.do("POST", path, basic(viewer, viewPass)); resp.StatusCode != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d, want 403", path, resp.StatusCode)
		}
	}
	if f.state("g1") != jobs.StateGenerating || f.state("f1") != jobs.StateFailed {
		t.Fatal("a viewer's refused POST changed a job")
	}

	// Operators act; each action redirects back to the job's page.
	resp, _ := f.do("POST", "/jobs/g1/cancel", basic(opUser, opPass))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/g1?result=cancelled" {
		t.Fatalf("operator cancel: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	rec, _ := f.producer.Status(t.Context(), "g1")
	if rec.State != jobs.StateCancelled || !strings.Contains(rec.Error, opUser) {
		t.Errorf("after cancel: state %s, error %q", rec.State, rec.Error)
	}
	_, body := f.do("GET", resp.Header.Get("Location"), basic(opUser, opPass))
	if !strings.Contains(body, `id="result">Cancelled.`) || strings.Contains(body, `action="/jobs/g1/cancel"`) {
		t.Error("the page after cancel does not say so, or still offers Cancel")
	}

	resp, _ = f.do("POST", "/jobs/f1/retry", basic(opUser, opPass))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/f1?result=retried" {
		t.Fatalf("operator retry: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	rec, _ = f.producer.Status(t.Context(), "f1")
	if rec.State != jobs.StateQueued || rec.Retries != 1 || rec.ErrorCode != "" {
		t.Errorf("after retry: state %s, retries %d, error %q", rec.State, rec.Retries, rec.ErrorCode)
	}

	// Actions that do not apply say so and change nothing.
	resp, _ = f.do("POST", "/jobs/s1/retry", basic(opUser, opPass))
	if resp.Header.Get("Location") != "/jobs/s1?result=not_retryable" || f.state("s1") != jobs.StateStored {
		t.Errorf("retry of a stored job: %q, state %s", resp.Header.Get("Location"), f.state("s1"))
	}
	resp, _ = f.do("POST", "/jobs/s1/cancel", basic(opUser, opPass))
	if resp.Header.Get("Location") != "/jobs/s1?result=not_cancellable" {
		t.Errorf("cancel of a stored job: %q", resp.Header.Get("Location"))
	}
	_, body = f.do("GET", "/jobs/s1?result=not_cancellable", basic(opUser, opPass))
	if !strings.Contains(body, "Not cancelled: the job had already ended.") {
		t.Error("the not-cancellable message is missing")
	}
	if resp, _ := f.do("POST", "/jobs/nope/cancel", basic(opUser, opPass)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("cancel of an unknown job: %d", resp.StatusCode)
	}
	if resp, _ := f.do("GET", "/jobs/g1/cancel", basic(opUser, opPass)); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET on an action: %d, want 405", resp.StatusCode)
	}
}

func TestPagesRefuseCrossOriginWrites(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	f.seed()
	cases := []struct {
		name string
		path string
		hdr  []string
	}{
		{"cancel, cross-site fetch metadata", "/jobs/g1/cancel", []string{"Sec-Fetch-Site", "cross-site"}},
		{"retry, foreign Origin (older browser)", "/jobs/f1/retry", []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}},
		{"job API cancel", "/v1/jobs/q1/cancel", []string{"Sec-Fetch-Site", "cross-site"}},
		{"asynqmon pause", "/monitoring/api/queues/video_create:pause", []string{"Sec-Fetch-Site", "same-site"}},
	}
	for _, tc := range cases {
		resp, body := f.do("POST", tc.path, basic(opUser, opPass), tc.hdr...)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "cross-origin") {
			t.Errorf("%s: %d %s, want 403", tc.name, resp.StatusCode, body)
		}
	}
	if f.state("g1") != jobs.StateGenerating || f.state("f1") != jobs.StateFailed || f.state("q1") != jobs.StateQueued {
		t.Error("a refused cross-origin request changed a job")
	}
	if qi, err := f.insp.GetQueueInfo(tasks.QueueCreate); err != nil || qi.Paused {
		t.Errorf("a refused cross-origin request paused the queue: %v", err)
	}
	// Non-browser clients (no fetch metadata, no Origin) are unaffected.
	if code, _, raw := f.call("POST", "/v1/jobs/q1/cancel", nil, bearer(apiToken)); code != http.StatusOK {
		t.Errorf("API client cancel: %d %s", code, raw)
	}
}

func TestMonitoringReadOnlyForViewers(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	f.seed() // puts create tasks in video_create

	resp, body := f.do("GET", "/monitoring/", basic(viewer, viewPass))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Asynq - Monitoring") {
		t.Fatalf("viewer /monitoring/: %d\n%.300s", resp.StatusCode, body)
	}
	if !strings.Contains(body, `window.FLAG_READ_ONLY="true"`) {
		t.Errorf("viewers do not get the read-only UI:\n%.1500s", body)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("monitoring headers: %v", resp.Header)
	}
	if _, body := f.do("GET", "/monitoring/", basic(opUser, opPass)); !strings.Contains(body, `window.FLAG_READ_ONLY="false"`) {
		t.Error("operators get the read-only UI")
	}
	if resp, body := f.do("GET", "/monitoring/api/queues", basic(viewer, viewPass)); resp.StatusCode != 200 || !strings.Contains(body, tasks.QueueCreate) {
		t.Errorf("viewer reads queues: %d %.300s", resp.StatusCode, body)
	}
	if resp, body := f.do("GET", "/monitoring/api/queues/video_create/pending_tasks", basic(viewer, viewPass)); resp.StatusCode != 200 || !strings.Contains(body, "create:q1") {
		t.Errorf("viewer lists pending tasks: %d %.300s", resp.StatusCode, body)
	}
	if resp, _ := f.do("GET", "/monitoring/static/media/logo-color.c2b0c1f3.svg", basic(viewer, viewPass)); resp.Header.Get("Content-Type") != "image/svg+xml" {
		t.Errorf("logo served as %q", resp.Header.Get("Content-Type"))
	}

	// Writes through asynqmon's API: refused for viewers, done for operators.
	writes := []struct{ method, path string }{
		{"POST", "/monitoring/api/queues/video_create:pause"},
		{"DELETE", "/monitoring/api/queues/video_create/pending_tasks/create:q1"},
		{"POST", "/monitoring/api/queues/video_create/pending_tasks/create:x1:archive"},
	}
	for _, w := range writes {
		if resp, body := f.do(w.method, w.path, basic(viewer, viewPass)); resp.StatusCode != http.StatusForbidden {
			t.Errorf("viewer %s %s: %d %s, want 403", w.method, w.path, resp.StatusCode, body)
		}
	}
	qi, err := f.insp.GetQueueInfo(tasks.QueueCreate)
	if err != nil || qi.Paused || qi.Pending != 7 || qi.Archived != 0 {
		t.Fatalf("viewers' refused writes changed the queue: %+v %v", qi, err)
	}
	for _, w := range writes {
		if resp, body := f.do(w.method, w.path, basic(opUser, opPass)); resp.StatusCode >= 300 {
			t.Errorf("operator %s %s: %d %s", w.method, w.path, resp.StatusCode, body)
		}
	}
	qi, err = f.insp.GetQueueInfo(tasks.QueueCreate)
	if err != nil || !qi.Paused || qi.Pending != 5 || qi.Archived != 1 {
		t.Errorf("operators' writes did not apply: %+v %v", qi, err)
	}
}

// TestPagesShowNoSecret renders every page and asynqmon's answers with
// secrets configured everywhere they can be (API token, passwords, the
// webhook secret, and a webhook secret and URL credentials inside a job's
// request) and looks for each of them.
func TestPagesShowNoSecret(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	f.seed()
	const recSecret, urlPass, urlToken = "whsec_in_the_record_987654", "url-password-555", "query-token-777"
	rec := &jobs.Record{ID: "hooked", Request: apiclient.CreateRequest{Model: "m", Prompt: "p",
		Webhook: &apiclient.WebhookSubscription{URL: "https://hook:" + urlPass + "@hooks.example/in?token=" + urlToken, Secret: recSecret}}}
	if _, _, err := f.store.Create(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	// A delivery signed with another secret: counted as a rejection.
	req, _ := http.NewRequest("POST", f.srv.URL+webhook.Path, bytes.NewReader([]byte(`{"type":"video.completed","data":{"id":"vid"}}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-ai-stats-timestamp", fmt.Sprint(time.Now().Unix()))
	req.Header.Set("x-ai-stats-signature", "sha256="+strings.Repeat("ab", 32))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	var pages []string
	for _, who := range []creds{basic(viewer, viewPass), basic(opUser, opPass)} {
		for _, path := range []string{"/", "/jobs/hooked", "/jobs/f1", "/jobs/s1?result=retried", "/jobs/nope", "/monitoring/",
			"/monitoring/api/queues", "/monitoring/api/queues/video_create/pending_tasks", "/monitoring/api/servers", "/monitoring/api/redis_info"} {
			_, body := f.do("GET", path, who)
			pages = append(pages, path+"\n"+body)
		}
	}
	_, hooked := f.do("GET", "/jobs/hooked", basic(opUser, opPass))
	if !strings.Contains(hooked, "hooks.example/in") || !strings.Contains(hooked, "(hidden)") {
		t.Errorf("the job page should show the webhook URL without its secrets:\n%s", hooked)
	}
	_, dash := f.do("GET", "/", basic(viewer, viewPass))
	if !strings.Contains(dash, "webhook signature does not verify") {
		t.Error("the rejected delivery is not on the dashboard")
	}
	for _, secret := range []string{apiToken, viewPass, opPass, webhookSecret, recSecret, urlPass, urlToken} {
		for _, p := range pages {
			if strings.Contains(p, secret) {
				path, _, _ := strings.Cut(p, "\n")
				t.Errorf("%s shows the secret %q", path, secret)
			}
		}
	}
}

// BenchmarkDashboard renders the dashboard over a full window of jobs
// (2,000, a quarter of them unfinished, a tenth of the rest failed, the
// others stored with completion and storage times spread over the last
// hour) on a real Redis.
func BenchmarkDashboard(b *testing.B) {
	rdb := redisSrv.Client(b, redisSrv.NewDB(b))
	auth, _ := server.NewAuth("", viewer+":"+viewPass+":viewer")
	producer := tasks.NewClient(rdb, tasks.ClientOptions{})
	store := jobs.NewStore(rdb, "")
	now := time.Now()
	for i := range 2000 {
		id := fmt.Sprintf("bench-%04d", i)
		if _, err := producer.Submit(b.Context(), tasks.Request{JobID: tasks.JobID(id), Video: reqOf("m", id)}); err != nil {
			b.Fatal(err)
		}
		end := now.Add(-time.Duration(i%3600) * time.Second)
		var c jobs.Change
		switch {
		case i%4 == 0:
			c = jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: "v" + id, jobs.FieldProgress: i % 100, jobs.FieldPolls: 2}}
		case i%10 == 1:
			c = jobs.Change{To: jobs.StateFailed, Set: map[string]any{jobs.FieldErrorCode: "generation_failed", jobs.FieldFinishedAt: end}}
		default:
			c = jobs.Change{To: jobs.StateStored, Set: map[string]any{jobs.FieldLocation: "file:///v/" + id, jobs.FieldPolls: 3,
				jobs.FieldSubmittedAt: end.Add(-time.Duration(30+i%90) * time.Second), jobs.FieldCompletedAt: end.Add(-time.Duration(20+i%500) * time.Millisecond),
				jobs.FieldStoredAt: end, jobs.FieldFinishedAt: end}}
		}
		if _, err := store.Apply(b.Context(), id, c); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 50 {
		if err := store.CountWebhookOutcome(b.Context(), []string{"accepted", "duplicate", "bad_signature"}[i%3], ""); err != nil {
			b.Fatal(err)
		}
	}
	srv := httptest.NewServer(server.New(server.Deps{Redis: rdb, Producer: producer, Jobs: store, Auth: auth}))
	defer srv.Close()
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.SetBasicAuth(viewer, viewPass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(err, resp.StatusCode)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// TestDashboardShowsSpend: the settled cost of a completed generation is
// on the dashboard, today and this month, by model.
func TestDashboardShowsSpend(t *testing.T) {
	t.Parallel()
	var bud *jobs.Budgeter
	f := setupPages(t, func(rdb redis.UniversalClient, d *server.Deps) {
		bud = jobs.NewBudgeter(rdb, "", jobs.BudgetConfig{Budgets: []jobs.Budget{{Window: jobs.WindowDay, Limit: 2_000_000}}})
		d.Budgets = bud
	})
	if err := bud.Reserve(t.Context(), "r1", "openai/sora-2", "", 1_000_000); err != nil {
		t.Fatal(err)
	}
	f.submit("p1", reqOf("openai/sora-2", "a paid job"))
	f.move("p1", jobs.StateGenerating, map[string]any{jobs.FieldVideoID: "vid_p1", jobs.FieldPollSeq: 1})
	bill := jobs.Billing{Settled: apiclient.Cost{Micros: 1_250_000, Known: true}, State: "settled", Model: "openai/sora-2"}
	if _, err := f.store.Do(t.Context(), "p1", jobs.Completed{APIStatus: "completed", Outputs: 1, SeenBy: "test", Billing: bill}); err != nil {
		t.Fatal(err)
	}
	resp, body := f.do("GET", "/", basic(viewer, viewPass))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard: %d", resp.StatusCode)
	}
	for _, s := range []string{`spend today (UTC)</div><div class="v">$1.25</div>`, "this month $1.25", "openai/sora-2: $1.25 today",
		`data-budget="day=2.00">budget day=2.00: $0.00 spent + $1.00 reserved`} {
		if !strings.Contains(body, s) {
			t.Errorf("dashboard lacks %q", s)
		}
	}
}

// TestDashboardShowsTenants: with tenancy on, the dashboard has a row per
// tenant with its waiting and admitted jobs, its limit and its spend.
func TestDashboardShowsTenants(t *testing.T) {
	t.Parallel()
	var ten *jobs.Tenancy
	f := setupPages(t, func(rdb redis.UniversalClient, d *server.Deps) {
		limits, _ := jobs.ParseTenantLimits("default=1,acme=3")
		ten = jobs.NewTenancy(d.Jobs, jobs.TenancyConfig{Limits: limits})
		d.Tenancy = ten
		d.Producer = tasks.NewClient(rdb, tasks.ClientOptions{Tenancy: ten})
	})
	for _, j := range []struct{ id, tenant string }{{"b1", "bulk"}, {"b2", "bulk"}, {"b3", "bulk"}, {"a1", "acme"}} {
		body := job("m", "p "+j.id)
		body["job_id"], body["tenant"] = j.id, j.tenant
		if code, _, raw := f.call("POST", "/v1/jobs", body, bearer(apiToken)); code != http.StatusAccepted {
			t.Fatalf("submit %s: %d %s", j.id, code, raw)
		}
	}
	f.move("a1", jobs.StateGenerating, map[string]any{jobs.FieldVideoID: "vid_a1", jobs.FieldPollSeq: 1})
	bill := jobs.Billing{Settled: apiclient.Cost{Micros: 500_000, Known: true}, State: "settled", Model: "m", Tenant: "acme"}
	if _, err := f.store.Do(t.Context(), "a1", jobs.Completed{APIStatus: "completed", Outputs: 1, SeenBy: "test", Billing: bill}); err != nil {
		t.Fatal(err)
	}
	resp, body := f.do("GET", "/", basic(viewer, viewPass))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard: %d", resp.StatusCode)
	}
	for _, s := range []string{
		"<tr data-tenant=\"bulk\">\n      <td>bulk</td>\n      <td>2</td>\n      <td>1</td>\n      <td>1</td>",
		"<tr data-tenant=\"acme\">\n      <td>acme</td>\n      <td>0</td>\n      <td>1</td>\n      <td>3</td>\n      <td>0</td>\n      <td>$0.50</td>\n      <td>$0.50</td>",
	} {
		if !strings.Contains(body, s) {
			t.Errorf("dashboard lacks %q", s)
		}
	}
}
