package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// handlePoll runs a status check: a link of the job's poll chain, or a
// check outside the chain (after a webhook).
func (w *Worker) handlePoll(ctx context.Context, t *asynq.Task) (err error) {
	p, err := tasks.Decode[tasks.PollPayload](t.Payload())
	if err != nil {
		return w.badPayload(ctx, t, err)
	}
	if p.NotBefore > 0 {
		if n, _ := asynq.GetRetryCount(ctx); n == 0 { // a retry runs late on purpose
			w.met.PollLateness(w.now().Sub(time.UnixMilli(p.NotBefore)))
		}
	}
	rec, err := w.loadJob(ctx, p.JobID)
	if err != nil {
		return err
	}
	if ok, err := w.revived(ctx, rec); ok {
		return err
	}
	if p.IsCheck() {
		// A failed check outside the chain never fails the job: the chain
		// carries on.
		return w.check(ctx, rec)
	}
	defer func() { err = w.onTaskError(ctx, rec, err) }()
	return w.pollLink(ctx, rec, p.Seq)
}

// waitsOnStatus reports whether the job waits on the API's status; a job
// that is downloading gets its download task made sure of.
func (w *Worker) waitsOnStatus(ctx context.Context, rec *jobs.Record) (bool, error) {
	switch {
	case rec.State == jobs.StateDownloading:
		return false, w.enqueueNext(ctx, rec, 0)
	case rec.State != jobs.StateGenerating || rec.VideoID == "":
		return false, nil // ended, or not there yet
	case !w.now().Before(w.deadline(rec)):
		w.failJob(ctx, rec, jobs.StateTimedOut, "deadline_exceeded",
			fmt.Errorf("job deadline %s passed while the API was still generating (status %s)", w.deadline(rec).Format(time.RFC3339), rec.APIStatus))
		return false, nil
	}
	return true, nil
}

// check is a status check outside the poll chain: it records what it saw
// and never schedules a follow-up.
func (w *Worker) check(ctx context.Context, rec *jobs.Record) error {
	if ok, err := w.waitsOnStatus(ctx, rec); !ok {
		return err
	}
	v, err := w.status(ctx, rec)
	if err != nil {
		return err
	}
	if v.Status.Terminal() {
		return w.finishGeneration(ctx, rec, v, "seen by an out-of-chain check (webhook)")
	}
	_, err = w.jobs.Do(ctx, rec.ID, jobs.Observed{APIStatus: string(v.Status), Progress: progress(v), StatusChanged: string(v.Status) != rec.APIStatus})
	if errors.Is(err, jobs.ErrIllegalTransition) {
		return nil
	}
	return err
}

// pollLink is link seq of the job's poll chain: only the current link
// does work, so duplicates and stale retries are no-ops. It checks the
// status, then enqueues link seq+1 before it moves the record's poll_seq
// to it: a crash between the two leaves a link that takes over, never a
// broken chain.
func (w *Worker) pollLink(ctx context.Context, rec *jobs.Record, seq int) error {
	if rec.State == jobs.StateGenerating && rec.PollSeq == seq-1 {
		// The previous link scheduled us but died before it advanced the
		// record: take over. When it advanced the record itself meanwhile,
		// the reply is what it wrote.
		res, err := w.jobs.Do(ctx, rec.ID, jobs.PollTakenOver{Seq: seq})
		switch {
		case errors.Is(err, jobs.ErrIllegalTransition):
			return nil
		case err != nil:
			return err
		}
		rec = res.Record
	}
	if rec.State == jobs.StateGenerating && rec.PollSeq != seq {
		w.log.DebugContext(ctx, "stale poll dropped", "job_id", rec.ID, "seq", seq, "current", rec.PollSeq)
		return nil
	}
	if ok, err := w.waitsOnStatus(ctx, rec); !ok {
		return err
	}
	v, err := w.status(ctx, rec)
	var ae *apiclient.APIError
	switch {
	case err != nil && errors.As(err, &ae) && !ae.Retryable():
		return err
	case err != nil:
		// Transient: move the next check later instead of burning retries.
		// The job deadline bounds how long this goes on.
		delay := max(w.pollDelay(nil, rec.Polls), apiclient.RetryAfter(err))
		w.log.WarnContext(ctx, "status check failed; checking again later", "job_id", rec.ID, "video_id", rec.VideoID, "in", delay, "err", err.Error())
		return w.advance(ctx, rec, delay, jobs.Observed{Seq: seq, Code: errorCode(err), Err: err.Error()})
	case v.Status.Terminal():
		return w.finishGeneration(ctx, rec, v, fmt.Sprintf("seen by poll #%d", seq))
	}
	changed := string(v.Status) != rec.APIStatus
	if err := w.advance(ctx, rec, w.pollDelay(v, rec.Polls), jobs.Observed{Seq: seq, APIStatus: string(v.Status), Progress: progress(v), StatusChanged: changed}); err != nil {
		return err
	}
	if changed {
		w.log.InfoContext(ctx, "job status", "job_id", rec.ID, "video_id", rec.VideoID, "api_status", string(v.Status), "progress", progress(v))
	}
	return nil
}

