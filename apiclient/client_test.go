package apiclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/videoworker/videoworker/apiclient"
)

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     apiclient.Config
		wantErr bool
		wantURL string
	}{
		{"default base URL", apiclient.Config{APIKey: "k"}, false, apiclient.DefaultBaseURL},
		{"trailing slash trimmed", apiclient.Config{APIKey: "k", BaseURL: "http://127.0.0.1:9/v1/"}, false, "http://127.0.0.1:9/v1"},
		{"https", apiclient.Config{APIKey: "k", BaseURL: "https://api.example.com/v1"}, false, "https://api.example.com/v1"},
		{"empty key", apiclient.Config{}, true, ""},
		{"blank key", apiclient.Config{APIKey: " \t"}, true, ""},
		{"relative URL", apiclient.Config{APIKey: "k", BaseURL: "/v1"}, true, ""},
		{"no host", apiclient.Config{APIKey: "k", BaseURL: "http:///v1"}, true, ""},
		{"ftp scheme", apiclient.Config{APIKey: "k", BaseURL: "ftp://example.com/v1"}, true, ""},
		{"unparsable", apiclient.Config{APIKey: "k", BaseURL: "http://[::1"}, true, ""},
		{"credentials in URL", apiclient.Config{APIKey: "k", BaseURL: "https://user:pass@example.com/v1"}, true, ""},
		// Plain http sends the bearer key in clear: loopback only, unless allowed.
		{"plain http to a remote host", apiclient.Config{APIKey: "k", BaseURL: "http://api.example.com/v1"}, true, ""},
		{"plain http to a remote address", apiclient.Config{APIKey: "k", BaseURL: "http://10.0.0.7:8090/v1"}, true, ""},
		{"plain http to localhost", apiclient.Config{APIKey: "k", BaseURL: "http://localhost:8090/v1"}, false, "http://localhost:8090/v1"},
		{"plain http to ::1", apiclient.Config{APIKey: "k", BaseURL: "http://[::1]:8090/v1"}, false, "http://[::1]:8090/v1"},
		{"plain http allowed", apiclient.Config{APIKey: "k", BaseURL: "http://standin:8090/v1", AllowInsecureHTTP: true}, false, "http://standin:8090/v1"},
	}
	for _, tt := range tests {
		c, err := apiclient.New(tt.cfg)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: New error = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if err != nil {
			if strings.Contains(err.Error(), "pass") {
				t.Errorf("%s: error %q repeats the URL credentials", tt.name, err)
			}
			continue
		}
		if got := c.BaseURL(); got != tt.wantURL {
			t.Errorf("%s: BaseURL() = %q, want %q", tt.name, got, tt.wantURL)
		}
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusAccepted, http.StatusOK, http.StatusCreated} {
		srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, status, videoObj("G-new1", "queued"))
		})
		c := newClient(t, srv.URL, func(c *apiclient.Config) { c.UserAgent = "test-agent/2" })
		req := apiclient.CreateRequest{
			Model:           "google/veo-3.1-lite",
			Prompt:          "a cat on a skateboard",
			Duration:        8,
			Resolution:      "720p",
			AspectRatio:     "16:9",
			Seed:            ptr(int64(42)),
			GenerateAudio:   ptr(false),
			NegativePrompt:  "blur",
			InputReferences: []json.RawMessage{json.RawMessage(`{"type":"image_url","role":"first_frame","image_url":{"url":"https://example.com/a.png"}}`)},
			ProviderParams:  map[string]any{"personGeneration": "allow_adult"},
			Output:          &apiclient.OutputOptions{Access: "both"},
			Webhook:         &apiclient.WebhookSubscription{URL: "https://example.com/hook", Events: []string{"video.completed", "video.failed"}, Secret: "whsec_abc"},
		}
		v, err := c.Create(context.Background(), req, apiclient.CreateOptions{IdempotencyKey: "job-17"})
		if err != nil {
			t.Fatalf("status %d: Create: %v", status, err)
		}
		if v.ID != "G-new1" || v.Status != apiclient.StatusQueued || v.PollAfter() != 20*time.Second {
			t.Errorf("status %d: got %+v", status, v)
		}
		got := rec.last(t)
		if got.Method != http.MethodPost || got.Path != "/v1/videos" || got.RawQuery != "" {
			t.Errorf("request %s %s?%s", got.Method, got.Path, got.RawQuery)
		}
		for k, want := range map[string]string{
			"Authorization":   "Bearer " + testKey,
			"Idempotency-Key": "job-17",
			"Content-Type":    "application/json",
			"Accept":          "application/json",
			"User-Agent":      "test-agent/2",
		} {
			if h := got.Header.Get(k); h != want {
				t.Errorf("header %s = %q, want %q", k, h, want)
			}
		}
		var body map[string]any
		if err := json.Unmarshal(got.Body, &body); err != nil {
			t.Fatalf("request body %q: %v", got.Body, err)
		}
		wantBody := map[string]any{
			"model":           "google/veo-3.1-lite",
			"prompt":          "a cat on a skateboard",
			"duration":        8.0,
			"resolution":      "720p",
			"aspect_ratio":    "16:9",
			"seed":            42.0,
			"generate_audio":  false,
			"negative_prompt": "blur",
			"input_references": []any{map[string]any{
				"type": "image_url", "role": "first_frame", "image_url": map[string]any{"url": "https://example.com/a.png"},
			}},
			"provider_params": map[string]any{"personGeneration": "allow_adult"},
			"output":          map[string]any{"access": "both"},
			"webhook": map[string]any{
				"url": "https://example.com/hook", "events": []any{"video.completed", "video.failed"}, "secret": "whsec_abc",
			},
		}
		if diff := cmp.Diff(wantBody, body); diff != "" {
			t.Errorf("request body (-want +got):\n%s", diff)
		}
		if rec.count() != 1 {
			t.Errorf("%d requests, want 1", rec.count())
		}
	}
}

