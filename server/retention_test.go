package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// TestJobAPIForgottenJob: once a finished job is forgotten (archived and
// removed from Redis, as the worker's sweep does), GET answers 410 with
// where its archive is, never a bare 404; a new job with its id is
// refused with 409 and the archive, not started as a second generation.
func TestJobAPIForgottenJob(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f, js, disk := retentionFixture(t, time.Millisecond)
	tok := bearer(apiToken)

	code, _, raw := f.call("POST", "/v1/jobs", map[string]any{"job_id": "gone-1", "model": "m", "prompt": "p", "retention_seconds": 60}, tok)
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, raw)
	}
	if code, m, _ := f.call("POST", "/v1/jobs", map[string]any{"model": "m", "prompt": "p", "retention_seconds": 1}, tok); code != http.StatusBadRequest || m["fields"].(map[string]any)["retention_seconds"] == nil {
		t.Errorf("retention_seconds 1: %d %v; want 400 naming the field", code, m)
	}
	if code, _, raw := f.call("GET", "/v1/jobs/never-was", nil, tok); code != http.StatusNotFound {
		t.Errorf("unknown job: %d %s; want 404", code, raw)
	}
	if _, err := js.Do(ctx, "gone-1", jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "create"}); err != nil {
		t.Fatal(err)
	}
	// The sweep's steps (worker.SweepFinished), at a time past the job's
	// own retention.
	later := time.Now().Add(2 * time.Minute)
	due, err := js.Due(ctx, later, 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("Due = %v, %v", due, err)
	}
	docs, err := js.ReadArchive(ctx, []string{due[0].ID}, later)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(docs[0])
	info, err := disk.Put(ctx, jobs.ArchiveKey("gone-1"), bytes.NewReader(b), storage.PutOptions{Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := js.Forget(ctx, later, []jobs.Forgotten{{ID: "gone-1", Archived: true}}); err != nil || n != 1 {
		t.Fatalf("Forget = %d, %v", n, err)
	}

	code, m, raw := f.call("GET", "/v1/jobs/gone-1", nil, tok)
	if code != http.StatusGone || m["error"] != "forgotten" || m["archive"] != info.Location {
		t.Errorf("GET of a forgotten job: %d %s; want 410 with archive %s", code, raw, info.Location)
	}
	code, m, raw = f.call("POST", "/v1/jobs", job("m", "p"), tok, "Idempotency-Key", "gone-1")
	if code != http.StatusConflict || m["error"] != "job_forgotten" || m["archive"] != info.Location {
		t.Errorf("submit again with the forgotten job's id: %d %s; want 409 job_forgotten", code, raw)
	}
	// The dashboard counts it still, as forgotten and archived.
	if code, _, raw := f.call("GET", "/", nil, tok); code != http.StatusOK || !strings.Contains(string(raw), "0 in Redis (0 finished, kept for their retention) · 1 forgotten, 1 of them archived") {
		t.Errorf("dashboard: %d; want the forgotten job counted:\n%s", code, raw)
	}
	if n, _ := js.Count(ctx); n != 0 {
		t.Errorf("%d jobs in the index, want 0", n)
	}
}

// TestJobAPICompactedJob: once the retention sweep has archived and
// compacted an ended job, GET shows it whole all the same: the record
// from its archive with what Redis keeps, its history from the archive,
// and where the archive is.
func TestJobAPICompactedJob(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f, js, disk := retentionFixture(t, time.Hour)
	tok := bearer(apiToken)

	if code, _, raw := f.call("POST", "/v1/jobs", map[string]any{"job_id": "compact-1", "model": "m", "prompt": "p"}, tok); code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, raw)
	}
	loc := "file:///a/long/storage/root/for/this/test/videos/2026-12-03/compact-1/output.mp4"
	for _, op := range []jobs.Op{jobs.Adopted{VideoID: "vid_c", APIStatus: "queued", How: "test"}, jobs.Completed{APIStatus: "completed"},
		jobs.Stored{Key: "videos/compact-1.mp4", Location: loc, SHA256: "ab"}} {
		if _, err := js.Do(ctx, "compact-1", op); err != nil {
			t.Fatal(err)
		}
	}
	// The sweep's steps (worker.SweepFinished): archive, then compact.
	now := time.Now()
	due, err := js.Due(ctx, now, 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("Due = %v, %v", due, err)
	}
	docs, err := js.ReadArchive(ctx, []string{"compact-1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(docs[0])
	info, err := disk.Put(ctx, jobs.ArchiveKey("compact-1"), bytes.NewReader(b), storage.PutOptions{Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	c := jobs.Compaction{ID: "compact-1", Score: due[0].Score, ForgetAt: js.ForgetAt(docs[0].Record), Record: docs[0].Record}
	if n, err := js.Compact(ctx, now, []jobs.Compaction{c}); err != nil || n != 1 {
		t.Fatalf("Compact = %d, %v", n, err)
	}

	code, m, raw := f.call("GET", "/v1/jobs/compact-1", nil, tok)
	hist, _ := m["history"].([]any)
	if code != http.StatusOK || m["state"] != "stored" || m["location"] != loc || m["archive"] != info.Location || len(hist) != 4 {
		t.Errorf("GET of a compacted job: %d %s; want it stored, with its location, its 4 history lines and archive %s", code, raw, info.Location)
	}
	if req, _ := m["request"].(map[string]any); req["prompt"] != "p" {
		t.Errorf("GET of a compacted job: request %v; want its prompt from the archive", m["request"])
	}
}

// retentionFixture serves the job API over a fresh database with the
// given retention on the store and the producer, and a disk store where
// the tests put archive documents.
func retentionFixture(t *testing.T, retention time.Duration) (*fixture, *jobs.Store, *storage.Disk) {
	t.Helper()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	disk, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	js := jobs.NewStore(rdb, "")
	js.SetRetention(retention)
	producer := tasks.NewClient(rdb, tasks.ClientOptions{Retention: retention})
	auth, err := server.NewAuth(apiToken, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Deps{Redis: rdb, Store: disk, Producer: producer, Jobs: js, Auth: auth}))
	t.Cleanup(srv.Close)
	return &fixture{t: t, srv: srv, producer: producer, store: js}, js, disk
}
