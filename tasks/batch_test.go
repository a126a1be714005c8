package tasks_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

func batchOf(n int, prefix string) []tasks.Request {
	reqs := make([]tasks.Request, n)
	for i := range reqs {
		reqs[i] = tasks.Request{JobID: tasks.JobID(fmt.Sprintf("%s-%04d", prefix, i)), Video: video(fmt.Sprintf("batch %d", i))}
	}
	return reqs
}

func TestSubmitManyInvalidJobAcceptsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reqs := batchOf(10, "inv")
	reqs[3].Video.Prompt = ""
	reqs[7].Video.Duration = 500
	reqs[8].JobID = reqs[1].JobID
	_, err := b.client.SubmitMany(b.ctx, reqs)
	var be *tasks.BatchError
	if !errors.As(err, &be) || !errors.Is(err, tasks.ErrInvalidRequest) {
		t.Fatalf("SubmitMany: %v, want a *BatchError", err)
	}
	if len(be.Items) != 3 || be.Items[3].Fields["prompt"] == "" || be.Items[7].Fields["duration"] == "" || be.Items[8].Fields["job_id"] == "" {
		t.Errorf("invalid items %v, want 3 (prompt), 7 (duration) and 8 (job_id)", be.Items)
	}
	if n := b.jobCount(t); n != 0 {
		t.Errorf("%d job records after a refused batch, want 0", n)
	}
	if n, err := b.rdb.Exists(b.ctx, "asynq:{"+tasks.QueueCreate+"}:pending").Result(); err != nil || n != 0 {
		t.Errorf("create tasks pending after a refused batch (%v)", err)
	}
	for _, n := range []int{0, tasks.MaxBatch + 1} {
		if _, err := b.client.SubmitMany(b.ctx, batchOf(n, "big")); !errors.Is(err, tasks.ErrInvalidRequest) {
			t.Errorf("batch of %d: %v, want ErrInvalidRequest", n, err)
		}
	}
}