func TestCreateWithoutIdempotencyKey(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusAccepted, videoObj("G-1", "queued"))
	})
	c := newClient(t, srv.URL)
	if _, err := c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := rec.last(t)
	if _, ok := got.Header["Idempotency-Key"]; ok {
		t.Errorf("Idempotency-Key sent without being asked for: %q", got.Header.Get("Idempotency-Key"))
	}
	if h := got.Header.Get("User-Agent"); h != "videoworker/1" {
		t.Errorf("default User-Agent = %q", h)
	}
	if string(got.Body) != `{"model":"m","prompt":"p"}` {
		t.Errorf("body = %s", got.Body)
	}
}

func TestCreateVideoIDFallback(t *testing.T) {
	t.Parallel()
	// A cookbook snippet reads job.video_id; accept it when id is absent.
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusAccepted, `{"video_id":"G-vid","status":"pending"}`)
	})
	v, err := newClient(t, srv.URL).Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "G-vid" || v.Status != apiclient.StatusQueued {
		t.Errorf("got %+v", v)
	}
}

func TestCreateAnswerWithoutID(t *testing.T) {
	t.Parallel()
	for _, body := range []string{`{"status":"queued"}`, `{}`, `{"id":""}`, `not json`, ``, `{"id":"G-1"`} {
		srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusAccepted, body)
		})
		_, err := newClient(t, srv.URL).Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{})
		if err == nil {
			t.Fatalf("body %q: Create succeeded", body)
		}
		te := asTransportError(t, err)
		if !te.Sent || !apiclient.InDoubt(err) {
			t.Errorf("body %q: Sent=%v InDoubt=%v, want both true (a job may exist)", body, te.Sent, apiclient.InDoubt(err))
		}
		if rec.count() != 1 {
			t.Errorf("body %q: %d requests, want 1", body, rec.count())
		}
	}
}

