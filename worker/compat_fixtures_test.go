package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// compatFixturesFile holds job records and queued tasks as an older
// release wrote them (see TestWriteCompatFixtures); TestCompatFixtures
// carries each to its end with this code.
const compatFixturesFile = "testdata/compat-v1.json"

// compatFixtures is the fixture file.
type compatFixtures struct {
	// WrittenBy names the code that wrote the file.
	WrittenBy string `json:"written_by"`
	// WrittenAtMS is when (Unix ms); loading shifts every stored time by
	// the time since, so deadlines and reconcile windows keep their meaning.
	WrittenAtMS int64       `json:"written_at_ms"`
	Jobs        []compatJob `json:"jobs"`
}

// compatJob is one job: its Redis keys as dumped, the tasks that waited
// for it, what to do after loading and the state it must end in.
type compatJob struct {
	Name   string            `json:"name"`
	ID     string            `json:"id"`
	Record map[string]string `json:"record"` // HGETALL job:{id}
	Events []string          `json:"events"` // LRANGE job:{id}:events
	// Webhooks is SMEMBERS job:{id}:webhooks.
	Webhooks  []string          `json:"webhooks,omitempty"`
	Active    bool              `json:"active"`     // member of the unfinished set
	IndexedMS int64             `json:"indexed_ms"` // score in the job index
	Claims    map[string]string `json:"claims,omitempty"`
	Tasks     []compatTask      `json:"tasks"`
	// Then is what an operator does after loading: "" (nothing),
	// "retry" (tasks.Client.Retry) or "run_archived" (run the dead letter).
	Then string `json:"then,omitempty"`
	// Want is the state the job must end in.
	Want string `json:"want"`
	// Video names the video id placeholder of the job ("" for none); the
	// test replaces it with a video created at the stand-in.
	Video string `json:"video,omitempty"`
}

// compatTask is a task as asynq held it.
type compatTask struct {
	Type     string `json:"type"`
	Payload  string `json:"payload"`
	Queue    string `json:"queue"`
	ID       string `json:"id"`
	State    string `json:"state"` // pending, scheduled, archived
	MaxRetry int    `json:"max_retry"`
}

