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

// handleCreate submits the job to the API exactly once in effect.
func (w *Worker) handleCreate(ctx context.Context, t *asynq.Task) (err error) {
	p, err := tasks.Decode[tasks.CreatePayload](t.Payload())
	if err != nil {
		return w.badPayload(ctx, t, err)
	}
	rec, err := w.loadJob(ctx, p.JobID)
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
		return w.startPolling(ctx, rec, 0)
	case rec.State != jobs.StateQueued && rec.State != jobs.StateSubmitting:
		return nil
	}

	select {
	case w.createSlots <- struct{}{}:
		defer func() { <-w.createSlots }()
	default:
		return &retryLater{after: jitter(200*time.Millisecond, 0.5), err: errors.New("this worker's create slots are busy")}
	}
	// Creates of one model are serialised fleet-wide, and an in-doubt
	// create keeps the lock until it is reconciled: the API has no
	// idempotency key, so this is what lets a reconciliation tell which
	// job an unanswered call started.
	held, err := w.lockCreate(ctx, rec)
	if err != nil || !held {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			if rerr := w.jobs.ReleaseCreateLock(context.WithoutCancel(ctx), rec.Request.Model, rec.ID); rerr != nil {
				w.log.WarnContext(ctx, "release create lock", "job_id", rec.ID, "err", rerr.Error())
			}
		}
	}()
	if rec.CreateInDoubt {
		adopted, err := w.reconcile(ctx, rec)
		if err != nil && !errors.Is(err, asynq.SkipRetry) {
			// Not settled yet: nobody else may create this model meanwhile,
			// or their jobs could be taken for ours.
			keep = rec.CreateInDoubt
		}
		if err != nil || adopted {
			return err
		}
		// Nothing was created: submitting again is safe.
	}
	if !w.now().Before(w.deadline(rec)) {
		w.failJob(ctx, rec, jobs.StateTimedOut, "deadline_exceeded", errors.New("job deadline passed before the video was submitted"))
		return nil
	}
	inDoubt, err := w.submit(ctx, rec)
	keep = inDoubt
	var rl *retryLater
	if !inDoubt || !errors.As(err, &rl) {
		return err
	}
	// Settle the doubt in this task, which holds the model's lock, rather
	// than behind the queue of other creates waiting for that lock.
	timer := time.NewTimer(w.cfg.ReconcileDelay + 50*time.Millisecond)
	select {
	case <-ctx.Done():
		timer.Stop()
		return err
	case <-timer.C:
	}
	cur, gerr := w.jobs.Get(ctx, rec.ID)
	if gerr != nil || !cur.CreateInDoubt || cur.VideoID != "" || cur.State != jobs.StateSubmitting {
		return err // the retry sorts it out
	}
	adopted, rerr := w.reconcile(ctx, cur)
	switch {
	case rerr != nil:
		keep = cur.CreateInDoubt && !errors.Is(rerr, asynq.SkipRetry)
		return rerr
	case adopted:
		keep = false
		return nil
	}
	inDoubt, err = w.submit(ctx, cur) // nothing was created: submit again
	keep = inDoubt
	return err
}

// lockWait is how long a create waits in the handler for its model's
// lock before it gives the slot back and retries later.
const lockWait = 200 * time.Millisecond

