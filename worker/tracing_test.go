package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/tracing/otlptest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// tracerProvider is an SDK tracer provider exporting over OTLP/HTTP to
// the receiver r, shut down when the test ends.
func tracerProvider(t *testing.T, r *otlptest.Receiver) *sdktrace.TracerProvider {
	t.Helper()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(r.URL))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(100*time.Millisecond)))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// TestJobIsOneTrace runs a job from Submit to stored with a real worker,
// the stand-in over HTTP and webhooks on, exporting spans over OTLP/HTTP
// to a receiver that decodes them as a collector does: the job is one
// trace (submit, create, the polls, the webhook-triggered check, the
// download), the API calls and the storage write are children of their
// step, and the spans name the job and its model.
func TestJobIsOneTrace(t *testing.T) {
	t.Parallel()
	recv := otlptest.Start(t)
	tp := tracerProvider(t, recv)
	scfg := fastStandin()
	scfg.ProcessingFor = time.Hour // completed by hand below, which sends the webhook
	e := setup(t, scfg)
	wc := fastConfig()
	// Polls 0.4 s apart, growing by half: after the third the next is
	// about 1.35 s away, time enough for the webhook's check to come
	// first even on a loaded machine (at 0.2 s the gap was 0.68 s, and
	// under CI's load the fourth poll sometimes saw the completion first).
	wc.PollInterval, wc.MaxPollInterval = 400*time.Millisecond, 5*time.Second
	wc = e.withWebhooks(t, wc)
	w, err := worker.New(wc, worker.Deps{Redis: e.rdb, API: e.client, Store: e.store, Jobs: e.jobs, Logger: e.log, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel(t)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	producer := tasks.NewClient(e.rdb, tasks.ClientOptions{TracerProvider: tp})
	const model = "google/veo-3.1-lite"
	// A prompt long enough that the request is kept beside the record, as
	// in production: the polls learn the model from the API's answer.
	prompt := "a lighthouse at dusk, waves against the rocks, slow dolly shot " + strings.Repeat("x", 40)
	id, err := producer.Submit(context.Background(), tasks.Request{JobID: "traced-1", Video: apiclient.CreateRequest{Model: model, Prompt: prompt}})
	if err != nil {
		t.Fatal(err)
	}
	// Let a few polls find it processing (their waits grow by half each
	// time), then complete it: the webhook's check comes long before the
	// next poll.
	deadline := time.Now().Add(30 * time.Second)
	var rec *jobs.Record
	for {
		rec, err = e.jobs.Get(context.Background(), string(id))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Polls >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job has %d polls after 30 s (state %s)", rec.Polls, rec.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rec.Trace == "" {
		t.Fatal("the job's record keeps no trace context")
	}
	if err := e.api.Complete(rec.VideoID); err != nil {
		t.Fatal(err)
	}
	rec = e.waitState(id, jobs.StateStored, 30*time.Second)

	// Every span of the job arrives at the receiver (the batcher exports
	// every 100 ms; ForceFlush sends the rest).
	var spans []otlptest.Span
	for {
		if err := tp.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		spans = jobSpans(recv.Spans(), string(id))
		if has(spans, "video.download") && has(spans, "storage.put") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans of the job received: %v", names(spans))
		}
		time.Sleep(50 * time.Millisecond)
	}

	byID := map[string]otlptest.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	var root otlptest.Span
	for _, s := range spans {
		if s.Name == "video.submit" {
			root = s
		}
	}
	if root.SpanID == "" || root.ParentID != "" {
		t.Fatalf("no root submit span: %v", names(spans))
	}
	for _, s := range spans {
		if s.TraceID != root.TraceID {
			t.Errorf("span %s is in trace %s, the job's is %s", s.Name, s.TraceID, root.TraceID)
		}
	}
	count := map[string]int{}
	for _, s := range spans {
		count[s.Name]++
		if s.Error {
			t.Errorf("span %s has an error status", s.Name)
		}
		parent := byID[s.ParentID]
		var wantParents []string
		switch s.Name {
		case "video.submit":
			continue
		case "video.create", "video.poll", "video.check", "video.download", "video.callback":
			wantParents = []string{"video.submit"}
		case "api.create":
			wantParents = []string{"video.create"}
		case "api.get":
			wantParents = []string{"video.poll", "video.check"}
		case "api.content", "storage.put":
			wantParents = []string{"video.download"}
		default:
			t.Errorf("unexpected span %s", s.Name)
			continue
		}
		found := false
		for _, p := range wantParents {
			found = found || parent.Name == p
		}
		if !found {
			t.Errorf("span %s has parent %q, want one of %v", s.Name, parent.Name, wantParents)
		}
	}
	defer func() {
		if t.Failed() {
			dump(t, spans)
		}
	}()
	for _, name := range []string{"video.submit", "video.create", "api.create", "video.check", "video.download", "api.content", "storage.put"} {
		if count[name] != 1 {
			t.Errorf("%d %s spans, want 1 (all: %v)", count[name], name, count)
		}
	}
	// A poll link that fires after the job moved on asks the API nothing.
	asked := map[string]bool{}
	for _, s := range spans {
		if s.Name == "api.get" {
			asked[s.ParentID] = true
		}
	}
	if count["video.poll"] < 3 || count["api.get"] < 4 {
		t.Errorf("%d poll spans and %d api.get spans, want at least 3 polls that asked the API, and the check", count["video.poll"], count["api.get"])
	}
	for _, s := range spans {
		if s.Name == "video.check" && !strings.HasPrefix(s.Attrs["videoworker.reason"], "webhook") {
			t.Errorf("check span's reason is %q, want the webhook", s.Attrs["videoworker.reason"])
		}
		if strings.HasPrefix(s.Name, "video.") && s.Attrs["videoworker.job_id"] != string(id) {
			t.Errorf("span %s: job_id %q", s.Name, s.Attrs["videoworker.job_id"])
		}
		switch {
		case s.Name == "video.submit", s.Name == "video.create", s.Name == "video.poll" && asked[s.SpanID], s.Name == "video.check":
			if s.Attrs["videoworker.model"] != model {
				t.Errorf("span %s: model %q, want %q", s.Name, s.Attrs["videoworker.model"], model)
			}
		case s.Name == "storage.put":
			if s.Attrs["videoworker.storage_key"] != rec.StorageKey {
				t.Errorf("storage span's key %q, want %q", s.Attrs["videoworker.storage_key"], rec.StorageKey)
			}
		}
	}
}

func dump(t *testing.T, spans []otlptest.Span) {
	for _, s := range spans {
		t.Logf("%s %s parent %s %v", s.Name, s.SpanID, s.ParentID, s.Attrs)
	}
}

// jobSpans keeps the spans of the trace of job id's submit span.
func jobSpans(all []otlptest.Span, id string) []otlptest.Span {
	trace := ""
	for _, s := range all {
		if s.Name == "video.submit" && s.Attrs["videoworker.job_id"] == id {
			trace = s.TraceID
		}
	}
	var out []otlptest.Span
	for _, s := range all {
		if s.TraceID == trace || s.Attrs["videoworker.job_id"] == id {
			out = append(out, s)
		}
	}
	return out
}

func has(spans []otlptest.Span, name string) bool {
	for _, s := range spans {
		if s.Name == name {
			return true
		}
	}
	return false
}

func names(spans []otlptest.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
