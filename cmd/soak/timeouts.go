package main

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// timeouts injects the one fault the stand-in API lacks: a call that gets
// no answer within the client's timeout. It wraps the stand-in's handler;
// a drawn call is held for hold (longer than the workers' AISTATS_TIMEOUT),
// half of them before the API sees the call (nothing happens there: a
// create creates nothing) and half after the API handled it, with the
// answer held back (a create did create its job, and only reconciliation
// can find it).
type timeouts struct {
	next http.Handler
	rate float64
	hold time.Duration

	mu  sync.Mutex
	rng *rand.Rand

	before, after atomic.Int64
}

func newTimeouts(next http.Handler, rate float64, hold time.Duration, seed int64) *timeouts {
	return &timeouts{next: next, rate: rate, hold: hold, rng: rand.New(rand.NewPCG(uint64(seed), 0x7157_0ff5))}
}

// off stops injecting.
func (t *timeouts) off() {
	t.mu.Lock()
	t.rate = 0
	t.mu.Unlock()
}

// draw returns 0 (no fault), 1 (hold before) or 2 (hold after).
func (t *timeouts) draw() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rate <= 0 {
		return 0
	}
	u := t.rng.Float64()
	switch {
	case u < t.rate/2:
		return 1
	case u < t.rate:
		return 2
	}
	return 0
}

func (t *timeouts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch t.draw() {
	case 1:
		t.before.Add(1)
		// net/http notices a client hang-up only once the body is read.
		if r.Body != nil && r.Body != http.NoBody {
			b, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		if !wait(r.Context(), t.hold) {
			return // the client gave up: the call never reaches the API
		}
	case 2:
		t.after.Add(1)
		w = &heldWriter{ResponseWriter: w, ctx: r.Context(), hold: t.hold}
	}
	t.next.ServeHTTP(w, r)
}

// heldWriter holds the first byte of the answer (status line included)
// back for hold, or until the client hangs up.
type heldWriter struct {
	http.ResponseWriter
	ctx  context.Context
	hold time.Duration
	once sync.Once
}

func (h *heldWriter) wait() { h.once.Do(func() { wait(h.ctx, h.hold) }) }

func (h *heldWriter) WriteHeader(code int) {
	h.wait()
	h.ResponseWriter.WriteHeader(code)
}

func (h *heldWriter) Write(b []byte) (int, error) {
	h.wait()
	return h.ResponseWriter.Write(b)
}

// FlushError is found by http.ResponseController before Unwrap.
func (h *heldWriter) FlushError() error {
	h.wait()
	return http.NewResponseController(h.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (the stand-in
// hijacks it to drop connections).
func (h *heldWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// wait waits d or until ctx ends; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
