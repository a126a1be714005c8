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

// createAPI is an API double: Create answers from a script of results, in
// turn; List shows no job (a reconciliation finds nothing).
type createAPI struct {
	VideoAPI
	answers []createAnswer
	calls   int
	during  func() // runs inside the first Create call
}

type createAnswer struct {
	video *apiclient.Video
	err   error
}

func (a *createAPI) Create(context.Context, apiclient.CreateRequest, apiclient.CreateOptions) (*apiclient.Video, error) {
	if a.calls == 0 && a.during != nil {
		a.during()
	}
	ans := a.answers[min(a.calls, len(a.answers)-1)]
	a.calls++
	return ans.video, ans.err
}

func (a *createAPI) List(context.Context, apiclient.ListParams) (*apiclient.VideoList, error) {
	return &apiclient.VideoList{}, nil
}

// TestCreateDecisions pins what a create attempt does under the model's
// create lock, and what becomes of the lock.
func TestCreateDecisions(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	video := &apiclient.Video{ID: "v", Status: apiclient.StatusQueued}
	inDoubt := &apiclient.TransportError{Op: "create", Sent: true, Timeout: true, Err: errors.New("timeout")}
	for _, tc := range []struct {
		name      string
		answers   []createAnswer
		late      bool
		cancel    bool // a user cancels while the first call runs
		lock      lockAfter
		state     jobs.State
		calls     int
		inDoubt   bool
		retryLate bool // the task is deferred without using an attempt
		permanent bool
		task      string // queue/id that must exist afterwards
	}{
		{name: "created", answers: []createAnswer{{video: video}}, lock: lockReleased, state: jobs.StateGenerating, calls: 1, task: "video_poll/poll:j:1"},
		{name: "refused", answers: []createAnswer{{err: &apiclient.APIError{StatusCode: 400, Code: "invalid_request"}}},
			lock: lockRelease, state: jobs.StateFailed, calls: 1, permanent: true},
		{name: "rate limited", answers: []createAnswer{{err: &apiclient.APIError{StatusCode: 429, RetryAfter: 2 * time.Second}}},
			lock: lockRelease, state: jobs.StateSubmitting, calls: 1, retryLate: true},
		{name: "a gateway error: nothing created", answers: []createAnswer{{err: &apiclient.APIError{StatusCode: 502, FromGateway: true}}},
			lock: lockRelease, state: jobs.StateSubmitting, calls: 1},
		{name: "in doubt, then nothing found, then created", answers: []createAnswer{{err: inDoubt}, {video: video}},
			lock: lockReleased, state: jobs.StateGenerating, calls: 2, task: "video_poll/poll:j:1"},
		{name: "in doubt twice: the lock is kept", answers: []createAnswer{{err: inDoubt}},
			lock: lockKeep, state: jobs.StateSubmitting, calls: 2, inDoubt: true, retryLate: true},
		{name: "the deadline passed", late: true, answers: []createAnswer{{video: video}}, lock: lockRelease, state: jobs.StateTimedOut},
		{name: "cancelled while the call ran", cancel: true, answers: []createAnswer{{video: video}},
			lock: lockReleased, state: jobs.StateCancelled, calls: 1, task: "video_poll/cancel:j:v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := srv.Client(t, srv.NewDB(t))
			st := jobs.NewStore(rdb, "")
			disk, err := storage.NewDisk(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			api := &createAPI{answers: tc.answers}
			if tc.cancel {
				api.during = func() {
					if _, err := st.Do(ctx, "j", jobs.Cancelled{Reason: "test"}); err != nil {
						t.Error(err)
					}
				}
			}
			w, err := New(Config{ReconcileDelay: 10 * time.Millisecond, ClockTolerance: 10 * time.Millisecond}, Deps{Redis: rdb, API: api, Store: disk, Jobs: st})
			if err != nil {
				t.Fatal(err)
			}
			rec := &jobs.Record{ID: "j"}
			rec.Request.Model, rec.Request.Prompt = "m", "p"
			if tc.late {
				rec.Deadline = time.Now().Add(-time.Second)
			}
			if _, _, err := st.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if ok, err := w.lockCreate(ctx, rec); err != nil || !ok {
				t.Fatalf("lockCreate = %v, %v", ok, err)
			}
			rec, _ = st.Get(ctx, "j")
			lock, err := w.createLocked(ctx, rec)
			var rl *retryLater
			if lock != tc.lock || errors.As(err, &rl) != tc.retryLate || errors.Is(err, asynq.SkipRetry) != tc.permanent {
				t.Errorf("createLocked = %v, %v; want lock %v, deferred %v, permanent %v", lock, err, tc.lock, tc.retryLate, tc.permanent)
			}
			after, _ := st.Get(ctx, "j")
			if after.State != tc.state || api.calls != tc.calls || after.CreateInDoubt != tc.inDoubt {
				t.Errorf("after: %s, %d create calls, in doubt %v; want %s, %d, %v", after.State, api.calls, after.CreateInDoubt, tc.state, tc.calls, tc.inDoubt)
			}
			holder, _ := rdb.Get(ctx, "videoworker:create_lock:m").Result()
			if held := holder == "j"; held != (tc.lock != lockReleased) {
				t.Errorf("lock held by %q after %v", holder, tc.lock)
			}
			if tc.task != "" {
				n, _ := tasks.NextTask(after, 0)
				if n == nil || n.Queue+"/"+n.ID != tc.task {
					t.Errorf("the record waits on %+v; want %s", n, tc.task)
				} else if _, err := w.insp.GetTaskInfo(n.Queue, n.ID); err != nil {
					t.Errorf("task %s: %v", tc.task, err)
				}
			}
		})
	}
}

// Timeout is the API client's timeout.
func (a *createAPI) Timeout() time.Duration { return 30 * time.Second }
