package worker_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// TestJobIDsThatOnceSharedAKey: "coll:1" and "coll_1" (and "." and "..",
// which the old mapping sent to "_" and "__" like the ids "_" and "__")
// each end stored at their own key with their own bytes.
func TestJobIDsThatOnceSharedAKey(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.startWorker(fastConfig(), nil)
	var ids []tasks.JobID
	for i, id := range []string{"coll:1", "coll_1", ".", "_", "..", "__"} {
		got, err := e.producer.Submit(context.Background(), tasks.Request{JobID: tasks.JobID(id),
			Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "collide " + string(rune('a'+i))}})
		if err != nil {
			t.Fatalf("submit %q: %v", id, err)
		}
		ids = append(ids, got)
	}
	recs := e.waitTerminal(ids, 30*time.Second)
	e.checkStored(recs)
	keys := map[string]string{}
	for _, r := range recs {
		if other, ok := keys[r.StorageKey]; ok {
			t.Errorf("jobs %q and %q share the key %q", other, r.ID, r.StorageKey)
		}
		keys[r.StorageKey] = r.ID
		info, err := e.store.Stat(context.Background(), r.StorageKey)
		if err != nil {
			t.Fatal(err)
		}
		if info.Metadata[storage.OwnerMetadataKey] != r.ID {
			t.Errorf("job %q: the object at %q belongs to %q", r.ID, r.StorageKey, info.Metadata[storage.OwnerMetadataKey])
		}
	}
}

// TestKeyHeldByAnotherJob: an object of another job at the job's key makes
// the job fail with storage_key_conflict after one attempt, and the object
// is left as it was.
func TestKeyHeldByAnotherJob(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ctx := context.Background()
	id, err := e.producer.Submit(ctx, tasks.Request{JobID: "victim", Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.jobs.Get(ctx, string(id))
	if err != nil {
		t.Fatal(err)
	}
	key, err := storage.RenderKey(storage.DefaultKeyTemplate, storage.KeyVars{JobID: rec.ID, Date: rec.SubmittedAt})
	if err != nil {
		t.Fatal(err)
	}
	theirs := []byte("another job's paid video")
	meta := map[string]string{storage.OwnerMetadataKey: "someone-else", "video_id": "v-other"}
	if _, err := e.store.Put(ctx, key, bytes.NewReader(theirs), storage.PutOptions{Size: int64(len(theirs)), Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	e.startWorker(fastConfig(), nil)
	r := e.waitTerminal([]tasks.JobID{id}, 30*time.Second)[0]
	if r.State != jobs.StateFailed || r.ErrorCode != "storage_key_conflict" || r.DownloadAttempts != 1 {
		t.Errorf("job: state %s, error code %q (%s), download attempts %d; want failed, storage_key_conflict, 1", r.State, r.ErrorCode, r.Error, r.DownloadAttempts)
	}
	rc, info, err := e.store.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, theirs) || info.Metadata[storage.OwnerMetadataKey] != "someone-else" {
		t.Errorf("the other job's object is now %d bytes (equal: %v, owner %q), %v; want it untouched", len(got), bytes.Equal(got, theirs), info.Metadata[storage.OwnerMetadataKey], err)
	}
	// Not retried: the download task is archived at once.
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ti, err := insp.GetTaskInfo(tasks.QueueDownload, tasks.DownloadTaskID(r.ID))
		if err == nil && ti.State == asynq.TaskStateArchived {
			if ti.Retried != 0 {
				t.Errorf("download task retried %d times, want 0", ti.Retried)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("download task not archived: %+v, %v", ti, err)
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
