package apiclient

// Internal tests for helpers whose behaviour cannot be pinned down exactly
// through the exported API (a fixed clock, the jitter range, a *url.Error
// built by hand).

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfterFixedClock(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"   ", 0},
		{"0", 0},
		{"-1", 0},
		{"30", 30 * time.Second},
		{" 30 ", 30 * time.Second},
		{"0.25", 250 * time.Millisecond},
		{"Wed, 10 Jun 2026 20:01:30 GMT", 90 * time.Second},     // IMF-fixdate
		{"Wednesday, 10-Jun-26 20:00:10 GMT", 10 * time.Second}, // RFC 850
		{"Wed Jun 10 20:00:05 2026", 5 * time.Second},           // ANSI C asctime
		{"Wed, 10 Jun 2026 20:00:00 GMT", 0},                    // now
		{"Wed, 10 Jun 2026 19:00:00 GMT", 0},                    // past
		{"2026-06-10T20:01:00Z", 0},                             // not an HTTP date
		{"soon", 0},
		{"NaN", 0},
		{"+Inf", 0},
		{"-Inf", 0},
		{"Infinity", 0},
		{"1e400", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	// Values too large for a time.Duration saturate instead of wrapping
	// round to a negative "retry now".
	for _, in := range []string{"9223372036", "99999999999", "1e10", "9223372036854775807", "1e300"} {
		if got := parseRetryAfter(in, now); got < 100*365*24*time.Hour {
			t.Errorf("parseRetryAfter(%q) = %v, want a saturated long wait", in, got)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	base, max := 100*time.Millisecond, time.Second
	for n := range 70 {
		want := base << min(n, 16)
		if want > max || want <= 0 {
			want = max
		}
		for range 50 {
			d := backoff(n, base, max)
			if d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	const sig = "deadbeefcafe"
	signed := "https://api.phaseo.app/v1/videos/G-1/content?index=1&download_token=tok&download_sig=" + sig + "&expires_at=1"
	ue := &url.Error{Op: "Get", URL: signed, Err: io.ErrUnexpectedEOF}
	for _, in := range []error{ue, &TransportError{Op: "x", Err: ue}, errors.Join(errors.New("a"), ue)} {
		got := scrub(in)
		if strings.Contains(got.Error(), sig) || strings.Contains(got.Error(), "download_") {
			t.Errorf("scrub(%v) = %q keeps the signed URL", in, got)
		}
		if !errors.Is(got, io.ErrUnexpectedEOF) {
			t.Errorf("scrub(%v) = %v lost the cause", in, got)
		}
	}
	if got := scrub(ue).Error(); got != "get: unexpected EOF" {
		t.Errorf("scrub = %q", got)
	}
	plain := errors.New("plain")
	if scrub(plain) != plain {
		t.Error("scrub changed an error without a URL")
	}
	// Timeout classification survives scrubbing of a deadline.
	dl := &url.Error{Op: "Post", URL: signed, Err: context.DeadlineExceeded}
	if !errors.Is(scrub(dl), context.DeadlineExceeded) {
		t.Error("scrub lost DeadlineExceeded")
	}
}

func TestNewAPIErrorScrubsKey(t *testing.T) {
	t.Parallel()
	const key = "aistats_v1_sk_k_secret"
	resp := &http.Response{StatusCode: 401, Header: http.Header{}}
	body := `{"error":"unauthorised ` + key + `","reason":"r ` + key + `","description":"d ` + key + `","generation_id":"` + key + `","error_type":"` + key + `","error_origin":"` + key + `","details":["` + key + `"]}`
	e := newAPIError("op", resp, []byte(body), []string{key})
	for name, s := range map[string]string{
		"Error": e.Error(), "Code": e.Code, "Reason": e.Reason, "Description": e.Description,
		"GenerationID": e.GenerationID, "ErrorType": e.ErrorType, "ErrorOrigin": e.ErrorOrigin, "Details": string(e.Details),
	} {
		if strings.Contains(s, key) || strings.Contains(s, "secret") {
			t.Errorf("%s = %q contains the key", name, s)
		}
	}
	if !e.Documented {
		t.Error("scrubbing broke the documented shape")
	}
	// An empty secret is a no-op.
	e = newAPIError("op", resp, []byte(`{"error":"x","description":"d"}`), nil)
	if e.Code != "x" || e.Description != "d" {
		t.Errorf("got %+v", e)
	}
}
