package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// handlePoll checks the job's status once. A chain link (Seq > 0) then
// schedules the next link; an out-of-chain check (Seq 0) only records
// what it saw.
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
	if p.Seq > 0 {
		// A failed out-of-chain check never fails the job: the chain
		// carries on.
		defer func() { err = w.onTaskError(ctx, rec, err) }()
	}

	switch {
	case rec.State.Terminal():
		return nil
	case rec.State == jobs.StateDownloading:
		return w.enqueueDownload(ctx, rec)
	case rec.State != jobs.StateGenerating || rec.VideoID == "":
		return nil
	}
	inChain := p.Seq > 0
	if inChain {
		if rec.PollSeq == p.Seq-1 {
			// The previous link scheduled us but died before it advanced the
			// record: take over.
			out, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{From: []jobs.State{jobs.StateGenerating},
				IfEqual: map[string]any{jobs.FieldPollSeq: p.Seq - 1}, Set: map[string]any{jobs.FieldPollSeq: p.Seq}})
			if err != nil {
				return err
			}
			if out.Applied {
				rec.PollSeq = p.Seq
			} else if rec, err = w.jobs.Get(ctx, rec.ID); err != nil {
				// The predecessor advanced the record itself meanwhile (it
				// enqueued us, then moved poll_seq): read what it wrote.
				return err
			} else if rec.State != jobs.StateGenerating {
				return nil
			}
		}
		if rec.PollSeq != p.Seq {
			w.log.DebugContext(ctx, "stale poll dropped", "job_id", rec.ID, "seq", p.Seq, "current", rec.PollSeq)
			return nil
		}
	}
	if !w.now().Before(w.deadline(rec)) {
		w.failJob(ctx, rec, jobs.StateTimedOut, "deadline_exceeded",
			fmt.Errorf("job deadline %s passed while the API was still generating (status %s)", w.deadline(rec).Format(time.RFC3339), rec.APIStatus))
		return nil
	}

	w.met.StatusCheck()
	v, gerr := w.api.Get(ctx, rec.VideoID)
	if gerr != nil {
		var ae *apiclient.APIError
		if errors.As(gerr, &ae) && !ae.Retryable() {
			w.failJob(ctx, rec, jobs.StateFailed, errorCode(gerr), gerr)
			return permanent(gerr)
		}
		if !inChain {
			return gerr
		}
		// Transient: move the next check later instead of burning retries.
		// The job deadline bounds how long this goes on.
		delay := max(w.pollDelay(nil, rec.Polls), apiclient.RetryAfter(gerr))
		_, _ = w.jobs.Apply(ctx, rec.ID, jobs.Change{From: []jobs.State{jobs.StateGenerating},
			Set: map[string]any{jobs.FieldErrorCode: errorCode(gerr), jobs.FieldError: gerr.Error()}})
		w.log.WarnContext(ctx, "status check failed; checking again later", "job_id", rec.ID, "video_id", rec.VideoID, "in", delay, "err", gerr.Error())
		return w.advance(ctx, rec, p.Seq, delay, nil)
	}
	return w.observe(ctx, rec, v, p.Seq)
}

// observe records a status answer and moves the job on.
func (w *Worker) observe(ctx context.Context, rec *jobs.Record, v *apiclient.Video, seq int) error {
	if v.Status.Terminal() {
		return w.finishGeneration(ctx, rec, v, seq)
	}
	if seq == 0 {
		_, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{From: []jobs.State{jobs.StateGenerating},
			Set: statusFields(v), Incr: map[string]int64{jobs.FieldPolls: 1}, Event: statusEvent(rec, v), Detail: string(v.Status)})
		return err
	}
	return w.advance(ctx, rec, seq, w.pollDelay(v, rec.Polls), v)
}

