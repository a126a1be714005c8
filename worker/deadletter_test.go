package worker_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

// goneOnceAPI answers the first content download with a permanent 404.
type goneOnceAPI struct {
	*apiclient.Client
	calls atomic.Int32
}

func (a *goneOnceAPI) Content(ctx context.Context, id string, index int) (*apiclient.Content, error) {
	if a.calls.Add(1) == 1 {
		return nil, &apiclient.APIError{Op: "content " + id, StatusCode: http.StatusNotFound, Code: "not_found", Reason: "video_not_found_or_not_owned"}
	}
	return a.Client.Content(ctx, id, index)
}

// TestDeadLetterRetry: a job fails at download and its task is archived;
// running the archived task again (asynqmon's retry) downloads the video
// that was already generated, without a second generation.
func TestDeadLetterRetry(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	api := &goneOnceAPI{Client: e.client}
	e.startWorker(fastConfig(), api)
	ids := e.submit(1, "google/veo-3.1-lite")
	r := e.waitTerminal(ids, 30*time.Second)[0]
	for deadline := time.Now().Add(5 * time.Second); r.DeadTask == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r, _ = e.jobs.Get(context.Background(), string(ids[0])) // the archive reference follows the failure
	}
	if r.State != jobs.StateFailed || r.FailedStep != "download" || !strings.HasPrefix(r.DeadTask, "video_download/") {
		t.Fatalf("after the 404: state %s, step %q, dead task %q", r.State, r.FailedStep, r.DeadTask)
	}
	queue, id, _ := strings.Cut(r.DeadTask, "/")
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	// The job records its dead task before the handler returns; asynq
	// archives the task just after.
	info, err := insp.GetTaskInfo(queue, id)
	for deadline := time.Now().Add(5 * time.Second); err == nil && info.State == asynq.TaskStateActive && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		info, err = insp.GetTaskInfo(queue, id)
	}
	if err != nil || info.State != asynq.TaskStateArchived || !strings.Contains(info.LastErr, "404") {
		t.Fatalf("dead letter: %+v %v", info, err)
	}
	if err := insp.RunTask(queue, id); err != nil {
		t.Fatal(err)
	}
	e.waitState(ids[0], jobs.StateStored, 30*time.Second)
	recs := e.waitTerminal(ids, time.Second)
	e.checkStored(recs)
	if recs[0].Retries != 1 {
		t.Errorf("retries = %d, want 1", recs[0].Retries)
	}
}
