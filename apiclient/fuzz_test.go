package apiclient_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/videoworker/videoworker/apiclient"
)

// videoSeeds are realistic objects from the reference (sections 3.3, 3.4,
// 7, 8, 11) plus edge forms.
var videoSeeds = []string{
	completedVideoJSON,
	`{"id":"G-abc123","object":"video","status":"queued","polling_url":"https://api.phaseo.app/v1/videos/G-abc123","provider":"google","model":"google/veo-3.1-lite","poll_after_seconds":20}`,
	`{"id":"G-abc123","object":"video","kind":"video","status":"processing","lifecycle_status":"running","progress":50,"provider":"google","model":"google/veo-3.1-lite","polling_url":"https://api.phaseo.app/v1/videos/G-abc123","content_url":"https://api.phaseo.app/v1/videos/G-abc123/content","download_url":null,"expires_at":null,"webhook":{"has_secret":true},"billing":{},"created_at":"2026-06-10T20:00:00.000Z","updated_at":"2026-06-10T20:01:00.000Z"}`,
	`{"id":"G-f","object":"video","status":"failed","error":{"code":"content_policy","message":"blocked"},"billing":{"state":"void","settled_user_cost":"0.00"},"progress":null,"asset":null,"outputs":[]}`,
	`{"id":"G-f","status":"error","error":"provider said no","completed_at":1781121700500}`,
	`{"video_id":"G-v","status":"pending","created_at":1781121600,"started_at":"1781121600.5","completed_at":null}`,
	`{"id":"video_1","object":"video","status":"in_progress","progress":33,"seconds":"8","size":"1280x720","created_at":1781121600,"error":{"code":"x","message":"y"}}`,
	`{"id":"G","outputs":[{"index":0,"bytes_available":1},{"index":1,"bytes_available":false,"expires_at":1781122600}],"asset":{"id":"ast_1","bytes":null,"width":1280}}`,
	`{"object":"list","data":[{"id":"G-2","status":"running"},{"video_id":"G-1","status":"succeeded"}],"first_id":"G-2","last_id":"G-1","has_more":false}`,
	`{"object":"list","data":[],"has_more":false}`,
	`{"error":"not_ready","status_code":409,"error_type":"user","error_origin":"user","generation_id":"G-1","reason":"video_not_ready","description":"d","details":[]}`,
	`{"id":"G","created_at":"2026-06-10 20:00:00","started_at":"2026-06-10T20:00:00+02:00","completed_at":1e300}`,
	`{"id":"G","created_at":"NaN","started_at":"-Inf","completed_at":-1.5}`,
	`{"id":"G","status":null,"error":null,"webhook":null,"outputs":null}`,
	`{"id":"G","status":"COMPLETED","poll_after_seconds":-1}`,
	`{"data":[{"error":{}},{"error":""},{"created_at":""}]}`,
	`null`, `{}`, `[]`, `""`, `0`, `{"id":`, "\xff\xfe",
}

func FuzzDecodeVideo(f *testing.F) {
	for _, s := range videoSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v apiclient.Video
		if err := json.Unmarshal(data, &v); err == nil {
			checkVideo(t, &v)
		}
		var l apiclient.VideoList
		if err := json.Unmarshal(data, &l); err == nil {
			for i := range l.Data {
				checkVideo(t, &l.Data[i])
			}
		}
		// The custom decoders also take raw, possibly invalid, input.
		var tm apiclient.Time
		_ = tm.UnmarshalJSON(data)
		var fl apiclient.Flag
		_ = fl.UnmarshalJSON(data)
		var st apiclient.Status
		if st.UnmarshalJSON(data) == nil && apiclient.ParseStatus(string(st)) != st {
			t.Errorf("decoded status %q is not stable", st)
		}
		var ve apiclient.VideoError
		_ = ve.UnmarshalJSON(data)
		_ = ve.String()
		_ = apiclient.ParseStatus(string(data)).Terminal()
	})
}

