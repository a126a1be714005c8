package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
)

// scaleModels spread the scale section's creates so that putting the jobs
// in flight is quick (creates of one model are serialised); the worker
// gets as many create slots. The figures measured are those of jobs
// already in flight.
var scaleModels = func() []string {
	var m []string
	for i := range 32 {
		m = append(m, fmt.Sprintf("bench/scale-%02d", i))
	}
	return m
}()

func defineScale(r *recorder, sz sizes) {
	s := fmt.Sprintf("Scale (%s jobs in flight, API holds them processing, poll_after_seconds %d, worker in its own process)",
		formatValue(float64(sz.scaleJobs), 0), sz.scalePollAfter)
	r.define(figureDef{Key: "scale.jobs", Section: s, Label: "jobs in flight", Unit: "jobs"})
	r.define(figureDef{Key: "scale.setup", Section: s, Label: "time to submit and create them all", Unit: "s", Digits: 1})
	r.define(figureDef{Key: "scale.mem", Section: s, Label: "Redis memory per in-flight job", Unit: "bytes",
		Target: "≤ 2,048", Pass: atMost(2048)})
	r.define(figureDef{Key: "scale.mem_100k", Section: s, Label: "Redis memory for 100,000 in flight (extrapolated: per job × 100,000)", Unit: "MiB", Digits: 0})
	r.define(figureDef{Key: "scale.late_p50", Section: s, Label: "poll lateness p50", Unit: "s", Digits: 3})
	r.define(figureDef{Key: "scale.late_p99", Section: s, Label: "poll lateness p99", Unit: "s", Digits: 3,
		Target: "≤ 1 s", Pass: atMost(1)})
	r.define(figureDef{Key: "scale.polls_needed", Section: s, Label: "status checks needed (jobs ÷ interval)", Unit: "checks/s"})
	r.define(figureDef{Key: "scale.polls", Section: s, Label: "status checks made", Unit: "checks/s"})
	r.define(figureDef{Key: "scale.worker_cpu", Section: s, Label: "worker process CPU", Unit: "cores", Digits: 2})
	r.define(figureDef{Key: "scale.worker_cpu_per_poll", Section: s, Label: "worker CPU per status check", Unit: "ms", Digits: 3})
	r.define(figureDef{Key: "scale.redis_cpu", Section: s, Label: "redis-server CPU", Unit: "cores", Digits: 2})
	r.define(figureDef{Key: "scale.worker_rss", Section: s, Label: "worker process peak RSS", Unit: "MiB", Digits: 0})
	r.define(figureDef{Key: "scale.drain", Section: s, Label: "time to drain after the API completes them all", Unit: "s", Digits: 1})
	r.define(figureDef{Key: "scale.drain_rate", Section: s, Label: "drain rate", Unit: "jobs/s"})
}

