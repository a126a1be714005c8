package webhook

import (
	"context"
	"sync"
	"time"
)

// FlushInterval is the least time between two writes of the rejections
// counted in memory to the fleet-wide counters in Redis (Handler.Run).
const FlushInterval = 5 * time.Second

// LogEvery is the least time between two log lines about rejections of one
// outcome: the first is logged, then at most one per LogEvery, which says
// how many were left out since the previous line (suppressed).
const LogEvery = 10 * time.Second

// flushTimeout bounds the final flush when Run stops.
const flushTimeout = 5 * time.Second

// rejections counts rejected requests in memory: a flood of forged
// requests must cost neither a Redis command nor a log line each.
type rejections struct {
	// pending is signalled when a rejection is counted while none was.
	pending chan struct{}

	mu     sync.Mutex
	counts map[string]int64
	last   string // outcome: reason of the latest rejection
	lastAt time.Time
	logs   map[string]*logSample // by outcome
}

type logSample struct {
	at         time.Time // of the latest line
	suppressed int       // rejections not logged since
}

// add counts a rejection. It reports whether to log it, and how many of
// the outcome's rejections were left out of the log before it.
func (r *rejections) add(now time.Time, outcome, reason string) (logIt bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts, r.logs = map[string]int64{}, map[string]*logSample{}
	}
	if len(r.counts) == 0 {
		r.signal()
	}
	r.counts[outcome]++
	r.last, r.lastAt = outcome+": "+reason, now
	s := r.logs[outcome]
	if s == nil {
		r.logs[outcome] = &logSample{at: now}
		return true, 0
	}
	if now.Sub(s.at) < LogEvery {
		s.suppressed++
		return false, 0
	}
	suppressed = s.suppressed
	s.at, s.suppressed = now, 0
	return true, suppressed
}

func (r *rejections) signal() {
	select {
	case r.pending <- struct{}{}:
	default:
	}
}

// take returns the counts since the last take and resets them.
func (r *rejections) take() (map[string]int64, string, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, last, at := r.counts, r.last, r.lastAt
	if len(c) == 0 {
		return nil, "", time.Time{}
	}
	r.counts, r.last, r.lastAt = map[string]int64{}, "", time.Time{}
	return c, last, at
}

// putBack returns counts that could not be written, for the next flush.
func (r *rejections) putBack(c map[string]int64, last string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.counts) == 0 {
		r.signal()
	}
	for k, n := range c {
		r.counts[k] += n
	}
	if r.last == "" {
		r.last, r.lastAt = last, at
	}
}

// Flush adds the rejections counted since the last flush to the
// fleet-wide counters (jobs.Store.WebhookStats) in one round trip. Counts
// it could not write are kept for the next flush.
func (h *Handler) Flush(ctx context.Context) error {
	c, last, at := h.rej.take()
	if c == nil {
		return nil
	}
	if err := h.jobs.AddWebhookOutcomes(ctx, c, last, at); err != nil {
		h.rej.putBack(c, last, at)
		return err
	}
	return nil
}

// Run writes the rejections counted in memory to Redis until ctx ends,
// then once more (within a few seconds), and returns: a rejection after a
// quiet spell at once, and then at most once per FlushInterval however
// many arrive. It wakes up only when there is something to write. Its
// caller owns it: run it for as long as the handler serves, and stop it
// after the HTTP server has stopped, so that the last counts reach Redis.
func (h *Handler) Run(ctx context.Context) {
	wait := time.NewTimer(0)
	defer wait.Stop()
	for {
		select {
		case <-h.rej.pending:
		case <-ctx.Done():
			h.finalFlush(ctx)
			return
		}
		if err := h.Flush(ctx); err != nil && ctx.Err() == nil {
			h.log.WarnContext(ctx, "webhook: write rejection counts", "err", err.Error())
		}
		wait.Reset(FlushInterval)
		select {
		case <-wait.C:
		case <-ctx.Done():
			h.finalFlush(ctx)
			return
		}
	}
}

func (h *Handler) finalFlush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if err := h.Flush(fctx); err != nil {
		h.log.WarnContext(ctx, "webhook: write rejection counts at stop", "err", err.Error())
	}
}
