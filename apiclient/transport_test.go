package apiclient_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// hangUpAfterPOST answers GETs with a video and, for a POST, reads the
// whole request and then drops the connection without a byte of answer:
// the worst case for a create, whose job may now exist.
func hangUpAfterPOST(posts *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			writeJSON(w, http.StatusOK, videoObj("G-warm", "queued"))
			return
		}
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	}
}

// connTrace records, per attempt, whether net/http reused a pooled
// connection.
type connTrace struct {
	mu     sync.Mutex
	reused []bool
}

func (ct *connTrace) ctx(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		ct.mu.Lock()
		ct.reused = append(ct.reused, i.Reused)
		ct.mu.Unlock()
	}})
}

func (ct *connTrace) get() []bool {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return append([]bool(nil), ct.reused...)
}

// TestCreateNotReplayedAfterHangUp guards the noReplay logic in send:
// net/http resends a POST that carries an Idempotency-Key when a reused
// connection dies before the answer; the API does not honour the key, so
// that resend could start a second paid job.
func TestCreateNotReplayedAfterHangUp(t *testing.T) {
	t.Parallel()
	var posts atomic.Int32
	srv, _ := newServer(t, hangUpAfterPOST(&posts))
	c := newClient(t, srv.URL)
	ctx := context.Background()
	// Warm the pool so that the create goes out on a reused connection:
	// net/http only replays on those.
	if _, err := c.Get(ctx, "G-warm"); err != nil {
		t.Fatal(err)
	}
	var trace connTrace
	_, err := c.Create(trace.ctx(ctx), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{IdempotencyKey: "idem-1"})
	if err == nil {
		t.Fatal("Create succeeded")
	}
	if got := trace.get(); len(got) == 0 || !got[0] {
		t.Fatalf("create did not go out on a reused connection (GotConn reused=%v); the test proves nothing", got)
	}
	if n := posts.Load(); n != 1 {
		t.Fatalf("the server received %d creates, want exactly 1 (net/http replayed the POST)", n)
	}
	te := asTransportError(t, err)
	if !te.Sent || te.Timeout {
		t.Errorf("got %+v, want Sent and no timeout", te)
	}
	if !apiclient.InDoubt(err) {
		t.Error("InDoubt = false after the connection dropped with the create on the wire")
	}
	if !apiclient.IsRetryable(err) {
		t.Error("a transport error is retryable (InDoubt tells the caller to reconcile first)")
	}

	// Control: with a plain http.Client the same exchange is replayed. If
	// this stops holding, net/http changed and the check above lost its
	// teeth (but the client is not wrong).
	var controlPosts atomic.Int32
	control, _ := newServer(t, hangUpAfterPOST(&controlPosts))
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(hc.CloseIdleConnections)
	resp, err := hc.Get(control.URL + "/v1/videos/G-warm")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodPost, control.URL+"/v1/videos", bytes.NewReader([]byte(`{"model":"m","prompt":"p"}`)))
	req.Header.Set("Idempotency-Key", "idem-1")
	if _, err := hc.Do(req); err == nil {
		t.Fatal("control: POST succeeded")
	}
	if n := controlPosts.Load(); n != 2 {
		t.Errorf("control: a plain client sent the POST %d times, want 2 (a replay)", n)
	}
}

func TestCreateHangUpOnFreshConnection(t *testing.T) {
	t.Parallel()
	var posts atomic.Int32
	srv, _ := newServer(t, hangUpAfterPOST(&posts))
	_, err := newClient(t, srv.URL).Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{IdempotencyKey: "idem-2"})
	te := asTransportError(t, err)
	if !te.Sent || !apiclient.InDoubt(err) {
		t.Errorf("got %+v", te)
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("%d creates arrived", n)
	}
}

func TestReadsRetriedAfterHangUp(t *testing.T) {
	t.Parallel()
	// A GET whose connection drops is retried by the client (a transport
	// error is retryable for idempotent reads).
	var calls atomic.Int32
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	if _, err := newClient(t, srv.URL).Get(context.Background(), "G-1"); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests", n)
	}
}

func TestDialFailureNotSent(t *testing.T) {
	t.Parallel()
	c := newClient(t, closedURL(t))
	_, err := c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{IdempotencyKey: "k"})
	te := asTransportError(t, err)
	if te.Sent || te.Timeout {
		t.Errorf("got %+v, want Sent=false Timeout=false", te)
	}
	if apiclient.InDoubt(err) {
		t.Error("InDoubt = true for a create that never left")
	}
	if !apiclient.IsRetryable(err) {
		t.Error("dial failure not retryable")
	}
	if te.Op != "create video" {
		t.Errorf("Op = %q", te.Op)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		waitOrDone(r, 3*time.Second)
	})
	c := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Timeout = 100 * time.Millisecond })
	calls := map[string]func() error{
		"get": func() error { _, err := c.Get(context.Background(), "G-1"); return err },
		"create": func() error {
			_, err := c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{})
			return err
		},
		"list": func() error { _, err := c.List(context.Background(), apiclient.ListParams{}); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := call()
			if d := time.Since(start); d > time.Second {
				t.Errorf("returned after %v with a 100 ms timeout", d)
			}
			te := asTransportError(t, err)
			if !te.Timeout || !te.Sent {
				t.Errorf("got %+v, want Timeout and Sent", te)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
			}
			if name == "create" && !apiclient.InDoubt(err) {
				t.Error("a timed-out create is not in doubt")
			}
		})
	}
	t.Cleanup(func() {
		if n := rec.count(); n != 3 {
			t.Errorf("%d requests, want 3", n)
		}
	})
}

func TestTimeoutWhileReadingJSONBody(t *testing.T) {
	t.Parallel()
	// Headers arrive at once, the body stalls: Timeout bounds the whole
	// JSON call, not only the headers.
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"id":"G-1",`)
		w.(http.Flusher).Flush()
		waitOrDone(r, 3*time.Second)
	})
	c := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Timeout = 100 * time.Millisecond })
	start := time.Now()
	_, err := c.Get(context.Background(), "G-1")
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned after %v", d)
	}
	te := asTransportError(t, err)
	if !te.Timeout || !te.Sent {
		t.Errorf("got %+v", te)
	}
}

func TestTimedOutReadsAreRetried(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			waitOrDone(r, 3*time.Second)
			return
		}
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	c := newClient(t, srv.URL, func(c *apiclient.Config) { c.Timeout = 100 * time.Millisecond })
	if _, err := c.Get(context.Background(), "G-1"); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests", n)
	}
}

func TestCallerDeadlineShorterThanTimeout(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		waitOrDone(r, 3*time.Second)
	})
	c := newClient(t, srv.URL) // 2 s timeout
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(ctx, "G-1")
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned after %v", d)
	}
	if te := asTransportError(t, err); !te.Timeout {
		t.Errorf("got %+v", te)
	}
}

func TestCustomHTTPClientIsUsed(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, videoObj("G-1", "queued"))
	})
	var used atomic.Int32
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := newClient(t, srv.URL, func(c *apiclient.Config) { c.HTTPClient = hc })
	if _, err := c.Get(context.Background(), "G-1"); err != nil {
		t.Fatal(err)
	}
	if used.Load() != 1 {
		t.Errorf("the configured transport served %d requests", used.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
