package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// getAPI is an API double that answers Get with a fixed video or error.
type getAPI struct {
	VideoAPI
	video *apiclient.Video
	err   error
	calls int
}

func (a *getAPI) Get(context.Context, string) (*apiclient.Video, error) {
	a.calls++
	return a.video, a.err
}

// TestPollLinkDecisions pins what one link of the poll chain does: the job
// is generating at poll_seq 3 with video v.
func TestPollLinkDecisions(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	progress := 40
	running := &apiclient.Video{ID: "v", Status: apiclient.StatusProcessing, Progress: &progress}
	size := int64(1234)
	done := &apiclient.Video{ID: "v", Status: apiclient.StatusCompleted, Asset: &apiclient.Asset{Bytes: &size, SHA256: "ab"}}
	failed := &apiclient.Video{ID: "v", Status: apiclient.StatusFailed}

	type want struct {
		state    jobs.State
		pollSeq  int
		apiCalls int
		task     string // queue/id of a task that must now exist ("": none checked)
		code     string // the record's error code
		err      bool
	}
	for _, tc := range []struct {
		name    string
		seq     int
		pollSeq int // the record's
		api     *getAPI
		late    bool // the job's deadline has passed
		want    want
	}{
		{name: "the current link, still running", seq: 3, pollSeq: 3, api: &getAPI{video: running},
			want: want{state: jobs.StateGenerating, pollSeq: 4, apiCalls: 1, task: "video_poll/poll:j:4"}},
		{name: "a stale link", seq: 2, pollSeq: 3, api: &getAPI{video: running},
			want: want{state: jobs.StateGenerating, pollSeq: 3}},
		{name: "a link ahead of the record", seq: 5, pollSeq: 3, api: &getAPI{video: running},
			want: want{state: jobs.StateGenerating, pollSeq: 3}},
		{name: "the predecessor died before advancing", seq: 4, pollSeq: 3, api: &getAPI{video: running},
			want: want{state: jobs.StateGenerating, pollSeq: 5, apiCalls: 1, task: "video_poll/poll:j:5"}},
		{name: "the deadline passed", seq: 3, pollSeq: 3, api: &getAPI{video: running}, late: true,
			want: want{state: jobs.StateTimedOut, pollSeq: 3, code: "deadline_exceeded"}},
		{name: "completed", seq: 3, pollSeq: 3, api: &getAPI{video: done},
			want: want{state: jobs.StateDownloading, pollSeq: 3, apiCalls: 1, task: "video_download/download:j"}},
		{name: "failed at the API", seq: 3, pollSeq: 3, api: &getAPI{video: failed},
			want: want{state: jobs.StateFailed, pollSeq: 3, apiCalls: 1, code: "generation_failed"}},
		{name: "a transient error moves the next check later", seq: 3, pollSeq: 3, api: &getAPI{err: &apiclient.APIError{StatusCode: 503, Code: "unavailable"}},
			want: want{state: jobs.StateGenerating, pollSeq: 4, apiCalls: 1, task: "video_poll/poll:j:4", code: "unavailable"}},
		{name: "the video is gone", seq: 3, pollSeq: 3, api: &getAPI{err: &apiclient.APIError{StatusCode: 404, Code: "not_found"}},
			want: want{state: jobs.StateFailed, pollSeq: 3, apiCalls: 1, code: "not_found", err: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := srv.Client(t, srv.NewDB(t))
			st := jobs.NewStore(rdb, "")
			disk, err := storage.NewDisk(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			w, err := New(Config{PollInterval: time.Second, MinPollInterval: time.Second}, Deps{Redis: rdb, API: tc.api, Store: disk, Jobs: st})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			rec := &jobs.Record{ID: "j"}
			rec.Request.Model, rec.Request.Prompt = "m", "p"
			if tc.late {
				rec.Deadline = time.Now().Add(-time.Second)
			}
			if _, _, err := st.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Apply(ctx, "j", jobs.Change{To: jobs.StateGenerating, Set: map[string]any{
				jobs.FieldVideoID: "v", jobs.FieldPollSeq: tc.pollSeq, jobs.FieldAPIStatus: "queued"}}); err != nil {
				t.Fatal(err)
			}
			rec, err = w.loadJob(ctx, "j")
			if err != nil {
				t.Fatal(err)
			}
			err = w.pollLink(ctx, rec, tc.seq)
			if (err != nil) != tc.want.err || (err != nil && !errors.Is(err, asynq.SkipRetry)) {
				t.Errorf("pollLink = %v; want an error %v (permanent)", err, tc.want.err)
			}
			after, gerr := st.Get(ctx, "j")
			if gerr != nil {
				t.Fatal(gerr)
			}
			if after.State != tc.want.state || after.PollSeq != tc.want.pollSeq || after.ErrorCode != tc.want.code || tc.api.calls != tc.want.apiCalls {
				t.Errorf("after: %s, poll_seq %d, error %q, %d API calls; want %s, %d, %q, %d",
					after.State, after.PollSeq, after.ErrorCode, tc.api.calls, tc.want.state, tc.want.pollSeq, tc.want.code, tc.want.apiCalls)
			}
			if tc.want.task != "" {
				n, _ := tasks.NextTask(after, 0)
				if n == nil || n.Queue+"/"+n.ID != tc.want.task {
					t.Errorf("the record waits on %+v; want %s", n, tc.want.task)
				} else if _, err := w.insp.GetTaskInfo(n.Queue, n.ID); err != nil {
					t.Errorf("task %s: %v", tc.want.task, err)
				}
			}
		})
	}
}

// Timeout is the API client's timeout.
func (a *getAPI) Timeout() time.Duration { return 30 * time.Second }
