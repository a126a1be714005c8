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
	redisDown := jobs.RedisError(rdb.Ping(t.Context()).Err())
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
