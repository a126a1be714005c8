// Package webhook receives the AI Stats API's signed job webhooks.
//
// A delivery is trusted only after its signature verifies: hex
// HMAC-SHA256 over timestamp + "." + raw body, compared in constant time,
// under any of the configured secrets (several at once, for rotation), with
// a timestamp inside the tolerance. Headers may carry either prefix the API
// has used, x-ai-stats- or x-phaseo-.
//
// A verified delivery is deduplicated on its signed delivery key (the
// payload's delivery.key, else its id; never a header, which the signature
// does not cover) before any side effect, recorded on the job, and
// answered 2xx only after that is durable in Redis. It does not move the
// job itself: it triggers a status check of the job (reconcile, do not
// trust), at most one per job and CheckInterval whatever arrives, which
// starts the download at once when the API confirms completion. The job's
// poll chain stays alive as the fallback for lost deliveries.
package webhook

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

// HeaderPrefixes are the header prefixes the API has used, before and
// after the Phaseo rename.
var HeaderPrefixes = []string{"x-ai-stats-", "x-phaseo-"}

// Verification errors. Each is returned wrapped with detail.
var (
	ErrMissingHeaders = errors.New("missing webhook signature headers")
	ErrBadTimestamp   = errors.New("webhook timestamp outside the tolerance")
	ErrBadSignature   = errors.New("webhook signature does not verify")
)

// DefaultTolerance is how far a delivery's timestamp may be from now, as
// in the API's SDK helper.
const DefaultTolerance = 5 * time.Minute

// Verifier checks delivery signatures. It is safe for concurrent use.
type Verifier struct {
	secrets   [][]byte
	tolerance time.Duration
	now       func() time.Time
}

// NewVerifier returns a Verifier accepting any of secrets (at least one;
// the first is the one new jobs subscribe with). tolerance <= 0 means
// DefaultTolerance. now may be nil (time.Now).
func NewVerifier(secrets []string, tolerance time.Duration, now func() time.Time) (*Verifier, error) {
	v := &Verifier{tolerance: tolerance, now: now}
	for _, s := range secrets {
		if s = strings.TrimSpace(s); s != "" {
			v.secrets = append(v.secrets, []byte(s))
		}
	}
	if len(v.secrets) == 0 {
		return nil, errors.New("webhook: no secret configured")
	}
	if v.tolerance <= 0 {
		v.tolerance = DefaultTolerance
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Sign returns the signature of body at timestamp under secret: lowercase
// hex HMAC-SHA256 of timestamp + "." + body.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Headers are a delivery's webhook headers, whichever prefix carried them.
type Headers struct {
	Prefix      string
	Timestamp   string
	Signature   string
	EventID     string
	EventType   string
	DeliveryKey string
	Attempt     int
	MaxAttempts int
}

// ReadHeaders reads the webhook headers with the first prefix that carries
// a signature.
func ReadHeaders(h http.Header) Headers {
	for _, p := range HeaderPrefixes {
		if h.Get(p+"signature") == "" && h.Get(p+"timestamp") == "" {
			continue
		}
		out := Headers{Prefix: p, Timestamp: h.Get(p + "timestamp"), Signature: h.Get(p + "signature"),
			EventID: h.Get(p + "event-id"), EventType: h.Get(p + "event-type"), DeliveryKey: h.Get(p + "delivery-key")}
		out.Attempt, _ = strconv.Atoi(h.Get(p + "attempt"))
		out.MaxAttempts, _ = strconv.Atoi(h.Get(p + "max-attempts"))
		return out
	}
	return Headers{}
}

// Verify checks the signature and timestamp of a delivery whose raw body
// is body.
func (v *Verifier) Verify(hd Headers, body []byte) error {
	if hd.Signature == "" || hd.Timestamp == "" {
		return fmt.Errorf("%w: need %stimestamp and %ssignature", ErrMissingHeaders, HeaderPrefixes[0], HeaderPrefixes[0])
	}
	ts, err := strconv.ParseInt(hd.Timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not unix seconds", ErrBadTimestamp, clip(hd.Timestamp, 20))
	}
	if d := v.now().Sub(time.Unix(ts, 0)); d > v.tolerance || d < -v.tolerance {
		return fmt.Errorf("%w: %s off (tolerance %s)", ErrBadTimestamp, d.Round(time.Second), v.tolerance)
	}
	got, err := hex.DecodeString(strings.ToLower(strings.TrimSpace(hd.Signature)))
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: not a hex sha256", ErrBadSignature)
	}
	for _, s := range v.secrets {
		m := hmac.New(sha256.New, s)
		m.Write([]byte(hd.Timestamp))
		m.Write([]byte{'.'})
		m.Write(body)
		if hmac.Equal(m.Sum(nil), got) {
			return nil
		}
	}
	return ErrBadSignature
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
