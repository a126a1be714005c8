package main

import (
	"os"
	"strings"
	"testing"
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
