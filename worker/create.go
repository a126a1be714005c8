package worker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
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
		w.log.ErrorContext(ctx, "bad create payload", "err", err.Error())
		return permanent(err)
	}
	rec, err := w.loadJob(ctx, p.JobID)
	if err != nil {
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

	if rec.CreateInDoubt {
		adopted, err := w.reconcile(ctx, rec)
		if err != nil || adopted {
			return err
		}
		// Nothing was created: submitting again is safe.
	}
	if !w.now().Before(w.deadline(rec)) {
		w.failJob(ctx, rec, jobs.StateTimedOut, "deadline_exceeded", errors.New("job deadline passed before the video was submitted"))
		return nil
	}
	return w.submit(ctx, rec)
}

// submit makes one create call. The record says "in doubt" from before the
// call until its outcome is known, so a crash mid-call is reconciled.
func (w *Worker) submit(ctx context.Context, rec *jobs.Record) error {
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
		return err
	}
	if !out.Applied {
		return nil // a concurrent copy owns the create; its outcome will be recorded
	}
	if err := w.jobs.MarkInDoubt(ctx, rec.ID, start); err != nil {
		return err
	}
	req := rec.Request
	req.Webhook = w.webhookFor(rec.ID)
	v, cerr := w.api.Create(ctx, req, apiclient.CreateOptions{IdempotencyKey: rec.ID})
	end := w.now()
	if cerr == nil {
		return w.adopt(ctx, rec, v, fmt.Sprintf("created in %s", end.Sub(start).Round(time.Millisecond)))
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
		return &retryAfter{after: w.cfg.ReconcileDelay, err: cerr}
	}
	// A definite answer: nothing was created.
	if _, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{
		Set:   map[string]any{jobs.FieldCreateInDoubt: false, jobs.FieldCreateEndedAt: end, jobs.FieldErrorCode: code, jobs.FieldError: cerr.Error()},
		Event: "create_failed", Detail: cerr.Error(),
	}); err != nil {
		return err
	}
	_ = w.jobs.ClearInDoubt(ctx, rec.ID)
	var ae *apiclient.APIError
	switch {
	case errors.As(cerr, &ae) && ae.StatusCode == 429:
		return &retryLater{after: max(ae.RetryAfter, time.Second), err: cerr}
	case apiclient.IsRetryable(cerr):
		return cerr
	default:
		w.failJob(ctx, rec, jobs.StateFailed, code, cerr)
		return permanent(cerr)
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
	})
	if err != nil {
		return err
	}
	_ = w.jobs.ClearInDoubt(ctx, rec.ID)
	if !out.Applied {
		return nil
	}
	rec.VideoID, rec.State, rec.PollSeq = v.ID, jobs.StateGenerating, 1
	w.log.InfoContext(ctx, "job created", "job_id", rec.ID, "video_id", v.ID, "state", string(jobs.StateGenerating), "how", how)
	return w.startPolling(ctx, rec, w.pollDelay(v, 0))
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

