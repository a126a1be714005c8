package server_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/storage"
)

// probeCounter is a storage.Store that counts Puts; the first Put waits
// for release once it has said it started.
type probeCounter struct {
	storage.Store
	puts    atomic.Int64
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *probeCounter) Put(ctx context.Context, key string, r io.Reader, o storage.PutOptions) (storage.ObjectInfo, error) {
	p.puts.Add(1)
	p.once.Do(func() {
		close(p.started)
		<-p.release
	})
	return p.Store.Put(ctx, key, r, o)
}

// /readyz probes storage (a write and a delete) at most once per
// ReadyCacheFor: callers meanwhile, also those that arrive while the probe
// runs, share its result.
func TestReadyzProbesOncePerInterval(t *testing.T) {
	t.Parallel()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	disk, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &probeCounter{Store: disk, started: make(chan struct{}), release: make(chan struct{})}
	clock := newFakeClock()
	srv := httptest.NewServer(server.New(server.Deps{Redis: rdb, Store: store, Clock: clock.Now}))
	t.Cleanup(srv.Close)
	get := func() int {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	var wg sync.WaitGroup
	codes := make([]int, 50)
	for i := range codes {
		wg.Go(func() { codes[i] = get() })
	}
	<-store.started
	close(store.release)
	wg.Wait()
	for i := range 200 {
		if code := get(); code != http.StatusOK {
			t.Fatalf("call %d: %d", i, code)
		}
	}
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("concurrent call %d: %d", i, c)
		}
	}
	if n := store.puts.Load(); n != 1 {
		t.Errorf("250 calls within %v probed storage %d times, want 1", server.ReadyCacheFor, n)
	}
	clock.Advance(server.ReadyCacheFor)
	get()
	if n := store.puts.Load(); n != 2 {
		t.Errorf("a call %v later: %d probes in all, want 2", server.ReadyCacheFor, n)
	}
}