func TestCreateValidatesBeforeSending(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusAccepted, videoObj("G-1", "queued"))
	})
	c := newClient(t, srv.URL)
	for _, req := range []apiclient.CreateRequest{{}, {Model: "m"}, {Prompt: "p"}} {
		_, err := c.Create(context.Background(), req, apiclient.CreateOptions{IdempotencyKey: "k"})
		ae := asAPIError(t, err)
		if ae.StatusCode != http.StatusBadRequest || ae.Code != "validation_error" || ae.Documented {
			t.Errorf("%+v: got %+v", req, ae)
		}
		if apiclient.IsRetryable(err) || apiclient.InDoubt(err) {
			t.Errorf("%+v: local validation error is retryable or in doubt", req)
		}
	}
	// A request that cannot be encoded never leaves either.
	_, err := c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p", ProviderParams: map[string]any{"x": math.NaN()}}, apiclient.CreateOptions{})
	if err == nil || apiclient.InDoubt(err) || apiclient.IsRetryable(err) {
		t.Errorf("unencodable request: err %v, in doubt %v", err, apiclient.InDoubt(err))
	}
	if n := rec.count(); n != 0 {
		t.Errorf("%d requests sent for invalid creates, want 0", n)
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, completedVideoJSON)
	})
	v, err := newClient(t, srv.URL).Get(context.Background(), "G-abc123")
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "G-abc123" || v.Status != apiclient.StatusCompleted || v.Asset == nil {
		t.Errorf("got %+v", v)
	}
	got := rec.last(t)
	if got.Method != http.MethodGet || got.EscapedPath != "/v1/videos/G-abc123" {
		t.Errorf("request %s %s", got.Method, got.EscapedPath)
	}
	if got.Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("Authorization = %q", got.Header.Get("Authorization"))
	}
	if ct := got.Header.Get("Content-Type"); ct != "" {
		t.Errorf("GET carries Content-Type %q", ct)
	}
	if len(got.Body) != 0 {
		t.Errorf("GET carries a body %q", got.Body)
	}
}

func TestGetDecodeErrorIsTransportError(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, `{"id":"G-1","status":`)
	})
	_, err := newClient(t, srv.URL, noRetries).Get(context.Background(), "G-1")
	te := asTransportError(t, err)
	if !te.Sent || te.Timeout {
		t.Errorf("got %+v", te)
	}
	if rec.count() != 1 {
		t.Errorf("%d requests", rec.count())
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	const date = "Wed, 10 Jun 2026 20:00:00 GMT"
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", date)
		writeJSON(w, http.StatusOK, `{"object":"list","data":[{"id":"G-2","status":"queued"},{"id":"G-1","status":"cancelled"}],"first_id":"G-2","last_id":"G-1","has_more":true}`)
	})
	c := newClient(t, srv.URL)
	tests := []struct {
		name string
		p    apiclient.ListParams
		want url.Values
	}{
		{"no params", apiclient.ListParams{}, url.Values{}},
		{"limit", apiclient.ListParams{Limit: 200}, url.Values{"limit": {"200"}}},
		{"zero and negative limit omitted", apiclient.ListParams{Limit: -5}, url.Values{}},
		{"one status", apiclient.ListParams{Status: []apiclient.Status{apiclient.StatusFailed}}, url.Values{"status": {"failed"}}},
		{"all", apiclient.ListParams{
			Limit:  10,
			Status: []apiclient.Status{apiclient.StatusQueued, apiclient.StatusProcessing},
			Order:  "asc",
			After:  "G-x&y=z 1",
		}, url.Values{"limit": {"10"}, "status": {"queued,processing"}, "order": {"asc"}, "after": {"G-x&y=z 1"}}},
	}
	for _, tt := range tests {
		l, err := c.List(context.Background(), tt.p)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := rec.last(t)
		if got.Method != http.MethodGet || got.Path != "/v1/videos" {
			t.Errorf("%s: request %s %s", tt.name, got.Method, got.Path)
		}
		q, err := url.ParseQuery(got.RawQuery)
		if err != nil {
			t.Fatalf("%s: query %q: %v", tt.name, got.RawQuery, err)
		}
		if diff := cmp.Diff(tt.want, q); diff != "" {
			t.Errorf("%s: query %q (-want +got):\n%s", tt.name, got.RawQuery, diff)
		}
		if len(tt.want) == 0 && got.RawQuery != "" {
			t.Errorf("%s: raw query %q, want none", tt.name, got.RawQuery)
		}
		if strings.Contains(got.RawQuery, "status=queued&") || strings.Count(got.RawQuery, "status=") > 1 {
			t.Errorf("%s: status repeated instead of comma-joined: %q", tt.name, got.RawQuery)
		}
		want := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)
		if !l.ServerDate.Equal(want) {
			t.Errorf("%s: ServerDate = %v, want %v", tt.name, l.ServerDate, want)
		}
		if len(l.Data) != 2 || l.Data[1].Status != apiclient.StatusCancelled || !l.HasMore || l.FirstID != "G-2" || l.LastID != "G-1" || l.Object != "list" {
			t.Errorf("%s: got %+v", tt.name, l)
		}
	}
}