func checkVideo(t *testing.T, v *apiclient.Video) {
	t.Helper()
	if apiclient.ParseStatus(string(v.Status)) != v.Status {
		t.Errorf("status %q is not canonical after decoding", v.Status)
	}
	if v.Status.Terminal() {
		switch v.Status {
		case apiclient.StatusCompleted, apiclient.StatusFailed, apiclient.StatusCancelled, apiclient.StatusExpired:
		default:
			t.Errorf("non-canonical status %q is terminal", v.Status)
		}
	}
	if v.PollAfter() < 0 {
		t.Errorf("PollAfter = %v", v.PollAfter())
	}
	if v.OutputCount() < 1 {
		t.Errorf("OutputCount = %d", v.OutputCount())
	}
	_ = v.Error.String()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal of a decoded video: %v", err)
	}
	// Re-encoding is stable once times are in the range RFC 3339 can hold.
	for _, tm := range []apiclient.Time{v.CreatedAt, v.StartedAt, v.CompletedAt} {
		if !tm.IsZero() && (tm.Year() < 1 || tm.Year() > 9999) {
			return
		}
	}
	var again apiclient.Video
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatalf("decoding the re-encoded video %s: %v", b, err)
	}
	b2, err := json.Marshal(&again)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(b2) {
		t.Errorf("re-encoding is not stable:\n%s\n%s", b, b2)
	}
}

// errSpec is what a fuzz case asks the test server to answer.
type errSpec struct {
	Status     int    `json:"s"`
	Body       []byte `json:"b"`
	RetryAfter string `json:"r"`
}

func encodeSpec(s errSpec) string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

