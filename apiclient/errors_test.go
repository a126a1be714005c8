package apiclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/videoworker/videoworker/apiclient"
)

func TestAPIErrorFromBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		want       apiclient.APIError
		wantString string
	}{
		{
			name:   "documented body",
			status: 400,
			body:   `{"error":"validation_error","status_code":400,"error_type":"user","error_origin":"user","generation_id":"G-77","reason":"invalid_request","description":"prompt is required","details":[{"path":["prompt"],"code":"too_small","message":"Required"}],"request_id":"req_1","video_id":"G-1"}`,
			want: apiclient.APIError{
				StatusCode: 400, Code: "validation_error", Reason: "invalid_request", Description: "prompt is required",
				ErrorType: "user", ErrorOrigin: "user", GenerationID: "G-77",
				Details:    json.RawMessage(`[{"path":["prompt"],"code":"too_small","message":"Required"}]`),
				Documented: true, FromGateway: true,
			},
			wantString: "get video G-1: HTTP 400 validation_error (invalid_request): prompt is required [generation_id G-77]",
		},
		{
			name:   "documented 409 not_ready",
			status: 409,
			body:   `{"error":"not_ready","status_code":409,"error_type":"user","error_origin":"user","generation_id":"G-9","reason":"video_not_ready","description":"still rendering"}`,
			want: apiclient.APIError{
				StatusCode: 409, Code: "not_ready", Reason: "video_not_ready", Description: "still rendering",
				ErrorType: "user", ErrorOrigin: "user", GenerationID: "G-9", Documented: true, FromGateway: true,
			},
		},
		{
			name:   "documented upstream error",
			status: 502,
			body:   `{"error":"upstream_error","status_code":502,"error_type":"system","error_origin":"upstream","generation_id":"G-5","description":"provider failed","upstream_error":{"code":"x","message":"y"},"attempt_count":2}`,
			want: apiclient.APIError{
				StatusCode: 502, Code: "upstream_error", Description: "provider failed",
				ErrorType: "system", ErrorOrigin: "upstream", GenerationID: "G-5", Documented: true, FromGateway: true,
			},
		},
		{
			name:   "older revision: human text in error, type in reason",
			status: 401,
			body:   `{"generation_id":"G-old","status_code":401,"error":"Invalid or missing API key","reason":"authentication_error"}`,
			want: apiclient.APIError{
				StatusCode: 401, Code: "authentication_error", Reason: "authentication_error",
				Description: "Invalid or missing API key", GenerationID: "G-old", Documented: true, FromGateway: true,
			},
		},
		{
			name:   "object error (WebSocket shape)",
			status: 426,
			body:   `{"error":{"code":"websocket_upgrade_required","message":"Upgrade to WebSocket"}}`,
			want: apiclient.APIError{
				StatusCode: 426, Code: "websocket_upgrade_required", Description: "Upgrade to WebSocket", Documented: true, FromGateway: true,
			},
		},
		{
			name:   "message instead of description",
			status: 403,
			body:   `{"error":"guardrail_blocked","message":"blocked by guardrail"}`,
			want: apiclient.APIError{
				StatusCode: 403, Code: "guardrail_blocked", Description: "blocked by guardrail", Documented: true,
			},
		},
		{
			name:   "non-JSON 502 from a proxy",
			status: 502,
			body:   "<html><body><h1>502 Bad Gateway</h1></body></html>",
			want:   apiclient.APIError{StatusCode: 502, Code: "bad_gateway"},
		},
		{
			name:   "JSON without error key",
			status: 503,
			body:   `{"message":"Service Unavailable"}`,
			want:   apiclient.APIError{StatusCode: 503, Code: "service_unavailable"},
		},
		{
			name:   "empty body",
			status: 504,
			want:   apiclient.APIError{StatusCode: 504, Code: "gateway_timeout"},
		},
		{
			name:   "unknown status without body",
			status: 599,
			want:   apiclient.APIError{StatusCode: 599},
		},
		{
			name:   "long description truncated",
			status: 400,
			body:   `{"error":"validation_error","description":"` + strings.Repeat("d", 2000) + `"}`,
			want: apiclient.APIError{
				StatusCode: 400, Code: "validation_error", Description: strings.Repeat("d", 500) + "…", Documented: true,
			},
		},
		{
			name:   "Retry-After seconds",
			status: 429,
			header: http.Header{"Retry-After": {"7"}},
			body:   `{"error":"key_limit_exceeded","status_code":429,"error_type":"user","error_origin":"gateway","generation_id":"G-r","description":"slow down"}`,
			want: apiclient.APIError{
				StatusCode: 429, Code: "key_limit_exceeded", Description: "slow down", ErrorType: "user", ErrorOrigin: "gateway",
				GenerationID: "G-r", RetryAfter: 7 * time.Second, Documented: true, FromGateway: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := newClient(t, srv.URL, noRetries).Get(context.Background(), "G-1")
			ae := asAPIError(t, err)
			want := tt.want
			want.Op = "get video G-1"
			if diff := cmp.Diff(&want, ae); diff != "" {
				t.Errorf("APIError (-want +got):\n%s", diff)
			}
			if tt.wantString != "" && ae.Error() != tt.wantString {
				t.Errorf("Error() = %q, want %q", ae.Error(), tt.wantString)
			}
			if !strings.HasPrefix(err.Error(), "get video G-1: HTTP ") {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

func TestAPIErrorString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		e    apiclient.APIError
		want string
	}{
		{apiclient.APIError{Op: "op", StatusCode: 500}, "op: HTTP 500"},
		{apiclient.APIError{Op: "op", StatusCode: 404, Code: "not_found"}, "op: HTTP 404 not_found"},
		{apiclient.APIError{Op: "op", StatusCode: 404, Code: "not_found", Reason: "video_deleted"}, "op: HTTP 404 not_found (video_deleted)"},
		{apiclient.APIError{Op: "op", StatusCode: 404, Description: "gone", GenerationID: "G-1"}, "op: HTTP 404: gone [generation_id G-1]"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		status         int
		body           string
		wantDocumented bool
		wantInDoubt    bool
		wantRetryable  bool
	}{
		{"documented 503", 503, mustJSON(apiErr(503, "gateway_error", "", "busy")), true, false, true},
		{"documented 502 upstream", 502, mustJSON(apiErr(502, "upstream_error", "", "provider down")), true, false, true},
		{"documented 500", 500, mustJSON(apiErr(500, "gateway_error", "", "oops")), true, false, true},
		{"non-JSON 502 from a proxy", 502, "<html>502 Bad Gateway</html>", false, true, true},
		{"non-JSON 504 from a proxy", 504, "upstream request timeout", false, true, true},
		{"empty 500", 500, "", false, true, true},
		{"non-JSON 501", 501, "Not Implemented", false, false, false},
		{"documented 501", 501, mustJSON(apiErr(501, "not_implemented_yet", "video_api_feature_disabled", "off")), true, false, false},
		{"documented 429", 429, mustJSON(apiErr(429, "key_limit_exceeded", "", "limit")), true, false, true},
		{"documented 402", 402, mustJSON(apiErr(402, "insufficient_funds", "", "top up")), true, false, false},
		{"documented 400", 400, mustJSON(apiErr(400, "validation_error", "", "bad")), true, false, false},
		{"non-JSON 400", 400, "bad request", false, false, false},
		{"non-JSON 429", 429, "Too Many Requests", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := newClient(t, srv.URL).Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{IdempotencyKey: "idem"})
			ae := asAPIError(t, err)
			if ae.StatusCode != tt.status || ae.Documented != tt.wantDocumented || ae.Op != "create video" {
				t.Errorf("got %+v", ae)
			}
			if got := apiclient.InDoubt(err); got != tt.wantInDoubt {
				t.Errorf("InDoubt = %v, want %v", got, tt.wantInDoubt)
			}
			if got := apiclient.IsRetryable(err); got != tt.wantRetryable {
				t.Errorf("IsRetryable = %v, want %v", got, tt.wantRetryable)
			}
			if n := rec.count(); n != 1 {
				t.Errorf("create sent %d times, want exactly once", n)
			}
		})
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestHugeErrorBodyIsCapped(t *testing.T) {
	t.Parallel()
	const size = 10 << 20
	for _, tc := range []struct {
		name   string
		prefix string
		fill   byte
		suffix string
	}{
		{"plain", "", 'x', ""},
		{"documented JSON with a huge description", `{"error":"gateway_error","status_code":502,"generation_id":"G-1","description":"`, 'd', `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(size))
				w.WriteHeader(http.StatusBadGateway)
				chunk := bytes.Repeat([]byte{tc.fill}, 32<<10)
				n := 0
				io.WriteString(w, tc.prefix)
				n += len(tc.prefix)
				for n < size-len(tc.suffix) {
					c := chunk[:min(len(chunk), size-len(tc.suffix)-n)]
					m, err := w.Write(c)
					n += m
					if err != nil {
						return
					}
				}
				io.WriteString(w, tc.suffix)
			})
			c := newClient(t, srv.URL)
			start := time.Now()
			_, err := c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{})
			ae := asAPIError(t, err)
			if ae.StatusCode != 502 || ae.Documented || !apiclient.InDoubt(err) {
				t.Errorf("got %+v InDoubt=%v; a cut-off body is not the documented shape, so the create is in doubt", ae, apiclient.InDoubt(err))
			}
			if len(ae.Description) > 600 || len(err.Error()) > 1000 {
				t.Errorf("error text is %d bytes (description %d)", len(err.Error()), len(ae.Description))
			}
			if rec.count() != 1 {
				t.Errorf("%d requests", rec.count())
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("reading a huge error body took %v", time.Since(start))
			}
		})
	}
}

func TestRetryableSplit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status    int
		code      string
		reason    string
		retryable bool
		notReady  bool
	}{
		{429, "key_limit_exceeded", "", true, false},
		{408, "request_timeout", "", true, false},
		{500, "gateway_error", "", true, false},
		{502, "upstream_error", "", true, false},
		{503, "gateway_error", "", true, false},
		{504, "gateway_timeout", "", true, false},
		{501, "not_implemented_yet", "video_api_temporarily_disabled", false, false},
		{400, "validation_error", "", false, false},
		{401, "unauthorised", "invalid_key", false, false},
		{402, "insufficient_funds", "", false, false},
		{403, "guardrail_blocked", "", false, false},
		{404, "not_found", "video_not_found_or_not_owned", false, false},
		{404, "not_found", "video_deleted", false, false},
		{409, "not_ready", "video_generation_failed", false, false},
		{409, "not_ready", "video_cancelled", false, false},
		{409, "not_ready", "video_expired", false, false},
		{409, "not_ready", "video_not_ready", true, true},
		{409, "not_ready", "video_submission_pending", true, true},
		{409, "not_ready", "", true, true},
		{422, "unprocessable", "", false, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d_%s_%s", tt.status, tt.code, tt.reason), func(t *testing.T) {
			t.Parallel()
			srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, tt.status, apiErr(tt.status, tt.code, tt.reason, "x"))
			})
			_, err := newClient(t, srv.URL, noRetries).Get(context.Background(), "G-1")
			ae := asAPIError(t, err)
			if ae.Retryable() != tt.retryable || apiclient.IsRetryable(err) != tt.retryable {
				t.Errorf("Retryable = %v / IsRetryable = %v, want %v", ae.Retryable(), apiclient.IsRetryable(err), tt.retryable)
			}
			if ae.NotReady() != tt.notReady {
				t.Errorf("NotReady = %v, want %v", ae.NotReady(), tt.notReady)
			}
			if apiclient.InDoubt(err) {
				t.Error("InDoubt = true for a documented answer")
			}
			if rec.count() != 1 {
				t.Errorf("%d requests with retries disabled", rec.count())
			}
			// Wrapped errors are still classified.
			wrapped := fmt.Errorf("poll: %w", err)
			if apiclient.IsRetryable(wrapped) != tt.retryable {
				t.Error("IsRetryable differs for a wrapped error")
			}
		})
	}
}

func TestClassifiersOnForeignErrors(t *testing.T) {
	t.Parallel()
	for _, err := range []error{nil, errors.New("x"), context.Canceled, io.EOF} {
		if apiclient.IsRetryable(err) || apiclient.InDoubt(err) || apiclient.RetryAfter(err) != 0 {
			t.Errorf("%v: classified as one of ours", err)
		}
	}
	te := &apiclient.TransportError{Op: "get video G", Err: io.ErrUnexpectedEOF}
	if !apiclient.IsRetryable(te) || apiclient.InDoubt(te) || !te.Retryable() {
		t.Errorf("unsent transport error: retryable %v in doubt %v", apiclient.IsRetryable(te), apiclient.InDoubt(te))
	}
	if !errors.Is(te, io.ErrUnexpectedEOF) {
		t.Error("TransportError does not unwrap")
	}
	if te.Error() != "get video G: not sent: unexpected EOF" {
		t.Errorf("Error() = %q", te.Error())
	}
	te.Sent = true
	if !apiclient.InDoubt(fmt.Errorf("wrapped: %w", te)) {
		t.Error("sent transport error not in doubt")
	}
	if te.Error() != "get video G: request sent, outcome unknown: unexpected EOF" {
		t.Errorf("Error() = %q", te.Error())
	}
}

// flaky answers the first n requests with status (and hdr), then 200.
func flaky(n int32, status int, hdr http.Header, body any) (http.HandlerFunc, *atomic.Int32) {
	var calls atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= n {
			for k, v := range hdr {
				w.Header()[k] = v
			}
			writeJSON(w, status, body)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/content"):
			io.WriteString(w, "video-bytes")
		case r.URL.Path == "/v1/videos" && r.Method == http.MethodGet:
			writeJSON(w, http.StatusOK, `{"object":"list","data":[]}`)
		case strings.HasSuffix(r.URL.Path, "/download_url"):
			writeJSON(w, http.StatusOK, `{"download_url":"https://x","expires_at":1}`)
		case r.Method == http.MethodDelete:
			writeJSON(w, http.StatusOK, `{"id":"G-1","deleted":true}`)
		default:
			writeJSON(w, http.StatusOK, videoObj("G-1", "processing"))
		}
	}, &calls
}

func TestReadsAreRetried(t *testing.T) {
	t.Parallel()
	reads := map[string]func(c *apiclient.Client) error{
		"get": func(c *apiclient.Client) error { _, err := c.Get(context.Background(), "G-1"); return err },
		"list": func(c *apiclient.Client) error {
			_, err := c.List(context.Background(), apiclient.ListParams{})
			return err
		},
		"download_url": func(c *apiclient.Client) error {
			_, err := c.DownloadURL(context.Background(), "G-1", apiclient.DownloadURLRequest{})
			return err
		},
		"delete": func(c *apiclient.Client) error { _, err := c.Delete(context.Background(), "G-1"); return err },
		"content": func(c *apiclient.Client) error {
			ct, err := c.Content(context.Background(), "G-1", 0)
			if err != nil {
				return err
			}
			defer ct.Body.Close()
			b, err := io.ReadAll(ct.Body)
			if err == nil && string(b) != "video-bytes" {
				err = fmt.Errorf("content %q", b)
			}
			return err
		},
	}
	for name, do := range reads {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h, calls := flaky(2, http.StatusServiceUnavailable, nil, apiErr(503, "gateway_error", "", "busy"))
			srv, _ := newServer(t, h)
			c := newClient(t, srv.URL) // default: 2 retries
			if err := do(c); err != nil {
				t.Fatalf("after two 503s: %v", err)
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("%d requests, want 3", n)
			}
		})
	}
}

func TestReadRetriesExhausted(t *testing.T) {
	t.Parallel()
	h, calls := flaky(100, http.StatusBadGateway, http.Header{"Retry-After": {"0.01"}}, "<html>proxy</html>")
	srv, _ := newServer(t, h)
	_, err := newClient(t, srv.URL, func(c *apiclient.Config) { c.ReadRetries = 3 }).Get(context.Background(), "G-1")
	ae := asAPIError(t, err)
	if ae.StatusCode != 502 {
		t.Errorf("got %v", err)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("%d requests, want 1+3", n)
	}
}

func TestReadRetriesNegativeDisables(t *testing.T) {
	t.Parallel()
	h, calls := flaky(2, http.StatusServiceUnavailable, nil, apiErr(503, "gateway_error", "", "busy"))
	srv, _ := newServer(t, h)
	_, err := newClient(t, srv.URL, noRetries).Get(context.Background(), "G-1")
	if ae := asAPIError(t, err); ae.StatusCode != 503 {
		t.Errorf("got %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestNonRetryableReadIsNotRetried(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 401, 403, 404, 501} {
		h, calls := flaky(1, status, nil, apiErr(status, "x", "", "x"))
		srv, _ := newServer(t, h)
		if _, err := newClient(t, srv.URL).Get(context.Background(), "G-1"); err == nil {
			t.Fatalf("%d: no error", status)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d: %d requests, want 1", status, n)
		}
	}
}

func TestNotReadyReturnedAtOnce(t *testing.T) {
	t.Parallel()
	h, calls := flaky(1, http.StatusConflict, nil, apiErr(409, "not_ready", "video_not_ready", "rendering"))
	srv, _ := newServer(t, h)
	_, err := newClient(t, srv.URL).Content(context.Background(), "G-1", 0)
	ae := asAPIError(t, err)
	if !ae.NotReady() || !apiclient.IsRetryable(err) {
		t.Errorf("got %+v", ae)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d requests; a not-ready answer is for the caller to schedule", n)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	h, calls := flaky(1, http.StatusTooManyRequests, http.Header{"Retry-After": {"0.15"}}, apiErr(429, "key_limit_exceeded", "", "slow"))
	srv, _ := newServer(t, h)
	start := time.Now()
	if _, err := newClient(t, srv.URL).Get(context.Background(), "G-1"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("retried after %v, before the 150 ms Retry-After", d)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests", n)
	}
}

func TestLongRetryAfterReturnedToCaller(t *testing.T) {
	t.Parallel()
	for _, ra := range []string{"10", "3", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)} {
		h, calls := flaky(1, http.StatusTooManyRequests, http.Header{"Retry-After": {ra}}, apiErr(429, "key_limit_exceeded", "", "slow"))
		srv, _ := newServer(t, h)
		start := time.Now()
		_, err := newClient(t, srv.URL).Get(context.Background(), "G-1") // MaxRetryWait 2 s
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("Retry-After %s: took %v", ra, d)
		}
		ae := asAPIError(t, err)
		if ae.StatusCode != 429 || !apiclient.IsRetryable(err) {
			t.Errorf("Retry-After %s: got %v", ra, err)
		}
		if got := apiclient.RetryAfter(err); got <= 2*time.Second || got > time.Hour {
			t.Errorf("Retry-After %s: RetryAfter = %v", ra, got)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("Retry-After %s: %d requests, want 1", ra, n)
		}
	}
	// A larger MaxRetryWait waits it out.
	h, calls := flaky(1, http.StatusTooManyRequests, http.Header{"Retry-After": {"0.2"}}, apiErr(429, "key_limit_exceeded", "", "slow"))
	srv, _ := newServer(t, h)
	_, err := newClient(t, srv.URL, func(c *apiclient.Config) { c.MaxRetryWait = 100 * time.Millisecond }).Get(context.Background(), "G-1")
	if err == nil || calls.Load() != 1 {
		t.Errorf("Retry-After above MaxRetryWait: err %v, %d requests", err, calls.Load())
	}
}

func TestRetryAfterValues(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(90 * time.Second).UTC()
	tests := []struct {
		header   string
		min, max time.Duration
	}{
		{"", 0, 0},
		{"5", 5 * time.Second, 5 * time.Second},
		{" 12 ", 12 * time.Second, 12 * time.Second},
		{"1.5", 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"0", 0, 0},
		{"-3", 0, 0},
		{"soon", 0, 0},
		{future.Format(http.TimeFormat), 85 * time.Second, 90 * time.Second},
		{future.Format(time.RFC850), 85 * time.Second, 90 * time.Second},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0, 0},
		{"NaN", 0, 0},
		{"Inf", 0, 0},
		{"-Inf", 0, 0},
	}
	for _, tt := range tests {
		srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			if tt.header != "" {
				w.Header().Set("Retry-After", tt.header)
			}
			writeJSON(w, http.StatusServiceUnavailable, apiErr(503, "gateway_error", "", "busy"))
		})
		_, err := newClient(t, srv.URL, noRetries).Get(context.Background(), "G-1")
		got := apiclient.RetryAfter(err)
		if got < tt.min || got > tt.max {
			t.Errorf("Retry-After %q: RetryAfter = %v, want in [%v, %v]", tt.header, got, tt.min, tt.max)
		}
	}
	// Absurdly large values must not overflow into a negative (= "retry
	// now") duration.
	for _, v := range []string{"99999999999", "1e10", "9223372036854775807"} {
		srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", v)
			writeJSON(w, http.StatusTooManyRequests, apiErr(429, "key_limit_exceeded", "", "slow"))
		})
		_, err := newClient(t, srv.URL, noRetries).Get(context.Background(), "G-1")
		if got := apiclient.RetryAfter(err); got < 24*time.Hour {
			t.Errorf("Retry-After %q: RetryAfter = %v, want a very long wait", v, got)
		}
	}
}

func TestContextCancelledDuringBackoff(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "3") // within MaxRetryWait: the client would wait it out
		writeJSON(w, http.StatusServiceUnavailable, apiErr(503, "gateway_error", "", "busy"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The client logs "api call retry" right before it starts waiting:
	// cancel the context exactly then.
	logger := slog.New(&hookHandler{fn: func(r slog.Record) {
		if r.Message == "api call retry" {
			cancel()
		}
	}})
	c := newClient(t, srv.URL, func(c *apiclient.Config) { c.Logger = logger; c.MaxRetryWait = 5 * time.Second })
	start := time.Now()
	_, err := c.Get(ctx, "G-1")
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Get returned after %v; the backoff ignored the cancelled context", d)
	}
	if ae := asAPIError(t, err); ae.StatusCode != 503 {
		t.Errorf("got %v, want the last answer", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d requests after cancel", n)
	}
}

func TestContextCancelledBeforeCall(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_, err := newClient(t, srv.URL).Get(ctx, "G-1")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	te := asTransportError(t, err)
	if te.Timeout || te.Sent {
		t.Errorf("got %+v", te)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	if rec.count() != 0 {
		t.Errorf("%d requests", rec.count())
	}
}

func TestRetryLogging(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	h, _ := flaky(1, http.StatusServiceUnavailable, http.Header{"Retry-After": {"0.01"}}, apiErr(503, "gateway_error", "", "busy"))
	srv, _ := newServer(t, h)
	c := newClient(t, srv.URL, func(c *apiclient.Config) { c.Logger = debugJSONLogger(&buf) })
	if _, err := c.Get(context.Background(), "G-1"); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	want := map[string]any{"msg": "api call retry", "op": "get video G-1", "attempt": 1.0, "wait": 10e6}
	if diff := cmp.Diff(want, line, cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return k == "time" || k == "level" || k == "err" })); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
	if !strings.Contains(fmt.Sprint(line["err"]), "HTTP 503") {
		t.Errorf("log err = %v", line["err"])
	}
}
