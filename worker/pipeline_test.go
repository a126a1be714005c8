package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
)

func TestPipelineStoresVideos(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.startWorker(fastConfig(), nil)
	ids := e.submit(3, "google/veo-3.1-lite")
	recs := e.waitTerminal(ids, 30*time.Second)
	e.checkStored(recs)
	sp, err := e.jobs.SpendSummary(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * recs[0].SettledCost.Micros; sp.Today["google/veo-3.1-lite"] != want || sp.Month["google/veo-3.1-lite"] != want {
		t.Errorf("spend %+v; want %d micro-dollars today and this month", sp, want)
	}
	for _, r := range recs {
		if !r.EstimatedCost.Known || r.EstimatedCost.Micros <= 0 || r.SettledCost != r.EstimatedCost || r.BillingState != "settled" {
			t.Errorf("job %s: estimated %+v, settled %+v, billing %q; want the API's cost, settled", r.ID, r.EstimatedCost, r.SettledCost, r.BillingState)
		}
		if r.CreateAttempts != 1 || r.Polls < 1 || r.DownloadAttempts != 1 {
			t.Errorf("job %s: create attempts %d, polls %d, download attempts %d; want 1, ≥1, 1", r.ID, r.CreateAttempts, r.Polls, r.DownloadAttempts)
		}
		for name, ts := range map[string]time.Time{"created": r.CreatedAt, "completed": r.CompletedAt, "stored": r.StoredAt, "finished": r.FinishedAt} {
			if ts.IsZero() || ts.Before(r.SubmittedAt) {
				t.Errorf("job %s: %s time %v not after submission %v", r.ID, name, ts, r.SubmittedAt)
			}
		}
		hist, err := e.jobs.Events(context.Background(), r.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, ev := range hist {
			names = append(names, ev.Event)
		}
		got := strings.Join(names, ",")
		for _, want := range []string{"submitted", "create_started", "created", "completed", "stored"} {
			if !strings.Contains(got, want) {
				t.Errorf("job %s: history %s lacks %s", r.ID, got, want)
			}
		}
	}
}

// TestPipelineUnderFaults is the acceptance run: 200 jobs through
// two workers while the API answers 5xx, 429, drops connections after
// handling requests, and truncates downloads.
func TestPipelineUnderFaults(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	cfg.Faults = standin.Faults{ServerErrorRate: 0.05, RateLimitRate: 0.03, RetryAfter: time.Second, DropRate: 0.03, TruncateRate: 0.05}
	e := setup(t, cfg)
	wc := fastConfig()
	e.startWorker(wc, nil)
	e.startWorker(wc, nil)
	ids := e.submit(200, "google/veo-3.1-lite")
	recs := e.waitTerminal(ids, 150*time.Second)
	e.checkStored(recs)
	st := e.api.Stats()
	t.Logf("faults injected: %v; create calls %d for %d jobs", st.Faults, st.CreateCalls, st.JobsCreated)
	for _, kind := range []string{"5xx", "429", "drop", "truncate"} {
		if st.Faults[kind] == 0 {
			t.Errorf("no %s fault was injected: the test did not exercise it", kind)
		}
	}
}

// lossyAPI loses the answer of the first create call: it either sends the
// call and drops the answer (the job exists), or drops the call.
type lossyAPI struct {
	*apiclient.Client
	sendFirst bool
	calls     atomic.Int32
}

func (a *lossyAPI) Create(ctx context.Context, req apiclient.CreateRequest, o apiclient.CreateOptions) (*apiclient.Video, error) {
	if a.calls.Add(1) == 1 {
		if a.sendFirst {
			if _, err := a.Client.Create(ctx, req, o); err != nil {
				return nil, err
			}
		}
		return nil, &apiclient.TransportError{Op: "create video", Sent: true, Err: io.ErrUnexpectedEOF}
	}
	return a.Client.Create(ctx, req, o)
}

func TestInDoubtCreateIsReconciled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		sentFirst  bool
		wantCalls  int32
		wantResult string
	}{
		{"answer lost: adopts the job the API made", true, 1, "adopted"},
		{"request lost: submits again", false, 2, "no job created"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, fastStandin())
			api := &lossyAPI{Client: e.client, sendFirst: tc.sentFirst}
			e.startWorker(fastConfig(), api)
			ids := e.submit(1, "openai/sora-2")
			recs := e.waitTerminal(ids, 30*time.Second)
			e.checkStored(recs)
			if got := api.calls.Load(); got != tc.wantCalls {
				t.Errorf("create calls = %d, want %d", got, tc.wantCalls)
			}
			if !strings.Contains(recs[0].Reconcile, tc.wantResult) {
				t.Errorf("reconcile note %q, want it to say %q", recs[0].Reconcile, tc.wantResult)
			}
		})
	}
}

