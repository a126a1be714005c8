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

// TestCancelStopsTheJob cancels a job while the API generates it: it ends
// cancelled, its polls stop, nothing is downloaded, and the API's answer to
// the cancel request (501 today) is recorded.
func TestCancelStopsTheJob(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.api.Hold(true)
	e.startWorker(fastConfig(), nil)
	ids := e.submit(1, "google/veo-3.1-lite")
	id := ids[0]
	e.waitState(id, jobs.StateGenerating, 10*time.Second)
	if _, err := e.producer.Cancel(context.Background(), id, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var r *jobs.Record
	for {
		r, _ = e.jobs.Get(context.Background(), string(id))
		if r.CancelOutcome != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.State != jobs.StateCancelled || !strings.Contains(r.CancelOutcome, "does not support cancelling") {
		t.Fatalf("state %s, cancel outcome %q", r.State, r.CancelOutcome)
	}
	e.api.Hold(false)
	polls := r.Polls
	time.Sleep(time.Second) // several poll intervals of this configuration
	r, _ = e.jobs.Get(context.Background(), string(id))
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	if left := liveTasks(t, insp, tasks.QueuePoll, string(id)); len(left) != 0 || r.Polls != polls {
		t.Errorf("polling went on after cancel: tasks %v, polls %d → %d", left, polls, r.Polls)
	}
	if r.State != jobs.StateCancelled || r.StorageKey != "" || countFiles(t, e.store.Root()) != 0 {
		t.Errorf("a cancelled job was downloaded: state %s key %q", r.State, r.StorageKey)
	}
	if _, err := e.producer.Cancel(context.Background(), id, ""); err == nil {
		t.Error("cancelling a cancelled job succeeded")
	}
}