func TestSubmitManyResubmitted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reqs := batchOf(20, "re")
	reqs[5].JobID = "" // a generated id
	reqs[6].Labels = map[string]string{"campaign": "spring"}
	first, err := b.client.SubmitMany(b.ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range first {
		if !r.New || r.Err != nil {
			t.Errorf("first submit, job %d: %+v, want new", i, r)
		}
		if reqs[i].JobID != "" && r.ID != reqs[i].JobID {
			t.Errorf("job %d: id %s, want %s", i, r.ID, reqs[i].JobID)
		}
		if b.task(t, tasks.QueueCreate, tasks.CreateTaskID(string(r.ID))) == nil {
			t.Errorf("job %d: no create task", i)
		}
	}
	rec, err := b.client.Status(b.ctx, first[6].ID)
	if err != nil || rec.Labels["campaign"] != "spring" || rec.State != jobs.StateQueued {
		t.Fatalf("job 6: %+v, %v", rec, err)
	}
	reqs[5].JobID = first[5].ID
	reqs[9].Video.Prompt = "something else" // a conflict for this item only
	again, err := b.client.SubmitMany(b.ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again {
		if r.ID != first[i].ID || r.New {
			t.Errorf("resubmit, job %d: %+v, want id %s, not new", i, r, first[i].ID)
		}
		if (i == 9) != errors.Is(r.Err, tasks.ErrJobIDConflict) {
			t.Errorf("resubmit, job %d: err %v", i, r.Err)
		}
	}
	if n := b.jobCount(t); n != 20 {
		t.Errorf("%d job records, want 20", n)
	}
	if n := b.queueSize(t, tasks.QueueCreate); n != 20 {
		t.Errorf("%d create tasks, want 20", n)
	}
	// One submitted one at a time is found by the batch, and the other
	// way round.
	id := b.submit(t, tasks.Request{JobID: "single", Video: video("single")})
	res, err := b.client.SubmitMany(b.ctx, []tasks.Request{{JobID: id, Video: video("single")}})
	if err != nil || res[0].New {
		t.Errorf("batch after Submit: %+v, %v; want found", res, err)
	}
	if _, created, err := b.client.SubmitCreated(b.ctx, reqs[0]); err != nil || created {
		t.Errorf("SubmitCreated after the batch: created %v, %v", created, err)
	}
}

// Not parallel: it flushes the server's scripts, which no other test may
// be loading meanwhile.
func TestSubmitManyThousand(t *testing.T) {
	b := setup(t)
	reqs := batchOf(tasks.MaxBatch, "k")
	// The scripts are not loaded yet: the batch loads them and sends
	// again what got NOSCRIPT.
	if err := b.rdb.ScriptFlush(b.ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range reqs {
		if i%2 == 0 {
			reqs[i].Video.Prompt = strings.Repeat("long prompt ", 20) // its request goes to the spec key
		}
	}
	res, err := b.client.SubmitMany(b.ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != tasks.MaxBatch {
		t.Fatalf("%d results", len(res))
	}
	if n := b.jobCount(t); n != tasks.MaxBatch {
		t.Errorf("%d job records, want %d", n, tasks.MaxBatch)
	}
	if n := b.queueSize(t, tasks.QueueCreate); n != tasks.MaxBatch {
		t.Errorf("%d create tasks, want %d", n, tasks.MaxBatch)
	}
	rec, err := b.client.Status(b.ctx, res[998].ID)
	if err != nil || rec.Request.Prompt != reqs[998].Video.Prompt {
		t.Fatalf("job 998: %+v, %v", rec, err)
	}
	hist, err := b.client.History(b.ctx, res[998].ID)
	if err != nil || len(hist) != 1 || hist[0].Event != "submitted" {
		t.Errorf("job 998 history %+v, %v", hist, err)
	}
}

// The batch writes create tasks itself (asynq has no batch enqueue): the
// message must be byte for byte what asynq's own client writes.
func TestSubmitManyTaskAsAsynqWritesIt(t *testing.T) {
	t.Parallel()
	b, ref := setup(t), setup(t)
	req := tasks.Request{JobID: "same-task", Video: video("task")}
	if _, err := b.client.SubmitMany(b.ctx, []tasks.Request{req}); err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewCreateTask(string(req.JobID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ref.aq.EnqueueContext(ref.ctx, task); err != nil {
		t.Fatal(err)
	}
	key := "asynq:{" + tasks.QueueCreate + "}:t:" + tasks.CreateTaskID(string(req.JobID))
	got, err := b.rdb.HGet(b.ctx, key, "msg").Result()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ref.rdb.HGet(ref.ctx, key, "msg").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("batch task message %x, asynq writes %x", got, want)
	}
	info := b.task(t, tasks.QueueCreate, tasks.CreateTaskID(string(req.JobID)))
	if info == nil || info.Type != tasks.TypeCreate || info.State.String() != "pending" {
		t.Errorf("task info %+v", info)
	}
	if ok, err := b.rdb.SIsMember(b.ctx, "asynq:queues", tasks.QueueCreate).Result(); err != nil || !ok {
		t.Errorf("queue not listed in asynq:queues: %v %v", ok, err)
	}
}

// A job submitted in a batch keeps everything Submit would keep: its own
// retention, deadline and labels (the batch once built its records apart
// from Submit and dropped the retention).
func TestSubmitManyKeepsWhatSubmitKeeps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reqs := batchOf(2, "keeps")
	reqs[0].Retention = 2 * time.Hour
	reqs[0].Timeout = time.Hour
	reqs[0].Labels = map[string]string{"campaign": "spring"}
	res, err := b.client.SubmitMany(b.ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := b.client.Status(b.ctx, res[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.RetentionMS != (2*time.Hour).Milliseconds() || rec.Deadline.Sub(rec.SubmittedAt) != time.Hour || rec.Labels["campaign"] != "spring" {
		t.Errorf("batch job: retention %d ms, deadline after %s, labels %v; want 7200000 ms, 1h, campaign=spring",
			rec.RetentionMS, rec.Deadline.Sub(rec.SubmittedAt), rec.Labels)
	}
}

// A create task left without its record (the record was forgotten, the
// task not) is kept as it is: the batch creates the record and reports
// the job new, and the queue holds one task for it, not two.
func TestSubmitManyTaskWithoutRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	task, err := tasks.NewCreateTask("orphan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.aq.EnqueueContext(b.ctx, task); err != nil {
		t.Fatal(err)
	}
	reqs := batchOf(3, "orph")
	reqs[1].JobID = "orphan"
	res, err := b.client.SubmitMany(b.ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.New || r.Err != nil {
			t.Errorf("job %d: %+v, want new", i, r)
		}
	}
	if n := b.queueSize(t, tasks.QueueCreate); n != 3 {
		t.Errorf("%d create tasks, want 3", n)
	}
	if rec, err := b.client.Status(b.ctx, "orphan"); err != nil || rec.State != jobs.StateQueued {
		t.Errorf("orphan: %+v, %v", rec, err)
	}
}

// The create tasks of a batch are served in the batch's order (asynq
// takes a queue's oldest pending task first), though the batch pushes
// each chunk's tasks with one command.
func TestSubmitManyKeepsOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reqs := batchOf(120, "ord")
	if _, err := b.client.SubmitMany(b.ctx, reqs); err != nil {
		t.Fatal(err)
	}
	pending, err := b.rdb.LRange(b.ctx, "asynq:{"+tasks.QueueCreate+"}:pending", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != len(reqs) {
		t.Fatalf("%d pending tasks, want %d", len(pending), len(reqs))
	}
	// asynq pushes on the left and serves from the right.
	for i, req := range reqs {
		if got, want := pending[len(pending)-1-i], tasks.CreateTaskID(string(req.JobID)); got != want {
			t.Fatalf("task %d served is %s, want %s", i, got, want)
		}
	}
}
