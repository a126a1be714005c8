package worker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
)

// refused returns the real error of dialing a loopback port where nothing
// listens.
func refused(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected", addr)
	}
	return err
}

// Only errors that the Redis layer raised as *jobs.UnavailableError wait
// out an outage without using up retries; an error of storage or of a
// content stream never does, whatever it looks like.
func TestRedisOutagesDoNotUseRetries(t *testing.T) {
	dial := refused(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	redisDown := jobs.ClassifyRedis(rdb.Ping(t.Context()).Err())
	for _, tc := range []struct {
		name    string
		err     error
		failure bool
	}{
		{"jobs store, Redis refusing connections", fmt.Errorf("get job j: %w", redisDown), false},
		{"enqueue, Redis down", fmt.Errorf("enqueue video:poll: %w", &jobs.UnavailableError{Err: errors.New("redis eval error: EOF")}), false},
		{"deferral", &retryLater{err: errors.New("x")}, false},
		{"S3 refusing connections", fmt.Errorf("stat videos/x.mp4: storage: stat %q: %w", "videos/x.mp4", dial), true},
		{"content stream reset", fmt.Errorf("store videos/x.mp4: read content: %w", syscall.ECONNRESET), true},
		{"content stream cut", fmt.Errorf("store videos/x.mp4: read content: %w", io.EOF), true},
		{"text that looks like Redis's, not from Redis", errors.New("LOADING Redis is loading the dataset in memory"), true},
		{"API transport", &apiclient.TransportError{Op: "get video", Sent: true, Err: io.EOF}, true},
		{"API 503", &apiclient.APIError{Op: "get video", StatusCode: 503}, true},
		{"integrity", errors.New("store videos/x.mp4: size mismatch"), true},
	} {
		if got := isFailure(tc.err); got != tc.failure {
			t.Errorf("%s: isFailure(%v) = %v, want %v", tc.name, tc.err, got, tc.failure)
		}
	}
}

// A failing storage backend backs off: asynq hands retryDelay the count
// of failed attempts, which grows only because isFailure counts them.
func TestStorageFailureBacksOff(t *testing.T) {
	w := &Worker{cfg: Config{RetryBaseDelay: time.Second, MaxRetryDelay: 5 * time.Minute}}
	err := fmt.Errorf("stat videos/x.mp4: %w", refused(t))
	if !isFailure(err) {
		t.Fatalf("isFailure(%v) = false: the task's retry count would never grow", err)
	}
	prev := time.Duration(0)
	for n := range 6 {
		d := w.retryDelay(n, err, nil)
		lo := time.Duration(float64(time.Second<<n) * 0.75)
		if d < lo || d <= prev {
			t.Errorf("retryDelay(%d) = %v after %v, want at least %v and growing", n, d, prev, lo)
		}
		prev = d
	}
}

// The window in which a crashed create is looked for, and the create
// lock's lease, follow the API client's timeout: there is no second copy
// in the worker's configuration that could disagree with it.
func TestCreateWindowFollowsTheClientTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{7 * time.Second, 90 * time.Second} {
		api, err := apiclient.New(apiclient.Config{BaseURL: "http://127.0.0.1:1/v1", APIKey: "k", Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
		defer rdb.Close()
		w, err := New(Config{}, Deps{Redis: rdb, API: api, Store: nopStore{}})
		if err != nil {
			t.Fatal(err)
		}
		started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		from, to := w.window(&jobs.Record{CreateStartedAt: started})
		if !from.Equal(started) || to.Sub(from) != timeout {
			t.Errorf("client timeout %v: window of a create cut short is %v … %v (%v), want %v long", timeout, from, to, to.Sub(from), timeout)
		}
		if w.apiTimeout != timeout {
			t.Errorf("client timeout %v: the worker uses %v for the create lock's lease", timeout, w.apiTimeout)
		}
	}
}

// nopStore is a storage.Store that is never called.
type nopStore struct{ storage.Store }