// runScale puts sz.scaleJobs jobs in flight (the stand-in holds them
// "processing", the worker polls each every poll_after_seconds), measures
// memory, poll lateness and CPU over a window, then releases the hold and
// times the drain. The worker runs in a child process so that its CPU is
// its own.
func runScale(ctx context.Context, b *bench) error {
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	interval := time.Duration(b.sz.scalePollAfter) * time.Second
	api, err := startAPI(standin.Config{ContentSize: 4 << 10, Seed: 3, PollAfterSeconds: b.sz.scalePollAfter})
	if err != nil {
		return err
	}
	defer api.close()
	api.srv.Hold(true)
	dir, err := os.MkdirTemp("", "bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	prof := ""
	if b.opts.cpuprofile != "" {
		prof = filepath.Join(b.opts.cpuprofile, "scale-worker.pprof")
	}
	n := b.sz.scaleJobs
	st0, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	wp, err := startWorkerProc(childWorkerConfig{RedisAddr: re.srv.Addr(), APIURL: api.url, StoreDir: dir, Concurrency: b.opts.concurrency,
		PollInterval: interval, MinPollInterval: time.Second, CreateConcurrency: len(scaleModels), DelayedCheck: b.opts.delayedCheck, CPUProfile: prof})
	if err != nil {
		return err
	}
	defer wp.stop()
	producer := tasks.NewClient(re.rdb, tasks.ClientOptions{})
	js := jobs.NewStore(re.rdb, "")
	t0 := time.Now()
	if _, _, err := submitAll(ctx, producer, "scale", n, 32, scaleModels); err != nil {
		return err
	}
	b.logf("scale: %d submitted in %s", n, time.Since(t0).Round(time.Millisecond))
	err = waitUntil(ctx, 15*time.Minute, 200*time.Millisecond, "all jobs created", func() (bool, error) {
		left, err := queueBacklog(ctx, re.rdb, tasks.QueueCreate)
		return left == 0, err
	})
	if err != nil {
		return err
	}
	setup := time.Since(t0)
	b.logf("scale: %d created after %s", n, setup.Round(time.Millisecond))
	b.rec.add("scale.jobs", float64(n))
	b.rec.add("scale.setup", setup.Seconds())
	// Let the poll chains settle into their cadence, then weigh Redis.
	time.Sleep(min(interval, 5*time.Second))
	st1, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	b.rec.add("scale.mem", float64(st1.UsedMemory-st0.UsedMemory)/float64(n))
	b.rec.add("scale.mem_100k", float64(st1.UsedMemory-st0.UsedMemory)/float64(n)*100_000/(1<<20))
	if parts, err := memoryByKey(ctx, re.rdb, "scale", n, float64(st1.UsedMemory-st0.UsedMemory)/float64(n)); err == nil {
		b.rec.note("scale.mem", "by key: "+parts)
		b.logf("scale: Redis memory per in-flight job by key: %s", parts)
	}

	r0, err := wp.report()
	if err != nil {
		return err
	}
	rs0, err := re.stats(ctx)
	if err != nil {
		return err
	}
	w0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.sz.scaleWindow):
	}
	r1, err := wp.report()
	if err != nil {
		return err
	}
	rs1, err := re.stats(ctx)
	if err != nil {
		return err
	}
	win := time.Since(w0).Seconds()
	late := histDelta(r1.Lateness, r0.Lateness)
	count := r1.LatenessCount - r0.LatenessCount
	p50, _ := histQuantile(late, count, 0.5)
	p99, inf := histQuantile(late, count, 0.99)
	if inf {
		b.rec.note("scale.late_p99", fmt.Sprintf("beyond the largest histogram bucket (%.0f s)", p99))
	}
	polls := (r1.StatusChecks - r0.StatusChecks) / win
	b.rec.add("scale.late_p50", p50)
	b.rec.add("scale.late_p99", p99)
	b.rec.add("scale.polls_needed", float64(n)/interval.Seconds())
	b.rec.add("scale.polls", polls)
	b.rec.add("scale.worker_cpu", (r1.CPUSeconds-r0.CPUSeconds)/win)
	b.rec.add("scale.worker_cpu_per_poll", 1000*(r1.CPUSeconds-r0.CPUSeconds)/max(r1.StatusChecks-r0.StatusChecks, 1))
	b.rec.add("scale.redis_cpu", (rs1.CPU-rs0.CPU)/win)
	b.logf("scale: window %.0fs, %d polls observed, lateness p50 %.3fs p99 %.3fs, %.0f checks/s (need %.0f), worker %.2f cores, redis %.2f cores",
		win, count, p50, p99, polls, float64(n)/interval.Seconds(), (r1.CPUSeconds-r0.CPUSeconds)/win, (rs1.CPU-rs0.CPU)/win)

	t3 := time.Now()
	api.srv.Hold(false)
	err = waitUntil(ctx, 15*time.Minute, 100*time.Millisecond, "drain", func() (bool, error) {
		left, err := js.ActiveCount(ctx)
		return left == 0, err
	})
	if err != nil {
		return err
	}
	drain := time.Since(t3)
	final, err := wp.report()
	if err != nil {
		return err
	}
	if final.Stored != float64(n) {
		return fmt.Errorf("scale: %v of %d jobs stored", final.Stored, n)
	}
	b.rec.add("scale.drain", drain.Seconds())
	b.rec.add("scale.drain_rate", float64(n)/drain.Seconds())
	b.rec.add("scale.worker_rss", float64(final.VmHWMKiB)/1024)
	b.logf("scale: drained %d in %s", n, drain.Round(time.Millisecond))
	return wp.stop()
}

// memoryByKey describes what one in-flight job's keys weigh (MEMORY
// USAGE, mean over a sample of the n jobs named prefix-%07d, the job id
// written "ID" in the key names), the keys of no one job (the unfinished
// set, the index, asynq's scheduled set, ...) divided by n, and the rest
// of perJob (Redis's key table, allocator overhead).
func memoryByKey(ctx context.Context, rdb *redis.Client, prefix string, n int, perJob float64) (string, error) {
	sum := map[string]int64{}
	k := 0
	for i := 0; i < n; i += max(n/20, 1) {
		id := fmt.Sprintf("%s-%07d", prefix, i)
		var keys []string
		iter := rdb.Scan(ctx, 0, "*"+id+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return "", err
		}
		for _, key := range keys {
			m, err := rdb.MemoryUsage(ctx, key, 0).Result()
			if err != nil {
				return "", err
			}
			name := strings.Replace(key, id, "ID", 1)
			if j := strings.LastIndex(name, "ID:"); j >= 0 && strings.Contains(name, ":t:poll:") {
				name = name[:j+2] + ":SEQ"
			}
			sum[name] += m
		}
		k++
	}
	var parts []string
	var total float64
	for _, name := range slices.Sorted(maps.Keys(sum)) {
		v := float64(sum[name]) / float64(k)
		total += v
		parts = append(parts, fmt.Sprintf("%s %.0f B", name, v))
	}
	// Keys of no one job: their weight per job.
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		if strings.Contains(key, prefix+"-") {
			continue
		}
		m, err := rdb.MemoryUsage(ctx, key, 0).Result()
		if err != nil {
			return "", err
		}
		if v := float64(m) / float64(n); v >= 5 {
			total += v
			parts = append(parts, fmt.Sprintf("%s %.0f B", key, v))
		}
	}
	if err := iter.Err(); err != nil {
		return "", err
	}
	parts = append(parts, fmt.Sprintf("rest (key table, allocator) %.0f B", perJob-total))
	return strings.Join(parts, ", "), nil
}
