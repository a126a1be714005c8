package tasks_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/tasks"
)

// TestWireNames pins the task type and queue names: tasks enqueued by one
// release are processed by the next, so none of them may change.
func TestWireNames(t *testing.T) {
	t.Parallel()
	for got, want := range map[string]string{
		tasks.TypeCreate: "video:create", tasks.TypePoll: "video:poll", tasks.TypeDownload: "video:download",
		tasks.QueueCreate: "video_create", tasks.QueuePoll: "video_poll", tasks.QueueDownload: "video_download",
		tasks.CreateTaskID("j1"):       "create:j1",
		tasks.PollTaskID("j1", 3):      "poll:j1:3",
		tasks.CheckTaskID("j1", "d-9"): "check:j1:d-9",
		tasks.DownloadTaskID("j1"):     "download:j1",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if tasks.PayloadVersion != 1 {
		t.Errorf("PayloadVersion = %d: a new version needs new golden payloads", tasks.PayloadVersion)
	}
	want := map[string]int{"video_download": 6, "video_poll": 5, "video_create": 3}
	if diff := cmp.Diff(want, tasks.DefaultQueues()); diff != "" {
		t.Errorf("DefaultQueues (-want +got):\n%s", diff)
	}
	q := tasks.DefaultQueues()
	q[tasks.QueueCreate] = 100
	if tasks.DefaultQueues()[tasks.QueueCreate] != 3 {
		t.Error("DefaultQueues returns a shared map")
	}
}

// TestPayloadGolden pins the stored JSON of every payload, so that a
// renamed field or tag cannot slip through.
func TestPayloadGolden(t *testing.T) {
	t.Parallel()
	must := func(task *asynq.Task, err error) *asynq.Task {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	tests := []struct {
		name     string
		task     *asynq.Task
		wantType string
		want     string
	}{
		{"create", must(tasks.NewCreateTask("j1")), "video:create", `{"v":1,"job_id":"j1"}`},
		{"poll", must(tasks.NewPollTask("j1", 3, 0)), "video:poll", `{"v":1,"job_id":"j1","seq":3}`},
		{"check", must(tasks.NewCheckTask("j1", "delivery-7", "webhook")), "video:poll", `{"v":1,"job_id":"j1","seq":0,"reason":"webhook"}`},
		{"check without reason", must(tasks.NewCheckTask("j1", "k", "")), "video:poll", `{"v":1,"job_id":"j1","seq":0}`},
		{"download", must(tasks.NewDownloadTask("j1", "vid_1")), "video:download", `{"v":1,"job_id":"j1","video_id":"vid_1"}`},
	}
	for _, tt := range tests {
		if got := string(tt.task.Payload()); got != tt.want {
			t.Errorf("%s payload:\n got %s\nwant %s", tt.name, got, tt.want)
		}
		if tt.task.Type() != tt.wantType {
			t.Errorf("%s type %q, want %q", tt.name, tt.task.Type(), tt.wantType)
		}
	}

	// And the stored format decodes into the payload structs.
	c, err := tasks.Decode[tasks.CreatePayload]([]byte(`{"v":1,"job_id":"j1"}`))
	if err != nil || *c != (tasks.CreatePayload{Version: 1, JobID: "j1"}) {
		t.Errorf("decode create: %+v, %v", c, err)
	}
	p, err := tasks.Decode[tasks.PollPayload]([]byte(`{"v":1,"job_id":"j1","seq":0,"reason":"webhook"}`))
	if err != nil || *p != (tasks.PollPayload{Version: 1, JobID: "j1", Seq: 0, Reason: "webhook"}) {
		t.Errorf("decode poll: %+v, %v", p, err)
	}
	d, err := tasks.Decode[tasks.DownloadPayload]([]byte(`{"v":1,"job_id":"j1","video_id":"vid_1"}`))
	if err != nil || *d != (tasks.DownloadPayload{Version: 1, JobID: "j1", VideoID: "vid_1"}) {
		t.Errorf("decode download: %+v, %v", d, err)
	}
}

// TestTaskOptions enqueues every kind of task into Redis and reads back
// what asynq stored.
func TestTaskOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	must := func(task *asynq.Task, err error) *asynq.Task {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	tests := []struct {
		name      string
		task      *asynq.Task
		queue, id string
		maxRetry  int
		timeout   time.Duration
		state     asynq.TaskState
		delay     time.Duration
	}{
		{"create", must(tasks.NewCreateTask("j1")), "video_create", "create:j1", 25, 2 * time.Minute, asynq.TaskStatePending, 0},
		{"poll now", must(tasks.NewPollTask("j1", 1, 0)), "video_poll", "poll:j1:1", 25, time.Minute, asynq.TaskStatePending, 0},
		{"poll later", must(tasks.NewPollTask("j1", 2, time.Hour)), "video_poll", "poll:j1:2", 25, time.Minute, asynq.TaskStateScheduled, time.Hour},
		{"check", must(tasks.NewCheckTask("j1", "d1", "webhook")), "video_poll", "check:j1:d1", 3, time.Minute, asynq.TaskStatePending, 0},
		{"download", must(tasks.NewDownloadTask("j1", "v1")), "video_download", "download:j1", 25, time.Hour, asynq.TaskStatePending, 0},
		// Caller options come after the defaults and win.
		{"create with options", must(tasks.NewCreateTask("j2", asynq.Queue("other"), asynq.MaxRetry(1), asynq.TaskID("custom"))),
			"other", "custom", 1, 2 * time.Minute, asynq.TaskStatePending, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			enq, err := b.aq.EnqueueContext(b.ctx, tt.task)
			if err != nil {
				t.Fatal(err)
			}
			got := b.task(t, tt.queue, tt.id)
			if got == nil {
				t.Fatalf("no task %s in queue %s", tt.id, tt.queue)
			}
			for _, info := range []*asynq.TaskInfo{enq, got} {
				if info.Queue != tt.queue || info.ID != tt.id || info.Type != tt.task.Type() ||
					info.MaxRetry != tt.maxRetry || info.Timeout != tt.timeout || info.State != tt.state {
					t.Errorf("task info queue=%s id=%s type=%s max_retry=%d timeout=%v state=%v; want %s %s %s %d %v %v",
						info.Queue, info.ID, info.Type, info.MaxRetry, info.Timeout, info.State,
						tt.queue, tt.id, tt.task.Type(), tt.maxRetry, tt.timeout, tt.state)
				}
				if string(info.Payload) != string(tt.task.Payload()) {
					t.Errorf("payload %s, want %s", info.Payload, tt.task.Payload())
				}
			}
			if tt.delay > 0 {
				if at := got.NextProcessAt; at.Before(before.Add(tt.delay).Truncate(time.Second)) || at.After(time.Now().Add(tt.delay+time.Second)) {
					t.Errorf("next process at %v, want about %v from now", at, tt.delay)
				}
			}
			// The task id makes enqueueing idempotent.
			if _, err := b.aq.EnqueueContext(b.ctx, tt.task); !errors.Is(err, asynq.ErrTaskIDConflict) {
				t.Errorf("second enqueue: %v, want ErrTaskIDConflict", err)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		ok      bool
	}{
		{"valid", `{"v":1,"job_id":"j1"}`, true},
		{"unknown fields are ignored", `{"v":1,"job_id":"j1","later":true}`, true},
		{"field order does not matter", `{"job_id":"j1","v":1}`, true},
		{"empty", ``, false},
		{"truncated", `{"v":1,"job_id":"j1"`, false},
		{"not an object", `[1,"j1"]`, false},
		{"trailing garbage", `{"v":1,"job_id":"j1"}x`, false},
		{"version as a string", `{"v":"1","job_id":"j1"}`, false},
		{"job id as a number", `{"v":1,"job_id":7}`, false},
		{"null", `null`, false},
		{"no version", `{"job_id":"j1"}`, false},
		{"version 0", `{"v":0,"job_id":"j1"}`, false},
		{"negative version", `{"v":-1,"job_id":"j1"}`, false},
		{"newer version", `{"v":2,"job_id":"j1"}`, false},
		{"no job id", `{"v":1}`, false},
		{"empty job id", `{"v":1,"job_id":""}`, false},
		{"job id with a space", `{"v":1,"job_id":"j 1"}`, false},
		{"job id with a slash", `{"v":1,"job_id":"../j1"}`, false},
		{"job id too long", `{"v":1,"job_id":"` + strings.Repeat("a", 129) + `"}`, false},
	}
	for _, tt := range tests {
		check := func(kind string, err error) {
			t.Helper()
			switch {
			case tt.ok && err != nil:
				t.Errorf("%s: Decode[%s](%s): %v", tt.name, kind, tt.payload, err)
			case !tt.ok && !errors.Is(err, tasks.ErrBadPayload):
				t.Errorf("%s: Decode[%s](%s) = %v, want ErrBadPayload", tt.name, kind, tt.payload, err)
			}
		}
		c, err := tasks.Decode[tasks.CreatePayload]([]byte(tt.payload))
		check("CreatePayload", err)
		if tt.ok && (c.Version != 1 || c.JobID != "j1") {
			t.Errorf("%s: decoded %+v", tt.name, c)
		}
		_, err = tasks.Decode[tasks.PollPayload]([]byte(tt.payload))
		check("PollPayload", err)
		_, err = tasks.Decode[tasks.DownloadPayload]([]byte(tt.payload))
		check("DownloadPayload", err)
	}
}

// TestPollNotBefore checks that a delayed check carries the time it is due,
// which the worker compares with the time it runs (poll lateness).
func TestPollNotBefore(t *testing.T) {
	t.Parallel()
	before := time.Now()
	task, err := tasks.NewPollTask("j1", 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	p, err := tasks.Decode[tasks.PollPayload](task.Payload())
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := before.Add(5*time.Second).UnixMilli(), after.Add(5*time.Second).UnixMilli()
	if p.NotBefore < lo || p.NotBefore > hi || p.Seq != 3 || p.JobID != "j1" {
		t.Errorf("payload %+v: not_before want in [%d, %d]", p, lo, hi)
	}
	want := fmt.Sprintf(`{"v":1,"job_id":"j1","seq":3,"not_before":%d}`, p.NotBefore)
	if got := string(task.Payload()); got != want {
		t.Errorf("payload %s, want %s", got, want)
	}
}

// FuzzDecode checks that Decode never panics and that whatever it accepts
// is a supported version with a valid job id that survives a round trip.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"job_id":"j1"}`, `{"v":1,"job_id":"j1","seq":3}`, `{"v":1,"job_id":"j1","video_id":"v"}`,
		`{"v":2,"job_id":"j1"}`, `{"v":1,"job_id":""}`, `null`, `{`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := tasks.Decode[tasks.PollPayload](b)
		if err != nil {
			if !errors.Is(err, tasks.ErrBadPayload) {
				t.Fatalf("error %v does not wrap ErrBadPayload", err)
			}
			return
		}
		if p.Version < 1 || p.Version > tasks.PayloadVersion || tasks.ValidateJobID(p.JobID) != nil {
			t.Fatalf("accepted %+v", p)
		}
		task, err := tasks.NewPollTask(p.JobID, p.Seq, 0)
		if err != nil {
			t.Fatal(err)
		}
		again, err := tasks.Decode[tasks.PollPayload](task.Payload())
		if err != nil || again.JobID != p.JobID || again.Seq != p.Seq {
			t.Fatalf("round trip of %+v: %+v, %v", p, again, err)
		}
	})
}

func TestValidateJobID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id string
		ok bool
	}{
		{"j", true},
		{"job_0123456789abcdef01234567", true},
		{"Order-42.render:v2_final", true},
		{"...", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"has space", false},
		{"slash/sep", false},
		{"brace{tag}", false},
		{"star*", false},
		{"tab\t", false},
		{"newline\n", false},
		{"trailing\n", false},
		{"ünïcode", false},
		{"emoji🎬", false},
	}
	for _, tt := range tests {
		err := tasks.ValidateJobID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateJobID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && len(err.Error()) > 150 {
			t.Errorf("ValidateJobID error is %d bytes long: the id should be truncated", len(err.Error()))
		}
	}
}
