package standin

import (
	"bytes"
	"crypto/subtle"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
)

// faultPlan is what the fault draw decided for one request.
type faultPlan struct {
	latency     time.Duration
	serverError int // 500, 502 or 503; 0 for none
	rateLimit   bool
	retryAfter  time.Duration
	drop        bool
	truncate    bool
}

// planFaults draws the faults for one request to endpoint. Every request in
// scope consumes the same number of draws, so a sequence of requests sees a
// reproducible sequence of faults for a given seed.
func (s *Server) planFaults(endpoint string) faultPlan {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.faultsEmpty || (s.faultScope != nil && !s.faultScope[endpoint]) {
		return faultPlan{}
	}
	f := &s.faults
	u5xx, u429, uDrop, uTrunc := s.faultRNG.Float64(), s.faultRNG.Float64(), s.faultRNG.Float64(), s.faultRNG.Float64()
	code := [...]int{500, 502, 503}[s.faultRNG.IntN(3)]
	p := faultPlan{latency: f.Latency}
	switch {
	case u5xx < f.ServerErrorRate:
		p.serverError = code
	case u429 < f.RateLimitRate:
		p.rateLimit, p.retryAfter = true, f.RetryAfter
	case uDrop < f.DropRate:
		p.drop = true
	default:
		p.truncate = endpoint == EndpointContent && uTrunc < f.TruncateRate
	}
	return p
}

// answer writes an injected 5xx or 429 and reports whether it did.
func (p faultPlan) answer(s *Server, w http.ResponseWriter, c *call) bool {
	switch {
	case p.serverError != 0:
		e := &apiError{status: p.serverError, code: "gateway_error", reason: "standin_injected_fault",
			description: "injected server error"}
		if p.serverError != http.StatusInternalServerError {
			e.code, e.description = "upstream_error", "injected upstream failure"
		}
		s.countFault(FaultServerError, c)
		writeError(w, e)
		return true
	case p.rateLimit:
		secs := max(int64(math.Ceil(p.retryAfter.Seconds())), 1)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		s.countFault(FaultRateLimit, c)
		writeError(w, &apiError{status: http.StatusTooManyRequests, code: "key_limit_exceeded",
			reason: "key_request_limit", description: "key request limit exceeded; retry after " + strconv.FormatInt(secs, 10) + "s"})
		return true
	}
	return false
}

func (s *Server) countFault(kind string, c *call) {
	s.mu.Lock()
	s.stats.Faults[kind]++
	s.mu.Unlock()
	s.log.Debug("standin injected fault", "fault", kind, "endpoint", c.endpoint, "video_id", c.id)
}

// sleepCtx waits d, or until the request's context ends (then false).
func sleepCtx(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// bufferBody reads the request body (up to one byte past the create limit,
// so that limit still trips) into memory and puts it back.
func bufferBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
}

// errReader returns err (or EOF when nil) on every read.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err == nil {
		return 0, io.EOF
	}
	return 0, e.err
}

// abortConnection closes the client connection without further response
// bytes. Bytes still buffered in w are lost: flush first to send them.
func abortConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): let net/http abort the stream.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// discardWriter absorbs a response that a drop fault throws away.
type discardWriter struct{ h http.Header }

func newDiscardWriter() *discardWriter               { return &discardWriter{h: http.Header{}} }
func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
