package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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
