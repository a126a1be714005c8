package server

import (
	"testing"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// The job page names the task a job waits on by the worker's own rule
// (tasks.NextTask), in every state that waits on one.
func TestJobTasksFollowNextTask(t *testing.T) {
	for _, rec := range []jobs.Record{
		{ID: "j1", State: jobs.StateQueued},
		{ID: "j1", State: jobs.StateQueued, Retries: 2},
		{ID: "j1", State: jobs.StateSubmitting, Retries: 1},
		{ID: "j1", State: jobs.StateGenerating, VideoID: "v1", PollSeq: 3},
		{ID: "j1", State: jobs.StateGenerating, VideoID: "v1"}, // chain not started: its create task starts it
		{ID: "j1", State: jobs.StateDownloading, VideoID: "v1", PollSeq: 3, Retries: 1},
		{ID: "j1", State: jobs.StateCancelled},
		{ID: "j1", State: jobs.StateCancelled, VideoID: "v1", PollSeq: 2},
	} {
		t.Run(string(rec.State), func(t *testing.T) {
			want, err := tasks.NextTask(&rec, 0)
			if err != nil || want == nil {
				t.Fatalf("NextTask: %v, %v", want, err)
			}
			var found bool
			for _, r := range jobTasks(&rec) {
				if r.Queue == want.Queue && r.ID == want.ID {
					found = true
				}
			}
			if !found {
				t.Errorf("%+v: the page's tasks %+v lack %s/%s", rec, jobTasks(&rec), want.Queue, want.ID)
			}
			if cur := currentStep(&rec); rec.State != jobs.StateCancelled && (cur == nil || cur.Queue != want.Queue || cur.ID != want.ID) {
				t.Errorf("%+v: current task %+v, want %s/%s", rec, cur, want.Queue, want.ID)
			}
		})
	}
}