func TestListServerDateAbsentOrBad(t *testing.T) {
	t.Parallel()
	for _, date := range []string{"", "yesterday"} {
		srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			// An explicitly empty Date header stops net/http adding one.
			w.Header()["Date"] = []string{date}
			if date == "" {
				w.Header()["Date"] = nil
			}
			writeJSON(w, http.StatusOK, `{"object":"list","data":[]}`)
		})
		l, err := newClient(t, srv.URL).List(context.Background(), apiclient.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		if !l.ServerDate.IsZero() {
			t.Errorf("Date %q: ServerDate = %v, want zero", date, l.ServerDate)
		}
	}
}

func TestDownloadURL(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, `{"download_url":"https://api.phaseo.app/v1/videos/G-1/content?index=1&download_token=t&download_sig=s&expires_at=1781122600","expires_at":1781122600}`)
	})
	c := newClient(t, srv.URL)
	l, err := c.DownloadURL(context.Background(), "G-1", apiclient.DownloadURLRequest{Index: 1, TTLSeconds: 600, Disposition: "inline"})
	if err != nil {
		t.Fatal(err)
	}
	want := &apiclient.DownloadLink{URL: "https://api.phaseo.app/v1/videos/G-1/content?index=1&download_token=t&download_sig=s&expires_at=1781122600", ExpiresAt: 1781122600}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	got := rec.last(t)
	if got.Method != http.MethodPost || got.EscapedPath != "/v1/videos/G-1/download_url" {
		t.Errorf("request %s %s", got.Method, got.EscapedPath)
	}
	if string(got.Body) != `{"index":1,"ttl_seconds":600,"disposition":"inline"}` || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("body %s content-type %q", got.Body, got.Header.Get("Content-Type"))
	}
	if _, err := c.DownloadURL(context.Background(), "G-1", apiclient.DownloadURLRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(t); string(got.Body) != `{}` {
		t.Errorf("default body %s", got.Body)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, `{"id":"G-1","object":"video.deleted","deleted":true}`)
	})
	d, err := newClient(t, srv.URL).Delete(context.Background(), "G-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&apiclient.Deleted{ID: "G-1", Object: "video.deleted", Deleted: true}, d); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := rec.last(t); got.Method != http.MethodDelete || got.EscapedPath != "/v1/videos/G-1" || len(got.Body) != 0 {
		t.Errorf("request %s %s body %q", got.Method, got.EscapedPath, got.Body)
	}
}

