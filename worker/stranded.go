package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// runStrandedChecks re-enqueues, every interval, the missing next task of
// any unfinished job. One worker of the fleet at a time does it (a Redis
// lease); the others stand by. It returns when ctx ends.
func (w *Worker) runStrandedChecks(ctx context.Context, interval time.Duration) {
	w.runLeased(ctx, "stranded-check", interval, 2*interval, func() {
		if n, err := w.RecoverStranded(ctx); err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "stranded-job check", "err", err.Error())
		} else if n > 0 {
			w.log.WarnContext(ctx, "stranded jobs re-enqueued", "count", n)
		}
	})
}

// runLeased runs step every interval while this worker holds the
// fleet-wide lease name (taken or renewed for ttl before each step), so
// that one worker of the fleet at a time does it; the others stand by.
// It returns when ctx ends.
func (w *Worker) runLeased(ctx context.Context, name string, interval, ttl time.Duration, step func()) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	owner := hex.EncodeToString(b[:])
	runEvery(ctx, interval, func() {
		if held, err := w.jobs.Lease(ctx, name, owner, ttl); err == nil && held {
			step()
		}
	})
}

// runEvery runs step every interval (the first after one interval) until
// ctx ends.
func runEvery(ctx context.Context, interval time.Duration, step func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			step()
		}
	}
}

// RecoverStranded finds every unfinished job whose next task is missing
// (lost in a Redis failover or restart, evicted, or archived by mistake),
// and every ended job whose callback task is (the set of callbacks due),
// and enqueues it again; it returns how many it re-enqueued. Jobs changed
// within StrandedGrace are left alone: their next task may be on its way.
// Re-enqueueing is safe: every step checks the job's record first.
func (w *Worker) RecoverStranded(ctx context.Context) (int, error) {
	now := w.now()
	n := 0
	var waits *jobs.WaitIndex
	if w.cfg.Tenancy != nil {
		waits = w.cfg.Tenancy.NewWaitIndex()
	}
	err := w.jobs.ScanActive(ctx, func(ids []string) error {
		var done []string
		for _, id := range ids {
			rec, err := w.jobs.Load(ctx, id) // the spec is not needed to know the next task
			if errors.Is(err, jobs.ErrNotFound) {
				done = append(done, id)
				continue
			}
			if err != nil {
				return err
			}
			if rec.State.Terminal() {
				done = append(done, id)
				continue
			}
			if now.Sub(rec.UpdatedAt) < w.cfg.StrandedGrace {
				continue
			}
			if rec.State == jobs.StateTenantWait {
				ok, err := w.repairTenantWait(ctx, waits, rec)
				if err != nil {
					return err
				}
				if ok {
					n++
				}
				continue
			}
			ok, err := w.reenqueue(ctx, rec)
			if err != nil {
				return err
			}
			if ok {
				n++
			}
		}
		return w.jobs.Deactivate(ctx, done...)
	})
	if err != nil {
		return n, err
	}
	if w.cfg.Tenancy != nil {
		adm, err := w.cfg.Tenancy.Sweep(ctx)
		w.admitted(ctx, &jobs.Record{}, adm, err)
	}
	err = w.jobs.ScanCallbacksDue(ctx, func(ids []string) error {
		var done []string
		for _, id := range ids {
			rec, err := w.jobs.Load(ctx, id)
			if errors.Is(err, jobs.ErrNotFound) {
				done = append(done, id)
				continue
			}
			if err != nil {
				return err
			}
			if !rec.CallbackDue() {
				done = append(done, id)
				continue
			}
			if now.Sub(rec.UpdatedAt) < w.cfg.StrandedGrace {
				continue
			}
			ok, err := w.reenqueue(ctx, rec)
			if err != nil {
				return err
			}
			if ok {
				n++
			}
		}
		return w.jobs.CallbacksDone(ctx, done...)
	})
	return n, err
}

// repairTenantWait puts right a job in tenant_wait left alone for the
// grace period (jobs.Tenancy.Repair): back into its tenant's list, or its
// admission finished (waits: the snapshot of the waiting lists). With tenancy off (turned off while jobs waited) the
// job is admitted at once. It reports whether it changed anything.
func (w *Worker) repairTenantWait(ctx context.Context, waits *jobs.WaitIndex, rec *jobs.Record) (bool, error) {
	if waits != nil {
		adm, ok, err := waits.Repair(ctx, rec)
		w.admitted(ctx, rec, adm, nil)
		if ok {
			w.log.WarnContext(ctx, "job in tenant_wait repaired", "job_id", rec.ID, "tenant", rec.Tenant, "admitted", len(adm) > 0)
		}
		return ok, err
	}
	res, err := w.jobs.Do(ctx, rec.ID, jobs.Admitted{Tenant: rec.Tenant})
	if err != nil || !res.Applied {
		return false, err
	}
	if err := w.enqueueNext(ctx, res.Record, 0); err != nil {
		return false, err
	}
	w.log.WarnContext(ctx, "job in tenant_wait admitted: tenancy is off", "job_id", rec.ID, "tenant", rec.Tenant)
	return true, nil
}

// reenqueue enqueues the task rec waits on unless it exists and is alive;
// it reports whether it enqueued it.
func (w *Worker) reenqueue(ctx context.Context, rec *jobs.Record) (bool, error) {
	next, err := tasks.NextTask(rec, 0)
	if err != nil || next == nil {
		return false, nil
	}
	info, err := w.insp.GetTaskInfo(next.Queue, next.ID)
	switch {
	case err == nil && info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted:
		return false, nil // alive
	case err == nil:
		_ = w.insp.DeleteTask(next.Queue, next.ID) // dead or done, yet the job is not: run it again
	case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) && !strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "does not exist"):
		return false, err
	}
	if err := w.enqueue(ctx, next); err != nil {
		return false, err
	}
	if !rec.State.Terminal() {
		_, _ = w.jobs.Do(ctx, rec.ID, jobs.Reenqueued{Task: next.Type})
	}
	w.log.WarnContext(ctx, "stranded job re-enqueued", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(rec.State), "task", next.Type)
	return true, nil
}
