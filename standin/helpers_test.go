package standin_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/standin"
)

const testKey = "aistats_v1_sk_test_s3cr3t"

var epoch = time.Date(2026, 6, 10, 20, 0, 0, 123e6, time.UTC)

// fakeClock is a concurrency-safe settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type bundle struct {
	srv   *standin.Server
	ts    *httptest.Server
	clock *fakeClock
	cfg   standin.Config
}

// setup starts a stand-in over real HTTP with a fake clock at epoch. An
// empty cfg.APIKey becomes testKey.
func setup(t *testing.T, cfg standin.Config) *bundle {
	t.Helper()
	clock := &fakeClock{t: epoch}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	srv := standin.New(cfg, nil)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &bundle{srv: srv, ts: ts, clock: clock, cfg: cfg}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// obj decodes the body as a JSON object.
func (r response) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d: body is not a JSON object: %v\n%s", r.status, err, r.body)
	}
	return m
}

// do sends a request with the test bearer. body is nil, a string (sent
// as is) or a value to marshal. hdr holds header name/value pairs; an
// Authorization value of "" removes the bearer.
func (b *bundle) do(t *testing.T, method, path string, body any, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	url := path
	if !strings.HasPrefix(path, "http") {
		url = b.ts.URL + path
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: raw}
}

// create posts a valid job (extra members merged in) and returns the
// video object.
func (b *bundle) create(t *testing.T, extra map[string]any, hdr ...string) map[string]any {
	t.Helper()
	body := map[string]any{"model": "google/veo-3.1-lite", "prompt": "a red fox in snow"}
	for k, v := range extra {
		body[k] = v
	}
	r := b.do(t, http.MethodPost, "/v1/videos", body, hdr...)
	if r.status != http.StatusAccepted {
		t.Fatalf("create: status %d: %s", r.status, r.body)
	}
	return r.obj(t)
}

func (b *bundle) get(t *testing.T, id string) map[string]any {
	t.Helper()
	r := b.do(t, http.MethodGet, "/v1/videos/"+id, nil)
	if r.status != http.StatusOK {
		t.Fatalf("get %s: status %d: %s", id, r.status, r.body)
	}
	return r.obj(t)
}

func (b *bundle) complete(t *testing.T, id string) {
	t.Helper()
	if err := b.srv.Complete(id); err != nil {
		t.Fatal(err)
	}
}

// at walks nested maps and arrays: at(m, "asset", "sha256"),
// at(m, "outputs", 0, "index").
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func want[T comparable](t *testing.T, what string, got any, exp T) {
	t.Helper()
	g, ok := got.(T)
	if !ok || g != exp {
		t.Errorf("%s = %#v, want %#v", what, got, exp)
	}
}

func wantDeep(t *testing.T, what string, got, exp any) {
	t.Helper()
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("%s = %#v, want %#v", what, got, exp)
	}
}

// wantError checks the flat error body of reference section 8.
func wantError(t *testing.T, r response, status int, code, reason string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	m := r.obj(t)
	want(t, "error", m["error"], code)
	want(t, "status_code", m["status_code"], float64(status))
	for _, k := range []string{"error_type", "error_origin", "generation_id", "description"} {
		if s, _ := m[k].(string); s == "" {
			t.Errorf("error body lacks %s: %s", k, r.body)
		}
	}
	if reason != "" {
		want(t, "reason", m["reason"], reason)
	}
	return m
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ids(t *testing.T, r response) []string {
	t.Helper()
	var out []string
	for _, v := range r.obj(t)["data"].([]any) {
		out = append(out, v.(map[string]any)["id"].(string))
	}
	return out
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}
