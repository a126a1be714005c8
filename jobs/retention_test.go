package jobs_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
)

// scanJob lists every key of the job's (SCAN by its hash tag: in tests
// only) and whether the fleet-wide sets still name it.
func (b *bundle) leftOf(t *testing.T, id, video string) []string {
	t.Helper()
	var left []string
	iter := b.rdb.Scan(b.ctx, 0, "*{"+id+"}*", 100).Iterator()
	for iter.Next(b.ctx) {
		left = append(left, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	p := b.store.Prefix()
	if _, err := b.rdb.ZScore(b.ctx, p+"jobs", id).Result(); err == nil {
		left = append(left, "index entry")
	}
	if _, err := b.rdb.ZScore(b.ctx, p+"finished", id).Result(); err == nil {
		left = append(left, "finished entry")
	}
	if ok, _ := b.rdb.SIsMember(b.ctx, p+"active", id).Result(); ok {
		left = append(left, "active entry")
	}
	if video != "" {
		if owner, _ := b.rdb.HGet(b.ctx, p+"claims", video).Result(); owner == id {
			left = append(left, "claim")
		}
	}
	return left
}

// TestRetentionForgetsFinishedJobsOnly: a job that ends joins the finished
// set with its expiry; Forget removes every key it left once that passes;
// a retried job leaves the set (and is not forgotten); an unfinished job
// is never in it, however old.
func TestRetentionForgetsFinishedJobsOnly(t *testing.T) {
	b := setup(t)
	b.store.SetRetention(time.Hour)
	ctx := b.ctx

	// done: created, adopted (claim), webhook, stored.
	b.create(t, "done", "m")
	if _, err := b.store.Do(ctx, "done", jobs.Adopted{VideoID: "vid_done", APIStatus: "queued", How: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.RecordWebhook(ctx, "done", jobs.WebhookDelivery{Key: "k1", EventType: "video.completed", VideoID: "vid_done"}); err != nil {
		t.Fatal(err)
	}
	for _, op := range []jobs.Op{jobs.Completed{APIStatus: "completed"}, jobs.Stored{Key: "k", Location: "file:///k"}} {
		if _, err := b.store.Do(ctx, "done", op); err != nil {
			t.Fatal(err)
		}
	}
	// short: its own retention, labels in the spec key; failed at once.
	rec := &jobs.Record{ID: "short", RetentionMS: time.Minute.Milliseconds(), Labels: map[string]string{"a": "b"}}
	rec.Request.Model = "m"
	if _, _, err := b.store.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Do(ctx, "short", jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "create"}); err != nil {
		t.Fatal(err)
	}
	// retried: failed, then retried.
	b.create(t, "retried", "m")
	if _, err := b.store.Do(ctx, "retried", jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "create"}); err != nil {
		t.Fatal(err)
	}
	plan, err := jobs.PlanRetry(b.get(t, "retried"), b.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Retried by a store without retention (a misconfigured producer): the
	// job leaves the finished set all the same.
	if _, err := jobs.NewStore(b.rdb, "").Do(ctx, "retried", plan); err != nil {
		t.Fatal(err)
	}
	// old: unfinished.
	b.create(t, "old", "m")

	now := b.clock.Advance(2 * time.Minute)
	due, err := b.store.Due(ctx, now, 500)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range due {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"done", "short"}) {
		t.Fatalf("Due = %v; want [done short] (the ended jobs, due for their archive at once)", ids)
	}
	for _, id := range ids {
		want := time.Hour
		if id == "short" {
			want = time.Minute // its own retention
		}
		r := b.get(t, id)
		if got := b.store.ForgetAt(r).Sub(r.FinishedAt); got != want {
			t.Errorf("ForgetAt(%s) = its end + %s; want + %s", id, got, want)
		}
	}
	now = b.clock.Advance(10 * 365 * 24 * time.Hour)
	docs, err := b.store.ReadArchive(ctx, ids, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range docs {
		if d == nil || d.Record.ID != ids[i] || len(d.History) < 2 {
			t.Fatalf("archive of %s = %+v", ids[i], d)
		}
	}
	if docs[1].Record.Labels["a"] != "b" {
		t.Errorf("archive of short has no labels: %+v", docs[1].Record)
	}
	// A stale finished entry of an unfinished job (never made by a
	// transition) does not get it removed either.
	if err := b.rdb.ZAdd(ctx, b.store.Prefix()+"finished", redis.Z{Score: 0, Member: "old"}).Err(); err != nil {
		t.Fatal(err)
	}
	// The retried job is named too: Forget must leave it alone all the same.
	batch := []jobs.Forgotten{{ID: "done", VideoID: "vid_done", Archived: true}, {ID: "short", Archived: true}, {ID: "retried"}, {ID: "old"}}
	n, err := b.store.Forget(ctx, now, batch)
	if err != nil || n != 2 {
		t.Fatalf("Forget = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"done", "short"} {
		vid := ""
		if id == "done" {
			vid = "vid_done"
		}
		if left := b.leftOf(t, id, vid); len(left) > 0 {
			t.Errorf("job %s left %v after retention", id, left)
		}
	}
	for _, id := range []string{"retried", "old"} {
		if r := b.get(t, id); r.State.Terminal() {
			t.Errorf("job %s is %s", id, r.State)
		}
		if left := strings.Join(b.leftOf(t, id, ""), ","); !strings.Contains(left, "index entry") || (id == "retried" && strings.Contains(left, "finished")) {
			t.Errorf("job %s: left %s; want its keys and index entry, no finished entry", id, left)
		}
	}
	st, err := b.store.RetentionStats(ctx)
	if err != nil || st.Removed != 2 || st.Archived != 2 || st.Retained != 1 {
		t.Errorf("RetentionStats = %+v, %v; want 2 removed, 2 archived, 1 retained (the stale entry)", st, err)
	}
}

// TestRetentionOffAddsNothing: without a retention a finished job joins no
// set.
func TestRetentionOffAddsNothing(t *testing.T) {
	b := setup(t)
	b.create(t, "j", "m")
	if _, err := b.store.Do(b.ctx, "j", jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "create"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.rdb.Exists(b.ctx, b.store.Prefix()+"finished").Result(); n != 0 {
		t.Error("a finished set exists with retention off")
	}
}

// TestArchiveKeyIsInjective: ids that differ only in characters the
// escaping changes get documents of their own.
func TestArchiveKeyIsInjective(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"a/b", "a_b", "a%2Fb", "a b", "A/b", "../x", "x"} {
		k := jobs.ArchiveKey(id)
		if prev, ok := seen[k]; ok {
			t.Errorf("ids %q and %q share archive key %s", prev, id, k)
		}
		seen[k] = id
		if !strings.HasPrefix(k, "records/") || !strings.HasSuffix(k, ".json") {
			t.Errorf("ArchiveKey(%q) = %s", id, k)
		}
	}
}
