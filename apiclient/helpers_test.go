package apiclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// testKey is the API key every test client uses. Tests assert that it never
// shows up in error text or logs.
const testKey = "aistats_v1_sk_kid0123_Zq9SecretPartOfTheKey"

// recorded is one request as the test server saw it.
type recorded struct {
	Method      string
	Path        string // decoded
	EscapedPath string // as sent
	RawQuery    string
	Header      http.Header
	Body        []byte
}

// recorder keeps every request a test server received.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func (r *recorder) last(t *testing.T) recorded {
	t.Helper()
	all := r.all()
	if len(all) == 0 {
		t.Fatal("the server received no request")
	}
	return all[len(all)-1]
}

// newServer starts a real HTTP server whose handler h runs after the request
// (including its whole body) has been recorded; the body is replayed to h.
func newServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, recorded{
			Method:      r.Method,
			Path:        r.URL.Path,
			EscapedPath: r.URL.EscapedPath(),
			RawQuery:    r.URL.RawQuery,
			Header:      r.Header.Clone(),
			Body:        body,
		})
		rec.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

// newClient returns a client of srv's /v1 root with test-friendly defaults
// (2 s timeout); opts adjust the config.
func newClient(t *testing.T, baseURL string, opts ...func(*apiclient.Config)) *apiclient.Client {
	t.Helper()
	cfg := apiclient.Config{
		BaseURL: baseURL + "/v1",
		APIKey:  testKey,
		Timeout: 2 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func noRetries(c *apiclient.Config) { c.ReadRetries = -1 }

// closedURL returns the URL of a local port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	switch b := v.(type) {
	case string:
		io.WriteString(w, b)
	case []byte:
		w.Write(b)
	default:
		json.NewEncoder(w).Encode(v)
	}
}

// apiErr is the documented flat error body of reference section 8.
func apiErr(status int, code, reason, description string) map[string]any {
	m := map[string]any{
		"error":         code,
		"status_code":   status,
		"error_type":    "user",
		"error_origin":  "user",
		"generation_id": "G-err123",
		"description":   description,
	}
	if status >= 500 {
		m["error_type"], m["error_origin"] = "system", "gateway"
	}
	if reason != "" {
		m["reason"] = reason
	}
	return m
}

// videoObj is a minimal video object as POST /videos returns it.
func videoObj(id, status string) map[string]any {
	return map[string]any{
		"id":                 id,
		"object":             "video",
		"status":             status,
		"polling_url":        "https://api.phaseo.app/v1/videos/" + id,
		"provider":           "google",
		"model":              "google/veo-3.1-lite",
		"poll_after_seconds": 20,
		"created_at":         "2026-06-10T20:00:00.000Z",
	}
}

func asAPIError(t *testing.T, err error) *apiclient.APIError {
	t.Helper()
	var ae *apiclient.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return ae
}

func asTransportError(t *testing.T, err error) *apiclient.TransportError {
	t.Helper()
	var te *apiclient.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TransportError", err, err)
	}
	return te
}

func ptr[T any](v T) *T { return &v }

// waitOrDone blocks until the request's context ends or d passes; stalled
// handlers use it so that the server can shut down.
func waitOrDone(r *http.Request, d time.Duration) {
	select {
	case <-r.Context().Done():
	case <-time.After(d):
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

func (b *syncBuffer) String() string { return string(b.Bytes()) }

func debugJSONLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hookHandler is a slog.Handler that calls fn for every record.
type hookHandler struct{ fn func(slog.Record) }

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *hookHandler) Handle(_ context.Context, r slog.Record) error {
	h.fn(r)
	return nil
}
func (h *hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *hookHandler) WithGroup(string) slog.Handler      { return h }
