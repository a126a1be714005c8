package worker_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/worker"
)

// sweeper is a worker for SweepFinished whose clock runs ahead by what
// ahead holds.
func (e *env) sweeper(ahead *atomic.Int64) *worker.Worker {
	e.t.Helper()
	w, err := worker.New(fastConfig(), worker.Deps{Redis: e.rdb, API: e.client, Store: e.store, Jobs: e.jobs, Logger: e.log,
		Now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// doAll applies ops to job id in turn.
func (e *env) doAll(id string, ops ...jobs.Op) {
	e.t.Helper()
	for _, op := range ops {
		if _, err := e.jobs.Do(e.t.Context(), id, op); err != nil {
			e.t.Fatalf("%s: %v", op.Transition(), err)
		}
	}
}

// events lists the event names of a history.
func eventNames(h []jobs.Event) []string {
	out := make([]string, len(h))
	for i, e := range h {
		out[i] = e.Event
	}
	return out
}

// TestRetentionArchivesAJobNeverCompacted: a job whose retention passed
// before any sweep archived it (the sweeping worker was down, or crashed
// between the job's end and its archive) is archived whole, history and
// all, before it is removed: nothing is lost.
func TestRetentionArchivesAJobNeverCompacted(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.jobs.SetRetention(time.Hour)
	ctx := t.Context()
	rec := &jobs.Record{ID: "late-1"}
	rec.Request.Model, rec.Request.Prompt = "m", "p"
	if _, _, err := e.jobs.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	e.doAll("late-1", jobs.Adopted{VideoID: "vid_late", APIStatus: "queued", How: "test"}, jobs.Completed{APIStatus: "completed"},
		jobs.Stored{Key: "k", Location: "file:///k", SHA256: "ab"})
	want, err := e.jobs.Events(ctx, "late-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ahead atomic.Int64
	ahead.Store(int64(2 * time.Hour))
	if n, err := e.sweeper(&ahead).SweepFinished(ctx); err != nil || n != 1 {
		t.Fatalf("SweepFinished = %d, %v; want 1", n, err)
	}
	a, err := jobs.LoadArchive(ctx, e.store, "late-1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Record.State != jobs.StateStored || a.Record.VideoID != "vid_late" || a.Record.Request.Prompt != "p" || len(a.History) != len(want) {
		t.Errorf("archive %+v with %d history lines; want the whole job with %d", a.Record, len(a.History), len(want))
	}
	if _, err := e.jobs.Load(ctx, "late-1"); err == nil {
		t.Error("the job is still in Redis")
	}
}

// TestRetentionArchiveGrowsAcrossARetry: a failed job is archived and
// compacted, then retried and stored: its archive is then the whole
// story (the first attempt's history followed by the retry's), never
// replaced by the second half.
func TestRetentionArchiveGrowsAcrossARetry(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.jobs.SetRetention(time.Hour)
	ctx := t.Context()
	rec := &jobs.Record{ID: "again-1"}
	rec.Request.Model, rec.Request.Prompt = "m", "p"
	if _, _, err := e.jobs.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	e.doAll("again-1", jobs.Adopted{VideoID: "vid_again", APIStatus: "queued", How: "test"}, jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "poll"})
	var ahead atomic.Int64
	sw := e.sweeper(&ahead)
	if _, err := sw.SweepFinished(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := jobs.LoadArchive(ctx, e.store, "again-1")
	if err != nil {
		t.Fatal(err)
	}
	failed, err := e.jobs.Get(ctx, "again-1")
	if err != nil || failed.ArchivedAt.IsZero() {
		t.Fatalf("after the sweep: %+v, %v; want it archived", failed, err)
	}
	plan, err := jobs.PlanRetry(failed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.doAll("again-1", plan, jobs.Completed{APIStatus: "completed"}, jobs.Stored{Key: "k", Location: "file:///k", SHA256: "ab"})
	if _, err := sw.SweepFinished(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := jobs.LoadArchive(ctx, e.store, "again-1")
	if err != nil {
		t.Fatal(err)
	}
	names := eventNames(a.History)
	if len(a.History) != len(first.History)+3 || names[0] != "submitted" || names[len(first.History)-1] != "failed" || names[len(names)-1] != "stored" {
		t.Errorf("archive history after the retry %v; want the first attempt's %v followed by retried, completed, stored", names, eventNames(first.History))
	}
	if a.Record.State != jobs.StateStored || a.Record.Retries != 1 || a.Record.Request.Prompt != "p" || a.Record.Error != "" {
		t.Errorf("archived record %+v; want the stored job", a.Record)
	}
	if live, _ := e.jobs.Get(ctx, "again-1"); live == nil || !live.Compact {
		t.Errorf("after the second sweep: %+v; want it compact", live)
	}
}
