package apiclient_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

func TestContent(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Cache-Control", "private, no-store")
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		w.Write(payload)
	})
	c := newClient(t, srv.URL)
	tests := []struct {
		index     int
		wantQuery string
	}{
		{0, ""},
		{-1, ""},
		{1, "index=1"},
		{12, "index=12"},
	}
	for _, tt := range tests {
		ct, err := c.Content(context.Background(), "G-1", tt.index)
		if err != nil {
			t.Fatalf("index %d: %v", tt.index, err)
		}
		got, err := io.ReadAll(ct.Body)
		if err != nil {
			t.Fatalf("index %d: read: %v", tt.index, err)
		}
		if err := ct.Body.Close(); err != nil {
			t.Errorf("index %d: Close: %v", tt.index, err)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("index %d: read %d bytes, want the %d-byte payload", tt.index, len(got), len(payload))
		}
		if ct.Length != int64(len(payload)) || ct.ContentType != "video/mp4" {
			t.Errorf("index %d: Length %d ContentType %q", tt.index, ct.Length, ct.ContentType)
		}
		r := rec.last(t)
		if r.Method != http.MethodGet || r.EscapedPath != "/v1/videos/G-1/content" || r.RawQuery != tt.wantQuery {
			t.Errorf("index %d: request %s %s?%s, want query %q", tt.index, r.Method, r.EscapedPath, r.RawQuery, tt.wantQuery)
		}
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			t.Errorf("index %d: no bearer on the content request", tt.index)
		}
	}
}

func TestContentUnknownLength(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		for range 3 {
			io.WriteString(w, "chunk")
			w.(http.Flusher).Flush()
		}
	})
	ct, err := newClient(t, srv.URL).Content(context.Background(), "G-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Body.Close()
	b, err := io.ReadAll(ct.Body)
	if err != nil || string(b) != "chunkchunkchunk" {
		t.Errorf("read %q, %v", b, err)
	}
	if ct.Length != -1 {
		t.Errorf("Length = %d, want -1 for a chunked body", ct.Length)
	}
}

func TestContentErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status   int
		reason   string
		notReady bool
		retry    bool
	}{
		{409, "video_not_ready", true, true},
		{409, "video_submission_pending", true, true},
		{409, "video_generation_failed", false, false},
		{409, "video_cancelled", false, false},
		{404, "video_deleted", false, false},
		{400, "video_content_unsupported", false, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status, tt.reason), func(t *testing.T) {
			t.Parallel()
			srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, tt.status, apiErr(tt.status, "x", tt.reason, "desc"))
			})
			ct, err := newClient(t, srv.URL).Content(context.Background(), "G-1", 0)
			if err == nil {
				ct.Body.Close()
				t.Fatal("no error")
			}
			ae := asAPIError(t, err)
			if ae.StatusCode != tt.status || ae.Reason != tt.reason || ae.NotReady() != tt.notReady || ae.Retryable() != tt.retry {
				t.Errorf("got %+v (NotReady %v Retryable %v)", ae, ae.NotReady(), ae.Retryable())
			}
			if ae.Op != "content G-1" {
				t.Errorf("Op = %q", ae.Op)
			}
			if rec.count() != 1 {
				t.Errorf("%d requests", rec.count())
			}
		})
	}
}

func TestContentHeaderTimeout(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		waitOrDone(r, 3*time.Second)
	})
	c := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Timeout = 100 * time.Millisecond })
	start := time.Now()
	ct, err := c.Content(context.Background(), "G-1", 0)
	if err == nil {
		ct.Body.Close()
		t.Fatal("no error")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned after %v", d)
	}
	te := asTransportError(t, err)
	if !te.Timeout || !te.Sent {
		t.Errorf("got %+v, want Timeout and Sent", te)
	}
}

func TestContentSlowBodyNotCutByTimeout(t *testing.T) {
	t.Parallel()
	const chunks = 8
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for i := range chunks {
			fmt.Fprintf(w, "chunk%d;", i)
			w.(http.Flusher).Flush()
			time.Sleep(40 * time.Millisecond) // 320 ms in all, Timeout is 100 ms
		}
	})
	c := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) {
		c.Timeout = 100 * time.Millisecond
		c.ContentIdleTimeout = 2 * time.Second
	})
	start := time.Now()
	ct, err := c.Content(context.Background(), "G-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Body.Close()
	b, err := io.ReadAll(ct.Body)
	if err != nil {
		t.Fatalf("slow stream cut after %v: %v", time.Since(start), err)
	}
	if strings.Count(string(b), "chunk") != chunks {
		t.Errorf("read %q", b)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("the stream took only %v; it did not outlive Timeout", d)
	}
}

