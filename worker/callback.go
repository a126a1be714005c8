package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// CallbackConfig tunes the delivery of completion callbacks (tasks of
// type video:callback). Zero values take the defaults named.
type CallbackConfig struct {
	// Secrets sign deliveries (CALLBACK_SECRETS); the first one signs.
	// Without one, a due delivery waits (and is retried) until a worker
	// that has one takes it, for at most MaxAge.
	Secrets []string
	// Policy is which addresses a callback may reach; checked on every
	// connection, after name resolution.
	Policy callback.Policy
	// Timeout bounds one delivery attempt (CALLBACK_TIMEOUT). Default 10 s.
	Timeout time.Duration
	// BaseDelay and MaxDelay bound the backoff between attempts after a
	// timeout, a 5xx or a 429 (a 429's or 503's Retry-After is honoured,
	// up to MaxDelay). Defaults 5 s and 30 min.
	BaseDelay, MaxDelay time.Duration
	// MaxAge is how long after the job ended a delivery is still tried
	// (CALLBACK_MAX_AGE). Default 24 h.
	MaxAge time.Duration
	// MaxAttempts bounds the attempts of one delivery. Default 50.
	MaxAttempts int
}

func (c *CallbackConfig) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.BaseDelay <= 0 {
		c.BaseDelay = 5 * time.Second
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 30 * time.Minute
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 50
	}
}

// handleCallback delivers an ended job's terminal state to its callback
// URL, once per terminal state (the event id names it; a duplicate task,
// or one for a state the job has left, is a no-op) and records each
// attempt on the job (jobs.CallbackAttempted). A timeout, a connection
// error, a 5xx or a 429 is tried again with backoff, without using up
// the task's retries, until MaxAttempts or MaxAge; any other answer
// (a 410, another 4xx, a redirect, or an address the policy refuses) ends
// the delivery as failed at once. The job's own state never changes.
func (w *Worker) handleCallback(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode[tasks.CallbackPayload](t.Payload())
	if err != nil {
		w.log.ErrorContext(ctx, "bad callback payload", "err", err.Error())
		return permanent(err)
	}
	rec, err := w.loadJobSpec(ctx, p.JobID) // the labels go in the event
	if err != nil {
		return err
	}
	if !rec.CallbackDue() || rec.CallbackEventID() != p.Event {
		return nil // delivered, given up, or the job was retried since
	}
	cfg := w.cfg.Callback
	attempt := 1
	if rec.CallbackEvent == p.Event {
		attempt = rec.CallbackAttempts + 1
	}
	body, err := json.Marshal(callbackEvent(rec, p.Event))
	if err != nil {
		return permanent(err)
	}
	var code int
	var hdr http.Header
	var perr error
	if err := cfg.Policy.CheckURL(rec.CallbackURL); err != nil {
		perr = err // this worker's policy refuses it (ErrForbiddenURL): failed
	} else if len(cfg.Secrets) == 0 || cfg.Secrets[0] == "" {
		perr = errors.New("no CALLBACK_SECRETS configured on this worker")
	} else {
		pctx, sp := tracing.Child(ctx, "callback.post", trace.SpanKindClient)
		code, hdr, perr = callback.Post(pctx, w.callbacks, rec.CallbackURL, cfg.Secrets[0], p.Event, attempt, body, w.now())
		if sp.Recording() {
			if code != 0 {
				sp.Int(tracing.AttrHTTPStatus, code)
			}
			if perr == nil && code >= 300 {
				sp.End(fmt.Errorf("receiver answered %d", code))
			} else {
				sp.End(perr)
			}
		}
	}
	status, after := jobs.CallbackDelivered, time.Duration(0)
	switch {
	case perr != nil && errors.Is(perr, callback.ErrForbiddenURL):
		status = jobs.CallbackFailed
	case perr != nil:
		status = jobs.CallbackRetrying
	case code >= 200 && code < 300:
	case code == http.StatusTooManyRequests || code >= 500:
		status, perr = jobs.CallbackRetrying, fmt.Errorf("receiver answered %d", code)
		after = retryAfter(hdr, w.now())
	default:
		status, perr = jobs.CallbackFailed, fmt.Errorf("receiver answered %d: not retried", code)
	}
	if status == jobs.CallbackRetrying {
		if attempt >= cfg.MaxAttempts || w.now().Sub(rec.FinishedAt) >= cfg.MaxAge {
			status, perr = jobs.CallbackFailed, fmt.Errorf("gave up after %d attempts: %w", attempt, perr)
		} else {
			after = max(after, jitter(min(cfg.BaseDelay<<min(attempt-1, 20), cfg.MaxDelay), 0.2))
			after = min(after, cfg.MaxDelay)
		}
	}
	msg := ""
	if perr != nil {
		msg = perr.Error()
	}
	res, err := w.jobs.Do(ctx, rec.ID, jobs.CallbackAttempted{Event: p.Event, Retries: rec.Retries, Attempt: attempt, Status: status, Code: code, Err: msg})
	if err != nil {
		if errors.Is(err, jobs.ErrIllegalTransition) {
			return nil // retried since: the new terminal state has its own event
		}
		return err
	}
	if !res.Applied {
		return nil
	}
	w.met.CallbackAttempt(status)
	switch status {
	case jobs.CallbackDelivered:
		w.log.InfoContext(ctx, "callback delivered", "job_id", rec.ID, "event_id", p.Event, "attempt", attempt, "http_status", code)
	case jobs.CallbackFailed:
		w.log.WarnContext(ctx, "callback failed", "job_id", rec.ID, "event_id", p.Event, "attempt", attempt, "http_status", code, "err", msg)
	default:
		return &retryLater{after: after, err: fmt.Errorf("callback %s attempt %d: %w", p.Event, attempt, perr)}
	}
	return nil
}

// callbackEvent is the body of the delivery of rec's terminal state.
func callbackEvent(rec *jobs.Record, id string) callback.Event {
	ev := callback.Event{ID: id, JobID: rec.ID, State: string(rec.State), VideoID: rec.VideoID, Location: rec.Location,
		SHA256: rec.SHA256, Bytes: rec.Bytes, ErrorCode: rec.ErrorCode, Error: rec.Error, Labels: rec.Labels, At: rec.FinishedAt}
	if rec.EstimatedCost.Known {
		ev.EstimatedCostUSD = rec.EstimatedCost.String()
	}
	if rec.SettledCost.Known {
		ev.SettledCostUSD = rec.SettledCost.String()
	}
	return ev
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 0 when
// absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// enqueueEnded enqueues what a job that has just ended in state to waits
// on: its callback task when it has a callback URL, else nothing (no
// Redis command). rec is the record before the transition.
func (w *Worker) enqueueEnded(ctx context.Context, rec *jobs.Record, to jobs.State) error {
	if rec.CallbackURL == "" {
		return nil
	}
	after := *rec
	after.State = to
	if to == jobs.StateCancelled && after.CancelOutcome == "" {
		// Cancelled by the API: there is nothing to ask it, so the
		// callback comes next rather than a cancel task.
		after.CancelOutcome = "cancelled by the API"
	}
	return w.enqueueNext(ctx, &after, 0)
}
