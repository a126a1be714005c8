package worker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// handleCreate submits the job to the API exactly once in effect: load,
// decide, and under the model's create lock submit (or first reconcile an
// in-doubt create), then enqueue what comes next.
func (w *Worker) handleCreate(ctx context.Context, t *asynq.Task) (err error) {
	p, err := tasks.Decode[tasks.CreatePayload](t.Payload())
	if err != nil {
		return w.badPayload(ctx, t, err)
	}
	rec, err := w.loadJobSpec(ctx, p.JobID)
	if err != nil {
		return err
	}
	if ok, err := w.revived(ctx, rec); ok {
		return err
	}
	defer func() { err = w.onTaskError(ctx, rec, err) }()

	switch {
	case rec.State.Terminal():
		return nil
	case rec.VideoID != "":
		// A retry after the id was saved: make sure the chain exists.
		return w.enqueueNext(ctx, rec, w.cfg.MinPollInterval)
	case rec.State != jobs.StateQueued && rec.State != jobs.StateSubmitting && rec.State != jobs.StateBudgetWait:
		return nil
	}
	// Creates of one model are serialised fleet-wide, and an in-doubt
	// create keeps the lock until it is reconciled: the API has no
	// idempotency key, so this is what lets a reconciliation tell which
	// job an unanswered call started.
	held, err := w.lockCreate(ctx, rec)
	if err != nil || !held {
		var rl *retryLater
		if w.cfg.Tenancy != nil && rec.State == jobs.StateQueued && errors.As(err, &rl) && w.now().Sub(rec.UpdatedAt) >= lockGiveBack {
			// Waiting long for another job's create of this model (a
			// lock may be held until a dead worker's lease lapses): give
			// the admission window's place back, so that jobs of other
			// models are admitted meanwhile. It still counts against its
			// tenant's limit. A short wait keeps the place: giving it
			// back at every wait would let admission run ahead of the
			// creates and undo its fairness.
			w.tenantStarted(ctx, rec)
		}
		return err
	}
	lock, err := w.createLocked(ctx, rec)
	if lock == lockRelease {
		if rerr := w.jobs.ReleaseCreateLock(context.WithoutCancel(ctx), rec.Request.Model, rec.ID); rerr != nil {
			w.log.WarnContext(ctx, "release create lock", "job_id", rec.ID, "err", rerr.Error())
		}
	}
	return err
}

// lockAfter says what becomes of the model's create lock when a create
// attempt ends.
type lockAfter int

const (
	// lockRelease: the create is settled (or nothing was sent): release.
	lockRelease lockAfter = iota
	// lockKeep: a create call's outcome is in doubt: nobody else may
	// create this model until it is reconciled, or their jobs could be
	// taken for ours.
	lockKeep
	// lockReleased: the transition that saved the video id released it.
	lockReleased
)

// createLocked settles the job's create while holding the model's create
// lock: it reconciles an in-doubt create, submits when nothing was
// created, and when that call's outcome is in doubt it waits and
// reconciles once more in this task (which holds the lock) rather than
// behind the queue of other creates waiting for the lock.
func (w *Worker) createLocked(ctx context.Context, rec *jobs.Record) (lockAfter, error) {
	for round := 0; ; round++ {
		if rec.CreateInDoubt {
			adopted, err := w.reconcile(ctx, rec)
			switch {
			case adopted:
				return lockReleased, err
			case err != nil && rec.CreateInDoubt && !errors.Is(err, asynq.SkipRetry):
				return lockKeep, err // not settled yet
			case err != nil:
				return lockRelease, err
			}
			// Nothing was created: submitting again is safe.
		}
		if !w.now().Before(w.deadline(rec)) {
			w.failJob(ctx, rec, jobs.StateTimedOut, "deadline_exceeded", errors.New("job deadline passed before the video was submitted"))
			return lockRelease, nil
		}
		lock, err := w.submit(ctx, rec)
		var rl *retryLater
		if lock != lockKeep || round > 0 || !errors.As(err, &rl) {
			return lock, err
		}
		timer := time.NewTimer(w.cfg.ReconcileDelay + 50*time.Millisecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			return lockKeep, err
		case <-timer.C:
		}
		cur, gerr := w.jobs.Load(ctx, rec.ID)
		if gerr != nil || !cur.CreateInDoubt || cur.VideoID != "" || cur.State != jobs.StateSubmitting {
			return lockKeep, err // the retry sorts it out
		}
		cur.Request, cur.Labels = rec.Request, rec.Labels // the spec never changes
		rec = cur
	}
}

