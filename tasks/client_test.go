package tasks_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

func video(prompt string) apiclient.CreateRequest {
	return apiclient.CreateRequest{Model: "veo-3", Prompt: prompt, Duration: 8}
}

// submit submits req, failing the test on error.
func (b *bundle) submit(tb testing.TB, req tasks.Request) tasks.JobID {
	tb.Helper()
	id, err := b.client.Submit(b.ctx, req)
	if err != nil {
		tb.Fatalf("Submit(%+v): %v", req, err)
	}
	return id
}

func TestSubmitGeneratesUniqueIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seen := map[tasks.JobID]bool{}
	for i := range 5 {
		id := b.submit(t, tasks.Request{Video: video("same prompt")})
		if err := tasks.ValidateJobID(id.String()); err != nil {
			t.Errorf("generated id: %v", err)
		}
		if !strings.HasPrefix(string(id), "job_") {
			t.Errorf("generated id %q lacks the job_ prefix", id)
		}
		if seen[id] {
			t.Fatalf("submit %d: id %s generated twice", i, id)
		}
		seen[id] = true
		if b.task(t, tasks.QueueCreate, tasks.CreateTaskID(string(id))) == nil {
			t.Errorf("no create task for %s", id)
		}
	}
	if n := b.jobCount(t); n != 5 {
		t.Errorf("%d job records, want 5", n)
	}
	if n := b.queueSize(t, tasks.QueueCreate); n != 5 {
		t.Errorf("%d create tasks, want 5", n)
	}
}

func TestSubmitIsIdempotentOnJobID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	req := tasks.Request{JobID: "order-42", Video: video("a red kite"), Labels: map[string]string{"team": "ads"}}
	for i := range 3 {
		if id := b.submit(t, req); id != "order-42" {
			t.Fatalf("submit %d returned %q, want order-42", i, id)
		}
	}
	if n := b.jobCount(t); n != 1 {
		t.Errorf("%d job records, want 1", n)
	}
	if n := b.queueSize(t, tasks.QueueCreate); n != 1 {
		t.Errorf("%d create tasks, want 1", n)
	}
	info := b.task(t, tasks.QueueCreate, "create:order-42")
	if info == nil || string(info.Payload) != `{"v":1,"job_id":"order-42"}` {
		t.Fatalf("create task %+v", info)
	}
	hist, err := b.client.History(b.ctx, "order-42")
	if err != nil || len(hist) != 1 {
		t.Errorf("history %v, %v; want one submitted line", hist, err)
	}
	// Labels and timeout are part of the request: a "retry" that differs
	// there is another request, a conflict, and changes nothing.
	if _, err := b.client.Submit(b.ctx, tasks.Request{JobID: "order-42", Video: video("a red kite"), Timeout: time.Hour}); !errors.Is(err, tasks.ErrJobIDConflict) {
		t.Errorf("retry with other options: %v, want ErrJobIDConflict", err)
	}
	if rec, _ := b.client.Status(b.ctx, "order-42"); rec.Labels["team"] != "ads" || !rec.Deadline.IsZero() {
		t.Errorf("retry changed the record: labels %v deadline %v", rec.Labels, rec.Deadline)
	}
}

func TestSubmitConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed := int64(7)
	orig := apiclient.CreateRequest{Model: "veo-3", Prompt: "a red kite", Seed: &seed,
		ProviderParams: map[string]any{"strength": 3, "style": "noir"}}
	b.submit(t, tasks.Request{JobID: "order-42", Video: orig})

	// The same request, built again, is not a conflict.
	seed2 := int64(7)
	same := orig
	same.Seed = &seed2
	same.ProviderParams = map[string]any{"style": "noir", "strength": 3}
	if _, err := b.client.Submit(b.ctx, tasks.Request{JobID: "order-42", Video: same}); err != nil {
		t.Fatalf("same request again: %v", err)
	}

	for name, mutate := range map[string]func(*apiclient.CreateRequest){
		"prompt":   func(r *apiclient.CreateRequest) { r.Prompt = "a blue kite" },
		"model":    func(r *apiclient.CreateRequest) { r.Model = "sora-2" },
		"seed":     func(r *apiclient.CreateRequest) { s := int64(8); r.Seed = &s },
		"duration": func(r *apiclient.CreateRequest) { r.Duration = 4 },
		"params":   func(r *apiclient.CreateRequest) { r.ProviderParams = map[string]any{"strength": 4} },
	} {
		changed := orig
		mutate(&changed)
		id, err := b.client.Submit(b.ctx, tasks.Request{JobID: "order-42", Video: changed})
		if !errors.Is(err, tasks.ErrJobIDConflict) || id != "" {
			t.Errorf("%s changed: Submit = %q, %v; want ErrJobIDConflict", name, id, err)
		}
	}
	rec, err := b.client.Status(b.ctx, "order-42")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Request.Prompt != "a red kite" || rec.Request.Model != "veo-3" {
		t.Errorf("a conflicting submit changed the record: %+v", rec.Request)
	}
	if n := b.queueSize(t, tasks.QueueCreate); n != 1 {
		t.Errorf("%d create tasks, want 1", n)
	}
}

func TestSubmitValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ok := video("a prompt")
	with := func(f func(*tasks.Request)) tasks.Request {
		r := tasks.Request{Video: ok}
		f(&r)
		return r
	}
	tests := []struct {
		name string
		req  tasks.Request
		want []string // substrings of the error, one per problem
	}{
		{"bad job id", with(func(r *tasks.Request) { r.JobID = "a b" }), []string{`job id "a b"`}},
		{"long job id", with(func(r *tasks.Request) { r.JobID = tasks.JobID(strings.Repeat("x", 129)) }), []string{"job id"}},
		{"no model", with(func(r *tasks.Request) { r.Video.Model = "" }), []string{"video.model"}},
		{"no prompt", with(func(r *tasks.Request) { r.Video.Prompt = "" }), []string{"video.prompt is required"}},
		{"long prompt", with(func(r *tasks.Request) { r.Video.Prompt = strings.Repeat("p", 32001) }), []string{"video.prompt is 32001 characters, longer than 32000"}},
		{"webhook", with(func(r *tasks.Request) {
			r.Video.Webhook = &apiclient.WebhookSubscription{URL: "https://example.com/hook", Secret: "s3cr3t-value"}
		}), []string{"video.webhook"}},
		{"size and resolution", with(func(r *tasks.Request) { r.Video.Size = "1280x720"; r.Video.Resolution = "720p" }), []string{"video.size"}},
		{"size and aspect ratio", with(func(r *tasks.Request) { r.Video.Size = "1280x720"; r.Video.AspectRatio = "16:9" }), []string{"video.size"}},
		{"negative duration", with(func(r *tasks.Request) { r.Video.Duration = -1 }), []string{"video.duration"}},
		{"long duration", with(func(r *tasks.Request) { r.Video.Duration = 121 }), []string{"video.duration"}},
		{"negative samples", with(func(r *tasks.Request) { r.Video.SampleCount = -1 }), []string{"video.sample_count"}},
		{"too many samples", with(func(r *tasks.Request) { r.Video.SampleCount = 5 }), []string{"video.sample_count"}},
		{"negative timeout", with(func(r *tasks.Request) { r.Timeout = -time.Second }), []string{"timeout"}},
		{"timeout under a second", with(func(r *tasks.Request) { r.Timeout = time.Millisecond }), []string{"timeout"}},
		{"timeout over 7 days", with(func(r *tasks.Request) { r.Timeout = 7*24*time.Hour + time.Second }), []string{"timeout"}},
		{"negative seed", with(func(r *tasks.Request) { s := int64(-1); r.Video.Seed = &s }), []string{"video.seed"}},
		{"seed beyond 32 bits", with(func(r *tasks.Request) { s := int64(1) << 32; r.Video.Seed = &s }), []string{"video.seed"}},
		{"compression quality", with(func(r *tasks.Request) { q := 101; r.Video.CompressionQuality = &q }), []string{"video.compression_quality"}},
		{"long prompt in characters", with(func(r *tasks.Request) { r.Video.Prompt = strings.Repeat("ü", 32001) }), []string{"video.prompt is 32001 characters"}},
		{"long negative prompt", with(func(r *tasks.Request) { r.Video.NegativePrompt = strings.Repeat("n", 32001) }), []string{"video.negative_prompt"}},
		{"control character in prompt", with(func(r *tasks.Request) { r.Video.Prompt = "a\x1bb" }), []string{"video.prompt contains control character"}},
		{"long model", with(func(r *tasks.Request) { r.Video.Model = strings.Repeat("m", 257) }), []string{"video.model"}},
		{"control character in size", with(func(r *tasks.Request) { r.Video.Size = "1x1\n" }), []string{"video.size"}},
		{"too many labels", with(func(r *tasks.Request) {
			r.Labels = map[string]string{}
			for i := range 17 {
				r.Labels[strconv.Itoa(i)] = "v"
			}
		}), []string{"17 labels"}},
		{"empty label key", with(func(r *tasks.Request) { r.Labels = map[string]string{"": "v"} }), []string{"label key is empty"}},
		{"long label key", with(func(r *tasks.Request) { r.Labels = map[string]string{strings.Repeat("k", 65): "v"} }), []string{"label key"}},
		{"long label value", with(func(r *tasks.Request) { r.Labels = map[string]string{"k": strings.Repeat("v", 257)} }), []string{"value is 257 bytes"}},
		{"control character in a label", with(func(r *tasks.Request) { r.Labels = map[string]string{"k": "a\tb"} }), []string{"control character"}},
		{"too many input references", with(func(r *tasks.Request) { r.Video.InputReferences = make([]json.RawMessage, 17) }), []string{"video.input_references"}},
		{"large provider params", with(func(r *tasks.Request) { r.Video.ProviderParams = map[string]any{"x": strings.Repeat("x", 16<<10)} }), []string{"video.provider_params"}},
		{"everything at once", tasks.Request{
			JobID:   "bad id!",
			Video:   apiclient.CreateRequest{Size: "1x1", Resolution: "720p", Duration: 500, SampleCount: 9, Webhook: &apiclient.WebhookSubscription{URL: "u"}},
			Timeout: -1,
		}, []string{"job id", "video.model", "video.prompt", "video.webhook", "video.size", "video.duration", "video.sample_count", "timeout"}},
	}
	for _, tt := range tests {
		id, err := b.client.Submit(b.ctx, tt.req)
		if !errors.Is(err, tasks.ErrInvalidRequest) || id != "" {
			t.Errorf("%s: Submit = %q, %v; want ErrInvalidRequest", tt.name, id, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tt.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: error leaks the webhook secret: %v", tt.name, err)
		}
	}
	// Boundaries that are allowed.
	for _, r := range []tasks.Request{
		with(func(r *tasks.Request) {
			r.Video.Duration = 120
			r.Video.SampleCount = 4
			r.Video.Prompt = strings.Repeat("p", 32000)
		}),
		with(func(r *tasks.Request) { r.Video.Resolution = "720p"; r.Video.AspectRatio = "9:16" }),
		with(func(r *tasks.Request) { r.Video.Size = "1280x720" }),
		with(func(r *tasks.Request) { r.JobID = tasks.JobID(strings.Repeat("x", 128)) }),
		with(func(r *tasks.Request) {
			s, q := int64(1)<<32-1, 100
			r.Video.Seed, r.Video.CompressionQuality = &s, &q
			r.Video.Prompt = strings.Repeat("ü", 31998) + "\n\t"
			r.Video.NegativePrompt = strings.Repeat("n", 32000)
			r.Timeout = 7 * 24 * time.Hour
			r.Labels = map[string]string{strings.Repeat("k", 64): strings.Repeat("v", 256)}
		}),
	} {
		if _, err := b.client.Submit(b.ctx, r); err != nil {
			t.Errorf("Submit of a valid request: %v", err)
		}
	}
	if n := b.jobCount(t); n != 5 {
		t.Errorf("%d job records, want only the 5 valid ones", n)
	}
}

func TestSubmitRefusedWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.client.Submit(b.ctx, tasks.Request{JobID: "j1", Video: apiclient.CreateRequest{Model: "m", Prompt: "p",
		Webhook: &apiclient.WebhookSubscription{URL: "https://example.com"}}})
	if !errors.Is(err, tasks.ErrInvalidRequest) {
		t.Fatalf("Submit with a webhook: %v", err)
	}
	if n := b.rdb.DBSize(b.ctx).Val(); n != 0 {
		t.Errorf("a refused submit wrote %d keys", n)
	}
}

func TestSubmitTimeoutSetsDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	before := time.Now()
	b.submit(t, tasks.Request{JobID: "timed", Video: video("p"), Timeout: 90 * time.Minute})
	after := time.Now()
	b.submit(t, tasks.Request{JobID: "default", Video: video("p")})

	rec, err := b.client.Status(b.ctx, "timed")
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := before.Add(90*time.Minute).Truncate(time.Millisecond), after.Add(90*time.Minute)
	if rec.Deadline.Before(lo) || rec.Deadline.After(hi) {
		t.Errorf("deadline %v, want within [%v, %v]", rec.Deadline, lo, hi)
	}
	if d := rec.Deadline.Sub(rec.SubmittedAt); d < 90*time.Minute-time.Second || d > 90*time.Minute+time.Second {
		t.Errorf("deadline is %v after submission, want 90m", d)
	}
	if rec, _ := b.client.Status(b.ctx, "default"); !rec.Deadline.IsZero() {
		t.Errorf("without a timeout the deadline is %v, want zero (the worker's default)", rec.Deadline)
	}
}

func TestStatusAndHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed, audio := int64(99), true
	req := tasks.Request{
		JobID:  "status-1",
		Video:  apiclient.CreateRequest{Model: "veo-3", Prompt: "a fox", Seed: &seed, GenerateAudio: &audio, AspectRatio: "9:16"},
		Labels: map[string]string{"campaign": "spring", "owner": "ana"},
	}
	before := time.Now().Truncate(time.Millisecond)
	b.submit(t, req)
	after := time.Now()

	rec, err := b.client.Status(b.ctx, "status-1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != "status-1" || rec.State != jobs.StateQueued || rec.VideoID != "" {
		t.Errorf("record id %q state %q video %q", rec.ID, rec.State, rec.VideoID)
	}
	if diff := cmp.Diff(req.Video, rec.Request); diff != "" {
		t.Errorf("request (-submitted +stored):\n%s", diff)
	}
	if diff := cmp.Diff(req.Labels, rec.Labels); diff != "" {
		t.Errorf("labels (-submitted +stored):\n%s", diff)
	}
	if rec.SubmittedAt.Before(before) || rec.SubmittedAt.After(after) {
		t.Errorf("submitted_at %v, want within [%v, %v]", rec.SubmittedAt, before, after)
	}

	hist, err := b.client.History(b.ctx, "status-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || hist[0].Event != "submitted" || hist[0].State != jobs.StateQueued || hist[0].Detail != "model veo-3" {
		t.Fatalf("history %+v, want one submitted line", hist)
	}
	// History follows the record as the worker moves it.
	if _, err := b.store.Apply(b.ctx, "status-1", jobs.Change{To: jobs.StateSubmitting, Event: "create_started"}); err != nil {
		t.Fatal(err)
	}
	hist, _ = b.client.History(b.ctx, "status-1")
	if len(hist) != 2 || hist[1].Event != "create_started" || hist[1].State != jobs.StateSubmitting {
		t.Errorf("history %+v, want a create_started line", hist)
	}

	if _, err := b.client.Status(b.ctx, "missing"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Status of a missing job: %v, want jobs.ErrNotFound", err)
	}
	if hist, err := b.client.History(b.ctx, "missing"); err != nil || len(hist) != 0 {
		t.Errorf("History of a missing job: %v, %v; want none", hist, err)
	}
}

func TestSubmitReenqueuesMissingCreateTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	req := tasks.Request{JobID: "lost", Video: video("p")}
	b.submit(t, req)
	taskID := tasks.CreateTaskID("lost")

	// The record exists but its task was lost (say, the producer crashed
	// between the two writes, or an operator deleted it).
	if err := b.insp.DeleteTask(tasks.QueueCreate, taskID); err != nil {
		t.Fatal(err)
	}
	if b.task(t, tasks.QueueCreate, taskID) != nil {
		t.Fatal("task still there after DeleteTask")
	}
	b.submit(t, req)
	if b.task(t, tasks.QueueCreate, taskID) == nil {
		t.Fatal("a retried Submit of a queued job did not re-enqueue its create task")
	}

	// Once the job has moved past queued, a retry enqueues nothing.
	for _, st := range []jobs.State{jobs.StateSubmitting, jobs.StateGenerating, jobs.StateFailed} {
		if _, err := b.store.Apply(b.ctx, "lost", jobs.Change{From: jobs.AllStates, To: st}); err != nil {
			t.Fatal(err)
		}
		if err := b.insp.DeleteTask(tasks.QueueCreate, taskID); err != nil && b.task(t, tasks.QueueCreate, taskID) != nil {
			t.Fatal(err)
		}
		if id := b.submit(t, req); id != "lost" {
			t.Errorf("%s: Submit returned %q", st, id)
		}
		if b.task(t, tasks.QueueCreate, taskID) != nil {
			t.Errorf("a Submit of a %s job enqueued a create task", st)
		}
	}
	if n := b.jobCount(t); n != 1 {
		t.Errorf("%d job records, want 1", n)
	}
}

func TestSubmitConcurrentSameID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20
	ids := make([]tasks.JobID, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			ids[i], errs[i] = b.client.Submit(b.ctx, tasks.Request{JobID: "race", Video: video("p")})
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if id != "race" {
			t.Errorf("submitter %d got %q, want race", i, id)
		}
	}
	if c := b.jobCount(t); c != 1 {
		t.Errorf("%d job records, want 1", c)
	}
	if c := b.queueSize(t, tasks.QueueCreate); c != 1 {
		t.Errorf("%d create tasks, want 1", c)
	}
	if hist, _ := b.client.History(b.ctx, "race"); len(hist) != 1 {
		t.Errorf("history has %d lines, want 1", len(hist))
	}
}

func TestSubmitLogsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var buf bytes.Buffer
	client := tasks.NewClient(b.rdb, tasks.ClientOptions{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	req := tasks.Request{JobID: "logged", Video: video("p")}
	for range 2 {
		if _, err := client.Submit(b.ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want one for the one new job:\n%s", len(lines), buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line["msg"] != "job submitted" || line["job_id"] != "logged" || line["model"] != "veo-3" {
		t.Errorf("log line %v", line)
	}
}

func TestClientPrefix(t *testing.T) {
	t.Parallel()
	b := setup(t)
	client := tasks.NewClient(b.rdb, tasks.ClientOptions{Prefix: "tenant-a:"})
	b.submit(t, tasks.Request{JobID: "j1", Video: video("default prefix")})
	if _, err := client.Submit(b.ctx, tasks.Request{JobID: "j1", Video: video("tenant a")}); err != nil {
		t.Fatalf("same id under another prefix: %v", err)
	}
	rec, err := jobs.NewStore(b.rdb, "tenant-a:").Get(b.ctx, "j1")
	if err != nil || rec.Request.Prompt != "tenant a" {
		t.Errorf("record under tenant-a: %+v, %v", rec, err)
	}
	if rec, _ := b.client.Status(b.ctx, "j1"); rec.Request.Prompt != "default prefix" {
		t.Errorf("default-prefix record changed: %+v", rec.Request)
	}
}

func BenchmarkSubmit(b *testing.B) {
	env := setup(b)
	req := tasks.Request{Video: video("a paper boat on a rainy street"), Labels: map[string]string{"bench": "1"}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req.JobID = tasks.JobID("bench-" + strconv.Itoa(i))
		if _, err := env.client.Submit(env.ctx, req); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestRetryNewGeneration: retrying a job whose generation failed at the API
// starts a new generation: the old video id, and what an early webhook of
// the old generation recorded, are cleared, and a create task is queued.
func TestRetryNewGeneration(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(t, tasks.Request{JobID: "regen-1", Video: video("a failed fox")})
	early := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := b.store.Apply(b.ctx, "regen-1", jobs.Change{To: jobs.StateFailed, Set: map[string]any{
		jobs.FieldVideoID: "vid_old", jobs.FieldFailedStep: "generation", jobs.FieldErrorCode: "generation_failed",
		jobs.FieldEarlyWebhookAt: early, jobs.FieldEarlyWebhookEvent: "video.failed",
		jobs.FieldEarlyWebhookKey: "whk_1", jobs.FieldEarlyWebhookVideo: "vid_old",
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Retry(b.ctx, "regen-1"); err != nil {
		t.Fatal(err)
	}
	rec, err := b.client.Status(b.ctx, "regen-1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != jobs.StateQueued || rec.VideoID != "" {
		t.Errorf("after the retry: state %s, video %q; want queued with no video", rec.State, rec.VideoID)
	}
	if !rec.EarlyWebhookAt.IsZero() || rec.EarlyWebhookEvent != "" || rec.EarlyWebhookKey != "" || rec.EarlyWebhookVideo != "" {
		t.Errorf("the old generation's early webhook is still on the job: at %v event %q key %q video %q",
			rec.EarlyWebhookAt, rec.EarlyWebhookEvent, rec.EarlyWebhookKey, rec.EarlyWebhookVideo)
	}
	pending, err := b.insp.ListPendingTasks(tasks.QueueCreate)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ti := range pending {
		found = found || strings.HasPrefix(ti.ID, tasks.CreateTaskID("regen-1"))
	}
	if !found {
		t.Error("no create task queued for the new generation")
	}
}

// TestSubmitRefusesJobIDWithoutUsableKey: a job id that would give the
// workers' key template an invalid storage key (here a file name longer
// than 255 bytes once ":" is escaped, or a reserved name with a template
// that puts the id after a ".") is refused at submission, naming job_id,
// and nothing is written.
func TestSubmitRefusesJobIDWithoutUsableKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ tmpl, id string }{
		{"", "a" + strings.Repeat(":", 100)},
		{"v/.{job_id}.mp4", "tmp-1"},
	} {
		client := tasks.NewClient(b.rdb, tasks.ClientOptions{KeyTemplate: tc.tmpl})
		_, err := client.Submit(b.ctx, tasks.Request{JobID: tasks.JobID(tc.id), Video: video("p")})
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) || ve.Fields["job_id"] == "" {
			t.Errorf("template %q, id %q: Submit = %v, want a validation error on job_id", tc.tmpl, tc.id, err)
		}
	}
	// The same ids with a template that has room for them.
	client := tasks.NewClient(b.rdb, tasks.ClientOptions{KeyTemplate: "v/{date}/{video_id}.{ext}"})
	if _, err := client.Submit(b.ctx, tasks.Request{JobID: tasks.JobID("a" + strings.Repeat(":", 100)), Video: video("p")}); err != nil {
		t.Errorf("Submit with a template without {job_id}: %v", err)
	}
	if n := b.jobCount(t); n != 1 {
		t.Errorf("%d job records, want 1", n)
	}
}

// TestSubmitCreatedOnceAndLabelsTimeoutConflict: of concurrent Submits of
// one id exactly one reports that it created the job; the same id with
// other labels or another timeout is a conflict, also after a retry
// restarted the deadline.
func TestSubmitCreatedOnceAndLabelsTimeoutConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	req := tasks.Request{JobID: "once", Video: video("p"), Labels: map[string]string{"team": "a"}, Timeout: 90 * time.Minute}
	const n = 16
	created := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, created[i], errs[i] = b.client.SubmitCreated(b.ctx, req)
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, c := range created {
		if c {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d of %d concurrent submits report they created the job, want 1", count, n)
	}
	for name, mutate := range map[string]func(*tasks.Request){
		"other labels":  func(r *tasks.Request) { r.Labels = map[string]string{"team": "b"} },
		"no labels":     func(r *tasks.Request) { r.Labels = nil },
		"other timeout": func(r *tasks.Request) { r.Timeout = 91 * time.Minute },
		"no timeout":    func(r *tasks.Request) { r.Timeout = 0 },
	} {
		changed := req
		mutate(&changed)
		if _, _, err := b.client.SubmitCreated(b.ctx, changed); !errors.Is(err, tasks.ErrJobIDConflict) {
			t.Errorf("%s: %v, want ErrJobIDConflict", name, err)
		}
	}
	// A retried job keeps its timeout (its deadline restarts from the retry).
	if _, err := b.store.Apply(b.ctx, "once", jobs.Change{To: jobs.StateFailed}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Retry(b.ctx, "once"); err != nil {
		t.Fatal(err)
	}
	if _, c, err := b.client.SubmitCreated(b.ctx, req); err != nil || c {
		t.Errorf("the same request after a retry: created %v, %v; want an existing job", c, err)
	}
}
