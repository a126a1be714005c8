package tasks

import (
	"testing"
	"time"
)

// TestCreateCompanionIsNextTask: the create task SubmitMany writes beside
// a new record is the one NextTask gives for that record, encoded as
// createMessage encodes it (which a test runs with a real asynq server).
func TestCreateCompanionIsNextTask(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"a", "job_0123456789abcdef01234567", "x.y_z:1-2", "weird\"id<"} {
		rec := newRecord(JobID(id), Request{}, time.Now())
		n, err := NextTask(rec, 0)
		if err != nil || n == nil {
			t.Fatalf("NextTask(%s): %v, %v", id, n, err)
		}
		c := createCompanion(id, "123")
		if c.Member != n.ID || c.Key != "asynq:{"+n.Queue+"}:t:"+n.ID || c.List != "asynq:{"+n.Queue+"}:pending" {
			t.Errorf("%s: companion %+v, next task %s in %s", id, c, n.ID, n.Queue)
		}
		if want := createMessage(n); c.Fields[1] != want {
			t.Errorf("%s: message %q, want %q", id, c.Fields[1], want)
		}
	}
}