// lockWait is how long a create waits in the handler for its model's
// lock, behind other waiters, before it gives the slot back and retries
// later (keeping its place in the queue of waiters: its ticket).
const lockWait = 200 * time.Millisecond

// lockWaitNext is how long a create that is next in the queue of waiters
// waits for the lock: longer, so that it is there when the lock is
// released rather than retrying later and letting the waiters after it go
// first.
const lockWaitNext = 2 * time.Second

// lockPoll is how long a waiter waits for its hand-over announcement
// before it looks again all the same (a lapsed lease, a lost
// announcement) and tells the queue it is alive (jobs: a waiter not seen
// for a second is passed over); without the wake-up gate it polls, next
// in the queue more often than behind it.
const (
	lockPoll       = 250 * time.Millisecond
	lockPollNext   = 10 * time.Millisecond
	lockPollBehind = 50 * time.Millisecond
)

// lockGiveBack is how long an admitted job (tenancy on) waits for its
// model's create lock, counted from its admission (the record's last
// update), before it gives its place in the admission window back.
const lockGiveBack = 5 * time.Second

// lockCreate takes the model's create lock for rec. When it is taken, the
// job waits in the model's queue of waiters (first come, first served, by
// the time the job became ready: rec.UpdatedAt), and a release hands the
// lock to the first of them. A waiter looks again when its hand-over is
// announced, or after lockPoll (which also tells the queue it is alive).
// When it has waited long enough it leaves the queue and returns a
// retryLater error (no attempt used).
func (w *Worker) lockCreate(ctx context.Context, rec *jobs.Record) (bool, error) {
	model := rec.Request.Model
	lease := w.apiTimeout + w.cfg.ReconcileDelay + 10*time.Second
	start := time.Now()
	if ok, err := w.jobs.TryCreateLock(ctx, model, rec.ID, lease); err != nil || ok {
		return ok, err
	}
	// Listen for the hand-over before the look that queues the job.
	gate, name := w.gate.Load(), w.jobs.HandOverName(model, rec.ID)
	handed, stop := gate.Released(name)
	defer func() { stop() }()
	for {
		try, err := w.jobs.AcquireCreateLock(ctx, model, rec.ID, rec.UpdatedAt, lease)
		if err != nil || try.Held {
			return try.Held, err
		}
		waited := time.Since(start)
		if waited >= lockWaitNext || (waited >= lockWait && try.Ahead > 0) {
			if err := w.jobs.LeaveCreateQueue(context.WithoutCancel(ctx), model, rec.ID); err != nil {
				w.log.WarnContext(ctx, "leave create lock queue", "job_id", rec.ID, "err", err.Error())
			}
			holder := try.Holder
			if holder == "" {
				holder = "nobody; waiters ahead"
			}
			return false, &retryLater{after: jitter(time.Second, 0.3),
				err: fmt.Errorf("waiting for the create lock of model %s (held by job %s, %d waiting ahead)", model, holder, try.Ahead)}
		}
		poll := lockPoll
		if handed == nil {
			poll = lockPollBehind
			if try.Ahead == 0 {
				poll = lockPollNext
			}
		}
		timer := time.NewTimer(min(poll, max(lockWaitNext-waited, time.Millisecond)))
		select {
		case <-ctx.Done():
			timer.Stop()
			_ = w.jobs.LeaveCreateQueue(context.WithoutCancel(ctx), model, rec.ID)
			return false, ctx.Err()
		case <-handed:
			timer.Stop()
		case <-timer.C:
		}
		stop()
		handed, stop = gate.Released(name)
	}
}

