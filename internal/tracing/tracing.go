// Package tracing gives a video job one OpenTelemetry trace, from its
// submission to its last step, at no cost when tracing is off.
//
// A job's trace starts at its submit span (StartJob), whose context is
// kept on the job's record and in every task payload as a W3C traceparent
// string; each task's span (StartTask) is a child of it, and the calls a
// step makes (the API, storage, a callback) are children of the step's
// span (Child). A nil *Tracer is off: nothing is started, nothing is
// allocated, and no traceparent is written anywhere, so records and
// payloads stay byte for byte what they were.
package tracing

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every span this program makes.
const ScopeName = "github.com/videoworker/videoworker"

// Attribute keys of the job's spans.
const (
	// AttrJobID is the job's id, on every span of the job.
	AttrJobID = attribute.Key("videoworker.job_id")
	// AttrModel is the job's model, where the step has it at hand (see
	// docs/tracing.md).
	AttrModel = attribute.Key("videoworker.model")
	// AttrTenant is the job's tenant ("default" when the producer named none).
	AttrTenant = attribute.Key("videoworker.tenant")
	// AttrVideoID is the API's id of the job's generation.
	AttrVideoID = attribute.Key("videoworker.video_id")
	// AttrTaskID is the asynq task id of a step.
	AttrTaskID = attribute.Key("videoworker.task_id")
	// AttrRetry is how many times the step's task was retried before.
	AttrRetry = attribute.Key("videoworker.retry")
	// AttrSeq is a poll link's place in the job's poll chain.
	AttrSeq = attribute.Key("videoworker.poll_seq")
	// AttrReason says why an out-of-chain status check was made.
	AttrReason = attribute.Key("videoworker.reason")
	// AttrCreated is false on a submit span that found the job already
	// there (an idempotent resubmission).
	AttrCreated = attribute.Key("videoworker.created")
	// AttrStorageKey is the object key of a storage write.
	AttrStorageKey = attribute.Key("videoworker.storage_key")
	// AttrBytes is the size of a storage write.
	AttrBytes = attribute.Key("videoworker.bytes")
	// AttrHTTPStatus is the HTTP status of an API call or a callback
	// delivery that got an answer.
	AttrHTTPStatus = attribute.Key("http.response.status_code")
	// AttrDeferred is set on a step that asked to run again later
	// (a rate limit, a job not ready): not an error.
	AttrDeferred = attribute.Key("videoworker.deferred")
)

// Tracer starts the spans that begin a job's trace or one of its steps.
// A nil *Tracer is off.
type Tracer struct{ t trace.Tracer }

// New returns a Tracer on tp, or nil (off) when tp is nil.
func New(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{t: tp.Tracer(ScopeName)}
}

// On reports whether t makes spans.
func (t *Tracer) On() bool { return t != nil }

// Span is a started span; the zero Span (tracing off, or a parent not
// sampled) does nothing.
type Span struct{ s trace.Span }

// Recording reports whether the span records what is set on it.
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// Str sets a string attribute (nothing when v is empty).
func (s Span) Str(k attribute.Key, v string) {
	if s.s != nil && v != "" {
		s.s.SetAttributes(k.String(v))
	}
}

// Int sets an integer attribute.
func (s Span) Int(k attribute.Key, v int) {
	if s.s != nil {
		s.s.SetAttributes(k.Int(v))
	}
}

// Bool sets a boolean attribute.
func (s Span) Bool(k attribute.Key, v bool) {
	if s.s != nil {
		s.s.SetAttributes(k.Bool(v))
	}
}

// Traceparent is the span's context as a W3C traceparent string, or ""
// for the zero Span.
func (s Span) Traceparent() string {
	if s.s == nil {
		return ""
	}
	return Format(s.s.SpanContext())
}

// End ends the span, with err (nil: none) recorded as its error status.
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.RecordError(err)
		s.s.SetStatus(codes.Error, err.Error())
	}
	s.s.End()
}

// StartJob starts the root span of a new job's trace, named "video.submit":
// a new trace for each job, linked to the span of ctx (the caller's
// request) when there is one. Its Traceparent is what the job's record and
// tasks carry.
func (t *Tracer) StartJob(ctx context.Context, jobID string) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(AttrJobID.String(jobID))}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	ctx, s := t.t.Start(ctx, "video.submit", opts...)
	return ctx, Span{s}
}

// StartTask starts the span of one step of a job (name, e.g. "video.poll")
// as a child of parent, the traceparent the task's payload carries. A task
// without one (enqueued before tracing was on, or by an older release)
// gets a trace of its own.
func (t *Tracer) StartTask(ctx context.Context, name, parent, jobID string) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	if sc, ok := Parse(parent); ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	ctx, s := t.t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(AttrJobID.String(jobID)))
	return ctx, Span{s}
}

// Child starts a span under the recording span of ctx (an API call, a
// storage write made by a step). Without one (tracing off, a step not
// sampled, a call outside any job) it starts nothing and allocates
// nothing.
func Child(ctx context.Context, name string, kind trace.SpanKind) (context.Context, Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, Span{}
	}
	ctx, s := parent.TracerProvider().Tracer(ScopeName).Start(ctx, name, trace.WithSpanKind(kind))
	return ctx, Span{s}
}

// Current is the recording span of ctx, or the zero Span.
func Current(ctx context.Context) Span {
	s := trace.SpanFromContext(ctx)
	if !s.IsRecording() {
		return Span{}
	}
	return Span{s}
}

// Format is sc as a W3C traceparent ("00-<trace id>-<span id>-<flags>"),
// or "" when sc is not valid.
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// Parse reads a W3C traceparent of version 00 as a remote span context;
// ok is false for "" and for anything malformed (the task then starts a
// trace of its own rather than fail).
func Parse(s string) (sc trace.SpanContext, ok bool) {
	if len(s) != 55 || s[0:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	var flags [1]byte
	if _, err := hex.Decode(tid[:], []byte(s[3:35])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(sid[:], []byte(s[36:52])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(flags[:], []byte(s[53:55])); err != nil {
		return trace.SpanContext{}, false
	}
	sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]), Remote: true})
	return sc, sc.IsValid()
}
