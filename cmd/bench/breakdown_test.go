package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/internal/redistest"
)

func TestCommandBreakdown(t *testing.T) {
	rec := `OK
1.1 [0 127.0.0.1:1] "evalsha" "aa" "4" "asynq:{video_poll}:pending" "asynq:{video_poll}:paused" "x" "y" "1"
1.2 [0 lua] "EXISTS" "asynq:{video_poll}:paused"
1.3 [0 lua] "RPOPLPUSH" "asynq:{video_poll}:pending" "asynq:{video_poll}:active"
1.4 [0 127.0.0.1:1] "hgetall" "videoworker:job:{j1}"
1.5 [0 127.0.0.1:1] "evalsha" "bb" "5" "videoworker:job:{j1}" "videoworker:job:{j1}:events" "a" "b" "c"
1.6 [0 lua] "HMGET" "videoworker:job:{j1}" "state"
1.7 [0 lua] "HSET" "videoworker:job:{j1}" "state" "x"
1.8 [0 127.0.0.1:1] "publish" "videoworker:wake" "p video_poll"
`
	if p := os.Getenv("BENCH_MONITOR_FILE"); p != "" { // a real recording: go test -run Breakdown -v
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rows, total := commandBreakdown(strings.NewReader(string(b)), 1500)
		t.Logf("\n%s", breakdownTable(rows, total))
	}
	rows, total := commandBreakdown(strings.NewReader(rec), 1)
	if total != 8 {
		t.Errorf("total %v, want 8", total)
	}
	want := map[string]float64{"asynq dequeue script": 3, "job transition script (jobs.Store.Do)": 3, "job record load (HGETALL)": 1, "wake-up PUBLISH": 1}
	for _, r := range rows {
		if want[r.Purpose] != r.PerJob {
			t.Errorf("%s: %v per job, want %v", r.Purpose, r.PerJob, want[r.Purpose])
		}
		delete(want, r.Purpose)
	}
	if len(want) > 0 {
		t.Errorf("missing %v", want)
	}
}

// The recording sees commands run by scripts, starts before the first
// command sent after startMonitor returns and ends after the last one
// sent before stop.
func TestMonitorRecordsScripts(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	mon, err := startMonitor(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer mon.close()
	ctx := context.Background()
	if err := rdb.HSet(ctx, "videoworker:job:{j1}", "state", "queued").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Eval(ctx, "redis.call('HGET', KEYS[1], 'state'); return redis.call('HSET', KEYS[1], 'state', 'x')", []string{"videoworker:job:{j1}"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HGetAll(ctx, "videoworker:job:{j1}").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Publish(ctx, "videoworker:wake", "p q").Err(); err != nil {
		t.Fatal(err)
	}
	rows, _ := commandBreakdown(mon.stop(ctx, rdb), 1)
	got := map[string]float64{}
	for _, r := range rows {
		got[r.Purpose] = r.PerJob
	}
	want := map[string]float64{"other HSET": 1, "job transition script (jobs.Store.Do)": 3, "job record load (HGETALL)": 1, "wake-up PUBLISH": 1}
	for p, n := range want {
		if got[p] != n {
			t.Errorf("%s: %v, want %v (all: %v)", p, got[p], n, got)
		}
	}
}
