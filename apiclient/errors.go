package apiclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// APIError is a non-2xx answer of the API, built from the documented flat
// error body (section 8 of the reference). Callers branch on StatusCode
// first, as the reference advises, then on Code and Reason.
type APIError struct {
	// Op names the call, e.g. "create video" or "get video G-abc".
	Op string
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is the machine code ("not_ready", "validation_error", …).
	Code string
	// Reason refines Code ("video_not_ready", …).
	Reason string
	// Description is the human text.
	Description string
	// ErrorType is "user" or "system"; ErrorOrigin is "user", "gateway" or
	// "upstream".
	ErrorType, ErrorOrigin string
	// GenerationID is the gateway request id to quote to support.
	GenerationID string
	// Details holds validation details, as sent.
	Details json.RawMessage
	// RetryAfter is the parsed Retry-After header, or 0.
	RetryAfter time.Duration
	// Documented reports whether the body had the documented error shape
	// (an "error" member).
	Documented bool
	// FromGateway reports whether the body also carries what only the
	// gateway's own answers carry (status_code or generation_id). A 5xx
	// without it may come from a proxy in front of the API, which says
	// nothing about whether the request took effect.
	FromGateway bool
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Reason != "" {
		b.WriteString(" (" + e.Reason + ")")
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.GenerationID != "" {
		b.WriteString(" [generation_id " + e.GenerationID + "]")
	}
	return b.String()
}

// Retryable reports whether the same call may succeed later without a
// change: 429, 408 and 5xx except 501 (the feature is switched off).
func (e *APIError) Retryable() bool {
	switch {
	case e.StatusCode == http.StatusTooManyRequests, e.StatusCode == http.StatusRequestTimeout:
		return true
	case e.StatusCode == http.StatusNotImplemented:
		return false
	case e.StatusCode >= 500:
		return true
	}
	return e.NotReady()
}

// NotReady reports the documented "409 not_ready" that means the content is
// not there yet (video_not_ready, video_submission_pending): poll again
// later. A 409 for a failed, cancelled or expired job is not NotReady.
func (e *APIError) NotReady() bool {
	if e.StatusCode != http.StatusConflict {
		return false
	}
	switch e.Reason {
	case "", "video_not_ready", "video_submission_pending":
		return true
	}
	return false
}

// TransportError is a call that got no usable HTTP answer: a connection
// failure, a timeout, or a body that could not be read or decoded.
type TransportError struct {
	// Op names the call.
	Op string
	// Sent reports whether the request may have reached the server. For a
	// create this means a job may exist: the outcome is in doubt.
	Sent bool
	// Timeout reports whether the call ran out of time.
	Timeout bool
	// Err is the cause, with any URL query removed.
	Err error
}

func (e *TransportError) Error() string {
	state := "not sent"
	if e.Sent {
		state = "request sent, outcome unknown"
	}
	return fmt.Sprintf("%s: %s: %v", e.Op, state, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Retryable reports true: a transport failure may clear by itself.
func (e *TransportError) Retryable() bool { return true }

// IsRetryable reports whether err, from this package, may succeed if the
// same call is made again later.
func IsRetryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	var te *TransportError
	return errors.As(err, &te)
}

// InDoubt reports whether a failed create may nevertheless have started a
// job: the request was sent and no documented answer came back (a transport
// failure after sending, or a 5xx without the API's error body). A caller
// must reconcile against the job list before it submits again.
func InDoubt(err error) bool {
	var te *TransportError
	if errors.As(err, &te) {
		return te.Sent
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode >= 500 && ae.StatusCode != http.StatusNotImplemented && !ae.FromGateway
	}
	return false
}

// RetryAfter returns the server's Retry-After carried by err, or 0.
func RetryAfter(err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}

// redacted replaces the API key and the other configured secrets in text
// from the API.
const redacted = "[redacted]"

// maskList returns the non-empty secrets, without duplicates, longest
// first (so that a secret containing another is masked whole).
func maskList(key string, others []string) []string {
	var out []string
	for _, s := range append([]string{key}, others...) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// mask replaces every secret in s.
func mask(s string, secrets []string) string {
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

// maskJSON masks secrets in the string values (and member names) of a
// JSON document, also where the document escapes them (\u0041, \/), and
// returns it re-encoded; raw is returned as it is when nothing changed.
func maskJSON(raw json.RawMessage, secrets []string) json.RawMessage {
	if len(raw) == 0 || len(secrets) == 0 {
		return raw
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers re-encode as sent
	if dec.Decode(&v) != nil {
		return json.RawMessage(mask(string(raw), secrets))
	}
	changed := false
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case string:
			if m := mask(t, secrets); m != t {
				changed = true
				return m
			}
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
		case map[string]any:
			for k, e := range t {
				if mk := mask(k, secrets); mk != k {
					changed = true
					delete(t, k)
					k = mk
				}
				t[k] = walk(e)
			}
		}
		return x
	}
	v = walk(v)
	if !changed {
		return raw
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// maskVideo masks the secrets in the text of a video the API sent: its
// error, which a provider may write from the request it was given.
func (c *Client) maskVideo(v *Video) {
	if v.Error != nil {
		v.Error.Code = mask(v.Error.Code, c.secrets)
		v.Error.Message = mask(v.Error.Message, c.secrets)
	}
}

// maxErrorBody caps how much of an error body is read.
const maxErrorBody = 64 << 10

// errorBody is the documented flat error object; older revisions put the
// human text in "error" and the type in "reason".
type errorBody struct {
	Error        json.RawMessage `json:"error"`
	StatusCode   int             `json:"status_code"`
	ErrorType    string          `json:"error_type"`
	ErrorOrigin  string          `json:"error_origin"`
	GenerationID string          `json:"generation_id"`
	Reason       string          `json:"reason"`
	Description  string          `json:"description"`
	Message      string          `json:"message"`
	Details      json.RawMessage `json:"details"`
}

// newAPIError is the one place an *APIError is built from a response.
// Every occurrence of a secret (the API key, the webhook secrets) in the
// body is redacted: a server or proxy that echoes the credentials or the
// request must not put them into error text.
func newAPIError(op string, resp *http.Response, body []byte, secrets []string) *APIError {
	e := &APIError{Op: op, StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	for _, secret := range secrets {
		body = bytes.ReplaceAll(body, []byte(secret), []byte(redacted))
	}
	var eb errorBody
	// The gateway's own answer always carries "error" and status_code or
	// generation_id; a proxy's JSON rarely does.
	if json.Unmarshal(body, &eb) == nil && len(eb.Error) > 0 && string(eb.Error) != "null" {
		e.Documented = true
		e.FromGateway = eb.StatusCode != 0 || eb.GenerationID != "" || bytes.HasPrefix(bytes.TrimSpace(eb.Error), []byte("{"))
		e.ErrorType, e.ErrorOrigin, e.GenerationID = eb.ErrorType, eb.ErrorOrigin, eb.GenerationID
		e.Reason, e.Description, e.Details = eb.Reason, firstNonEmpty(eb.Description, eb.Message), eb.Details
		var code string
		if json.Unmarshal(eb.Error, &code) == nil {
			e.Code = code
		} else {
			// {"error":{"code":…,"message":…}} (the WebSocket shape).
			var obj struct{ Code, Message string }
			if json.Unmarshal(eb.Error, &obj) == nil {
				e.Code = obj.Code
				e.Description = firstNonEmpty(e.Description, obj.Message)
			}
		}
		if strings.ContainsRune(e.Code, ' ') { // the older revision: human text in "error"
			e.Description = firstNonEmpty(e.Description, e.Code)
			e.Code = e.Reason
		}
	}
	if e.Code == "" {
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "_"))
	}
	if len(secrets) > 0 { // again after JSON unescaping, and before truncation
		for _, f := range []*string{&e.Code, &e.Reason, &e.Description, &e.ErrorType, &e.ErrorOrigin, &e.GenerationID} {
			*f = mask(*f, secrets)
		}
		e.Details = maskJSON(e.Details, secrets)
	}
	if len(e.Description) > 500 {
		e.Description = e.Description[:500] + "…"
	}
	return e
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or
// invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if !(n > 0) || math.IsInf(n, 1) { // also NaN
			return 0
		}
		// Saturate: converting a float beyond int64 would wrap negative.
		if d := n * float64(time.Second); d < float64(math.MaxInt64) {
			return time.Duration(d)
		}
		return time.Duration(math.MaxInt64)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