// TestCrashDuringCreateIsReconciled simulates a worker killed while its
// create call was in flight: the record says in doubt with no end time.
func TestCrashDuringCreateIsReconciled(t *testing.T) {
	t.Parallel()
	for _, reached := range []bool{true, false} {
		t.Run(fmt.Sprintf("call reached the API=%v", reached), func(t *testing.T) {
			t.Parallel()
			e := setup(t, fastStandin())
			ctx := context.Background()
			id := tasks.JobID("crashed-job")
			req := tasks.Request{JobID: id, Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "the crashed create"}}
			// Record the job as a crashed worker leaves it, without a task.
			started := time.Now().UTC().Add(-500 * time.Millisecond)
			if _, _, err := e.jobs.Create(ctx, &jobs.Record{ID: string(id), Request: req.Video}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.jobs.Apply(ctx, string(id), jobs.Change{To: jobs.StateSubmitting,
				Set: map[string]any{jobs.FieldCreateInDoubt: true, jobs.FieldCreateStartedAt: started}}); err != nil {
				t.Fatal(err)
			}
			if reached {
				if _, err := e.client.Create(ctx, req.Video, apiclient.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			// The API client's timeout is the window of the crashed call.
			api, err := apiclient.New(apiclient.Config{BaseURL: e.apiURL, APIKey: testKey, Timeout: time.Second, ContentIdleTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			e.startWorker(fastConfig(), api)
			// The retried task (asynq's recoverer would re-queue it).
			if _, err := e.producer.Submit(ctx, req); err != nil {
				t.Fatal(err)
			}
			task, _ := tasks.NewCreateTask(string(id))
			aq := asynq.NewClientFromRedisClient(e.rdb)
			defer aq.Close()
			if _, err := aq.Enqueue(task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
				t.Fatal(err)
			}
			recs := e.waitTerminal([]tasks.JobID{id}, 30*time.Second)
			e.checkStored(recs)
			if want := map[bool]string{true: "adopted", false: "no job created"}[reached]; !strings.Contains(recs[0].Reconcile, want) {
				t.Errorf("reconcile note %q, want %q", recs[0].Reconcile, want)
			}
		})
	}
}

// TestOnePollChain feeds duplicate creates and duplicate and stale polls to
// a job whose generation is held, then checks that one chain remains and
// the API saw one create.
func TestOnePollChain(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.api.Hold(true)
	e.startWorker(fastConfig(), nil)
	ctx := context.Background()
	ids := e.submit(1, "google/veo-3.1-lite")
	id := string(ids[0])
	// A duplicate enqueue of the same job.
	if again, err := e.producer.Submit(ctx, tasks.Request{JobID: ids[0], Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "prompt 0000"}}); err != nil || again != ids[0] {
		t.Fatalf("resubmit: %v %v", again, err)
	}
	rec := e.waitState(ids[0], jobs.StateGenerating, 10*time.Second)
	aq := asynq.NewClientFromRedisClient(e.rdb)
	defer aq.Close()
	// Duplicated creates and polls under fresh task ids (as a crash or a
	// manual retry would make), including stale and future sequence numbers.
	for i := 0; i < 3; i++ {
		ct, _ := tasks.NewCreateTask(id, asynq.TaskID(fmt.Sprintf("dup-create-%d", i)))
		if _, err := aq.Enqueue(ct); err != nil {
			t.Fatal(err)
		}
	}
	for i, seq := range []int{rec.PollSeq, rec.PollSeq, rec.PollSeq + 5, 0} {
		pt, _ := tasks.NewPollTask(id, max(seq, 1), 0, asynq.TaskID(fmt.Sprintf("dup-poll-%d", i)))
		if _, err := aq.Enqueue(pt); err != nil {
			t.Fatal(err)
		}
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	// Let the duplicates run while the job is held, then count live links.
	deadline := time.Now().Add(10 * time.Second)
	var live []string
	for {
		live = liveTasks(t, insp, tasks.QueuePoll, id)
		if len(live) == 1 && pendingCount(t, insp, tasks.QueuePoll, tasks.QueueCreate) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("poll tasks alive for the job: %v, want exactly one chain link", live)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.api.Hold(false)
	recs := e.waitTerminal(ids, 30*time.Second)
	e.checkStored(recs)
	if left := liveTasks(t, insp, tasks.QueuePoll, id); len(left) != 0 {
		t.Errorf("poll tasks left after the job finished: %v", left)
	}
}

// liveTasks lists the job's poll tasks that are pending, scheduled, active
// or waiting to retry.
func liveTasks(t *testing.T, insp *asynq.Inspector, queue, jobID string) []string {
	t.Helper()
	var out []string
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){insp.ListPendingTasks, insp.ListScheduledTasks, insp.ListActiveTasks, insp.ListRetryTasks}
	for _, list := range lists {
		infos, err := list(queue, asynq.PageSize(1000))
		if err != nil && !strings.Contains(err.Error(), "does not exist") {
			t.Fatal(err)
		}
		for _, ti := range infos {
			if strings.Contains(string(ti.Payload), `"job_id":"`+jobID+`"`) {
				out = append(out, ti.ID)
			}
		}
	}
	return out
}

func pendingCount(t *testing.T, insp *asynq.Inspector, queues ...string) int {
	t.Helper()
	n := 0
	for _, q := range queues {
		info, err := insp.GetQueueInfo(q)
		if err != nil && strings.Contains(err.Error(), "does not exist") {
			continue // nothing was ever enqueued there
		}
		if err != nil {
			t.Fatal(err)
		}
		n += info.Pending + info.Active + info.Retry
	}
	return n
}

// stallingAPI serves content until half of it, then blocks until the
// request is cancelled, and signals when it got there.
type stallingAPI struct {
	*apiclient.Client
	reached chan struct{}
	once    sync.Once
}

func (a *stallingAPI) Content(ctx context.Context, id string, index int) (*apiclient.Content, error) {
	c, err := a.Client.Content(ctx, id, index)
	if err != nil {
		return nil, err
	}
	half := c.Length / 2
	c.Body = &stallReader{rc: c.Body, left: half, ctx: ctx, reached: func() { a.once.Do(func() { close(a.reached) }) }}
	return c, nil
}

type stallReader struct {
	rc      io.ReadCloser
	left    int64
	ctx     context.Context
	reached func()
}

func (r *stallReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		r.reached()
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	return n, err
}

func (r *stallReader) Close() error { return r.rc.Close() }

func TestWorkerStoppedMidDownload(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	cfg.ContentSize = 4 << 20
	e := setup(t, cfg)
	stall := &stallingAPI{Client: e.client, reached: make(chan struct{})}
	wc := fastConfig()
	wc.ShutdownTimeout = 200 * time.Millisecond
	stop := e.startWorker(wc, stall)
	ids := e.submit(1, "google/veo-3.1-lite")
	select {
	case <-stall.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the download never started")
	}
	stop() // mid-download: the task goes back to its queue
	if n := countFiles(t, e.store.Root()); n != 0 {
		t.Fatalf("%d files visible after the interrupted download, want none", n)
	}
	e.startWorker(fastConfig(), nil)
	recs := e.waitTerminal(ids, 30*time.Second)
	e.checkStored(recs)
	// The object exists once; no temporary or partial files remain.
	if n := countFiles(t, e.store.Root()); n != 1 {
		t.Errorf("%d objects stored, want exactly 1", n)
	}
}

// countFiles counts the stored objects under root: files that are neither
// sidecars nor temporary files, and fails on leftover temporary files.
func countFiles(t *testing.T, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch {
		case strings.HasPrefix(d.Name(), ".tmp-"):
			t.Errorf("temporary file left behind: %s", p)
		case strings.HasSuffix(d.Name(), ".meta"):
		default:
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRateLimitDoesNotBurnRetries(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	cfg.Faults = standin.Faults{RateLimitRate: 1, RetryAfter: time.Second, Endpoints: []string{"create"}}
	e := setup(t, cfg)
	e.startWorker(fastConfig(), nil)
	ids := e.submit(1, "google/veo-3.1-lite")
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	deadline := time.Now().Add(20 * time.Second)
	for e.api.Stats().Faults["429"] < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the create was not retried after 429s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	info, err := insp.GetTaskInfo(tasks.QueueCreate, tasks.CreateTaskID(string(ids[0])))
	if err != nil {
		t.Fatal(err)
	}
	if info.Retried != 0 {
		t.Errorf("after %d rate-limited answers the task has used %d retries, want 0", e.api.Stats().Faults["429"], info.Retried)
	}
	if !strings.Contains(info.LastErr, "429") {
		t.Errorf("last error %q does not mention the 429", info.LastErr)
	}
	e.api.SetFaults(standin.Faults{})
	e.checkStored(e.waitTerminal(ids, 30*time.Second))
}

func TestTerminalOutcomes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		cfg       func(*standin.Config)
		key       string
		wantState jobs.State
		wantCode  string
	}{
		{"generation fails", func(c *standin.Config) { c.FailRate = 1 }, testKey, jobs.StateFailed, "generation_failed"},
		{"generation expires", func(c *standin.Config) { c.ExpireRate = 1 }, testKey, jobs.StateExpired, "expired"},
		{"wrong API key", func(*standin.Config) {}, "sk-wrong-key-0000", jobs.StateFailed, "unauthorised"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := fastStandin()
			tc.cfg(&cfg)
			e := setup(t, cfg)
			client, err := apiclient.New(apiclient.Config{BaseURL: e.apiURL, APIKey: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			e.startWorker(fastConfig(), client)
			ids := e.submit(1, "google/veo-3.1-lite")
			r := e.waitTerminal(ids, 30*time.Second)[0]
			if r.State != tc.wantState || r.ErrorCode != tc.wantCode || r.Error == "" {
				t.Errorf("state %s, code %q, error %q; want %s, %q and a message", r.State, r.ErrorCode, r.Error, tc.wantState, tc.wantCode)
			}
			if tc.key == testKey && (r.BillingState != "void" || !r.SettledCost.Known || r.SettledCost.Micros != 0) {
				t.Errorf("billing %q, settled %+v; want void, 0.00", r.BillingState, r.SettledCost)
			}
			if strings.Contains(r.Error, tc.key) {
				t.Errorf("the API key leaked into the job's error: %q", r.Error)
			}
			if r.StorageKey != "" || countFiles(t, e.store.Root()) != 0 {
				t.Errorf("a failed job stored something")
			}
		})
	}
}

func TestDeadlineEndsJob(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.api.Hold(true)
	e.startWorker(fastConfig(), nil)
	id, err := e.producer.Submit(context.Background(), tasks.Request{
		Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "too slow"}, Timeout: 4 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.waitState(id, jobs.StateGenerating, 4*time.Second)
	r := e.waitTerminal([]tasks.JobID{id}, 20*time.Second)[0]
	if r.State != jobs.StateTimedOut || r.ErrorCode != "deadline_exceeded" || r.VideoID == "" {
		t.Errorf("state %s code %s video %q; want timed_out, deadline_exceeded, and the video id kept", r.State, r.ErrorCode, r.VideoID)
	}
	e.api.Hold(false)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	if left := liveTasks(t, insp, tasks.QueuePoll, string(id)); len(left) != 0 {
		t.Errorf("polls still scheduled after the deadline: %v", left)
	}
}
