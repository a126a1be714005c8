package server

import (
	"context"
	"sync"
	"time"
)

// ReadyCacheFor is how long /readyz answers with its last probe: the
// probe writes and deletes a storage object (on S3 a billed PUT and
// DELETE) and pings Redis, and /readyz needs no credentials.
const ReadyCacheFor = 5 * time.Second

// readiness runs the readiness probe at most once per ReadyCacheFor;
// callers that arrive while it runs wait for its result instead of
// probing too.
type readiness struct {
	d   Deps
	now func() time.Time

	mu       sync.Mutex
	at       time.Time // of the cached result; zero: none
	checks   map[string]string
	ok       bool
	inflight chan struct{} // closed when the running probe is done
}

// get returns the cached result, or probes. The probe does not end with
// ctx: its result serves the callers waiting for it and the next few
// seconds' callers too.
func (r *readiness) get(ctx context.Context) (map[string]string, bool) {
	r.mu.Lock()
	if !r.at.IsZero() && r.now().Sub(r.at) < ReadyCacheFor {
		defer r.mu.Unlock()
		return r.checks, r.ok
	}
	if ch := r.inflight; ch != nil {
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return map[string]string{"probe": "not finished"}, false
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.checks, r.ok
	}
	ch := make(chan struct{})
	r.inflight = ch
	r.mu.Unlock()

	checks, ok := ready(context.WithoutCancel(ctx), r.d)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks, r.ok, r.at, r.inflight = checks, ok, r.now(), nil
	close(ch)
	return checks, ok
}
