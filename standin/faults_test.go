package standin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/standin"
)

// rawDo sends one request on the given client and returns the response
// with its body unread, or the transport error.
func rawDo(t *testing.T, client *http.Client, ctx context.Context, method, url, body string, hdr ...string) (*http.Response, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := client.Do(req)
	if err == nil {
		t.Cleanup(func() { res.Body.Close() })
	}
	return res, err
}

// freshClient never reuses connections, so a dropped response is an
// error rather than a transparent retry (see TestDropReplayedByTransport).
func freshClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

const createBody = `{"model":"google/veo-3.1-lite","prompt":"p"}`

func TestFaultServerError(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{Faults: standin.Faults{ServerErrorRate: 1}})
	seen := map[int]bool{}
	for range 30 {
		r := b.do(t, http.MethodPost, "/v1/videos", createBody)
		if r.status != 500 && r.status != 502 && r.status != 503 {
			t.Fatalf("status %d", r.status)
		}
		seen[r.status] = true
		m := wantError(t, r, r.status, map[bool]string{true: "gateway_error", false: "upstream_error"}[r.status == 500], "standin_injected_fault")
		want(t, "error_type", m["error_type"], "system")
	}
	if len(seen) != 3 {
		t.Errorf("statuses seen: %v, want 500, 502 and 503", seen)
	}
	st := b.srv.Stats()
	if st.CreateCalls != 30 || st.JobsCreated != 0 || st.Faults["5xx"] != 30 {
		t.Errorf("stats = %+v", st)
	}
}

func TestFaultRateLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		retryAfter time.Duration
		header     string
	}{{0, "1"}, {300 * time.Millisecond, "1"}, {1500 * time.Millisecond, "2"}, {7 * time.Second, "7"}} {
		b := setup(t, standin.Config{Faults: standin.Faults{RateLimitRate: 1, RetryAfter: tc.retryAfter}})
		r := b.do(t, http.MethodPost, "/v1/videos", createBody)
		m := wantError(t, r, http.StatusTooManyRequests, "key_limit_exceeded", "")
		want(t, "error_origin", m["error_origin"], "gateway")
		want(t, "Retry-After for "+tc.retryAfter.String(), r.header.Get("Retry-After"), tc.header)
		if st := b.srv.Stats(); st.JobsCreated != 0 || st.Faults["429"] != 1 {
			t.Errorf("stats = %+v", st)
		}
	}
}

func TestFaultDrop(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{Faults: standin.Faults{DropRate: 1, Endpoints: []string{"create"}}})
	_, err := rawDo(t, freshClient(), t.Context(), http.MethodPost, b.ts.URL+"/v1/videos", createBody)
	if err == nil {
		t.Fatal("dropped create: no client error")
	}
	st := b.srv.Stats()
	if st.CreateCalls != 1 || st.JobsCreated != 1 || st.Faults["drop"] != 1 {
		t.Errorf("stats = %+v", st)
	}
	r := b.do(t, http.MethodGet, "/v1/videos", nil) // list is not in scope
	if got := ids(t, r); len(got) != 1 {
		t.Errorf("the dropped create's job is not listed: %v", got)
	}
}

// TestDropReplayedByTransport records a net/http behaviour clients must
// know: a POST carrying Idempotency-Key (with a rewindable body) is
// replayable to http.Transport, so when the server closes a reused
// connection without answering, the transport silently sends it again.
// The stand-in does not honour the key, so two jobs exist.
func TestDropReplayedByTransport(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{Faults: standin.Faults{DropRate: 1, Endpoints: []string{"create"}}})
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	res, err := rawDo(t, client, t.Context(), http.MethodGet, b.ts.URL+"/v1/videos/models", "")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close() // the connection is now idle and will be reused

	if _, err := rawDo(t, client, t.Context(), http.MethodPost, b.ts.URL+"/v1/videos", createBody, "Idempotency-Key", "k-1"); err == nil {
		t.Fatal("no client error")
	}
	st := b.srv.Stats()
	if st.CreateCalls != 2 || st.JobsByIdempotencyKey["k-1"] != 2 {
		t.Errorf("one client call reached the server %d times, created %v", st.CreateCalls, st.JobsByIdempotencyKey)
	}
}

