package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// runStrandedChecks re-enqueues, every interval, the missing next task of
// any unfinished job. One worker of the fleet at a time does it (a Redis
// lease); the others stand by. It returns when ctx ends.
func (w *Worker) runStrandedChecks(ctx context.Context, interval time.Duration) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	owner := hex.EncodeToString(b[:])
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		held, err := w.jobs.Lease(ctx, "stranded-check", owner, 2*interval)
		if err != nil || !held {
			continue
		}
		if n, err := w.RecoverStranded(ctx); err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "stranded-job check", "err", err.Error())
		} else if n > 0 {
			w.log.WarnContext(ctx, "stranded jobs re-enqueued", "count", n)
		}
	}
}

// RecoverStranded finds every unfinished job whose next task is missing
// (lost in a Redis failover or restart, evicted, or archived by mistake)
// and enqueues it again; it returns how many it re-enqueued. Jobs changed
// within StrandedGrace are left alone: their next task may be on its way.
// Re-enqueueing is safe: every step checks the job's record first.
func (w *Worker) RecoverStranded(ctx context.Context) (int, error) {
	insp := asynq.NewInspectorFromRedisClient(w.rdb)
	now := w.now()
	n := 0
	err := w.jobs.ScanActive(ctx, func(ids []string) error {
		var done []string
		for _, id := range ids {
			rec, err := w.jobs.Get(ctx, id)
			if errors.Is(err, jobs.ErrNotFound) {
				done = append(done, id)
				continue
			}
			if err != nil {
				return err
			}
			if rec.State.Terminal() {
				done = append(done, id)
				continue
			}
			if now.Sub(rec.UpdatedAt) < w.cfg.StrandedGrace {
				continue
			}
			task, queue, taskID, err := nextTask(rec)
			if err != nil || task == nil {
				continue
			}
			info, err := insp.GetTaskInfo(queue, taskID)
			switch {
			case err == nil && info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted:
				continue // alive
			case err == nil:
				_ = insp.DeleteTask(queue, taskID) // dead or done, yet the job is not: run it again
			case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) && !strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "does not exist"):
				return err
			}
			if err := w.enqueue(ctx, task); err != nil {
				return err
			}
			n++
			_, _ = w.jobs.Apply(ctx, rec.ID, jobs.Change{Event: "reenqueued", Detail: "stranded " + string(rec.State) + " job: its " + task.Type() + " task was missing"})
			w.log.WarnContext(ctx, "stranded job re-enqueued", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(rec.State), "task", task.Type())
		}
		return w.jobs.Deactivate(ctx, done...)
	})
	return n, err
}

// nextTask is the task that should exist for an unfinished job.
func nextTask(rec *jobs.Record) (*asynq.Task, string, string, error) {
	switch rec.State {
	case jobs.StateQueued, jobs.StateSubmitting:
		id := tasks.RetryTaskID(tasks.CreateTaskID(rec.ID), rec.Retries)
		t, err := tasks.NewCreateTask(rec.ID, asynq.TaskID(id))
		return t, tasks.QueueCreate, id, err
	case jobs.StateGenerating:
		if rec.PollSeq < 1 {
			id := tasks.RetryTaskID(tasks.CreateTaskID(rec.ID), rec.Retries) // create saved the id but not the chain
			t, err := tasks.NewCreateTask(rec.ID, asynq.TaskID(id))
			return t, tasks.QueueCreate, id, err
		}
		t, err := tasks.NewPollTask(rec.ID, rec.PollSeq, 0)
		return t, tasks.QueuePoll, tasks.PollTaskID(rec.ID, rec.PollSeq), err
	case jobs.StateDownloading:
		id := tasks.RetryTaskID(tasks.DownloadTaskID(rec.ID), rec.Retries)
		t, err := tasks.NewDownloadTask(rec.ID, rec.VideoID, asynq.TaskID(id))
		return t, tasks.QueueDownload, id, err
	}
	return nil, "", "", nil
}