// lockCreate takes the model's create lock for rec, waiting briefly. When
// another job holds it, it returns a retryLater error (no attempt used).
func (w *Worker) lockCreate(ctx context.Context, rec *jobs.Record) (bool, error) {
	lease := w.apiTimeout + w.cfg.ReconcileDelay + 10*time.Second
	deadline := time.Now().Add(lockWait)
	sleep := 2 * time.Millisecond
	for {
		ok, holder, ttl, err := w.jobs.AcquireCreateLock(ctx, rec.Request.Model, rec.ID, lease)
		if err != nil || ok {
			return ok, err
		}
		if time.Now().After(deadline) {
			return false, &retryLater{after: jitter(min(max(ttl, 50*time.Millisecond), time.Second), 0.3),
				err: fmt.Errorf("waiting for the create lock of model %s (held by job %s)", rec.Request.Model, holder)}
		}
		t := time.NewTimer(min(sleep, ttl+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
		sleep = min(2*sleep, 50*time.Millisecond)
	}
}

// submit makes one create call while holding the model's create lock. The
// record says "in doubt" from before the call until its outcome is known,
// so a crash mid-call is reconciled. It reports whether the outcome is in
// doubt (the lock must then be kept until reconciliation).
func (w *Worker) submit(ctx context.Context, rec *jobs.Record) (bool, error) {
	start := w.now()
	out, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{
		From:  []jobs.State{jobs.StateQueued, jobs.StateSubmitting},
		To:    jobs.StateSubmitting,
		Set:   map[string]any{jobs.FieldCreateInDoubt: true, jobs.FieldCreateStartedAt: start, jobs.FieldCreateEndedAt: ""},
		Incr:  map[string]int64{jobs.FieldCreateAttempts: 1},
		Event: "create_started",
		// Another copy of this task may have raced us: only the one that
		// still sees no video id and no in-doubt flag proceeds.
		IfEqual: map[string]any{jobs.FieldVideoID: "", jobs.FieldCreateInDoubt: false},
	})
	if err != nil {
		return false, err
	}
	if !out.Applied {
		// Ended meanwhile (cancelled): release the lock. Otherwise a
		// concurrent copy of this task owns the create and the lock.
		return !out.State.Terminal(), nil
	}
	req := rec.Request
	req.Webhook = w.webhookFor(rec.ID)
	v, cerr := w.api.Create(ctx, req, apiclient.CreateOptions{IdempotencyKey: rec.ID})
	end := w.now()
	if cerr == nil {
		return false, w.adopt(ctx, rec, v, fmt.Sprintf("created in %s", end.Sub(start).Round(time.Millisecond)))
	}
	code := errorCode(cerr)
	if apiclient.InDoubt(cerr) {
		// The API may have started a paid job: keep the in-doubt flag and
		// reconcile on the next attempt.
		_, _ = w.jobs.Apply(ctx, rec.ID, jobs.Change{
			Set:   map[string]any{jobs.FieldCreateEndedAt: end, jobs.FieldErrorCode: code, jobs.FieldError: cerr.Error()},
			Event: "create_in_doubt", Detail: cerr.Error(),
		})
		w.log.WarnContext(ctx, "create outcome in doubt; will reconcile", "job_id", rec.ID, "err", cerr.Error())
		return true, &retryLater{after: w.cfg.ReconcileDelay, err: cerr}
	}
	// A definite answer: nothing was created.
	if _, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{
		Set:   map[string]any{jobs.FieldCreateInDoubt: false, jobs.FieldCreateEndedAt: end, jobs.FieldErrorCode: code, jobs.FieldError: cerr.Error()},
		Event: "create_failed", Detail: cerr.Error(),
	}); err != nil {
		return false, err
	}
	var ae *apiclient.APIError
	switch {
	case errors.As(cerr, &ae) && ae.StatusCode == 429:
		return false, &retryLater{after: max(ae.RetryAfter, time.Second), err: cerr}
	case apiclient.IsRetryable(cerr):
		return false, cerr
	default:
		w.failJob(ctx, rec, jobs.StateFailed, code, cerr)
		return false, permanent(cerr)
	}
}