// TestWriteCompatFixtures writes compatFixturesFile with the code of the
// commit that added it: every job state a release leaves in Redis, with
// the task each waits on, made by that release's store updates and task
// constructors. It runs only with VIDEOWORKER_WRITE_FIXTURES=1: the file
// is a record of an older release, not of this code.
func TestWriteCompatFixtures(t *testing.T) {
	if os.Getenv("VIDEOWORKER_WRITE_FIXTURES") != "1" {
		t.Skip("writes testdata/compat-v1.json; set VIDEOWORKER_WRITE_FIXTURES=1")
	}
	e := setup(t, fastStandin())
	ctx := context.Background()
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	model := "google/veo-3.1-lite"
	apply := func(id string, c jobs.Change) {
		t.Helper()
		out, err := e.jobs.Apply(ctx, id, c)
		if err != nil || !out.Applied {
			t.Fatalf("%s: apply %+v: %v %+v", id, c, err, out)
		}
	}
	submit := func(id string) {
		t.Helper()
		if _, err := e.producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: model, Prompt: "compat " + id}}); err != nil {
			t.Fatal(err)
		}
	}
	dropCreate := func(id string) {
		t.Helper()
		if err := insp.DeleteTask(tasks.QueueCreate, tasks.CreateTaskID(id)); err != nil {
			t.Fatal(err)
		}
	}
	enqueue := func(task *asynq.Task, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := asynq.NewClientFromRedisClient(e.rdb).Enqueue(task); err != nil {
			t.Fatal(err)
		}
	}
	// The updates of the create step (worker/create.go submit and adopt).
	createStarted := func(id string) {
		apply(id, jobs.Change{From: []jobs.State{jobs.StateQueued, jobs.StateSubmitting}, To: jobs.StateSubmitting,
			Set:  map[string]any{jobs.FieldCreateInDoubt: true, jobs.FieldCreateStartedAt: time.Now().UTC(), jobs.FieldCreateEndedAt: ""},
			Incr: map[string]int64{jobs.FieldCreateAttempts: 1}, Event: "create_started",
			IfEqual: map[string]any{jobs.FieldVideoID: "", jobs.FieldCreateInDoubt: false}})
	}
	adopted := func(id, video string) {
		if _, err := e.jobs.Claim(ctx, video, id); err != nil {
			t.Fatal(err)
		}
		apply(id, jobs.Change{From: []jobs.State{jobs.StateQueued, jobs.StateSubmitting}, To: jobs.StateGenerating,
			Set: map[string]any{jobs.FieldVideoID: video, jobs.FieldCreatedAt: time.Now().UTC(), jobs.FieldAPIStatus: "queued",
				jobs.FieldCreateInDoubt: false, jobs.FieldCreateEndedAt: time.Now().UTC(), jobs.FieldPollSeq: 1, jobs.FieldErrorCode: "", jobs.FieldError: ""},
			IfEqual: map[string]any{jobs.FieldVideoID: ""}, Event: "created", Detail: "video " + video + " (created in 12ms)", Return: true})
	}
	polled := func(id string, seq int) { // advance: link seq done, seq+1 next
		apply(id, jobs.Change{From: []jobs.State{jobs.StateGenerating}, IfEqual: map[string]any{jobs.FieldPollSeq: seq},
			Set:  map[string]any{jobs.FieldPollSeq: seq + 1, jobs.FieldAPIStatus: "in_progress", jobs.FieldProgress: 40, jobs.FieldErrorCode: "", jobs.FieldError: ""},
			Incr: map[string]int64{jobs.FieldPolls: 1}, Event: "api_status", Detail: "api status in_progress"})
	}
	completed := func(id string) {
		apply(id, jobs.Change{From: []jobs.State{jobs.StateGenerating}, To: jobs.StateDownloading,
			Set:  map[string]any{jobs.FieldAPIStatus: "completed", jobs.FieldProgress: 100, jobs.FieldCompletedAt: time.Now().UTC(), jobs.FieldOutputs: 1},
			Incr: map[string]int64{jobs.FieldPolls: 1}, Event: "completed", Detail: "api status completed, seen by poll #3"})
	}
	failed := func(id string, to jobs.State, code, step string) { // worker.failJob
		apply(id, jobs.Change{To: to, Set: map[string]any{jobs.FieldErrorCode: code, jobs.FieldError: code + " (compat)", jobs.FieldFailedStep: step},
			Event: "failed", Detail: code + ": compat"})
	}
	generating := func(id, video string, seq int) {
		submit(id)
		createStarted(id)
		adopted(id, video)
		dropCreate(id)
		for s := 1; s < seq; s++ {
			polled(id, s)
		}
	}

	type spec struct{ name, video, then, want string }
	var specs []spec
	add := func(name, video, then, want string) string {
		specs = append(specs, spec{name, video, then, want})
		return "compat-" + name
	}

	// Queued, its create task pending.
	submit(add("queued", "", "", "stored"))

	// A create call in flight when its worker died: in doubt, no end.
	id := add("submitting-crashed", "", "", "stored")
	submit(id)
	createStarted(id)

	// A create call that timed out: in doubt, reconcile first.
	id = add("submitting-in-doubt", "", "", "stored")
	submit(id)
	createStarted(id)
	apply(id, jobs.Change{Set: map[string]any{jobs.FieldCreateEndedAt: time.Now().UTC(), jobs.FieldErrorCode: "timeout", jobs.FieldError: "create: timeout"},
		Event: "create_in_doubt", Detail: "create: timeout"})

	// A create that failed definitely (429), to be submitted again.
	id = add("submitting-failed-429", "", "", "stored")
	submit(id)
	createStarted(id)
	apply(id, jobs.Change{Set: map[string]any{jobs.FieldCreateInDoubt: false, jobs.FieldCreateEndedAt: time.Now().UTC(), jobs.FieldErrorCode: "rate_limited", jobs.FieldError: "429"},
		Event: "create_failed", Detail: "429"})

	// A webhook arrived before the create call's answer was saved.
	id = add("submitting-early-webhook", "VIDEO_EARLY", "", "stored")
	submit(id)
	createStarted(id)
	if _, err := e.jobs.RecordEarlyWebhook(ctx, id, jobs.WebhookDelivery{Key: "dlv-early", EventType: "video.completed", Attempt: 1, VideoID: "VIDEO_EARLY"}); err != nil {
		t.Fatal(err)
	}

	// Generating: poll link 3 scheduled.
	id = add("generating", "VIDEO_GEN", "", "stored")
	generating(id, "VIDEO_GEN", 3)
	enqueue(tasks.NewPollTask(id, 3, 300*time.Millisecond))

	// Generating with a webhook's out-of-chain check queued beside the chain.
	id = add("generating-webhook-check", "VIDEO_CHECK", "", "stored")
	generating(id, "VIDEO_CHECK", 2)
	enqueue(tasks.NewPollTask(id, 2, 5*time.Second))
	if _, err := e.jobs.RecordWebhook(ctx, id, jobs.WebhookDelivery{Key: "dlv-1", EventType: "video.completed", Attempt: 1, VideoID: "VIDEO_CHECK"}); err != nil {
		t.Fatal(err)
	}
	enqueue(tasks.NewCheckTask(id, "dlv-1", "webhook video.completed"))

	// Generating, the video id saved but the chain never started (poll_seq 0
	// is impossible after adopt; a crash between adopt and enqueue leaves
	// the create task to retry).
	id = add("generating-create-retry", "VIDEO_NOCHAIN", "", "stored")
	submit(id)
	createStarted(id)
	adopted(id, "VIDEO_NOCHAIN")

	// Downloading: the download task pending.
	id = add("downloading", "VIDEO_DL", "", "stored")
	generating(id, "VIDEO_DL", 3)
	completed(id)
	enqueue(tasks.NewDownloadTask(id, "VIDEO_DL"))

	// Failed at download, its task archived: running the dead letter
	// retries the job.
	id = add("failed-download-dead-letter", "VIDEO_DEAD", "run_archived", "stored")
	generating(id, "VIDEO_DEAD", 3)
	completed(id)
	failed(id, jobs.StateFailed, "not_found", "download")
	apply(id, jobs.Change{From: jobs.AllStates, Set: map[string]any{jobs.FieldDeadTask: tasks.QueueDownload + "/" + tasks.DownloadTaskID(id)}})
	enqueue(tasks.NewDownloadTask(id, "VIDEO_DEAD"))
	if err := insp.ArchiveTask(tasks.QueueDownload, tasks.DownloadTaskID(id)); err != nil {
		t.Fatal(err)
	}

	// Failed at the API (generation failed): a retry submits again.
	id = add("failed-generation", "VIDEO_FAILED", "retry", "stored")
	generating(id, "VIDEO_FAILED", 2)
	failed(id, jobs.StateFailed, "generation_failed", "generation")

	// Timed out while generating: a retry polls again.
	id = add("timed-out-generating", "VIDEO_SLOW", "retry", "stored")
	generating(id, "VIDEO_SLOW", 4)
	failed(id, jobs.StateTimedOut, "deadline_exceeded", "poll")

	// Failed at download and retried by the old release: the :r1 download
	// task pending.
	id = add("retried-downloading", "VIDEO_RETRIED", "", "stored")
	generating(id, "VIDEO_RETRIED", 2)
	completed(id)
	failed(id, jobs.StateFailed, "retries_exhausted", "download")
	if _, err := e.producer.Retry(ctx, tasks.JobID(id)); err != nil {
		t.Fatal(err)
	}

	// Cancelled while queued: the cancel task pending.
	id = add("cancelled", "", "", "cancelled")
	submit(id)
	if _, err := e.producer.Cancel(ctx, tasks.JobID(id), "compat"); err != nil {
		t.Fatal(err)
	}

	// Stored: nothing left to do.
	id = add("stored", "VIDEO_STORED", "", "stored")
	generating(id, "VIDEO_STORED", 2)
	completed(id)
	apply(id, jobs.Change{From: []jobs.State{jobs.StateDownloading}, To: jobs.StateStored,
		Set: map[string]any{jobs.FieldStorageKey: "videos/x.mp4", jobs.FieldLocation: "file:///videos/x.mp4", jobs.FieldBytes: int64(32768),
			jobs.FieldSHA256: strings.Repeat("ab", 32), jobs.FieldStoredAt: time.Now().UTC(), jobs.FieldErrorCode: "", jobs.FieldError: ""},
		Event: "stored", Detail: "file:///videos/x.mp4"})

	// Dump.
	all := map[string][]compatTask{}
	for _, q := range []string{tasks.QueueCreate, tasks.QueuePoll, tasks.QueueDownload} {
		for state, list := range map[string]func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			"pending": insp.ListPendingTasks, "scheduled": insp.ListScheduledTasks, "archived": insp.ListArchivedTasks,
		} {
			infos, err := list(q, asynq.PageSize(1000))
			if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
				t.Fatal(err)
			}
			for _, ti := range infos {
				var p struct {
					JobID string `json:"job_id"`
				}
				_ = json.Unmarshal(ti.Payload, &p)
				all[p.JobID] = append(all[p.JobID], compatTask{Type: ti.Type, Payload: string(ti.Payload), Queue: ti.Queue, ID: ti.ID, State: state, MaxRetry: ti.MaxRetry})
			}
		}
	}
	out := compatFixtures{WrittenBy: "videoworker before the state machine of issue 11 (commit 917445e)", WrittenAtMS: time.Now().UnixMilli()}
	for _, s := range specs {
		id := "compat-" + s.name
		j := compatJob{Name: s.name, ID: id, Then: s.then, Want: s.want, Video: s.video, Tasks: all[id]}
		sort.Slice(j.Tasks, func(a, b int) bool { return j.Tasks[a].ID < j.Tasks[b].ID })
		var err error
		if j.Record, err = e.rdb.HGetAll(ctx, "videoworker:job:{"+id+"}").Result(); err != nil {
			t.Fatal(err)
		}
		if j.Events, err = e.rdb.LRange(ctx, "videoworker:job:{"+id+"}:events", 0, -1).Result(); err != nil {
			t.Fatal(err)
		}
		if j.Webhooks, err = e.rdb.SMembers(ctx, "videoworker:job:{"+id+"}:webhooks").Result(); err != nil {
			t.Fatal(err)
		}
		if j.Active, err = e.rdb.SIsMember(ctx, "videoworker:active", id).Result(); err != nil {
			t.Fatal(err)
		}
		score, err := e.rdb.ZScore(ctx, "videoworker:jobs", id).Result()
		if err != nil {
			t.Fatal(err)
		}
		j.IndexedMS = int64(score)
		if v := j.Record[jobs.FieldVideoID]; v != "" {
			j.Claims = map[string]string{v: id}
		}
		out.Jobs = append(out.Jobs, j)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(compatFixturesFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(compatFixturesFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCompatFixtures loads the records and queued tasks an older release
// left in Redis (compatFixturesFile) into a fresh database and checks that
// this code carries every job to its end.
func TestCompatFixtures(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ctx := context.Background()
	b, err := os.ReadFile(compatFixturesFile)
	if err != nil {
		t.Fatal(err)
	}
	var fx compatFixtures
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	delta := time.Now().UnixMilli() - fx.WrittenAtMS
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	aq := asynq.NewClientFromRedisClient(e.rdb)
	for _, j := range fx.Jobs {
		// The job's video, made at this test's stand-in.
		subst := strings.NewReplacer()
		if j.Video != "" {
			v, err := e.client.Create(ctx, apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "compat video " + j.Name}, apiclient.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			subst = strings.NewReplacer(j.Video, v.ID)
		}
		rec := map[string]any{}
		for k, v := range j.Record {
			if (strings.HasSuffix(k, "_at") || k == jobs.FieldDeadline) && v != "" {
				ms, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("%s: %s = %q", j.Name, k, v)
				}
				v = strconv.FormatInt(ms+delta, 10)
			}
			rec[k] = subst.Replace(v)
		}
		key := "videoworker:job:{" + j.ID + "}"
		pipe := e.rdb.TxPipeline()
		pipe.HSet(ctx, key, rec)
		for _, ev := range j.Events {
			pipe.RPush(ctx, key+":events", subst.Replace(ev))
		}
		for _, w := range j.Webhooks {
			pipe.SAdd(ctx, key+":webhooks", w)
		}
		if j.Active {
			pipe.SAdd(ctx, "videoworker:active", j.ID)
		}
		pipe.ZAdd(ctx, "videoworker:jobs", redis.Z{Score: float64(j.IndexedMS + delta), Member: j.ID})
		for v, owner := range j.Claims {
			pipe.HSet(ctx, "videoworker:claims", subst.Replace(v), owner)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for _, task := range j.Tasks {
			payload := subst.Replace(task.Payload)
			var p map[string]any
			if err := json.Unmarshal([]byte(payload), &p); err != nil {
				t.Fatal(err)
			}
			if nb, ok := p["not_before"].(float64); ok {
				p["not_before"] = int64(nb) + delta
				nb, _ := json.Marshal(p)
				payload = string(nb)
			}
			opts := []asynq.Option{asynq.TaskID(task.ID), asynq.Queue(task.Queue), asynq.MaxRetry(task.MaxRetry)}
			if task.State == "scheduled" {
				opts = append(opts, asynq.ProcessIn(200*time.Millisecond))
			}
			if _, err := aq.Enqueue(asynq.NewTask(task.Type, []byte(payload)), opts...); err != nil {
				t.Fatalf("%s: enqueue %s: %v", j.Name, task.ID, err)
			}
			if task.State == "archived" {
				if err := insp.ArchiveTask(task.Queue, task.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
		switch j.Then {
		case "retry":
			if _, err := e.producer.Retry(ctx, tasks.JobID(j.ID)); err != nil {
				t.Fatalf("%s: retry: %v", j.Name, err)
			}
		case "run_archived":
			for _, task := range j.Tasks {
				if task.State == "archived" {
					if err := insp.RunTask(task.Queue, task.ID); err != nil {
						t.Fatalf("%s: run the dead letter: %v", j.Name, err)
					}
				}
			}
		}
	}
	e.startWorker(fastConfig(), nil)
	for _, j := range fx.Jobs {
		t.Run(j.Name, func(t *testing.T) {
			r := e.waitState(tasks.JobID(j.ID), jobs.State(j.Want), 30*time.Second)
			switch {
			case r.State == jobs.StateStored && j.Record[jobs.FieldState] != string(jobs.StateStored):
				if _, err := e.store.Stat(ctx, r.StorageKey); err != nil || r.SHA256 == "" {
					t.Errorf("stored object %q: %v (sha256 %q)", r.StorageKey, err, r.SHA256)
				}
			case r.State == jobs.StateCancelled:
				for deadline := time.Now().Add(10 * time.Second); r.CancelOutcome == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					r, _ = e.jobs.Get(ctx, j.ID)
				}
				if r.CancelOutcome == "" {
					t.Errorf("no cancel outcome recorded")
				}
			}
			if active, _ := e.rdb.SIsMember(ctx, "videoworker:active", j.ID).Result(); active {
				t.Errorf("finished job still in the unfinished set")
			}
		})
	}
}
