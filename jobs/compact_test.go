package jobs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
)

// ended runs job id through to stored with video vid and a location
// longer than Redis's compact hash values (as a disk store's file URL
// often is), with a webhook delivery on the way.
func (b *bundle) ended(t *testing.T, id, vid string) {
	t.Helper()
	b.create(t, id, "m")
	if _, err := b.store.Do(b.ctx, id, jobs.Adopted{VideoID: vid, APIStatus: "queued", How: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.RecordWebhook(b.ctx, id, jobs.WebhookDelivery{Key: "k1", EventType: "video.completed", VideoID: vid}); err != nil {
		t.Fatal(err)
	}
	loc := "file:///var/lib/videoworker/storage/videos/2026-12-03/" + id + "/output-0.mp4"
	for _, op := range []jobs.Op{jobs.Completed{APIStatus: "completed", Outputs: 1}, jobs.Stored{Key: "videos/" + id + ".mp4", Location: loc, Bytes: 10, SHA256: strings.Repeat("a", 64)}} {
		if _, err := b.store.Do(b.ctx, id, op); err != nil {
			t.Fatal(err)
		}
	}
}

// compactAll runs the sweep's read and compaction (without the archive
// write, which the worker does) for every due job; it returns the
// documents read and how many jobs were compacted.
func (b *bundle) compactAll(t *testing.T, now time.Time) ([]*jobs.Archive, int) {
	t.Helper()
	due, err := b.store.Due(b.ctx, now, 100)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(due))
	for i, d := range due {
		ids[i] = d.ID
	}
	docs, err := b.store.ReadArchive(b.ctx, ids, now)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]jobs.Compaction, len(due))
	for i, d := range due {
		batch[i] = jobs.Compaction{ID: d.ID, Score: d.Score, ForgetAt: b.store.ForgetAt(docs[i].Record), Record: docs[i].Record}
	}
	n, err := b.store.Compact(b.ctx, now, batch)
	if err != nil {
		t.Fatal(err)
	}
	return docs, n
}

// TestCompactionKeepsWhatReadersNeed: once archived, an ended job is
// compacted: its history, spec and webhook keys go, its record keeps what
// status and the API need in Redis's compact hash encoding, its id stays
// taken, and the archive with the compact record gives the whole job
// back. When its retention passes, nothing of it is left.
func TestCompactionKeepsWhatReadersNeed(t *testing.T) {
	b := setup(t)
	b.store.SetRetention(time.Hour)
	ctx := b.ctx
	b.ended(t, "c1", "vid_c1")
	full := b.get(t, "c1")
	p := b.store.Prefix()
	if enc, _ := b.rdb.ObjectEncoding(ctx, p+"job:{c1}").Result(); enc != "hashtable" {
		t.Fatalf("the full record's encoding is %s; the test wants a long location to make it a hashtable", enc)
	}

	now := b.clock.Advance(time.Second)
	docs, n := b.compactAll(t, now)
	if n != 1 || len(docs) != 1 {
		t.Fatalf("compacted %d of %d", n, len(docs))
	}
	if enc, _ := b.rdb.ObjectEncoding(ctx, p+"job:{c1}").Result(); enc != "listpack" {
		t.Errorf("the compact record's encoding is %s, want listpack", enc)
	}
	for _, k := range []string{":events", ":spec", ":webhooks"} {
		if n, _ := b.rdb.Exists(ctx, p+"job:{c1}"+k).Result(); n != 0 {
			t.Errorf("key %s left after compaction", k)
		}
	}
	live := b.get(t, "c1")
	if !live.Compact || live.ArchivedAt.IsZero() || live.State != jobs.StateStored || live.VideoID != "vid_c1" || live.SHA256 != full.SHA256 ||
		live.StorageKey != full.StorageKey || live.Bytes != 10 || !live.FinishedAt.Equal(full.FinishedAt) || live.Location != "" {
		t.Errorf("compact record %+v; want state, video, sha256, key, bytes, finished_at kept, the long location left to the archive", live)
	}
	if due, _ := b.store.Due(ctx, now, 10); len(due) != 0 {
		t.Errorf("still due after compaction: %v", due)
	}
	if m, _ := b.rdb.ZRange(ctx, p+"retained", 0, -1).Result(); len(m) != 1 || m[0] != "c1 vid_c1" {
		t.Errorf("retained set %v, want [c1 vid_c1]", m)
	}
	// Its id stays taken.
	again := &jobs.Record{ID: "c1"}
	again.Request.Model = "m"
	if created, _, err := b.store.Create(ctx, again); err != nil || created {
		t.Errorf("Create with a compacted job's id = %v, %v; want refused", created, err)
	}
	// The archive and the compact record give the whole job back.
	rec, hist := docs[0].With(live, nil)
	if rec.Location != full.Location || rec.Request.Prompt != full.Request.Prompt || rec.Outputs != 1 || rec.WebhookDeliveries != 1 || rec.Compact {
		t.Errorf("archive with the compact record = %+v; want the full record %+v", rec, full)
	}
	if len(hist) < 5 || hist[0].Event != "submitted" || hist[len(hist)-1].Event != "stored" {
		t.Errorf("archived history %+v", hist)
	}

	// Before its retention passes nothing goes; after, everything.
	if batch, _ := b.store.Retained(ctx, b.clock.Advance(30*time.Minute), 10); len(batch) != 0 {
		t.Errorf("Retained before the retention passed = %v", batch)
	}
	later := b.clock.Advance(time.Hour)
	batch, err := b.store.Retained(ctx, later, 10)
	if err != nil || len(batch) != 1 || batch[0].ID != "c1" || batch[0].VideoID != "vid_c1" {
		t.Fatalf("Retained = %+v, %v", batch, err)
	}
	if n, err := b.store.Forget(ctx, later, batch); err != nil || n != 1 {
		t.Fatalf("Forget = %d, %v", n, err)
	}
	if left := b.leftOf(t, "c1", "vid_c1"); len(left) > 0 {
		t.Errorf("left after retention: %v", left)
	}
	if n, _ := b.rdb.ZCard(ctx, p+"retained").Result(); n != 0 {
		t.Errorf("%d retained entries left", n)
	}
}

