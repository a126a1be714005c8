package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// deferFor is how long the sweep leaves an ended job that still waits on
// a task (a callback delivery, a cancellation) before it looks again.
const deferFor = time.Minute

// SweepFinished runs retention's steps, in batches of sweepBatch. First
// the jobs due in the finished set (newly ended, or changed since their
// archive was written): each gets its archive document written to
// storage (unless Config.NoArchive; an earlier document of the job is
// extended, never replaced by less), then it is compacted in Redis
// (jobs.Store.Compact) until its retention passes, or removed at once
// when it has passed already. A job still waiting on a task is looked at
// again later; with the archive off a job stays whole until it is
// forgotten. Then the retained jobs whose retention has passed are
// removed (jobs.Store.Forget). A job whose archive cannot be written
// stays for the next sweep; unfinished jobs are never in either set, and
// a job retried meanwhile is left alone. It returns how many jobs it
// forgot.
func (w *Worker) SweepFinished(ctx context.Context) (int, error) {
	total := 0
	for {
		n, more, err := w.sweepDue(ctx)
		total += n
		if err != nil {
			return total, err
		}
		if !more {
			break
		}
	}
	for {
		now := w.now()
		batch, err := w.jobs.Retained(ctx, now, sweepBatch)
		if err != nil || len(batch) == 0 {
			return total, err
		}
		n, err := w.jobs.Forget(ctx, now, batch)
		total += n
		w.met.JobsForgotten(n, 0)
		if err != nil || len(batch) < sweepBatch {
			return total, err
		}
	}
}

// sweepDue handles one batch of the finished set's due jobs; it returns
// how many it forgot and whether there may be more.
func (w *Worker) sweepDue(ctx context.Context) (int, bool, error) {
	now := w.now()
	due, err := w.jobs.Due(ctx, now, sweepBatch)
	if err != nil || len(due) == 0 {
		return 0, false, err
	}
	ids := make([]string, len(due))
	for i, d := range due {
		ids[i] = d.ID
	}
	docs, err := w.jobs.ReadArchive(ctx, ids, now)
	if err != nil {
		return 0, false, err
	}
	var forget []jobs.Forgotten
	var compact []jobs.Compaction
	later := map[string]time.Time{}
	failed := 0
	for i, d := range due {
		doc := docs[i]
		if doc == nil {
			forget = append(forget, jobs.Forgotten{ID: d.ID}) // its entry only
			continue
		}
		rec := doc.Record
		if !jobs.Compactable(rec) {
			later[d.ID] = now.Add(deferFor)
			continue
		}
		at := w.jobs.ForgetAt(rec)
		expired := !now.Before(at)
		if w.cfg.NoArchive && !expired {
			later[d.ID] = at
			continue
		}
		if !w.cfg.NoArchive {
			if err := w.writeArchive(ctx, doc); err != nil {
				failed++
				w.log.WarnContext(ctx, "job archive not written; the job stays until it is", "job_id", d.ID, "err", err.Error())
				_ = w.jobs.CountArchiveFailure(ctx)
				continue
			}
		}
		if expired {
			forget = append(forget, jobs.Forgotten{ID: d.ID, VideoID: rec.VideoID, Archived: !w.cfg.NoArchive})
			continue
		}
		compact = append(compact, jobs.Compaction{ID: d.ID, Score: d.Score, ForgetAt: at, Record: rec})
	}
	if err := w.jobs.Rescore(ctx, later); err != nil {
		return 0, false, err
	}
	if _, err := w.jobs.Compact(ctx, now, compact); err != nil {
		return 0, false, err
	}
	n, err := w.jobs.Forget(ctx, now, forget)
	if n > 0 {
		if w.cfg.NoArchive {
			w.met.JobsForgotten(0, n)
		} else {
			w.met.JobsForgotten(n, 0)
		}
	}
	if err != nil {
		return n, false, err
	}
	if failed > 0 {
		return n, false, fmt.Errorf("%d job archives not written", failed)
	}
	return n, len(due) == sweepBatch, nil
}

// writeArchive writes a job's archive document to jobs.ArchiveKey. A job
// archived before (its record says when) keeps what that document has:
// the new one is the old one extended by what the job says now.
func (w *Worker) writeArchive(ctx context.Context, d *jobs.Archive) error {
	if !d.Record.ArchivedAt.IsZero() {
		old, err := jobs.LoadArchive(ctx, w.store, d.Record.ID)
		switch {
		case err == nil:
			rec, hist := old.With(d.Record, d.History)
			d = &jobs.Archive{Format: d.Format, ArchivedAt: d.ArchivedAt, Record: rec, History: hist}
		case !errors.Is(err, storage.ErrNotExist):
			return err
		}
	}
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