// adopt saves v as the job's API job and starts the poll chain.
func (w *Worker) adopt(ctx context.Context, rec *jobs.Record, v *apiclient.Video, how string) error {
	owner, err := w.jobs.Claim(ctx, v.ID, rec.ID)
	if err != nil {
		return err
	}
	if owner != rec.ID {
		// Cannot happen for a fresh create (ids are unique); guards
		// reconciliation races.
		return fmt.Errorf("video %s is already owned by job %s", v.ID, owner)
	}
	created := v.CreatedAt.Time
	if created.IsZero() {
		created = w.now()
	}
	out, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{
		From: []jobs.State{jobs.StateQueued, jobs.StateSubmitting},
		To:   jobs.StateGenerating,
		Set: map[string]any{
			jobs.FieldVideoID: v.ID, jobs.FieldCreatedAt: created, jobs.FieldAPIStatus: string(v.Status),
			jobs.FieldCreateInDoubt: false, jobs.FieldCreateEndedAt: w.now(), jobs.FieldPollSeq: 1,
			jobs.FieldErrorCode: "", jobs.FieldError: "",
		},
		IfEqual: map[string]any{jobs.FieldVideoID: ""},
		Event:   "created", Detail: "video " + v.ID + " (" + how + ")",
		// The record as of this update tells whether a webhook arrived
		// before the id was saved (see checkEarly).
		Return: true,
	})
	if err != nil {
		return err
	}
	if !out.Applied {
		if out.State == jobs.StateCancelled {
			// Cancelled while the create call ran: keep the video id and
			// ask the API to cancel it too.
			return w.adoptCancelled(ctx, rec, v)
		}
		return nil
	}
	rec.VideoID, rec.State, rec.PollSeq = v.ID, jobs.StateGenerating, 1
	w.log.InfoContext(ctx, "job created", "job_id", rec.ID, "video_id", v.ID, "state", string(jobs.StateGenerating), "how", how)
	if err := w.checkEarly(ctx, rec, out.Record); err != nil {
		return err
	}
	return w.startPolling(ctx, rec, w.pollDelay(v, 0))
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
func (w *Worker) checkEarly(ctx context.Context, rec *jobs.Record, saved *jobs.Record) error {
	if saved == nil || saved.EarlyWebhookAt.IsZero() {
		return nil
	}
	key := saved.EarlyWebhookKey
	if key == "" {
		key = "early"
	}
	t, err := tasks.NewCheckTask(rec.ID, key, "webhook "+saved.EarlyWebhookEvent+" (arrived before the video id was saved)")
	if err != nil {
		return err
	}
	if err := w.enqueue(ctx, t); err != nil {
		return err
	}
	w.log.InfoContext(ctx, "early webhook: status check now", "job_id", rec.ID, "video_id", rec.VideoID,
		"event", saved.EarlyWebhookEvent, "event_video_id", saved.EarlyWebhookVideo, "delivery_key", key)
	return nil
}

// startPolling makes sure the current link of the job's poll chain exists.
func (w *Worker) startPolling(ctx context.Context, rec *jobs.Record, delay time.Duration) error {
	if rec.State != jobs.StateGenerating || rec.PollSeq < 1 {
		return nil
	}
	if delay <= 0 {
		delay = w.cfg.MinPollInterval
	}
	t, err := tasks.NewPollTask(rec.ID, rec.PollSeq, delay)
	if err != nil {
		return err
	}
	return w.enqueue(ctx, t)
}

// webhookFor returns the webhook subscription of a create, with the job id
// in its URL, or nil when webhooks are off.
func (w *Worker) webhookFor(jobID string) *apiclient.WebhookSubscription {
	if w.cfg.Webhook == nil || w.cfg.Webhook.URL == "" {
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
// A job is recognised by the webhook URL carrying our job id when
// webhooks are on. Otherwise: same model, created within the call's
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

	marker := w.webhookFor(rec.ID)
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
		w.noteReconcile(ctx, rec, fmt.Sprintf("no job created between %s and %s: submitting again", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano)))
		_, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{Set: map[string]any{jobs.FieldCreateInDoubt: false}})
		rec.CreateInDoubt = false
		return false, err
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
	w.noteReconcile(ctx, rec, note)
	return w.adopt(ctx, rec, v, "reconciled")
}

func (w *Worker) noteReconcile(ctx context.Context, rec *jobs.Record, s string) {
	_, _ = w.jobs.Apply(ctx, rec.ID, jobs.Change{Set: map[string]any{jobs.FieldReconcile: s}, Event: "reconciled", Detail: s})
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