// TestCompactionLeavesAChangedJob: a job that changes between the sweep's
// read and its compaction (here a late webhook delivery) is not compacted
// from the stale read: it stays whole and due, and the next sweep
// compacts it with the change. A compacted job that changes is due again
// (its archive must get the change), and is not forgotten from the
// retained set meanwhile.
func TestCompactionLeavesAChangedJob(t *testing.T) {
	b := setup(t)
	b.store.SetRetention(time.Hour)
	ctx := b.ctx
	b.ended(t, "c2", "vid_c2")
	now := b.clock.Advance(time.Second)
	due, err := b.store.Due(ctx, now, 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("Due = %v, %v", due, err)
	}
	docs, err := b.store.ReadArchive(ctx, []string{"c2"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.RecordWebhook(ctx, "c2", jobs.WebhookDelivery{Key: "k2", EventType: "video.completed", VideoID: "vid_c2"}); err != nil {
		t.Fatal(err)
	}
	stale := []jobs.Compaction{{ID: "c2", Score: due[0].Score, ForgetAt: b.store.ForgetAt(docs[0].Record), Record: docs[0].Record}}
	if n, err := b.store.Compact(ctx, now, stale); err != nil || n != 0 {
		t.Fatalf("Compact from a read made before a change = %d, %v; want 0", n, err)
	}
	if r := b.get(t, "c2"); r.Compact || r.WebhookDeliveries != 2 {
		t.Fatalf("record after a refused compaction: %+v", r)
	}
	docs, n := b.compactAll(t, now)
	if n != 1 || docs[0].Record.WebhookDeliveries != 2 || docs[0].History[len(docs[0].History)-1].Event != "webhook" {
		t.Fatalf("compaction after the change: %d, %+v", n, docs[0])
	}

	// A late delivery to the compacted job: due again, and kept.
	if _, err := b.store.RecordWebhook(ctx, "c2", jobs.WebhookDelivery{Key: "k3", EventType: "video.completed", VideoID: "vid_c2"}); err != nil {
		t.Fatal(err)
	}
	if due, _ := b.store.Due(ctx, b.clock.Now(), 10); len(due) != 1 || due[0].ID != "c2" {
		t.Fatalf("Due after a change of a compacted job = %v; want [c2]", due)
	}
	later := b.clock.Advance(2 * time.Hour)
	batch, _ := b.store.Retained(ctx, later, 10)
	if n, err := b.store.Forget(ctx, later, batch); err != nil || n != 0 {
		t.Errorf("Forget of a changed job from the retained set = %d, %v; want 0 (its archive is due first)", n, err)
	}
	docs, _ = b.compactAll(t, later)
	if len(docs) != 1 || docs[0].Record.WebhookDeliveries != 1 || len(docs[0].History) != 1 {
		t.Errorf("the changed compacted job's read: %+v; want the new delivery and its line", docs)
	}
}

// TestCompactedFailedJobCanBeRetried: a failed job may be retried, so its
// compaction takes only its history: the retry finds everything it needs
// (its request, its video, its step) and takes the job out of the
// retention sets.
func TestCompactedFailedJobCanBeRetried(t *testing.T) {
	b := setup(t)
	b.store.SetRetention(time.Hour)
	ctx := b.ctx
	b.create(t, "f1", "m")
	if _, err := b.store.Do(ctx, "f1", jobs.Adopted{VideoID: "vid_f1", APIStatus: "queued", How: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Do(ctx, "f1", jobs.Failed{To: jobs.StateFailed, Code: "poll_failed", Err: strings.Repeat("a long error ", 10), Step: "poll"}); err != nil {
		t.Fatal(err)
	}
	if _, n := b.compactAll(t, b.clock.Advance(time.Second)); n != 1 {
		t.Fatalf("compacted %d", n)
	}
	p := b.store.Prefix()
	if n, _ := b.rdb.Exists(ctx, p+"job:{f1}:events").Result(); n != 0 {
		t.Error("history left after compaction")
	}
	rec := b.get(t, "f1")
	if rec.Compact || rec.ArchivedAt.IsZero() || rec.Request.Prompt != "a prompt" || rec.VideoID != "vid_f1" || rec.FailedStep != "poll" {
		t.Fatalf("compacted failed job %+v; want it whole, with archived_at", rec)
	}
	plan, err := jobs.PlanRetry(rec, b.clock.Now())
	if err != nil || plan.To != jobs.StateGenerating {
		t.Fatalf("PlanRetry = %+v, %v; want poll again", plan, err)
	}
	res, err := b.store.Do(ctx, "f1", plan)
	if err != nil || !res.Applied || res.State != jobs.StateGenerating {
		t.Fatalf("retry of a compacted job = %+v, %v", res, err)
	}
	for _, set := range []string{"finished", "retained"} {
		if n, _ := b.rdb.ZCard(ctx, p+set).Result(); n != 0 {
			t.Errorf("the retried job is still in the %s set", set)
		}
	}
	if evs := b.events(t, "f1"); len(evs) != 1 || evs[0].Event != "retried" {
		t.Errorf("history after the retry: %+v", evs)
	}
}

// TestCompactionKeepsTheTenant: a compacted job still names its tenant, so
// that a resubmission of its id under another tenant is still a conflict
// and the job API's tenant filter still finds it.
func TestCompactionKeepsTheTenant(t *testing.T) {
	b := setup(t)
	b.store.SetRetention(time.Hour)
	rec := &jobs.Record{ID: "t1", Tenant: "acme"}
	rec.Request.Model = "m"
	if created, _, err := b.store.Create(b.ctx, rec); err != nil || !created {
		t.Fatalf("Create = %v, %v", created, err)
	}
	for _, op := range []jobs.Op{jobs.Adopted{VideoID: "vid_t1", APIStatus: "queued", How: "test"}, jobs.Completed{APIStatus: "completed", Outputs: 1},
		jobs.Stored{Key: "videos/t1.mp4", Location: "file:///v/t1.mp4", Bytes: 1, SHA256: strings.Repeat("b", 64)}} {
		if _, err := b.store.Do(b.ctx, "t1", op); err != nil {
			t.Fatal(err)
		}
	}
	if _, n := b.compactAll(t, b.clock.Advance(time.Second)); n != 1 {
		t.Fatalf("compacted %d jobs, want 1", n)
	}
	if got := b.get(t, "t1"); !got.Compact || got.Tenant != "acme" {
		t.Errorf("compact record: compact %v, tenant %q; want tenant acme kept", got.Compact, got.Tenant)
	}
}
