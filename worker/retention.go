package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
)

// sweepBatch is how many finished jobs one sweep step reads, archives and
// forgets.
const sweepBatch = 500

// runRetentionSweeps forgets, every interval, the finished jobs whose
// retention has passed. One worker of the fleet at a time does it (a Redis
// lease); the others stand by. It returns when ctx ends.
func (w *Worker) runRetentionSweeps(ctx context.Context, interval time.Duration) {
	w.runLeased(ctx, "retention-sweep", interval, 2*interval+time.Minute, func() {
		if n, err := w.SweepFinished(ctx); err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "retention sweep", "err", err.Error(), "forgotten", n)
		} else if n > 0 {
			w.log.InfoContext(ctx, "finished jobs forgotten", "count", n)
		}
	})
}

// SweepFinished forgets every finished job whose retention has passed, in
// batches of sweepBatch: it writes each one's archive document to storage
// (unless Config.NoArchive), then removes everything the job left in
// Redis (jobs.Store.Forget). A job whose archive cannot be written stays
// for the next sweep. Unfinished jobs are never in the finished set, and a
// job retried meanwhile is left alone. It returns how many jobs it forgot.
func (w *Worker) SweepFinished(ctx context.Context) (int, error) {
	total := 0
	for {
		now := w.now()
		ids, err := w.jobs.Expired(ctx, now, sweepBatch)
		if err != nil || len(ids) == 0 {
			return total, err
		}
		docs, err := w.jobs.ReadArchive(ctx, ids, now)
		if err != nil {
			return total, err
		}
		batch := make([]jobs.Forgotten, 0, len(ids))
		failed := 0
		for i, id := range ids {
			f := jobs.Forgotten{ID: id}
			if d := docs[i]; d != nil {
				f.VideoID = d.Record.VideoID
				if !w.cfg.NoArchive {
					if err := w.writeArchive(ctx, d); err != nil {
						failed++
						w.log.WarnContext(ctx, "job archive not written; the job stays until it is", "job_id", id, "err", err.Error())
						_ = w.jobs.CountArchiveFailure(ctx)
						continue
					}
					f.Archived = true
				}
			}
			batch = append(batch, f)
		}
		n, err := w.jobs.Forget(ctx, now, batch)
		total += n
		if n > 0 {
			if w.cfg.NoArchive {
				w.met.JobsForgotten(0, n)
			} else {
				w.met.JobsForgotten(n, 0)
			}
		}
		if err != nil {
			return total, err
		}
		if failed > 0 {
			return total, fmt.Errorf("%d job archives not written", failed)
		}
		if len(ids) < sweepBatch {
			return total, nil
		}
	}
}

// writeArchive writes a job's archive document to jobs.ArchiveKey.
func (w *Worker) writeArchive(ctx context.Context, d *jobs.Archive) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("archive job %s: %w", d.Record.ID, err)
	}
	opts := storage.PutOptions{Size: int64(len(b)), ContentType: "application/json",
		Metadata: map[string]string{storage.OwnerMetadataKey: d.Record.ID}}
	if _, err := w.store.Put(ctx, jobs.ArchiveKey(d.Record.ID), bytes.NewReader(b), opts); err != nil {
		return fmt.Errorf("archive job %s: %w", d.Record.ID, err)
	}
	return nil
}