// status asks the API for the job's status. An answer that can never
// change (the video is gone) fails the job.
func (w *Worker) status(ctx context.Context, rec *jobs.Record) (*apiclient.Video, error) {
	w.met.StatusCheck()
	v, err := w.api.Get(ctx, rec.VideoID)
	if err != nil {
		var ae *apiclient.APIError
		if errors.As(err, &ae) && !ae.Retryable() {
			w.failJob(ctx, rec, jobs.StateFailed, errorCode(err), err)
			return nil, permanent(err)
		}
		return nil, err
	}
	// The record a poll reads may not hold the request: the API's answer
	// names the model.
	tracing.Current(ctx).Str(tracing.AttrModel, v.Model)
	return v, nil
}

// advance enqueues the chain's next link, due after delay (at the latest
// just after the job's deadline, to end it then), and then applies obs,
// which moves the record to that link.
func (w *Worker) advance(ctx context.Context, rec *jobs.Record, delay time.Duration, obs jobs.Observed) error {
	if left := w.deadline(rec).Sub(w.now()); delay > left {
		delay = max(left, 0) + 100*time.Millisecond // wake up to end the job at its deadline
	}
	next := *rec
	next.PollSeq = obs.Seq + 1
	if err := w.enqueueNext(ctx, &next, delay); err != nil {
		return err
	}
	_, err := w.jobs.Do(ctx, rec.ID, obs)
	if errors.Is(err, jobs.ErrIllegalTransition) {
		return nil // ended meanwhile: the link just enqueued is a no-op
	}
	return err
}

// finishGeneration handles a terminal API status.
func (w *Worker) finishGeneration(ctx context.Context, rec *jobs.Record, v *apiclient.Video, seenBy string) error {
	rec.APIStatus = string(v.Status) // what failJob records
	switch v.Status {
	case apiclient.StatusCompleted:
		done := jobs.Completed{APIStatus: string(v.Status), Progress: progress(v), Outputs: v.OutputCount(), SeenBy: seenBy,
			Billing: jobs.BillingOf(v, rec.Request.Model, rec.Tenant)}
		if v.Asset != nil {
			if v.Asset.Bytes != nil {
				done.ExpectedBytes = *v.Asset.Bytes
			}
			done.ExpectedSHA256 = v.Asset.SHA256
		}
		res, err := w.jobs.Do(ctx, rec.ID, done)
		if err != nil && !errors.Is(err, jobs.ErrIllegalTransition) {
			return err
		}
		if res.Applied {
			w.tenantLeft(ctx, rec)
			w.met.Spend(done.Billing.Model, rec.Tenant, done.Billing.Settled.Micros)
			if w.cfg.Budgets != nil {
				w.settleBudget(ctx, rec, done.Billing)
			}
			w.log.InfoContext(ctx, "job generated", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(jobs.StateDownloading))
		}
		if res.State != jobs.StateDownloading {
			return nil
		}
		next := *rec
		next.State = jobs.StateDownloading
		return w.enqueueNext(ctx, &next, 0)
	case apiclient.StatusFailed:
		msg := "generation failed"
		if s := v.Error.String(); s != "" {
			msg = s
		}
		w.failJobBilled(ctx, rec, jobs.StateFailed, "generation_failed", errors.New(msg), jobs.BillingOf(v, rec.Request.Model, rec.Tenant))
	case apiclient.StatusCancelled:
		w.failJobBilled(ctx, rec, jobs.StateCancelled, "cancelled", errors.New("the API reports the job cancelled"), jobs.BillingOf(v, rec.Request.Model, rec.Tenant))
	case apiclient.StatusExpired:
		w.failJobBilled(ctx, rec, jobs.StateExpired, "expired", errors.New("the API reports the job expired"), jobs.BillingOf(v, rec.Request.Model, rec.Tenant))
	}
	return nil
}

// pollDelay is the wait before the next check: the API's
// poll_after_seconds when given (at least MinPollInterval), else
// PollInterval growing by half per check up to MaxPollInterval, ±10%.
func (w *Worker) pollDelay(v *apiclient.Video, polls int) time.Duration {
	if v != nil {
		if d := v.PollAfter(); d > 0 {
			return min(max(d, w.cfg.MinPollInterval), w.cfg.MaxPollInterval)
		}
	}
	d := float64(w.cfg.PollInterval) * math.Pow(1.5, float64(min(polls, 30)))
	return max(jitter(time.Duration(min(d, float64(w.cfg.MaxPollInterval))), 0.1), w.cfg.MinPollInterval)
}

func progress(v *apiclient.Video) int {
	if v == nil || v.Progress == nil {
		return 0
	}
	return *v.Progress
}
