package tasks

import (
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
)

// Next is the task that must exist for a job: what jobs.NextWait says the
// record waits on, as a task with its wire type, queue and id.
type Next struct {
	Task  *asynq.Task
	Type  string
	Queue string
	ID    string
	// ProcessIn is the wait before it runs (0: at once).
	ProcessIn time.Duration
}

// NextTask returns the task that must exist for rec now, or nil when the
// job waits on nothing (it has ended). delay postpones a poll link (the
// worker's poll interval); the other steps run at once. Every path that
// enqueues a job's next step (the handlers, Retry, dead-letter revival,
// the stranded-job reconciler) goes through it, so a task's id is made in
// one place: enqueueing the same next task twice is a no-op. The task
// carries the job's trace context (rec.Trace, when the job was traced).
func NextTask(rec *jobs.Record, delay time.Duration) (*Next, error) {
	w := jobs.NextWait(rec)
	n := &Next{}
	var err error
	switch w.Step {
	case jobs.StepCreate:
		n.Type, n.Queue, n.ID = TypeCreate, QueueCreate, RetryTaskID(CreateTaskID(rec.ID), w.Generation)
		n.Task, err = newCreateTask(rec.ID, rec.Trace, asynq.TaskID(n.ID))
	case jobs.StepPoll:
		n.Type, n.Queue, n.ID, n.ProcessIn = TypePoll, QueuePoll, PollTaskID(rec.ID, w.Seq), max(delay, 0)
		n.Task, err = newPollTask(rec.ID, rec.Trace, w.Seq, n.ProcessIn)
	case jobs.StepDownload:
		n.Type, n.Queue, n.ID = TypeDownload, QueueDownload, RetryTaskID(DownloadTaskID(rec.ID), w.Generation)
		n.Task, err = newDownloadTask(rec.ID, rec.Trace, w.VideoID, asynq.TaskID(n.ID))
	case jobs.StepCancel:
		n.Type, n.Queue, n.ID = TypeCancel, QueuePoll, CancelTaskID(rec.ID)
		if w.VideoID != "" {
			// A video adopted after the cancellation needs its own cancel
			// task: the first one may have run before the video was known.
			n.ID += ":" + w.VideoID
		}
		n.Task, err = newCancelTask(rec.ID, rec.Trace, asynq.TaskID(n.ID))
	case jobs.StepCallback:
		ev := rec.CallbackEventID()
		n.Type, n.Queue, n.ID = TypeCallback, QueuePoll, CallbackTaskID(ev)
		n.Task, err = newCallbackTask(rec.ID, rec.Trace, ev)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return n, nil
}

// StatusCheck returns the out-of-chain status check of a generating job,
// deduplicated by key (a webhook delivery key): it runs at once, reads the
// job's status from the API and records it, and never schedules a
// follow-up. opts are added to the task's (e.g. a later ProcessAt, a
// Retention that keeps its id taken). It returns nil when the job is not waiting on its poll chain
// (no video id yet, or past generating): there is nothing to check.
func StatusCheck(rec *jobs.Record, key, reason string, opts ...asynq.Option) (*Next, error) {
	if rec.State != jobs.StateGenerating || rec.VideoID == "" {
		return nil, nil
	}
	t, err := newCheckTask(rec.ID, rec.Trace, key, reason, opts...)
	if err != nil {
		return nil, err
	}
	return &Next{Task: t, Type: TypePoll, Queue: QueuePoll, ID: CheckTaskID(rec.ID, key)}, nil
}