// specServer answers each request with the errSpec it carries: a create
// in its prompt, a content request in its video id.
func specServer(t testing.TB) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var enc string
		if r.Method == http.MethodPost {
			var req apiclient.CreateRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				w.WriteHeader(599)
				return
			}
			enc = req.Prompt
		} else {
			enc = strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/videos/"), "/content")
		}
		raw, err := base64.RawURLEncoding.DecodeString(enc)
		var s errSpec
		if err != nil || json.Unmarshal(raw, &s) != nil {
			w.WriteHeader(599)
			return
		}
		if s.RetryAfter != "" {
			w.Header().Set("Retry-After", s.RetryAfter)
		}
		w.WriteHeader(s.Status)
		w.Write(s.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func FuzzAPIError(f *testing.F) {
	seeds := []struct {
		status int
		body   string
		ra     string
	}{
		{409, `{"error":"not_ready","status_code":409,"error_type":"user","error_origin":"user","generation_id":"G-1","reason":"video_not_ready","description":"still rendering","details":[]}`, ""},
		{400, `{"error":"validation_error","status_code":400,"error_type":"user","error_origin":"user","generation_id":"G-2","description":"bad","details":[{"path":["prompt"],"code":"too_small","message":"Required"}]}`, ""},
		{401, `{"generation_id":"G-3","status_code":401,"error":"Invalid API key ` + testKey + `","reason":"authentication_error"}`, ""},
		{401, `{"error":"unauthorised","reason":"invalid_key","description":"key ` + testKey + ` rejected"}`, ""},
		{426, `{"error":{"code":"websocket_upgrade_required","message":"upgrade"}}`, ""},
		{429, `{"error":"key_limit_exceeded","status_code":429,"description":"slow"}`, "30"},
		{429, `{"error":"key_limit_exceeded"}`, "Wed, 10 Jun 2026 20:00:00 GMT"},
		{503, `{"error":"gateway_error"}`, "NaN"},
		{503, ``, "99999999999"},
		{502, `<html><h1>502 Bad Gateway</h1></html>`, ""},
		{501, `{"error":"not_implemented_yet","reason":"video_cancellation_disabled"}`, ""},
		{500, `{"error":null}`, ""},
		{500, `{"error":""}`, ""},
		{500, `{"error":5}`, ""},
		{500, `{"error":"x","description":"` + strings.Repeat("é", 400) + `"}`, ""},
		{404, `{"error":"not_found","reason":"video_deleted"}`, "-1"},
		{202, `{"id":"G-ok","status":"queued"}`, ""},
		{200, `{"video_id":"G-ok"}`, ""},
		{200, `{"status":"queued"}`, ""},
		{200, `garbage`, ""},
		{204, ``, ""},
		{302, `moved`, ""},
		{599, "\xff\x00", ""},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body), s.ra, false)
		f.Add(s.status, []byte(s.body), s.ra, true)
	}
	base := specServer(f)
	c, err := apiclient.New(apiclient.Config{BaseURL: base + "/v1", APIKey: testKey, Timeout: 5 * time.Second, ReadRetries: -1, MaxRetryWait: time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string, content bool) {
		// WriteHeader accepts 100-999; 1xx answers are interim, skip them.
		status = 200 + int(uint(status)%400)
		if len(body) > 1<<20 {
			body = body[:1<<20]
		}
		retryAfter = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || r == utf8.RuneError {
				return -1
			}
			return r
		}, retryAfter)
		retryAfter = strings.TrimSpace(retryAfter)
		spec := encodeSpec(errSpec{Status: status, Body: body, RetryAfter: retryAfter})
		ctx := context.Background()
		var err error
		if content {
			var ct *apiclient.Content
			ct, err = c.Content(ctx, spec, 0)
			if err == nil {
				_, rerr := io.Copy(io.Discard, ct.Body)
				ct.Body.Close()
				if rerr != nil {
					t.Fatalf("reading a %d body: %v", status, rerr)
				}
				if status/100 != 2 {
					t.Fatalf("status %d gave content", status)
				}
				return
			}
		} else {
			var v *apiclient.Video
			v, err = c.Create(ctx, apiclient.CreateRequest{Model: "m", Prompt: spec}, apiclient.CreateOptions{IdempotencyKey: "fuzz"})
			if err == nil {
				if status/100 != 2 || v == nil || v.ID == "" {
					t.Fatalf("status %d: Create succeeded with %+v", status, v)
				}
				return
			}
		}
		msg := err.Error()
		if strings.Contains(msg, testKey) {
			t.Errorf("error contains the API key: %s", msg)
		}
		if apiclient.RetryAfter(err) < 0 {
			t.Errorf("RetryAfter = %v for header %q", apiclient.RetryAfter(err), retryAfter)
		}
		var ae *apiclient.APIError
		if status/100 == 2 {
			var te *apiclient.TransportError
			if !errors.As(err, &te) || !te.Sent || !apiclient.InDoubt(err) {
				t.Fatalf("status %d: got %v, want a sent *TransportError", status, err)
			}
			return
		}
		if !errors.As(err, &ae) {
			t.Fatalf("status %d: got %T %v, want *APIError", status, err, err)
		}
		if ae.StatusCode != status {
			t.Errorf("StatusCode = %d, want %d", ae.StatusCode, status)
		}
		wantPrefix := "create video: HTTP " + strconv.Itoa(status)
		if content {
			wantPrefix = "content " + spec + ": HTTP " + strconv.Itoa(status)
		}
		if !strings.HasPrefix(msg, wantPrefix) {
			t.Errorf("Error() = %q, want prefix %q", msg, wantPrefix)
		}
		if len(ae.Description) > 500+len("…") {
			t.Errorf("Description is %d bytes", len(ae.Description))
		}
		if ae.Documented && !json.Valid(body) {
			t.Errorf("Documented for a body that is not JSON: %q", body)
		}
		if !ae.Documented && (ae.Description != "" || ae.Reason != "" || ae.GenerationID != "" || ae.Details != nil) {
			t.Errorf("fields taken from an undocumented body: %+v", ae)
		}
		wantRetry := status == 429 || status == 408 || (status >= 500 && status != 501) || ae.NotReady()
		if ae.Retryable() != wantRetry || apiclient.IsRetryable(err) != wantRetry {
			t.Errorf("status %d reason %q: Retryable = %v, want %v", status, ae.Reason, ae.Retryable(), wantRetry)
		}
		if ae.NotReady() && status != 409 {
			t.Errorf("NotReady for status %d", status)
		}
		wantDoubt := status >= 500 && status != 501 && !ae.Documented
		if apiclient.InDoubt(err) != wantDoubt {
			t.Errorf("InDoubt = %v, want %v (status %d documented %v)", apiclient.InDoubt(err), wantDoubt, status, ae.Documented)
		}
	})
}
