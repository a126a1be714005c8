package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// handleDownload streams every output of the job into storage and marks
// it stored. Outputs already stored with the expected size and sha256 are
// not fetched again, so a retry after a crash finishes the job without a
// duplicate or partial object.
func (w *Worker) handleDownload(ctx context.Context, t *asynq.Task) (err error) {
	p, err := tasks.Decode[tasks.DownloadPayload](t.Payload())
	if err != nil {
		return w.badPayload(ctx, t, err)
	}
	// The first transition is the read: it counts the attempt and returns
	// the record.
	res, err := w.jobs.Do(ctx, p.JobID, jobs.DownloadStarted{})
	rec := res.Record
	annotate(ctx, rec)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return permanent(err)
	case errors.Is(err, jobs.ErrIllegalTransition) && rec != nil:
		// Stored already, ended, or not there yet; or the dead letter of
		// a failed download run again.
		if ok, err := w.revived(ctx, rec); ok || err != nil {
			return err
		}
		// A retry of the task that stored the job, whose callback task
		// could not be enqueued: enqueue it now (nothing without a
		// callback URL).
		if rec.State.Terminal() {
			return w.enqueueNext(ctx, rec, 0)
		}
		return nil
	case err != nil:
		return err
	}
	defer func() { err = w.onTaskError(ctx, rec, err) }()

	var total int64
	var first storage.ObjectInfo
	for i := 0; i < max(rec.Outputs, 1); i++ {
		info, err := w.storeOutput(ctx, rec, i)
		if err != nil {
			return err
		}
		if i == 0 {
			first = info
		}
		total += info.Size
	}
	out, err := w.jobs.Do(ctx, rec.ID, jobs.Stored{Key: first.Key, Location: first.Location, Bytes: total, SHA256: first.SHA256})
	if err != nil && !errors.Is(err, jobs.ErrIllegalTransition) {
		return err
	}
	if out.Applied {
		start := rec.SubmittedAt
		if rec.RetriedAt.After(start) {
			start = rec.RetriedAt
		}
		w.met.JobFinished(string(jobs.StateStored))
		w.met.Stored(total, start, rec.CompletedAt, w.now())
		w.log.InfoContext(ctx, "job stored", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(jobs.StateStored),
			"location", first.Location, "bytes", total)
		return w.enqueueEnded(ctx, rec, jobs.StateStored)
	}
	return nil
}

// storeOutput stores output index of the job, or confirms it is stored.
func (w *Worker) storeOutput(ctx context.Context, rec *jobs.Record, index int) (storage.ObjectInfo, error) {
	key, err := storage.RenderKey(w.cfg.KeyTemplate, storage.KeyVars{JobID: rec.ID, VideoID: rec.VideoID, Index: index, Date: rec.SubmittedAt})
	if err != nil {
		w.failJob(ctx, rec, jobs.StateFailed, "bad_storage_key", err)
		return storage.ObjectInfo{}, permanent(err)
	}
	wantSize, wantSHA := int64(-1), ""
	if index == 0 { // the asset describes the first output
		if rec.ExpectedBytes > 0 {
			wantSize = rec.ExpectedBytes
		}
		wantSHA = rec.ExpectedSHA256
	}
	if info, err := w.store.Stat(ctx, key); err == nil {
		if owner := info.Metadata[storage.OwnerMetadataKey]; owner != "" && owner != rec.ID {
			// Another job's video: never fetched over, never taken as ours.
			return storage.ObjectInfo{}, w.storageFailure(ctx, rec, fmt.Errorf("store %s: %w: the object there belongs to job %q", key, storage.ErrKeyConflict, owner))
		}
		if (wantSize < 0 || info.Size == wantSize) && (wantSHA == "" || info.SHA256 == wantSHA) && (wantSize >= 0 || wantSHA != "") {
			w.log.InfoContext(ctx, "output already stored", "job_id", rec.ID, "video_id", rec.VideoID, "key", key)
			return info, nil
		}
	} else if !errors.Is(err, storage.ErrNotExist) {
		return storage.ObjectInfo{}, w.storageFailure(ctx, rec, fmt.Errorf("stat %s: %w", key, err))
	}

	c, err := w.api.Content(ctx, rec.VideoID, index)
	if err != nil {
		var ae *apiclient.APIError
		switch {
		case errors.As(err, &ae) && ae.NotReady():
			return storage.ObjectInfo{}, &retryLater{after: max(ae.RetryAfter, 2*time.Second), err: err}
		case errors.As(err, &ae) && ae.StatusCode == 429:
			return storage.ObjectInfo{}, &retryLater{after: max(ae.RetryAfter, time.Second), err: err}
		case errors.As(err, &ae) && !ae.Retryable():
			w.failJob(ctx, rec, jobs.StateFailed, errorCode(err), err)
			return storage.ObjectInfo{}, permanent(err)
		}
		return storage.ObjectInfo{}, err
	}
	defer c.Body.Close()
	size := wantSize
	if size < 0 {
		size = c.Length
	} else if c.Length >= 0 && c.Length != size {
		return storage.ObjectInfo{}, w.storageFailure(ctx, rec, fmt.Errorf("content of %s: the API reported a size the response does not carry: %w",
			rec.VideoID, &storage.IntegrityError{Key: key, WantSize: size, GotSize: c.Length}))
	}
	ct := c.ContentType
	if ct == "" {
		ct = "video/mp4"
	}
	pctx, sp := storageSpan(ctx, key)
	info, err := w.store.Put(pctx, key, c.Body, storage.PutOptions{Size: size, SHA256: wantSHA, ContentType: ct,
		Metadata: map[string]string{storage.OwnerMetadataKey: rec.ID, "video_id": rec.VideoID, "output_index": strconv.Itoa(index)}})
	if sp.Recording() && err == nil {
		sp.Int(tracing.AttrBytes, int(info.Size))
	}
	sp.End(err)
	if err != nil {
		w.log.WarnContext(ctx, "store failed", "job_id", rec.ID, "video_id", rec.VideoID, "key", key, "err", err.Error())
		return storage.ObjectInfo{}, w.storageFailure(ctx, rec, fmt.Errorf("store %s: %w", key, err))
	}
	return info, nil
}