// submit makes one create call while holding the model's create lock. The
// record says "in doubt" from before the call until its outcome is known,
// so a crash mid-call is reconciled.
func (w *Worker) submit(ctx context.Context, rec *jobs.Record) (lockAfter, error) {
	if w.cfg.Budgets != nil {
		if err := w.reserveBudget(ctx, rec); err != nil {
			return lockRelease, err
		}
	}
	start := w.now()
	res, err := w.jobs.Do(ctx, rec.ID, jobs.Submitting{})
	switch {
	case errors.Is(err, jobs.ErrIllegalTransition):
		return lockRelease, nil // ended (cancelled) or saved meanwhile
	case err != nil:
		return lockRelease, err
	case !res.Applied:
		// A concurrent copy of this task owns the create and the lock.
		return lockKeep, nil
	}
	w.tenantStarted(ctx, rec)
	req := rec.Request
	req.Webhook = w.webhookFor(rec.ID)
	v, cerr := w.api.Create(ctx, req, apiclient.CreateOptions{IdempotencyKey: rec.ID})
	if req.Webhook != nil && apiclient.IsWebhookRejected(cerr) {
		// A 400 created nothing: create again at once without the
		// webhook; the job goes on by polling.
		w.webhookRefused(ctx, cerr)
		req.Webhook = nil
		v, cerr = w.api.Create(ctx, req, apiclient.CreateOptions{IdempotencyKey: rec.ID})
	}
	end := w.now()
	if cerr == nil {
		if w.cfg.Budgets != nil {
			w.adjustBudget(ctx, rec, v)
		}
		return lockReleased, w.adopt(ctx, rec, v, fmt.Sprintf("created in %s", end.Sub(start).Round(time.Millisecond)), "")
	}
	code := errorCode(cerr)
	if apiclient.InDoubt(cerr) {
		// The API may have started a paid job: keep the in-doubt flag and
		// reconcile on the next attempt.
		_, _ = w.jobs.Do(ctx, rec.ID, jobs.CreateInDoubt{Code: code, Err: cerr.Error()})
		w.log.WarnContext(ctx, "create outcome in doubt; will reconcile", "job_id", rec.ID, "err", cerr.Error())
		return lockKeep, &retryLater{after: w.cfg.ReconcileDelay, err: cerr}
	}
	// A definite answer: nothing was created.
	if _, err := w.jobs.Do(ctx, rec.ID, jobs.CreateFailed{Code: code, Err: cerr.Error()}); err != nil && !errors.Is(err, jobs.ErrIllegalTransition) {
		return lockRelease, err
	}
	var ae *apiclient.APIError
	switch {
	case errors.As(cerr, &ae) && ae.StatusCode == 429:
		return lockRelease, &retryLater{after: max(ae.RetryAfter, time.Second), err: cerr}
	case apiclient.IsRetryable(cerr):
		return lockRelease, cerr
	default:
		w.failJob(ctx, rec, jobs.StateFailed, code, cerr)
		return lockRelease, permanent(cerr)
	}
}

// adopt saves v as the job's API job (claiming the video and releasing
// the model's create lock in the same step) and starts the poll chain.
func (w *Worker) adopt(ctx context.Context, rec *jobs.Record, v *apiclient.Video, how, note string) error {
	res, err := w.jobs.Do(ctx, rec.ID, jobs.Adopted{VideoID: v.ID, APIStatus: string(v.Status), CreatedAt: v.CreatedAt.Time,
		Model: rec.Request.Model, How: how, Reconcile: note, EstimatedCost: v.Billing.EstimatedUserCost})
	switch {
	case errors.Is(err, jobs.ErrIllegalTransition) && res.State == jobs.StateCancelled:
		// Cancelled while the create call ran: keep the video id and ask
		// the API to cancel it too.
		return w.adoptCancelled(ctx, rec, v)
	case errors.Is(err, jobs.ErrIllegalTransition):
		return nil
	case err != nil:
		return err
	case !res.Applied:
		return nil // a concurrent copy saved the id
	}
	saved := res.Record
	w.log.InfoContext(ctx, "job created", "job_id", rec.ID, "video_id", v.ID, "state", string(saved.State), "how", how)
	if err := w.checkEarly(ctx, saved); err != nil {
		return err
	}
	if err := w.checkEarlyVideo(ctx, saved); err != nil {
		return err
	}
	return w.enqueueNext(ctx, saved, w.pollDelay(v, 0))
}