// advance schedules link seq+1, then moves the record's poll_seq to it.
// Enqueueing first means a crash between the two leaves a link that takes
// over (see handlePoll), never a broken chain.
func (w *Worker) advance(ctx context.Context, rec *jobs.Record, seq int, delay time.Duration, v *apiclient.Video) error {
	if left := w.deadline(rec).Sub(w.now()); delay > left {
		delay = max(left, 0) + 100*time.Millisecond // wake up to end the job at its deadline
	}
	next, err := tasks.NewPollTask(rec.ID, seq+1, delay)
	if err != nil {
		return err
	}
	if err := w.enqueue(ctx, next); err != nil {
		return err
	}
	set := map[string]any{jobs.FieldPollSeq: seq + 1}
	ev := ""
	if v != nil {
		for k, val := range statusFields(v) {
			set[k] = val
		}
		set[jobs.FieldErrorCode], set[jobs.FieldError] = "", ""
		ev = statusEvent(rec, v)
	}
	out, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{From: []jobs.State{jobs.StateGenerating},
		IfEqual: map[string]any{jobs.FieldPollSeq: seq}, Set: set, Incr: map[string]int64{jobs.FieldPolls: 1},
		Event: ev, Detail: fmt.Sprintf("api status %s", apiStatus(v))})
	if err != nil {
		return err
	}
	if out.Applied && ev != "" {
		w.log.InfoContext(ctx, "job status", "job_id", rec.ID, "video_id", rec.VideoID, "api_status", string(v.Status), "progress", progress(v))
	}
	return nil
}

// finishGeneration handles a terminal API status.
func (w *Worker) finishGeneration(ctx context.Context, rec *jobs.Record, v *apiclient.Video, seq int) error {
	rec.APIStatus = string(v.Status) // what failJob records
	seenBy := fmt.Sprintf("seen by poll #%d", seq)
	if seq == 0 {
		seenBy = "seen by an out-of-chain check (webhook)"
	}
	switch v.Status {
	case apiclient.StatusCompleted:
		set := statusFields(v)
		set[jobs.FieldCompletedAt] = w.now()
		set[jobs.FieldOutputs] = v.OutputCount()
		if v.Asset != nil {
			if v.Asset.Bytes != nil {
				set[jobs.FieldExpectedBytes] = *v.Asset.Bytes
			}
			set[jobs.FieldExpectedSHA256] = v.Asset.SHA256
		}
		out, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{From: []jobs.State{jobs.StateGenerating}, To: jobs.StateDownloading,
			Set: set, Incr: map[string]int64{jobs.FieldPolls: 1}, Event: "completed", Detail: "api status completed, " + seenBy})
		if err != nil {
			return err
		}
		if out.Applied {
			w.log.InfoContext(ctx, "job generated", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(jobs.StateDownloading))
		}
		if out.State != jobs.StateDownloading {
			return nil
		}
		return w.enqueueDownload(ctx, rec)
	case apiclient.StatusFailed:
		msg := "generation failed"
		if s := v.Error.String(); s != "" {
			msg = s
		}
		w.failJob(ctx, rec, jobs.StateFailed, "generation_failed", errors.New(msg))
	case apiclient.StatusCancelled:
		w.failJob(ctx, rec, jobs.StateCancelled, "cancelled", errors.New("the API reports the job cancelled"))
	case apiclient.StatusExpired:
		w.failJob(ctx, rec, jobs.StateExpired, "expired", errors.New("the API reports the job expired"))
	}
	return nil
}

func (w *Worker) enqueueDownload(ctx context.Context, rec *jobs.Record) error {
	t, err := tasks.NewDownloadTask(rec.ID, rec.VideoID, asynq.TaskID(tasks.RetryTaskID(tasks.DownloadTaskID(rec.ID), rec.Retries)))
	if err != nil {
		return err
	}
	return w.enqueue(ctx, t)
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

func statusFields(v *apiclient.Video) map[string]any {
	return map[string]any{jobs.FieldAPIStatus: string(v.Status), jobs.FieldProgress: progress(v)}
}

// statusEvent names a history line when the API status changed, else "".
func statusEvent(rec *jobs.Record, v *apiclient.Video) string {
	if string(v.Status) == rec.APIStatus {
		return ""
	}
	return "api_status"
}

func progress(v *apiclient.Video) int {
	if v == nil || v.Progress == nil {
		return 0
	}
	return *v.Progress
}

func apiStatus(v *apiclient.Video) string {
	if v == nil {
		return "unknown"
	}
	return string(v.Status)
}
