package tasks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/internal/tracing/otlptest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// tracedClient is a client of b's Redis whose jobs are traced, exporting
// over OTLP/HTTP to a test receiver.
func tracedClient(t *testing.T, b *bundle) (*tasks.Client, *sdktrace.TracerProvider, *otlptest.Receiver) {
	t.Helper()
	recv := otlptest.Start(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tasks.NewClient(b.rdb, tasks.ClientOptions{TracerProvider: tp}), tp, recv
}

// TestSubmitStartsTheJobsTrace: a traced Submit starts a new trace per
// job (linked to the caller's span), keeps its context on the record and
// in the create task; SubmitMany does the same for every job of a batch;
// a resubmission keeps the job's first trace.
func TestSubmitStartsTheJobsTrace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, tp, recv := tracedClient(t, b)
	caller, span := tp.Tracer("test").Start(b.ctx, "caller")
	id, err := c.Submit(caller, tasks.Request{JobID: "tr-1", Video: video("a traced fox")})
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.Status(b.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := tracing.Parse(rec.Trace)
	if !ok {
		t.Fatalf("record's trace %q is not a traceparent", rec.Trace)
	}
	if sc.TraceID() == span.SpanContext().TraceID() {
		t.Error("the job's trace is the caller's; want a trace of its own, linked")
	}
	if got := payloadTrace(t, b, tasks.QueueCreate, tasks.CreateTaskID("tr-1")); got != rec.Trace {
		t.Errorf("create task carries trace %q, record %q", got, rec.Trace)
	}
	// Resubmitting finds the job: its trace stays the first one.
	if _, err := c.Submit(b.ctx, tasks.Request{JobID: "tr-1", Video: video("a traced fox")}); err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Status(b.ctx, id); again.Trace != rec.Trace {
		t.Errorf("resubmission changed the trace from %q to %q", rec.Trace, again.Trace)
	}

	res, err := c.SubmitMany(b.ctx, []tasks.Request{{JobID: "tr-2", Tenant: "acme", Video: video("two")}, {JobID: "tr-3", Video: video("three")}})
	if err != nil {
		t.Fatal(err)
	}
	traces := map[string]bool{}
	for _, r := range res {
		rec, err := c.Status(b.ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		sc, ok := tracing.Parse(rec.Trace)
		if !ok {
			t.Fatalf("job %s: trace %q", r.ID, rec.Trace)
		}
		traces[sc.TraceID().String()] = true
		if got := payloadTrace(t, b, tasks.QueueCreate, tasks.CreateTaskID(string(r.ID))); got != rec.Trace {
			t.Errorf("job %s: create task carries trace %q, record %q", r.ID, got, rec.Trace)
		}
	}
	if len(traces) != 2 {
		t.Errorf("a batch of 2 jobs gave %d traces, want one per job", len(traces))
	}

	submits := map[string]otlptest.Span{}
	for _, s := range recv.Spans() {
		if s.Name == "video.submit" && s.Attrs["videoworker.created"] != "false" {
			submits[s.Attrs["videoworker.job_id"]] = s
		}
	}
	for _, id := range []string{"tr-1", "tr-2", "tr-3"} {
		s, ok := submits[id]
		if !ok {
			t.Errorf("no submit span for %s", id)
			continue
		}
		if s.ParentID != "" || s.Attrs["videoworker.model"] != "veo-3" {
			t.Errorf("submit span of %s: parent %q, attributes %v", id, s.ParentID, s.Attrs)
		}
		tenant := map[string]string{"tr-2": "acme"}[id]
		if tenant == "" {
			tenant = "default"
		}
		if s.Attrs["videoworker.tenant"] != tenant {
			t.Errorf("submit span of %s: tenant %q, want %q", id, s.Attrs["videoworker.tenant"], tenant)
		}
	}
	if s := submits["tr-1"]; s.Links != 1 {
		t.Errorf("submit span of tr-1 has %d links, want 1 (the caller's span)", s.Links)
	}
}

// TestUntracedTasksUnchanged: with tracing off the record has no trace
// field and the tasks' payloads are byte for byte what they were before
// tracing existed; payloads without a trace (older releases) still
// decode, and a payload with one decodes with it.
func TestUntracedTasksUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.client.Submit(b.ctx, tasks.Request{JobID: "plain-1", Video: video("untraced")}); err != nil {
		t.Fatal(err)
	}
	fields, err := b.rdb.HGetAll(b.ctx, "videoworker:job:{plain-1}").Result()
	if err != nil || len(fields) == 0 {
		t.Fatalf("record: %v %v", fields, err)
	}
	if _, ok := fields[jobs.FieldTrace]; ok {
		t.Errorf("untraced record has a %q field", jobs.FieldTrace)
	}
	rec := &jobs.Record{ID: "plain-1", State: jobs.StateGenerating, VideoID: "vid_1", PollSeq: 2}
	next, err := tasks.NextTask(rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	// What the release before tracing wrote for this link.
	legacy := []byte(`{"v":1,"job_id":"plain-1","seq":2}`)
	if !bytes.Equal(next.Task.Payload(), legacy) {
		t.Errorf("untraced payload %s, want %s", next.Task.Payload(), legacy)
	}
	p, err := tasks.Decode[tasks.PollPayload](legacy)
	if err != nil || p.Trace != "" {
		t.Fatalf("legacy payload: %+v, %v", p, err)
	}

	rec.Trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, n := range []func() (*tasks.Next, error){
		func() (*tasks.Next, error) { return tasks.NextTask(rec, time.Second) },
		func() (*tasks.Next, error) { return tasks.StatusCheck(rec, "webhook:1", "webhook video.completed") },
	} {
		next, err := n()
		if err != nil {
			t.Fatal(err)
		}
		p, err := tasks.Decode[tasks.PollPayload](next.Task.Payload())
		if err != nil || p.Trace != rec.Trace {
			t.Errorf("traced payload %s: trace %q, %v", next.Task.Payload(), p.Trace, err)
		}
	}
}

// payloadTrace is the trace of the payload of task id in queue.
func payloadTrace(t *testing.T, b *bundle, queue, id string) string {
	t.Helper()
	info := b.task(t, queue, id)
	if info == nil {
		t.Fatalf("no task %s in %s", id, queue)
	}
	var p struct {
		Trace string `json:"trace"`
	}
	if err := json.Unmarshal(info.Payload, &p); err != nil {
		t.Fatal(err)
	}
	return p.Trace
}

// TestAdmittedJobsCreateTaskCarriesTrace: with tenancy and tracing on, a
// job admitted by the tenancy (at its Submit, in a SubmitMany batch, or
// later when a create starts) gets a create task that carries the
// record's trace, as the create task of a job without tenancy does.
func TestAdmittedJobsCreateTaskCarriesTrace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	recv := otlptest.Start(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 2})
	c := tasks.NewClient(b.rdb, tasks.ClientOptions{TracerProvider: tp, Tenancy: ten})

	if _, err := c.Submit(b.ctx, tasks.Request{JobID: "ta-1", Tenant: "acme", Video: video("one")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitMany(b.ctx, []tasks.Request{
		{JobID: "ta-2", Tenant: "acme", Video: video("two")},
		{JobID: "ta-3", Tenant: "bulk", Video: video("three")},
	}); err != nil {
		t.Fatal(err)
	}
	// ta-3 waits (two admitted jobs fill the window) until ta-1's create
	// starts.
	adm, err := ten.Started(b.ctx, "ta-1", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.EnqueueAdmitted(b.ctx, b.aq, nil, adm); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ta-1", "ta-2", "ta-3"} {
		rec, err := c.Status(b.ctx, tasks.JobID(id))
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != jobs.StateQueued || rec.Trace == "" {
			t.Fatalf("job %s: state %s, trace %q; want admitted (queued) and traced", id, rec.State, rec.Trace)
		}
		if got := payloadTrace(t, b, tasks.QueueCreate, tasks.CreateTaskID(id)); got != rec.Trace {
			t.Errorf("admitted job %s: create task carries trace %q, record %q", id, got, rec.Trace)
		}
	}
}
