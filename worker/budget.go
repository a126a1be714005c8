package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

// Budget policies: what becomes of a job whose estimate does not fit.
const (
	// BudgetWait: the job waits in budget_wait, retrying its create after
	// BudgetRetryInterval (at most until the budget's window ends).
	BudgetWait = "wait"
	// BudgetReject: the job ends failed with code budget_exceeded (an
	// operator may retry it once the budget has room).
	BudgetReject = "reject"
)

// reserveBudget reserves the job's estimated cost before its create call
// (budgets on only). A job that does not fit waits (retryLater, state
// budget_wait) or ends budget_exceeded; a job of a model without a price
// ends unpriced_model: neither makes an API call.
func (w *Worker) reserveBudget(ctx context.Context, rec *jobs.Record) error {
	b := w.cfg.Budgets
	if !b.Applies(rec.Request.Model, rec.Tenant) {
		return nil
	}
	est, ok := b.Price(rec.Request)
	if !ok {
		err := fmt.Errorf("model %s has no price (not in MODEL_PRICES, and no recognised pricing from the API's model list) and budgets are on: not submitted", rec.Request.Model)
		w.failJob(ctx, rec, jobs.StateFailed, "unpriced_model", err)
		return permanent(err)
	}
	err := b.Reserve(ctx, rec.ID, rec.Request.Model, rec.Tenant, est)
	var ex *jobs.ExceededError
	if !errors.As(err, &ex) {
		return err
	}
	if w.cfg.BudgetPolicy == BudgetReject {
		w.failJob(ctx, rec, jobs.StateFailed, "budget_exceeded", err)
		return permanent(err)
	}
	if rec.State != jobs.StateBudgetWait {
		if _, terr := w.jobs.Do(ctx, rec.ID, jobs.BudgetWaited{Reason: err.Error()}); terr != nil && !errors.Is(terr, jobs.ErrIllegalTransition) {
			return terr
		}
		w.log.InfoContext(ctx, "job waits for budget", "job_id", rec.ID, "budget", ex.Budget.String(), "err", err.Error())
		w.tenantStarted(ctx, rec)
	}
	return &retryLater{after: ex.WaitFor(w.now(), w.cfg.BudgetRetryInterval), err: err}
}

// adjustBudget replaces the job's reservation by the API's estimate.
func (w *Worker) adjustBudget(ctx context.Context, rec *jobs.Record, v *apiclient.Video) {
	if c := v.Billing.EstimatedUserCost; c.Known {
		if err := w.cfg.Budgets.Adjust(ctx, rec.ID, c.Micros); err != nil {
			w.log.WarnContext(ctx, "budget adjust", "job_id", rec.ID, "err", err.Error())
		}
	}
}

// settleBudget ends the job's reservation when its generation ended: the
// settled cost becomes spent (void: 0, a release). A job that never had a
// video is released; one whose generation may still be billed (ended on
// our side, e.g. timed out, with the API's bill unknown) keeps its
// reservation until it expires.
func (w *Worker) settleBudget(ctx context.Context, rec *jobs.Record, bill jobs.Billing) {
	amount := bill.Settled.Micros
	if !bill.Settled.Known && (rec.VideoID != "" || rec.CreateInDoubt) {
		return
	}
	if err := w.cfg.Budgets.Settle(context.WithoutCancel(ctx), rec.ID, amount); err != nil {
		w.log.WarnContext(ctx, "budget settle", "job_id", rec.ID, "err", err.Error())
	}
}