// checkEarly enqueues an immediate out-of-chain status check when a
// webhook delivery arrived before the video id was saved (the receiver
// recorded it with jobs.Store.RecordEarlyWebhook). saved is the record as
// the update that saved the id left it: that update and the receiver's are
// both atomic and conditional on the id, so either the receiver recorded
// the delivery before it (and saved shows it) or the receiver saw the id
// and enqueued the check itself. The check, not the webhook, decides what
// happens to the job: it reads the job's own video from the API, so a
// delivery that named another video costs one status call and nothing
// else. The check's task id is the one the receiver would have used for
// that delivery, so a replay of it enqueues no second check while this one
// is queued.
//
// It runs before the poll chain starts: if enqueueing fails, the create
// task is retried, finds the id saved and starts the chain after
// MinPollInterval instead of poll_after_seconds.
func (w *Worker) checkEarly(ctx context.Context, saved *jobs.Record) error {
	if saved.EarlyWebhookAt.IsZero() {
		return nil
	}
	key := saved.EarlyWebhookKey
	if key == "" {
		key = "early"
	}
	check, err := tasks.StatusCheck(saved, key, "webhook "+saved.EarlyWebhookEvent+" (arrived before the video id was saved)")
	if err != nil {
		return err
	}
	if err := w.enqueue(ctx, check); err != nil {
		return err
	}
	w.log.InfoContext(ctx, "early webhook: status check now", "job_id", saved.ID, "video_id", saved.VideoID,
		"event", saved.EarlyWebhookEvent, "event_video_id", saved.EarlyWebhookVideo, "delivery_key", key)
	return nil
}

// webhookFor returns the webhook subscription of a create: the
// configured endpoint id (the API's newest revision: the delivery's URL
// then names no job, the receiver finds it by the video id), or the
// inline URL with the job id in it; nil when webhooks are off, or for a
// while after the API refused an inline subscription (webhookRefused).
func (w *Worker) webhookFor(jobID string) *apiclient.WebhookSubscription {
	if w.cfg.Webhook == nil {
		return nil
	}
	if id := w.cfg.Webhook.EndpointID; id != "" {
		return &apiclient.WebhookSubscription{EndpointID: id, Events: w.cfg.Webhook.Events}
	}
	if w.cfg.Webhook.URL == "" || w.now().UnixNano() < w.inlineRefusedUntil.Load() {
		return nil
	}
	sub := *w.cfg.Webhook
	u, err := url.Parse(sub.URL)
	if err != nil {
		return nil
	}
	q := u.Query()
	q.Set("job_id", jobID)
	u.RawQuery = q.Encode()
	sub.URL = u.String()
	return &sub
}

// maxReconcilePages bounds how far back a reconciliation reads the list.
const maxReconcilePages = 50

