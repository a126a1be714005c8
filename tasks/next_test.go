package tasks_test

import (
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestNextTask pins the task each record waits on: type, queue and id.
func TestNextTask(t *testing.T) {
	for _, tc := range []struct {
		name             string
		rec              jobs.Record
		typ, queue, id   string
		processIn, delay time.Duration
	}{
		{"queued", jobs.Record{ID: "j", State: jobs.StateQueued}, tasks.TypeCreate, tasks.QueueCreate, "create:j", 0, 0},
		{"submitting after two retries", jobs.Record{ID: "j", State: jobs.StateSubmitting, Retries: 2}, tasks.TypeCreate, tasks.QueueCreate, "create:j:r2", 0, 0},
		{"generating", jobs.Record{ID: "j", State: jobs.StateGenerating, VideoID: "v", PollSeq: 4}, tasks.TypePoll, tasks.QueuePoll, "poll:j:4", time.Second, time.Second},
		{"generating, chain not started", jobs.Record{ID: "j", State: jobs.StateGenerating, VideoID: "v"}, tasks.TypeCreate, tasks.QueueCreate, "create:j", 0, time.Second},
		{"downloading", jobs.Record{ID: "j", State: jobs.StateDownloading, VideoID: "v"}, tasks.TypeDownload, tasks.QueueDownload, "download:j", 0, 0},
		{"downloading after a retry", jobs.Record{ID: "j", State: jobs.StateDownloading, VideoID: "v", Retries: 1}, tasks.TypeDownload, tasks.QueueDownload, "download:j:r1", 0, 0},
		{"cancelled before a video", jobs.Record{ID: "j", State: jobs.StateCancelled}, tasks.TypeCancel, tasks.QueuePoll, "cancel:j", 0, 0},
		{"cancelled with a video", jobs.Record{ID: "j", State: jobs.StateCancelled, VideoID: "v"}, tasks.TypeCancel, tasks.QueuePoll, "cancel:j:v", 0, 0},
		{"stored with a callback", jobs.Record{ID: "j", State: jobs.StateStored, CallbackURL: "https://x"}, tasks.TypeCallback, tasks.QueuePoll, "callback:j:stored:0", 0, 0},
		{"failed after a retry with a callback", jobs.Record{ID: "j", State: jobs.StateFailed, Retries: 1, CallbackURL: "https://x"}, tasks.TypeCallback, tasks.QueuePoll, "callback:j:failed:1", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := tasks.NextTask(&tc.rec, tc.delay)
			if err != nil || n == nil {
				t.Fatalf("NextTask = %v, %v", n, err)
			}
			if n.Type != tc.typ || n.Queue != tc.queue || n.ID != tc.id || n.ProcessIn != tc.processIn || n.Task.Type() != tc.typ {
				t.Errorf("NextTask = %s %s %s in %s; want %s %s %s in %s", n.Type, n.Queue, n.ID, n.ProcessIn, tc.typ, tc.queue, tc.id, tc.processIn)
			}
		})
	}
	for _, st := range []jobs.State{jobs.StateStored, jobs.StateFailed, jobs.StateTimedOut, jobs.StateExpired} {
		if n, err := tasks.NextTask(&jobs.Record{ID: "j", State: st}, 0); n != nil || err != nil {
			t.Errorf("NextTask(%s) = %+v, %v; want nothing", st, n, err)
		}
	}
}

// TestRetryJobFromEachFailure retries a job failed at each step (as the
// job API and dead-letter revival do) and checks where it goes and which
// task it then waits on; an archived task with that id is replaced.
func TestRetryJobFromEachFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		to    jobs.State
		set   map[string]any
		state jobs.State
		queue string
		id    string
	}{
		{"failed at create", jobs.StateFailed, map[string]any{jobs.FieldFailedStep: "create"}, jobs.StateQueued, tasks.QueueCreate, "create:j:r1"},
		{"create in doubt", jobs.StateFailed, map[string]any{jobs.FieldFailedStep: "create", jobs.FieldCreateInDoubt: true}, jobs.StateSubmitting, tasks.QueueCreate, "create:j:r1"},
		{"timed out polling", jobs.StateTimedOut, map[string]any{jobs.FieldFailedStep: "poll", jobs.FieldVideoID: "v", jobs.FieldPollSeq: 3}, jobs.StateGenerating, tasks.QueuePoll, "poll:j:4"},
		{"failed at download", jobs.StateFailed, map[string]any{jobs.FieldFailedStep: "download", jobs.FieldVideoID: "v", jobs.FieldCompletedAt: time.Now()}, jobs.StateDownloading, tasks.QueueDownload, "download:j:r1"},
		{"failed at the API", jobs.StateFailed, map[string]any{jobs.FieldFailedStep: "generation", jobs.FieldVideoID: "v", jobs.FieldCompletedAt: time.Now()}, jobs.StateQueued, tasks.QueueCreate, "create:j:r1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			if _, err := b.client.Submit(b.ctx, tasks.Request{JobID: "j", Video: video("p")}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.Apply(b.ctx, "j", jobs.Change{To: tc.to, Set: tc.set}); err != nil {
				t.Fatal(err)
			}
			// The failed attempt's task, archived under the id the retry
			// needs (an older release's, or a manual enqueue).
			stale, _ := tasks.NextTask(&jobs.Record{ID: "j", State: tc.state, VideoID: "v", PollSeq: 4, Retries: 1}, 0)
			if _, err := b.aq.Enqueue(stale.Task); err != nil {
				t.Fatal(err)
			}
			if err := b.insp.ArchiveTask(stale.Queue, stale.ID); err != nil {
				t.Fatal(err)
			}
			rec, next, err := tasks.RetryJob(b.ctx, b.store, b.aq, b.insp, nil, "j")
			if err != nil {
				t.Fatal(err)
			}
			if rec.State != tc.state || rec.Retries != 1 || rec.Request.Prompt != "p" || next == nil || next.Queue != tc.queue || next.ID != tc.id {
				t.Fatalf("RetryJob = %s (retries %d, prompt %q), next %+v; want %s and %s/%s", rec.State, rec.Retries, rec.Request.Prompt, next, tc.state, tc.queue, tc.id)
			}
			if info := b.task(t, tc.queue, tc.id); info == nil || info.State == asynq.TaskStateArchived {
				t.Errorf("task %s/%s after the retry: %+v; want it live", tc.queue, tc.id, info)
			}
			if _, _, err := tasks.RetryJob(b.ctx, b.store, b.aq, b.insp, nil, "j"); !errors.Is(err, tasks.ErrNotRetryable) {
				t.Errorf("second retry: %v; want ErrNotRetryable", err)
			}
		})
	}
}