func TestFaultTruncate(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{ContentSize: 200_000, Faults: standin.Faults{TruncateRate: 1}})
	id := b.create(t, nil)["id"].(string)
	res, err := rawDo(t, freshClient(), t.Context(), http.MethodGet, b.ts.URL+"/v1/videos/"+id+"/content", "")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.ContentLength != 200_000 {
		t.Fatalf("status %d, Content-Length %d", res.StatusCode, res.ContentLength)
	}
	got, err := io.ReadAll(res.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read error = %v, want unexpected EOF", err)
	}
	if len(got) != 100_000 {
		t.Errorf("read %d bytes, want the first half", len(got))
	}
	st := b.srv.Stats()
	if st.Faults["truncate"] != 1 || st.BytesServed != 100_000 {
		t.Errorf("stats = %+v", st)
	}
	// Truncation only hits successful content responses.
	b2 := setup(t, standin.Config{QueuedFor: time.Hour, Faults: standin.Faults{TruncateRate: 1}})
	id = b2.create(t, nil)["id"].(string)
	wantError(t, b2.do(t, http.MethodGet, "/v1/videos/"+id+"/content", nil), http.StatusConflict, "not_ready", "video_not_ready")
	if n := b2.srv.Stats().Faults["truncate"]; n != 0 {
		t.Errorf("truncate counted on a 409: %d", n)
	}
}

func TestFaultScopeAndSetFaults(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{Faults: standin.Faults{ServerErrorRate: 1, Endpoints: []string{"get"}}})
	id := b.create(t, nil)["id"].(string)
	if r := b.do(t, http.MethodGet, "/v1/videos/"+id, nil); r.status < 500 {
		t.Errorf("get in scope: %d", r.status)
	}
	if r := b.do(t, http.MethodGet, "/v1/videos", nil); r.status != http.StatusOK {
		t.Errorf("list out of scope: %d", r.status)
	}
	b.srv.SetFaults(standin.Faults{})
	b.get(t, id)
	b.srv.SetFaults(standin.Faults{RateLimitRate: 1})
	wantError(t, b.do(t, http.MethodGet, "/v1/videos/models", nil), http.StatusTooManyRequests, "key_limit_exceeded", "")
	// Faults come before authentication.
	wantError(t, b.do(t, http.MethodGet, "/v1/videos", nil, "Authorization", ""), http.StatusTooManyRequests, "key_limit_exceeded", "")
	if st := b.srv.Stats(); st.Faults["5xx"] != 1 || st.Faults["429"] != 2 {
		t.Errorf("Faults = %v", st.Faults)
	}
}

func TestFaultLatencyRespectsContext(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{Faults: standin.Faults{Latency: time.Hour}})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := rawDo(t, freshClient(), ctx, http.MethodPost, b.ts.URL+"/v1/videos", createBody); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	b.ts.Close() // returns only once the handler gave up waiting
	if st := b.srv.Stats(); st.CreateCalls != 1 || st.JobsCreated != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestFaultsSeeded checks that the fault sequence depends only on the seed.
func TestFaultsSeeded(t *testing.T) {
	t.Parallel()
	run := func(seed int64) string {
		b := setup(t, standin.Config{Seed: seed, Faults: standin.Faults{ServerErrorRate: 0.3, RateLimitRate: 0.3}})
		var sb strings.Builder
		for range 40 {
			sb.WriteString(http.StatusText(b.do(t, http.MethodGet, "/v1/videos/models", nil).status)[:1])
		}
		return sb.String()
	}
	a, again, other := run(7), run(7), run(8)
	if a != again {
		t.Errorf("same seed, different faults:\n%s\n%s", a, again)
	}
	if a == other {
		t.Errorf("seeds 7 and 8 gave the same faults: %s", a)
	}
	if !strings.Contains(a, "O") || !strings.Contains(a, "T") {
		t.Errorf("40 draws at 30%%/30%%: %s", a)
	}
}
