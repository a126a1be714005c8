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
	traced := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, tc := range []struct{ id, trace string }{{"a", ""}, {"job_0123456789abcdef01234567", ""}, {"x.y_z:1-2", ""}, {"weird\"id<", ""}, {"a", traced}, {"weird\"id<", traced}} {
		id := tc.id
		rec := (&Client{}).newRecord(JobID(id), Request{}, time.Now())
		rec.Trace = tc.trace
		n, err := NextTask(rec, 0)
		if err != nil || n == nil {
			t.Fatalf("NextTask(%s): %v, %v", id, n, err)
		}
		c := createCompanion(id, tc.trace, "123")
		if c.Member != n.ID || c.Key != "asynq:{"+n.Queue+"}:t:"+n.ID || c.List != "asynq:{"+n.Queue+"}:pending" {
			t.Errorf("%s: companion %+v, next task %s in %s", id, c, n.ID, n.Queue)
		}
		if want := createMessage(n); c.Fields[1] != want {
			t.Errorf("%s: message %q, want %q", id, c.Fields[1], want)
		}
	}
}