func TestDeleteNonTerminal(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b := apiErr(400, "validation_error", "video_delete_requires_terminal_status", "job is not terminal")
		b["status"] = "processing"
		writeJSON(w, http.StatusBadRequest, b)
	})
	_, err := newClient(t, srv.URL).Delete(context.Background(), "G-1")
	ae := asAPIError(t, err)
	if ae.StatusCode != 400 || ae.Reason != "video_delete_requires_terminal_status" || ae.Retryable() {
		t.Errorf("got %+v", ae)
	}
	if rec.count() != 1 {
		t.Errorf("a 400 was retried: %d requests", rec.count())
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	t.Run("501 not retried", func(t *testing.T) {
		t.Parallel()
		srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotImplemented, apiErr(501, "not_implemented_yet", "video_cancellation_disabled", "cancel is not available"))
		})
		_, err := newClient(t, srv.URL).Cancel(context.Background(), "G-1")
		ae := asAPIError(t, err)
		if ae.StatusCode != 501 || ae.Code != "not_implemented_yet" || ae.Reason != "video_cancellation_disabled" {
			t.Errorf("got %+v", ae)
		}
		if apiclient.IsRetryable(err) || apiclient.InDoubt(err) {
			t.Errorf("501 is retryable (%v) or in doubt (%v)", apiclient.IsRetryable(err), apiclient.InDoubt(err))
		}
		got := rec.last(t)
		if got.Method != http.MethodPost || got.EscapedPath != "/v1/videos/G-1/cancel" || string(got.Body) != "{}" {
			t.Errorf("request %s %s %s", got.Method, got.EscapedPath, got.Body)
		}
		if rec.count() != 1 {
			t.Errorf("%d requests", rec.count())
		}
	})
	t.Run("503 not retried", func(t *testing.T) {
		t.Parallel()
		srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusServiceUnavailable, apiErr(503, "gateway_error", "", "busy"))
		})
		_, err := newClient(t, srv.URL).Cancel(context.Background(), "G-1")
		if !apiclient.IsRetryable(err) {
			t.Errorf("503 not retryable: %v", err)
		}
		if rec.count() != 1 {
			t.Errorf("cancel was retried by the client: %d requests", rec.count())
		}
	})
	t.Run("200", func(t *testing.T) {
		t.Parallel()
		srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, videoObj("G-1", "canceled"))
		})
		v, err := newClient(t, srv.URL).Cancel(context.Background(), "G-1")
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != apiclient.StatusCancelled || !v.Status.Terminal() {
			t.Errorf("got %+v", v)
		}
	})
}

func TestPathEscaping(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/content"):
			w.Write([]byte("x"))
		case strings.HasSuffix(r.URL.Path, "/download_url"):
			writeJSON(w, http.StatusOK, `{"download_url":"https://x","expires_at":1}`)
		case r.Method == http.MethodDelete:
			writeJSON(w, http.StatusOK, `{"id":"x","deleted":true}`)
		default:
			writeJSON(w, http.StatusOK, videoObj("x", "queued"))
		}
	})
	c := newClient(t, srv.URL)
	ctx := context.Background()
	calls := []struct {
		name   string
		suffix string
		do     func(id string) error
	}{
		{"Get", "", func(id string) error { _, err := c.Get(ctx, id); return err }},
		{"Delete", "", func(id string) error { _, err := c.Delete(ctx, id); return err }},
		{"Cancel", "/cancel", func(id string) error { _, err := c.Cancel(ctx, id); return err }},
		{"DownloadURL", "/download_url", func(id string) error {
			_, err := c.DownloadURL(ctx, id, apiclient.DownloadURLRequest{})
			return err
		}},
		{"Content", "/content", func(id string) error {
			ct, err := c.Content(ctx, id, 0)
			if err == nil {
				ct.Body.Close()
			}
			return err
		}},
	}
	ids := []string{"G-abc123", "a/b", "a b", "a?b#c", "50%", "a%2Fb", "ü-é", "x+y&z=1", "../admin"}
	for _, call := range calls {
		for _, id := range ids {
			if err := call.do(id); err != nil {
				t.Errorf("%s(%q): %v", call.name, id, err)
				continue
			}
			got := rec.last(t)
			wantEscaped := "/v1/videos/" + url.PathEscape(id) + call.suffix
			if got.EscapedPath != wantEscaped {
				t.Errorf("%s(%q): server saw path %q, want %q", call.name, id, got.EscapedPath, wantEscaped)
			}
			if wantPath := "/v1/videos/" + id + call.suffix; got.Path != wantPath {
				t.Errorf("%s(%q): decoded path %q, want %q", call.name, id, got.Path, wantPath)
			}
			if got.RawQuery != "" {
				t.Errorf("%s(%q): id leaked into the query %q", call.name, id, got.RawQuery)
			}
		}
	}
}

