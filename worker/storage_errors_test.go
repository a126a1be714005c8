package worker_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/s3test"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// runWorker runs w until the end of the test.
func runWorker(t *testing.T, w *worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// An S3 endpoint that refuses connections is a failure of the download,
// not an outage of Redis: each attempt uses up a retry (so the backoff
// grows and the task reaches the dead letters in the end) and the job
// stays downloading meanwhile. Before, the retry count never moved.
func TestStorageRefusingConnectionsUsesRetries(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	s3, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: srv.Endpoint(), Region: s3test.Region, Bucket: bucket,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(fastConfig(), worker.Deps{Redis: e.rdb, API: e.client, Store: s3, Jobs: e.jobs, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	runWorker(t, w)
	id := e.submit(1, "google/veo-3.1-lite")[0]
	e.waitState(id, jobs.StateDownloading, 20*time.Second)

	// Each attempt takes a few seconds: the S3 client retries a refused
	// connection itself before it gives up.
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	deadline := time.Now().Add(45 * time.Second)
	for {
		ti, err := insp.GetTaskInfo(tasks.QueueDownload, tasks.DownloadTaskID(string(id)))
		if err == nil && ti.Retried >= 2 {
			break
		}
		if time.Now().After(deadline) {
			rec, _ := e.jobs.Get(context.Background(), string(id))
			t.Fatalf("download task after %s: %+v (err %v); job %s, %d download attempts: the retry count does not grow",
				45*time.Second, ti, err, rec.State, rec.DownloadAttempts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec, err := e.jobs.Get(context.Background(), string(id))
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != jobs.StateDownloading || rec.DownloadAttempts < 2 {
		t.Errorf("job %s with %d download attempts, want downloading with at least 2", rec.State, rec.DownloadAttempts)
	}
}

// downloadTask reads the job's download task, failing the test when there
// is none.
func (e *env) downloadTask(id tasks.JobID) *asynq.TaskInfo {
	e.t.Helper()
	ti, err := asynq.NewInspectorFromRedisClient(e.rdb).GetTaskInfo(tasks.QueueDownload, tasks.DownloadTaskID(string(id)))
	if err != nil {
		e.t.Fatalf("download task of %s: %v", id, err)
	}
	return ti
}

// A key the storage backend refuses can never be stored: the job fails at
// once with invalid_storage_key and the task goes to the dead letters
// unretried. Before, it was retried 25 times and ended retries_exhausted.
func TestInvalidStorageKeyFailsAtOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	// A directory of the key is a symbolic link, which Disk never follows.
	// (A template that renders a reserved name is refused at start.)
	if err := os.Symlink(t.TempDir(), filepath.Join(e.store.Root(), "videos")); err != nil {
		t.Fatal(err)
	}
	e.startWorker(fastConfig(), nil)
	id := e.submit(1, "google/veo-3.1-lite")[0]
	rec := e.waitTerminal([]tasks.JobID{id}, 30*time.Second)[0]
	if rec.State != jobs.StateFailed || rec.ErrorCode != "invalid_storage_key" || rec.DownloadAttempts != 1 {
		t.Errorf("job %s / %s after %d download attempts (%s), want failed / invalid_storage_key after 1", rec.State, rec.ErrorCode, rec.DownloadAttempts, rec.Error)
	}
	if ti := e.waitArchived(id); ti.Retried != 0 {
		t.Errorf("download task archived after %d retries, want 0", ti.Retried)
	}
}

// waitArchived waits (bounded) for the job's download task to reach the
// dead letters; the job records its failure a moment before asynq moves
// the task.
func (e *env) waitArchived(id tasks.JobID) *asynq.TaskInfo {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ti := e.downloadTask(id)
		if ti.State == asynq.TaskStateArchived {
			return ti
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("download task of %s is %s, want archived", id, ti.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// corruptContent flips a byte of every content stream the real API sends
// and counts the streams.
type corruptContent struct {
	worker.VideoAPI
	fetched *atomic.Int64
}

func (c corruptContent) Content(ctx context.Context, id string, index int) (*apiclient.Content, error) {
	ct, err := c.VideoAPI.Content(ctx, id, index)
	if err == nil {
		c.fetched.Add(1)
		ct.Body = flipFirst{ReadCloser: ct.Body}
	}
	return ct, err
}

type flipFirst struct{ io.ReadCloser }

func (f flipFirst) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 {
		p[0] ^= 0xff // every read: the bytes can never match
	}
	return n, err
}

// Bytes that do not match the API's sha256 are fetched again a bounded
// number of times, then the job fails integrity_error and nothing is
// stored. Before, the whole video was downloaded 26 times and the job
// ended retries_exhausted.
func TestIntegrityMismatchIsRetriedAFewTimes(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	var fetched atomic.Int64
	e.startWorker(fastConfig(), corruptContent{VideoAPI: e.client, fetched: &fetched})
	id := e.submit(1, "google/veo-3.1-lite")[0]
	rec := e.waitTerminal([]tasks.JobID{id}, 30*time.Second)[0]
	if rec.State != jobs.StateFailed || rec.ErrorCode != "integrity_error" {
		t.Errorf("job %s / %s (%s), want failed / integrity_error", rec.State, rec.ErrorCode, rec.Error)
	}
	if rec.DownloadAttempts != 4 || fetched.Load() != 4 {
		t.Errorf("%d download attempts fetched the video %d times, want 4 and 4 (the first and 3 retries)", rec.DownloadAttempts, fetched.Load())
	}
	if _, err := e.store.Stat(context.Background(), rec.StorageKey); rec.StorageKey != "" || err == nil {
		t.Errorf("storage key %q recorded, stat: %v; want nothing stored", rec.StorageKey, err)
	}
	e.waitArchived(id)
}

// A task whose payload this release cannot read (here: from a newer
// release) ends the job it names as failed / bad_payload instead of
// leaving it waiting for a step that never runs; a payload that names no
// job is only archived.
func TestBadPayloadFailsTheJob(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ctx := context.Background()
	req := e.request("newer")
	if _, _, err := e.jobs.Create(ctx, &jobs.Record{ID: "newer", Request: req}); err != nil {
		t.Fatal(err)
	}
	e.startWorker(fastConfig(), nil)
	aq := asynq.NewClientFromRedisClient(e.rdb)
	defer aq.Close()
	for _, tc := range []struct{ id, payload string }{
		{"newer", `{"v":99,"job_id":"newer","video_id":"G-1"}`},
		{"garbled", `{"v":1,"job_id":`},
	} {
		task := asynq.NewTask(tasks.TypeDownload, []byte(tc.payload))
		if _, err := aq.Enqueue(task, asynq.Queue(tasks.QueueDownload), asynq.TaskID(tasks.DownloadTaskID(tc.id)), asynq.MaxRetry(25)); err != nil {
			t.Fatal(err)
		}
	}
	rec := e.waitTerminal([]tasks.JobID{"newer"}, 10*time.Second)[0]
	if rec.State != jobs.StateFailed || rec.ErrorCode != "bad_payload" {
		t.Errorf("job %s / %s (%s), want failed / bad_payload", rec.State, rec.ErrorCode, rec.Error)
	}
	for _, id := range []tasks.JobID{"newer", "garbled"} {
		if ti := e.waitArchived(id); ti.Retried != 0 {
			t.Errorf("task %s archived after %d retries, want 0", ti.ID, ti.Retried)
		}
	}
}
