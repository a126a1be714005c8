package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// handleCancel asks the API to cancel the generation of a job a user
// cancelled, and records the answer. The API currently answers 501 for
// every job: the generation then runs on (and is billed), which the record
// says plainly.
func (w *Worker) handleCancel(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.CancelPayload](t.Payload())
	if err != nil {
		w.log.ErrorContext(ctx, "bad cancel payload", "err", err.Error())
		return permanent(err)
	}
	rec, err := w.loadJob(ctx, p.JobID)
	if err != nil {
		return err
	}
	if rec.State != jobs.StateCancelled {
		return nil // retried since
	}
	var outcome, apiStatus string
	switch {
	case rec.VideoID == "" && rec.CreateInDoubt:
		outcome = "a create call was in flight with no answer: a generation may exist at the API; check its job list"
	case rec.VideoID == "":
		outcome = "nothing to cancel at the API: the job was never submitted"
	default:
		v, err := w.api.Cancel(ctx, rec.VideoID)
		var ae *apiclient.APIError
		switch {
		case err == nil:
			outcome = fmt.Sprintf("the API cancelled video %s (status %s)", rec.VideoID, v.Status)
			apiStatus = string(v.Status)
		case errors.As(err, &ae) && ae.StatusCode == 501:
			outcome = fmt.Sprintf("the API does not support cancelling (%s): video %s runs to its end and is billed; it will not be downloaded", ae.Reason, rec.VideoID)
		case apiclient.IsRetryable(err):
			return err
		default:
			outcome = "the API refused to cancel: " + err.Error()
		}
	}
	res, err := w.jobs.Do(ctx, rec.ID, jobs.CancelAnswered{Outcome: outcome, APIStatus: apiStatus})
	if err != nil && !errors.Is(err, jobs.ErrIllegalTransition) {
		return err
	}
	w.log.InfoContext(ctx, "job cancel", "job_id", rec.ID, "video_id", rec.VideoID, "outcome", outcome)
	if res.Applied && rec.CallbackURL != "" {
		// The cancellation is settled: the callback is what comes next.
		after := *rec
		after.CancelOutcome = outcome
		return w.enqueueNext(ctx, &after, 0)
	}
	return nil
}

// adoptCancelled records the video of a create that finished after its
// job was cancelled (releasing the model's create lock), and enqueues the
// cancel task that asks the API to cancel it.
func (w *Worker) adoptCancelled(ctx context.Context, rec *jobs.Record, v *apiclient.Video) error {
	res, err := w.jobs.Do(ctx, rec.ID, jobs.AdoptedAfterCancel{VideoID: v.ID, Model: rec.Request.Model})
	if err != nil || !res.Applied {
		return err
	}
	return w.enqueueNext(ctx, res.Record, 0)
}
