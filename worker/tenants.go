package worker

import (
	"context"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// tenantStarted tells the tenancy that rec's create started (or waits
// for a budget): it no longer holds a place in the create queue, and the
// jobs then admitted get their create tasks. A failure is logged: the
// admitted-job window forgets it after jobs.TenancyConfig.AdmitTimeout,
// and the stranded-job check sweeps it sooner. Nothing with tenancy off.
func (w *Worker) tenantStarted(ctx context.Context, rec *jobs.Record) {
	if w.cfg.Tenancy == nil {
		return
	}
	adm, err := w.cfg.Tenancy.Started(ctx, rec.ID, rec.Tenant)
	w.admitted(ctx, rec, adm, err)
}

// tenantLeft tells the tenancy that rec went past generating or ended:
// it no longer counts against its tenant's limit. Nothing with tenancy
// off.
func (w *Worker) tenantLeft(ctx context.Context, rec *jobs.Record) {
	if w.cfg.Tenancy == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	var adm []jobs.Admission
	var err error
	if rec.State == jobs.StateTenantWait {
		adm, err = w.cfg.Tenancy.Withdraw(ctx, rec.ID, rec.Tenant)
	} else {
		adm, err = w.cfg.Tenancy.Left(ctx, rec.ID, rec.Tenant)
	}
	w.admitted(ctx, rec, adm, err)
}

// admitted enqueues the create tasks of the jobs an admission round
// admitted (tasks.EnqueueAdmitted, as producers do). A lost one leaves a
// queued job without a task, which the stranded-job check enqueues.
func (w *Worker) admitted(ctx context.Context, rec *jobs.Record, adm []jobs.Admission, err error) {
	if err != nil {
		w.log.WarnContext(ctx, "tenancy", "job_id", rec.ID, "tenant", rec.Tenant, "err", err.Error())
	}
	if err := tasks.EnqueueAdmitted(ctx, w.aq, w.wake, adm); err != nil {
		w.log.WarnContext(ctx, "enqueue admitted jobs", "job_id", rec.ID, "admitted", len(adm), "err", err.Error())
	}
}