// reconcile looks for the job an in-doubt create may have started; the
// caller holds the model's create lock. It reports adopted=true when it
// found and saved the job. When it is sure that nothing was created it
// clears the in-doubt flag and returns false, so the caller submits again.
// When it cannot tell, it returns an error and submits nothing; on the
// last attempt the job ends failed with code create_ambiguous and the
// candidates recorded for an operator.
//
// A job is recognised by the webhook URL carrying our job id when inline
// webhooks are on. Otherwise (webhook endpoint ids, whose deliveries and
// echoes carry no job id; webhooks off; a create sent without its refused
// webhook): same model, created within the call's
// window (widened by the clock tolerance and corrected by the API's Date
// header), and not owned by another job. Because creates of a model are
// serialised and every answered create claims its video before the lock
// is released, at most one such job can be ours.
func (w *Worker) reconcile(ctx context.Context, rec *jobs.Record) (bool, error) {
	from, to := w.window(rec)
	if settle := to.Add(w.cfg.ReconcileDelay); w.now().Before(settle) {
		// The call may still be running (a duplicate of this task), or the
		// API's list may not show the job yet: look later.
		return false, &retryLater{after: settle.Sub(w.now()), err: errors.New("create in doubt: waiting before reconciling")}
	}
	list, offset, err := w.listWindow(ctx, from, to)
	if err != nil {
		return false, err
	}
	from, to = from.Add(offset-w.cfg.ClockTolerance), to.Add(offset+w.cfg.ClockTolerance)

	// With an endpoint id (or no webhook) no video carries a marker: the
	// time-window rule alone decides.
	marker := w.webhookFor(rec.ID)
	if marker != nil && marker.URL == "" {
		marker = nil
	}
	var loose []apiclient.Video
	for _, v := range list {
		if !strings.EqualFold(v.Model, rec.Request.Model) {
			continue
		}
		if marker != nil && v.Webhook != nil && v.Webhook.URL != "" {
			if v.Webhook.URL == marker.URL { // exact, whatever the clocks say
				return true, w.adoptReconciled(ctx, rec, &v, "adopted "+v.ID+": its webhook URL carries this job's id")
			}
			continue // another job's webhook: not ours
		}
		if v.CreatedAt.Before(from) || v.CreatedAt.After(to) {
			continue
		}
		loose = append(loose, v)
	}
	owners, err := w.jobs.Owners(ctx, videoIDs(loose))
	if err != nil {
		return false, err
	}
	var cands []apiclient.Video
	for _, v := range loose {
		if owner, ok := owners[v.ID]; !ok || owner == rec.ID {
			cands = append(cands, v)
		}
	}
	switch len(cands) {
	case 0:
		note := fmt.Sprintf("no job created between %s and %s: submitting again", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
		if _, err := w.jobs.Do(ctx, rec.ID, jobs.Reconciled{Note: note, NothingCreated: true}); err != nil {
			return false, err
		}
		w.log.InfoContext(ctx, "create reconciled", "job_id", rec.ID, "result", note)
		rec.CreateInDoubt = false
		return false, nil
	case 1:
		return true, w.adoptReconciled(ctx, rec, &cands[0], "adopted "+cands[0].ID+", the one unowned job of this model created in the call's window")
	}
	ambiguous := fmt.Errorf("create in doubt: %d unowned jobs of model %s in the window (%s): cannot tell which is ours (another client of this API account?); nothing resubmitted",
		len(cands), rec.Request.Model, strings.Join(videoIDs(cands), ","))
	w.noteReconcile(ctx, rec, ambiguous.Error())
	if lastAttempt(ctx) {
		w.failJob(ctx, rec, jobs.StateFailed, "create_ambiguous", ambiguous)
		return false, permanent(ambiguous)
	}
	return false, ambiguous
}

func (w *Worker) adoptReconciled(ctx context.Context, rec *jobs.Record, v *apiclient.Video, note string) error {
	w.log.InfoContext(ctx, "create reconciled", "job_id", rec.ID, "result", note)
	return w.adopt(ctx, rec, v, "reconciled", note)
}

func (w *Worker) noteReconcile(ctx context.Context, rec *jobs.Record, s string) {
	_, _ = w.jobs.Do(ctx, rec.ID, jobs.Reconciled{Note: s})
	w.log.InfoContext(ctx, "create reconciled", "job_id", rec.ID, "result", s)
}

// window is the local-clock interval in which an in-doubt create could have
// been accepted by the API.
func (w *Worker) window(rec *jobs.Record) (time.Time, time.Time) {
	from := rec.CreateStartedAt
	to := rec.CreateEndedAt
	if to.IsZero() || to.Before(from) {
		to = from.Add(w.apiTimeout) // the worker died mid-call
	}
	return from, to
}

// listWindow reads the API's job list back to before from, newest first,
// and estimates the API's clock offset from the Date header.
func (w *Worker) listWindow(ctx context.Context, from, to time.Time) ([]apiclient.Video, time.Duration, error) {
	var all []apiclient.Video
	var offset time.Duration
	after := ""
	for page := 0; page < maxReconcilePages; page++ {
		sent := w.now()
		l, err := w.api.List(ctx, apiclient.ListParams{Limit: 200, After: after})
		if err != nil {
			return nil, 0, fmt.Errorf("reconcile: list jobs: %w", err)
		}
		if page == 0 && !l.ServerDate.IsZero() {
			// Date has one-second resolution: only a larger skew is real.
			if d := l.ServerDate.Sub(sent); d > 1500*time.Millisecond || d < -1500*time.Millisecond {
				offset = d
			}
		}
		all = append(all, l.Data...)
		if !l.HasMore || len(l.Data) == 0 {
			return all, offset, nil
		}
		last := l.Data[len(l.Data)-1]
		if last.CreatedAt.Before(from.Add(offset - 2*w.cfg.ClockTolerance)) {
			return all, offset, nil
		}
		after = l.LastID
		if after == "" {
			after = last.ID
		}
	}
	return nil, 0, fmt.Errorf("reconcile: the job list is longer than %d pages back to %s: cannot decide", maxReconcilePages, from.Format(time.RFC3339))
}

func videoIDs(vs []apiclient.Video) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.ID
	}
	return out
}
