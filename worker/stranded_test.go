package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestStrandedJobsAreRecovered loses each kind of next task (as a Redis
// failover could) and checks the reconciler brings the job home.
func TestStrandedJobsAreRecovered(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	cfg := fastConfig()
	cfg.StrandedGrace = time.Nanosecond
	cfg.StrandedCheckInterval = -1 // driven by hand below
	w := e.newWorker(cfg, nil)

	// A queued job whose create task vanished.
	ids := e.submit(1, "google/veo-3.1-lite")
	if err := insp.DeleteTask(tasks.QueueCreate, tasks.CreateTaskID(string(ids[0]))); err != nil {
		t.Fatal(err)
	}
	if n, err := w.RecoverStranded(ctx); err != nil || n != 1 {
		t.Fatalf("recover queued job: %d, %v; want 1", n, err)
	}
	if n, err := w.RecoverStranded(ctx); err != nil || n != 0 {
		t.Fatalf("second pass: %d, %v; want 0 (the task exists now)", n, err)
	}

	// A generating job whose poll chain vanished, and one whose link was
	// archived by mistake.
	e.api.Hold(true)
	stop := e.startWorker(cfg, nil)
	more := []tasks.JobID{}
	for _, id := range []string{"lost-poll", "archived-poll"} {
		if _, err := e.producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Video: e.request(id)}); err != nil {
			t.Fatal(err)
		}
		more = append(more, tasks.JobID(id))
	}
	for _, id := range append(ids, more...) {
		e.waitState(id, jobs.StateGenerating, 10*time.Second)
	}
	stop()
	for _, id := range more {
		rec, _ := e.jobs.Get(ctx, string(id))
		taskID := tasks.PollTaskID(string(id), rec.PollSeq)
		var err error
		if id == "lost-poll" {
			err = insp.DeleteTask(tasks.QueuePoll, taskID)
		} else {
			err = insp.ArchiveTask(tasks.QueuePoll, taskID)
		}
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	n, err := w.RecoverStranded(ctx)
	if err != nil || n != 2 {
		t.Fatalf("recover generating jobs: %d, %v; want 2", n, err)
	}
	hist, _ := e.jobs.Events(ctx, "lost-poll", 0)
	if last := hist[len(hist)-1]; last.Event != "reenqueued" || !strings.Contains(last.Detail, "video:poll") {
		t.Errorf("history does not say what was re-enqueued: %+v", last)
	}
	e.api.Hold(false)
	e.startWorker(cfg, nil)
	e.checkStored(e.waitTerminal(append(ids, more...), 30*time.Second))
	// The set is updated right after the record (a separate command), so
	// give the last finished job's update a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := e.jobs.ActiveCount(ctx)
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("active set holds %d jobs after all finished (%v)", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