func TestBaseURLWithPathPrefix(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	c, err := apiclient.New(apiclient.Config{BaseURL: srv.URL + "/proxy/ai stats/v1/", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), "a/b"); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(t).EscapedPath; got != "/proxy/ai%20stats/v1/videos/a%2Fb" {
		t.Errorf("path %q", got)
	}
	if _, err := c.Get(context.Background(), "G-1"); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(t).EscapedPath; got != "/proxy/ai%20stats/v1/videos/G-1" {
		t.Errorf("path %q", got)
	}
}

func TestRedirectsNotFollowed(t *testing.T) {
	t.Parallel()
	target, targetRec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/v1/videos/G-1?download_sig=abc", code)
		})
		c := newClient(t, srv.URL)
		ctx := context.Background()
		_, errGet := c.Get(ctx, "G-1")
		_, errCreate := c.Create(ctx, apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{IdempotencyKey: "k"})
		_, errContent := c.Content(ctx, "G-1", 0)
		for name, err := range map[string]error{"get": errGet, "create": errCreate, "content": errContent} {
			ae := asAPIError(t, err)
			if ae.StatusCode != code {
				t.Errorf("%d %s: StatusCode = %d", code, name, ae.StatusCode)
			}
			if apiclient.IsRetryable(err) || apiclient.InDoubt(err) {
				t.Errorf("%d %s: retryable=%v in doubt=%v", code, name, apiclient.IsRetryable(err), apiclient.InDoubt(err))
			}
			if strings.Contains(err.Error(), "download_sig") || strings.Contains(err.Error(), target.URL) {
				t.Errorf("%d %s: error repeats the Location: %v", code, name, err)
			}
		}
		if n := rec.count(); n != 3 {
			t.Errorf("%d: %d requests to the first server, want 3 (no retries of a 3xx)", code, n)
		}
	}
	if n := targetRec.count(); n != 0 {
		for _, r := range targetRec.all() {
			t.Logf("redirect target got %s %s with Authorization %q", r.Method, r.Path, r.Header.Get("Authorization"))
		}
		t.Errorf("the redirect target received %d requests, want 0", n)
	}
}

func TestCallerHTTPClientRedirectsNotFollowed(t *testing.T) {
	t.Parallel()
	target, targetRec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/v1/videos/G-1", http.StatusFound)
	})
	followed := 0
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { followed++; return nil }}
	c := newClient(t, srv.URL, func(cfg *apiclient.Config) { cfg.HTTPClient = hc })
	if _, err := c.Get(context.Background(), "G-1"); err == nil {
		t.Fatal("redirect followed with a caller-supplied http.Client")
	}
	if followed != 0 || targetRec.count() != 0 {
		t.Errorf("redirect followed: hook calls %d, target requests %d", followed, targetRec.count())
	}
	if hc.CheckRedirect == nil {
		t.Error("the caller's http.Client was modified")
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, videoObj(strings.TrimPrefix(r.URL.Path, "/v1/videos/"), "processing"))
	})
	c := newClient(t, srv.URL)
	errs := make(chan error, 32)
	for i := range 32 {
		go func() {
			id := "G-" + string(rune('a'+i%26))
			v, err := c.Get(context.Background(), id)
			if err == nil && v.ID != id {
				err = errors.New("wrong id " + v.ID)
			}
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if rec.count() != 32 {
		t.Errorf("%d requests", rec.count())
	}
}
