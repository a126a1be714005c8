package worker

import (
	"context"
	"encoding/json"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// traced is the task middleware of a worker with tracing on: each task
// runs in a span of its own ("video.create", "video.poll", "video.check",
// "video.download", "video.cancel", "video.callback"), a child of the
// job's submit span when the payload carries its traceparent. A task
// deferred (retryLater: a rate limit, a job not ready) or waiting out a
// Redis outage is not an error of the span; it says so in
// videoworker.deferred. With tracing off the middleware is not installed.
func (w *Worker) traced(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p struct {
			JobID  string `json:"job_id"`
			Trace  string `json:"trace"`
			Seq    int    `json:"seq"`
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(t.Payload(), &p) // a bad payload is the handler's to report
		ctx, sp := w.tracer.StartTask(ctx, spanName(t.Type(), p.Seq), p.Trace, p.JobID)
		if sp.Recording() {
			id, _ := asynq.GetTaskID(ctx)
			sp.Str(tracing.AttrTaskID, id)
			n, _ := asynq.GetRetryCount(ctx)
			sp.Int(tracing.AttrRetry, n)
			if t.Type() == tasks.TypePoll {
				if p.Seq != tasks.CheckSeq {
					sp.Int(tracing.AttrSeq, p.Seq)
				}
				sp.Str(tracing.AttrReason, p.Reason)
			}
		}
		err := next.ProcessTask(ctx, t)
		if err != nil && !isFailure(err) {
			sp.Str(tracing.AttrDeferred, err.Error())
			sp.End(nil)
			return err
		}
		sp.End(err)
		return err
	})
}

// spanName is the name of the span of a task of type typ; a poll task
// outside the chain (seq 0) is a "video.check".
func spanName(typ string, seq int) string {
	switch typ {
	case tasks.TypeCreate:
		return "video.create"
	case tasks.TypePoll:
		if seq == tasks.CheckSeq {
			return "video.check"
		}
		return "video.poll"
	case tasks.TypeDownload:
		return "video.download"
	case tasks.TypeCancel:
		return "video.cancel"
	case tasks.TypeCallback:
		return "video.callback"
	}
	return typ
}

// annotate puts what the step learnt of its job on the step's span: the
// model (when the record at hand holds the request) and the video id.
// Nothing happens, and nothing is allocated, when the step is not traced.
func annotate(ctx context.Context, rec *jobs.Record) {
	sp := tracing.Current(ctx)
	if rec == nil || !sp.Recording() {
		return
	}
	sp.Str(tracing.AttrModel, rec.Request.Model)
	sp.Str(tracing.AttrTenant, rec.Tenant)
	sp.Str(tracing.AttrVideoID, rec.VideoID)
}

// storageSpan starts the span of a storage write under the step's span.
func storageSpan(ctx context.Context, key string) (context.Context, tracing.Span) {
	ctx, sp := tracing.Child(ctx, "storage.put", trace.SpanKindClient)
	sp.Str(tracing.AttrStorageKey, key)
	return ctx, sp
}
