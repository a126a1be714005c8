package tasks_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestResubmitCompactedJob: once retention has archived and compacted an
// ended job (its request, labels and callback URL are then in the
// archive only), resubmitting its id with the same request still finds
// the job (Submit and SubmitMany: the same id, not new, no error), and
// with another request (prompt, labels, callback URL, timeout) is still
// a conflict.
func TestResubmitCompactedJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := tasks.NewClient(b.rdb, tasks.ClientOptions{Retention: time.Hour})
	store := jobs.NewStore(b.rdb, "")
	store.SetRetention(time.Hour)
	req := tasks.Request{JobID: "rc-1", Video: video("a compacted heron"), Labels: map[string]string{"order": "42"},
		CallbackURL: "https://hooks.example.com/done", Timeout: 90 * time.Minute}
	if _, err := c.Submit(b.ctx, req); err != nil {
		t.Fatal(err)
	}
	for _, op := range []jobs.Op{jobs.Adopted{VideoID: "vid_rc1", APIStatus: "queued", How: "test"}, jobs.Completed{APIStatus: "completed", Outputs: 1},
		jobs.Stored{Key: "videos/rc-1.mp4", Location: "file:///v/rc-1.mp4", Bytes: 1, SHA256: strings.Repeat("c", 64)},
		jobs.CallbackAttempted{Status: jobs.CallbackDelivered, Event: "rc-1:stored:0"}} {
		if _, err := store.Do(b.ctx, "rc-1", op); err != nil {
			t.Fatal(err)
		}
	}
	compact := func(now time.Time) {
		t.Helper()
		due, err := store.Due(b.ctx, now, 10)
		if err != nil || len(due) != 1 {
			t.Fatalf("Due = %v, %v; want the job", due, err)
		}
		docs, err := store.ReadArchive(b.ctx, []string{due[0].ID}, now)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := store.Compact(b.ctx, now, []jobs.Compaction{{ID: due[0].ID, Score: due[0].Score, ForgetAt: store.ForgetAt(docs[0].Record), Record: docs[0].Record}}); err != nil || n != 1 {
			t.Fatalf("Compact = %d, %v; want 1", n, err)
		}
	}
	compact(time.Now().Add(time.Second))
	// A late webhook makes the compact job due again: compacted again
	// from its compact record, it keeps what a resubmission needs.
	if _, err := store.RecordWebhook(b.ctx, "rc-1", jobs.WebhookDelivery{Key: "video.completed", EventType: "video.completed", Attempt: 2, VideoID: "vid_rc1"}); err != nil {
		t.Fatal(err)
	}
	compact(time.Now().Add(2 * time.Second))
	if rec, err := c.Status(b.ctx, "rc-1"); err != nil || !rec.Compact {
		t.Fatalf("Status = %+v, %v; want the compact record", rec, err)
	}

	id, created, err := c.SubmitCreated(b.ctx, req)
	if err != nil || id != "rc-1" || created {
		t.Errorf("resubmitted with the same request: %q, created %v, %v; want rc-1, not created, no error", id, created, err)
	}
	res, err := c.SubmitMany(b.ctx, []tasks.Request{req})
	if err != nil || res[0].Err != nil || res[0].New || res[0].ID != "rc-1" {
		t.Errorf("SubmitMany with the same request: %+v, %v; want rc-1, not new", res, err)
	}
	for name, change := range map[string]func(r *tasks.Request){
		"prompt":       func(r *tasks.Request) { r.Video.Prompt = "another heron" },
		"labels":       func(r *tasks.Request) { r.Labels = map[string]string{"order": "43"} },
		"callback URL": func(r *tasks.Request) { r.CallbackURL = "https://hooks.example.com/other" },
		"timeout":      func(r *tasks.Request) { r.Timeout = time.Hour },
		"tenant":       func(r *tasks.Request) { r.Tenant = "acme" },
	} {
		other := req
		change(&other)
		if _, err := c.Submit(b.ctx, other); !errors.Is(err, tasks.ErrJobIDConflict) {
			t.Errorf("resubmitted with another %s: %v; want ErrJobIDConflict", name, err)
		}
	}
}
