package jobs_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
)

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A Store whose Redis refuses connections says so with a typed error, so
// that a caller can wait the outage out without burning retries.
func TestStoreUnreachableRedisIsUnavailable(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	st := jobs.NewStore(rdb, "")
	ctx := t.Context()

	_, err := st.Get(ctx, "j1")
	var ue *jobs.UnavailableError
	if !errors.Is(err, jobs.ErrUnavailable) || !errors.As(err, &ue) {
		t.Errorf("Get on a refused connection: %v (%T), want a *jobs.UnavailableError", err, err)
	}
	if _, err := st.Apply(ctx, "j1", jobs.Change{To: jobs.StateFailed}); !errors.Is(err, jobs.ErrUnavailable) {
		t.Errorf("Apply on a refused connection: %v, want jobs.ErrUnavailable", err)
	}
	if _, err := st.ActiveCount(ctx); !errors.Is(err, jobs.ErrUnavailable) {
		t.Errorf("ActiveCount on a refused connection: %v, want jobs.ErrUnavailable", err)
	}
}

// Answers of a working Redis are not outages: a missing job, a wrong type,
// a script error. The "not now" replies (LOADING, MASTERDOWN, …) are.
func TestRedisErrorClasses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.rdb.Set(b.ctx, jobs.DefaultPrefix+"job:{j1}", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Get(b.ctx, "j1"); err == nil || errors.Is(err, jobs.ErrUnavailable) {
		t.Errorf("Get of a key of the wrong type: %v, want an error that is not jobs.ErrUnavailable", err)
	}
	if _, err := b.store.Get(b.ctx, "j2"); !errors.Is(err, jobs.ErrNotFound) || errors.Is(err, jobs.ErrUnavailable) {
		t.Errorf("Get of a missing job: %v, want jobs.ErrNotFound only", err)
	}

	// Real error replies of the server, produced by a script; go-redis
	// itself retries some of these, so the client does not retry here.
	rdb := redis.NewClient(&redis.Options{Addr: b.rdb.Options().Addr, DB: b.rdb.Options().DB, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	reply := func(msg string) error {
		return rdb.Eval(b.ctx, "return redis.error_reply(ARGV[1])", nil, msg).Err()
	}
	for _, tc := range []struct {
		reply       string
		unavailable bool
	}{
		{"LOADING Redis is loading the dataset in memory", true},
		{"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", true},
		{"TRYAGAIN Multiple keys request during rehashing of slot", true},
		{"CLUSTERDOWN The cluster is down", true},
		{"READONLY You can't write against a read only replica.", true},
		{"WRONGTYPE Operation against a key holding the wrong kind of value", false},
		{"ERR something else", false},
	} {
		err := jobs.ClassifyRedis(reply(tc.reply))
		if err == nil || errors.Is(err, jobs.ErrUnavailable) != tc.unavailable {
			t.Errorf("ClassifyRedis(%q) = %v, unavailable %t; want %t", tc.reply, err, errors.Is(err, jobs.ErrUnavailable), tc.unavailable)
		}
	}

	for _, err := range []error{nil, redis.Nil, context.Canceled, context.DeadlineExceeded} {
		if got := jobs.ClassifyRedis(err); got != err {
			t.Errorf("ClassifyRedis(%v) = %v, want it unchanged", err, got)
		}
	}
}
