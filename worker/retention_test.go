package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestRetentionForgetsAndArchives runs jobs through with a retention of a
// second: once it has passed, nothing of them is left in Redis (a SCAN by
// their hash tag, and the fleet-wide sets), and each has its archive
// document in storage, matching the record it had. An unfinished job
// older than the retention is never touched.
func TestRetentionForgetsAndArchives(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.jobs.SetRetention(time.Second)
	ctx := context.Background()

	// An unfinished job, submitted long ago, with no task: it must stay.
	old := &jobs.Record{ID: "old-unfinished", SubmittedAt: time.Now().Add(-30 * 24 * time.Hour)}
	old.Request.Model, old.Request.Prompt = "google/veo-3.1-lite", "old"
	if _, _, err := e.jobs.Create(ctx, old); err != nil {
		t.Fatal(err)
	}

	cfg := fastConfig()
	cfg.RetentionSweepInterval = 100 * time.Millisecond
	cfg.StrandedCheckInterval = -1
	e.startWorker(cfg, nil)
	ids := e.submit(3, "google/veo-3.1-lite")
	// One with labels (its spec key) and a history of its own.
	labelled, err := e.producer.Submit(ctx, tasks.Request{JobID: "job-labelled", Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "labelled"},
		Labels: map[string]string{"team": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, labelled)
	recs := e.waitTerminal(ids, 30*time.Second)
	hist := map[string][]jobs.Event{}
	for _, r := range recs {
		h, err := e.jobs.Events(ctx, r.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		hist[r.ID] = h
	}

	// Wait (bounded) until every job is forgotten.
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range ids {
		for {
			_, err := e.jobs.Load(ctx, string(id))
			if errors.Is(err, jobs.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s still in Redis (err %v) long after its retention", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	var left []string
	iter := e.rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		for _, id := range ids {
			if strings.Contains(k, "{"+string(id)+"}") {
				left = append(left, k)
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	p := e.jobs.Prefix()
	for _, id := range ids {
		for _, set := range []string{"jobs", "finished"} {
			if _, err := e.rdb.ZScore(ctx, p+set, string(id)).Result(); err == nil {
				left = append(left, set+" entry of "+string(id))
			}
		}
	}
	if n, _ := e.rdb.ZCard(ctx, p+"retained").Result(); n != 0 {
		left = append(left, "retained entries")
	}
	for _, r := range recs {
		if owner, _ := e.rdb.HGet(ctx, p+"claims", r.VideoID).Result(); owner == r.ID {
			left = append(left, "claim of "+r.ID)
		}
	}
	if len(left) > 0 {
		t.Errorf("left in Redis after retention: %v", left)
	}

	for _, r := range recs {
		rc, _, err := e.store.Open(ctx, jobs.ArchiveKey(r.ID))
		if err != nil {
			t.Errorf("job %s: archive: %v", r.ID, err)
			continue
		}
		b, _ := io.ReadAll(rc)
		_ = rc.Close()
		var a jobs.Archive
		if err := json.Unmarshal(b, &a); err != nil {
			t.Errorf("job %s: archive: %v", r.ID, err)
			continue
		}
		got := a.Record
		// r is the record as read when the job ended, or its compact form
		// when the sweep had compacted it already (its request and labels
		// are then in the archive only).
		team := map[string]string{"job-labelled": "a"}[r.ID]
		if got == nil || got.ID != r.ID || got.State != r.State || got.VideoID != r.VideoID || got.SHA256 != r.SHA256 ||
			got.StorageKey != r.StorageKey || got.Request.Prompt == "" || (!r.Compact && got.Request.Prompt != r.Request.Prompt) ||
			!got.FinishedAt.Equal(r.FinishedAt) || got.Labels["team"] != team || got.Compact {
			t.Errorf("job %s: archived record %+v, want %+v", r.ID, got, r)
		}
		// The history as read when the job ended (unless the sweep had
		// compacted it already: then it is in the archive only).
		if h := hist[r.ID]; len(h) > 0 && (len(a.History) != len(h) || !slices.EqualFunc(a.History, h, func(x, y jobs.Event) bool { return x.Event == y.Event && x.At.Equal(y.At) })) {
			t.Errorf("job %s: archived history %+v, want %+v", r.ID, a.History, h)
		}
		if len(a.History) < 4 || a.History[0].Event != "submitted" || a.History[len(a.History)-1].Event != "stored" {
			t.Errorf("job %s: archived history %+v; want it from submitted to stored", r.ID, a.History)
		}
	}

	if rec, err := e.jobs.Load(ctx, old.ID); err != nil || rec.State != jobs.StateQueued {
		t.Errorf("the old unfinished job: %v, %v; want it queued, untouched", rec, err)
	}
	st, err := e.jobs.RetentionStats(ctx)
	if err != nil || st.Removed != int64(len(ids)) || st.Archived != int64(len(ids)) {
		t.Errorf("RetentionStats = %+v, %v; want %d removed and archived", st, err, len(ids))
	}
}