// reconcile looks for the job an in-doubt create may have started. It
// reports adopted=true when it found and saved one. When it is sure that
// nothing was created it clears the in-doubt flag and returns false, so
// the caller submits again. When it cannot tell, it returns an error and
// submits nothing; on the last attempt the job ends failed with code
// create_ambiguous and the candidates recorded for an operator.
//
// A job is recognised by the webhook URL carrying our job id when
// webhooks are on (exact). Otherwise by model and creation time: created
// within the call's window (widened by the clock tolerance and corrected
// by the API's Date header), and not owned by another job. When several
// in-doubt creates of the same model overlap, candidates are matched to
// them in start order only when the counts agree.
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

	var exact, loose []apiclient.Video
	marker := w.webhookFor(rec.ID)
	for _, v := range list {
		if !strings.EqualFold(v.Model, rec.Request.Model) || v.CreatedAt.Before(from) || v.CreatedAt.After(to) {
			continue
		}
		if marker != nil && v.Webhook != nil && v.Webhook.URL != "" {
			if v.Webhook.URL == marker.URL {
				exact = append(exact, v)
			}
			continue // another job's webhook: not ours
		}
		loose = append(loose, v)
	}
	if len(exact) == 1 {
		return true, w.adopt(ctx, rec, &exact[0], "reconciled by webhook marker")
	}
	ids := make([]string, len(loose))
	for i, v := range loose {
		ids[i] = v.ID
	}
	owners, err := w.jobs.Owners(ctx, ids)
	if err != nil {
		return false, err
	}
	var cands []apiclient.Video
	for _, v := range loose {
		if owner, ok := owners[v.ID]; !ok || owner == rec.ID {
			cands = append(cands, v)
		}
	}
	note := func(s string) {
		_, _ = w.jobs.Apply(ctx, rec.ID, jobs.Change{Set: map[string]any{jobs.FieldReconcile: s}, Event: "reconciled", Detail: s})
		w.log.InfoContext(ctx, "create reconciled", "job_id", rec.ID, "result", s)
	}
	switch {
	case len(cands) == 0:
		note(fmt.Sprintf("no job created between %s and %s: submitting again", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano)))
		_, err := w.jobs.Apply(ctx, rec.ID, jobs.Change{Set: map[string]any{jobs.FieldCreateInDoubt: false}})
		rec.CreateInDoubt = false
		return false, err
	}
	peers, err := w.overlappingInDoubt(ctx, rec)
	if err != nil {
		return false, err
	}
	if len(cands) == 1 && len(peers) == 1 {
		note("adopted " + cands[0].ID + ", the one unowned job of this model in the window")
		return true, w.adopt(ctx, rec, &cands[0], "reconciled: only candidate")
	}
	if len(cands) == len(peers) {
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].CreatedAt.Before(cands[j].CreatedAt.Time) })
		for i, id := range peers {
			if id == rec.ID {
				note(fmt.Sprintf("adopted %s: candidate %d of %d matched to in-doubt create %d of %d by start order", cands[i].ID, i+1, len(cands), i+1, len(peers)))
				return true, w.adopt(ctx, rec, &cands[i], "reconciled by order")
			}
		}
	}
	ambiguous := fmt.Errorf("create in doubt: %d unowned jobs of model %s in the window (%s) for %d in-doubt creates: cannot tell which is ours; nothing resubmitted",
		len(cands), rec.Request.Model, strings.Join(videoIDs(cands), ","), len(peers))
	note(ambiguous.Error())
	if lastAttempt(ctx) {
		w.failJob(ctx, rec, jobs.StateFailed, "create_ambiguous", ambiguous)
		return false, permanent(ambiguous)
	}
	return false, &retryAfter{after: w.cfg.ReconcileDelay, err: ambiguous}
}

// window is the local-clock interval in which an in-doubt create could have
// been accepted by the API.
func (w *Worker) window(rec *jobs.Record) (time.Time, time.Time) {
	from := rec.CreateStartedAt
	to := rec.CreateEndedAt
	if to.IsZero() || to.Before(from) {
		to = from.Add(w.cfg.APITimeout) // the worker died mid-call
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

// overlappingInDoubt returns, in start order, the in-doubt creates of the
// same model whose windows overlap rec's (rec included).
func (w *Worker) overlappingInDoubt(ctx context.Context, rec *jobs.Record) ([]string, error) {
	from, to := w.window(rec)
	ids, err := w.jobs.InDoubtBetween(ctx, from.Add(-w.cfg.APITimeout-2*w.cfg.ClockTolerance), to.Add(2*w.cfg.ClockTolerance))
	if err != nil {
		return nil, err
	}
	type peer struct {
		id    string
		start time.Time
	}
	var peers []peer
	for _, id := range ids {
		if id == rec.ID {
			peers = append(peers, peer{id, rec.CreateStartedAt})
			continue
		}
		o, err := w.jobs.Get(ctx, id)
		if err != nil || !o.CreateInDoubt || o.VideoID != "" || !strings.EqualFold(o.Request.Model, rec.Request.Model) {
			continue
		}
		of, ot := w.window(o)
		if ot.Add(2*w.cfg.ClockTolerance).Before(from) || of.After(to.Add(2*w.cfg.ClockTolerance)) {
			continue
		}
		peers = append(peers, peer{id, o.CreateStartedAt})
	}
	if len(peers) == 0 {
		peers = append(peers, peer{rec.ID, rec.CreateStartedAt})
	}
	sort.SliceStable(peers, func(i, j int) bool { return peers[i].start.Before(peers[j].start) })
	out := make([]string, len(peers))
	for i, p := range peers {
		out[i] = p.id
	}
	return out, nil
}

func videoIDs(vs []apiclient.Video) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.ID
	}
	return out
}