func TestContentStalledBodyAborted(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "first bytes")
		w.(http.Flusher).Flush()
		waitOrDone(r, 5*time.Second)
	})
	c := newClient(t, srv.URL, func(c *apiclient.Config) {
		c.Timeout = 2 * time.Second
		c.ContentIdleTimeout = 150 * time.Millisecond
	})
	ct, err := c.Content(context.Background(), "G-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Body.Close()
	start := time.Now()
	b, err := io.ReadAll(ct.Body)
	d := time.Since(start)
	if err == nil {
		t.Fatalf("a stalled stream ended without error after %v (read %q)", d, b)
	}
	if string(b) != "first bytes" {
		t.Errorf("read %q before the stall", b)
	}
	if d > 1500*time.Millisecond {
		t.Errorf("stall detected after %v with a 150 ms idle timeout", d)
	}
	if !strings.HasPrefix(err.Error(), "read content: ") || strings.Contains(err.Error(), srv.URL) {
		t.Errorf("err = %q", err)
	}
}

func TestContentCallerCancelMidStream(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		waitOrDone(r, 5*time.Second)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ct, err := newClient(t, srv.URL).Content(ctx, "G-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Body.Close()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(ct.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	start := time.Now()
	if _, err := ct.Body.Read(buf); err == nil {
		t.Error("read after cancel succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("read returned %v after cancel", d)
	}
}

func TestContentStalledErrorBodyBounded(t *testing.T) {
	t.Parallel()
	// A non-2xx answer whose body never ends: the call must still end
	// within Timeout, as every call does.
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"error":"not_ready",`)
		w.(http.Flusher).Flush()
		waitOrDone(r, 5*time.Second)
	})
	// 400 ms, not less: under CI's load the headers alone once took
	// longer than a 150 ms timeout, and the call ended as a transport
	// error before the 409 was seen.
	c := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Timeout = 400 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	ct, err := c.Content(ctx, "G-1", 0)
	if err == nil {
		ct.Body.Close()
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Content returned after %v with a 400 ms timeout", d)
	}
	if ae := asAPIError(t, err); ae.StatusCode != http.StatusConflict {
		t.Errorf("got %+v", ae)
	}
}

func TestContentCloseEarly(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	ct, err := newClient(t, srv.URL).Content(context.Background(), "G-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ct.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := ct.Body.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := ct.Body.Read(make([]byte, 1)); err == nil {
		t.Error("read after Close succeeded")
	}
}

// TestContentStreams proves the body is not buffered: the server holds
// back the rest of the body until the client has seen the first chunk.
func TestContentStreams(t *testing.T) {
	t.Parallel()
	const first, rest = 1 << 20, 8 << 20
	sawFirst := make(chan struct{})
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(first+rest))
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, first))
		w.(http.Flusher).Flush()
		select {
		case <-sawFirst:
		case <-r.Context().Done():
			return
		case <-time.After(5 * time.Second):
			return // the client never saw the first chunk: the test fails below
		}
		w.Write(make([]byte, rest))
	})
	ct, err := newClient(t, srv.URL).Content(context.Background(), "G-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Body.Close()
	if _, err := io.ReadFull(ct.Body, make([]byte, first)); err != nil {
		t.Fatal(err)
	}
	close(sawFirst)
	n, err := io.Copy(io.Discard, ct.Body)
	if err != nil || n != rest {
		t.Errorf("rest: %d bytes, %v", n, err)
	}
}

// TestContentLargeBodyMemory streams 64 MiB and checks the process did not
// allocate anything near the body size. It does not call t.Parallel so
// that no other test allocates while it measures.
func TestContentLargeBodyMemory(t *testing.T) {
	const size = 64 << 20
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.WriteHeader(http.StatusOK)
		chunk := bytes.Repeat([]byte{0xAB}, 64<<10)
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	c := newClient(t, srv.URL)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ct, err := c.Content(context.Background(), "G-big", 0)
	if err != nil {
		t.Fatal(err)
	}
	if ct.Length != size {
		t.Errorf("Length = %d", ct.Length)
	}
	n, err := io.Copy(io.Discard, ct.Body)
	if err != nil || n != size {
		t.Fatalf("copied %d bytes, %v", n, err)
	}
	ct.Body.Close()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("streaming %d MiB allocated %d KiB in total (server included); heap now %d KiB", size>>20, allocated>>10, after.HeapAlloc>>10)
	if allocated > size/8 {
		t.Errorf("streaming %d MiB allocated %d MiB: the body is being buffered", size>>20, allocated>>20)
	}
	if after.HeapAlloc > before.HeapAlloc+size/4 {
		t.Errorf("heap grew from %d to %d bytes", before.HeapAlloc, after.HeapAlloc)
	}
}
