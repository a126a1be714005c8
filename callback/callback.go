// Package callback delivers completion events to producers: the event's
// JSON shape, its signature (HMAC-SHA256 over "timestamp.body"), the
// verification a receiver does, and an HTTP client that only talks to the
// addresses a callback URL may name (an SSRF guard checked at submit on
// literal addresses and at every connection on the resolved ones).
package callback

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The delivery's headers.
const (
	HeaderTimestamp = "X-Videoworker-Timestamp"
	HeaderSignature = "X-Videoworker-Signature"
	HeaderEventID   = "X-Videoworker-Event-Id"
	HeaderAttempt   = "X-Videoworker-Attempt"
)

// Event is the JSON body of a delivery: the job's terminal state and what
// it produced (or why it did not).
type Event struct {
	// ID is the event id, also in HeaderEventID: "<job>:<state>:<retries>",
	// the same on every attempt of one delivery. A receiver deduplicates
	// on it.
	ID        string            `json:"event_id"`
	JobID     string            `json:"job_id"`
	State     string            `json:"state"`
	VideoID   string            `json:"video_id,omitempty"`
	Location  string            `json:"location,omitempty"`
	SHA256    string            `json:"sha256,omitempty"`
	Bytes     int64             `json:"bytes,omitempty"`
	ErrorCode string            `json:"error_code,omitempty"`
	Error     string            `json:"error,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	At        time.Time         `json:"finished_at,omitzero"`
	// What the API says the job costs, in decimal dollars: its estimate
	// after the create, and the settled cost once the generation ended
	// ("0.00" for a voided one); absent when unknown.
	EstimatedCostUSD string `json:"estimated_cost_usd,omitempty"`
	SettledCostUSD   string `json:"settled_cost_usd,omitempty"`
}

// Sign is the hex HMAC-SHA256 of ts + "." + body with secret.
func Sign(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	// ErrNoSecret: no secret to verify with.
	ErrNoSecret = errors.New("callback: no secret configured")
	// ErrMissingHeader: the timestamp or signature header is absent.
	ErrMissingHeader = errors.New("callback: timestamp or signature header missing")
	// ErrStale: the timestamp is outside the tolerance (a replay, or a
	// clock far off).
	ErrStale = errors.New("callback: timestamp outside the tolerance")
	// ErrBadSignature: no secret gives the signature.
	ErrBadSignature = errors.New("callback: signature does not match")
)

// Verify checks a delivery: its timestamp header is within tolerance of
// now (tolerance ≤ 0: not checked) and its signature header is the HMAC of
// timestamp + "." + body with one of secrets (several during a rotation).
// It compares in constant time and never puts a secret in its errors.
func Verify(secrets []string, tolerance time.Duration, h http.Header, body []byte, now time.Time) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	ts, sig := h.Get(HeaderTimestamp), strings.TrimSpace(h.Get(HeaderSignature))
	if ts == "" || sig == "" {
		return ErrMissingHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not Unix seconds", ErrStale, truncate(ts, 20))
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return ErrStale
		}
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return ErrBadSignature
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		want, _ := hex.DecodeString(Sign(s, ts, body))
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
