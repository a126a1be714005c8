package tasks_test

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/tasks"
)

// BenchmarkSubmitMany submits batches of 500 new jobs; b.N counts batches.
// It reports jobs/s, the Redis commands per job (every command, those
// that scripts run included: INFO commandstats) and redis-server's CPU
// per job (INFO cpu; the package's tests share the server, so run it
// alone: go test -run XXX -bench SubmitMany ./tasks/).
func BenchmarkSubmitMany(b *testing.B) {
	bu := setup(b)
	reqs := batchOf(500, "")
	calls0, cpu0 := serverCounters(b, bu.ctx, bu.rdb)
	for i := 0; b.Loop(); i++ {
		for k := range reqs {
			reqs[k].JobID = tasks.JobID(fmt.Sprintf("b%d-%d", i, k))
		}
		if _, err := bu.client.SubmitMany(bu.ctx, reqs); err != nil {
			b.Fatal(err)
		}
	}
	calls1, cpu1 := serverCounters(b, bu.ctx, bu.rdb)
	jobs := float64(b.N * 500)
	b.ReportMetric(jobs/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64(calls1-calls0-1)/jobs, "redis-cmds/job")
	b.ReportMetric(1e6*(cpu1-cpu0)/jobs, "redis-µs/job")
	if testing.Verbose() {
		info, _ := bu.rdb.Info(bu.ctx, "commandstats").Result()
		b.Log(info)
	}
}

// serverCounters reads the calls of every command so far and the
// server's CPU seconds (user and system).
func serverCounters(tb testing.TB, ctx context.Context, rdb *redis.Client) (calls int64, cpu float64) {
	tb.Helper()
	txt, err := rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		switch {
		case strings.HasPrefix(k, "cmdstat_"):
			n, _ := strings.CutPrefix(strings.Split(v, ",")[0], "calls=")
			c, _ := strconv.ParseInt(n, 10, 64)
			calls += c
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		}
	}
	return calls, cpu
}
