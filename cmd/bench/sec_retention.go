package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

func defineRetention(r *recorder, sz sizes) {
	s := fmt.Sprintf("Retention (%d jobs through with a short JOB_RETENTION, archived to disk)", sz.retentionJobs)
	r.define(figureDef{Key: "retention.keys_left", Section: s, Label: "Redis keys left per finished job after retention", Unit: "keys", Digits: 2,
		Target: "0", Pass: atMost(0)})
	r.define(figureDef{Key: "retention.mem_growth", Section: s, Label: "Redis used_memory after the jobs passed and were forgotten, vs before them", Unit: "%", Digits: 1,
		Target: "≤ 5 %", Pass: atMost(5)})
	r.define(figureDef{Key: "retention.cmds", Section: s, Label: "Redis commands per job spent on retention (terminal ZADD, archive and compaction, forgetting)", Unit: "cmds", Digits: 2,
		Target: "≤ 5", Pass: atMost(5)})
	r.define(figureDef{Key: "retention.mem_retained", Section: s, Label: "Redis memory per finished job while retained", Unit: "bytes",
		Target: "≤ 1,024 B", Pass: atMost(1024)})
	r.define(figureDef{Key: "retention.archives", Section: s, Label: "archive documents written per job (a sample read back and matched)", Unit: "docs", Digits: 2,
		Target: "1", Pass: func(v float64) bool { return v == 1 }})
}

// runRetention runs jobs through with a short retention and no running
// sweep, measures Redis while they are retained, then runs the sweep
// (worker.SweepFinished) and measures what is left and what it cost.
func runRetention(ctx context.Context, b *bench) error {
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	api, err := startAPI(standin.Config{ContentSize: 1 << 10, Seed: 1})
	if err != nil {
		return err
	}
	defer api.close()
	dir, err := os.MkdirTemp("", "bench-retention-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := storage.NewDisk(dir)
	if err != nil {
		return err
	}
	// The sweeper's clock runs ahead by shift once the jobs' retention is
	// to pass, so that nothing waits for it.
	const retention = time.Hour
	var shift atomic.Int64
	n := b.sz.retentionJobs
	js := jobs.NewStore(re.rdb, "")
	js.SetRetention(retention)
	producer := tasks.NewClient(re.rdb, tasks.ClientOptions{Retention: retention})
	m := metrics.New()
	cfg := benchWorkerConfigCreates(b.opts.concurrency, b.opts.createConcurrency)
	cfg.PollInterval, cfg.MinPollInterval = time.Millisecond, time.Millisecond
	cfg.RetentionSweepInterval = -1 // swept below, to measure it
	deps := worker.Deps{Redis: re.rdb, API: api.client, Store: store, Jobs: js, Metrics: m, Logger: slog.New(slog.DiscardHandler)}
	sdeps := deps
	sdeps.Now = func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }
	sweeper, err := worker.New(cfg, sdeps)
	if err != nil {
		return err
	}
	// through runs jobs through to their end (no sweep running).
	through := func(prefix string, k int) ([]string, error) {
		ids, _, err := submitAll(ctx, producer, prefix, k, 16, models)
		if err != nil {
			return nil, err
		}
		w, err := startWorker(cfg, deps)
		if err != nil {
			return nil, err
		}
		err = waitUntil(ctx, 10*time.Minute, 20*time.Millisecond, "retention jobs finished", func() (bool, error) {
			left, err := js.ActiveCount(ctx)
			return left == 0, err
		})
		if serr := w.stop(); err == nil {
			err = serr
		}
		return ids, err
	}
	// sweep runs the sweep with the clock ahead by d; it returns how many
	// jobs it forgot and the Redis commands it made.
	sweep := func(d time.Duration) (int, map[string]int64, map[string]int64, error) {
		shift.Store(int64(d))
		defer shift.Store(0)
		cs1, err := re.commandStats(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		forgot, err := sweeper.SweepFinished(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		cs2, err := re.commandStats(ctx)
		return forgot, cs1, cs2, err
	}
	// keyMem is the MEMORY USAGE of each key of job id that exists.
	keyMem := func(id string) string {
		var parts []string
		for _, k := range []string{"", ":events", ":spec", ":webhooks"} {
			key := js.Prefix() + "job:{" + id + "}" + k
			mu, err := re.rdb.MemoryUsage(ctx, key).Result()
			if err != nil {
				continue
			}
			enc, _ := re.rdb.ObjectEncoding(ctx, key).Result()
			parts = append(parts, fmt.Sprintf("%s %d B (%s)", map[string]string{"": "record"}[k]+strings.TrimPrefix(k, ":"), mu, enc))
		}
		return strings.Join(parts, ", ")
	}
	// A warm-up (a tenth as many jobs, through and forgotten) brings Redis
	// to the steady state of a fleet that has run for a while: its
	// scripts loaded, its Lua heap and tables at their working size.
	warm := max(n/10, 10)
	if _, err := through("warm", warm); err != nil {
		return err
	}
	if _, _, _, err := sweep(0); err != nil {
		return err
	}
	if _, _, _, err := sweep(2 * retention); err != nil {
		return err
	}
	st0, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	ids, err := through("ret", n)
	if err != nil {
		return err
	}
	stEnded, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	before := keyMem(ids[0])
	// A sample of records, to match against their archives.
	sample := map[string]*jobs.Record{}
	for i := 0; i < n; i += max(n/100, 1) {
		rec, err := js.Get(ctx, ids[i])
		if err != nil {
			return err
		}
		sample[ids[i]] = rec
	}
	// The sweep archives and compacts the ended jobs.
	_, csa, csb, err := sweep(0)
	if err != nil {
		return err
	}
	st1, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	b.rec.add("retention.mem_retained", float64(st1.UsedMemory-st0.UsedMemory)/float64(n))
	b.rec.note("retention.mem_retained", fmt.Sprintf("%d B per job when they ended, before the sweep compacted them; one job's keys (MEMORY USAGE) before: %s; after: %s; the rest: its entries in the job index, the retained set and the claims",
		(stEnded.UsedMemory-st0.UsedMemory)/int64(n), before, keyMem(ids[0])))
	// Every job's retention passes.
	forgot, csc, csd, err := sweep(2 * retention)
	if err != nil {
		return err
	}
	if forgot != n {
		return fmt.Errorf("retention: the sweep forgot %d of %d jobs", forgot, n)
	}
	// Each commandstats reading is one call; the terminal transition's
	// ZADD into the finished set is one more per job.
	compactCmds := float64(sumCalls(csb)-sumCalls(csa)-1) / float64(n)
	forgetCmds := float64(sumCalls(csd)-sumCalls(csc)-1) / float64(n)
	b.rec.add("retention.cmds", compactCmds+forgetCmds+1)
	b.rec.note("retention.cmds", fmt.Sprintf("1 ZADD per job in the terminal transition's script; archive and compaction %.2f (%s); forgetting %.2f (%s)",
		compactCmds, topCommands(csa, csb, n, 6), forgetCmds, topCommands(csc, csd, n, 6)))
	st2, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	b.rec.add("retention.mem_growth", 100*float64(st2.UsedMemory-st0.UsedMemory)/float64(st0.UsedMemory))
	b.rec.note("retention.mem_growth", fmt.Sprintf("used_memory %d B before, %d B with the jobs ended, %d B compacted, %d B after the sweep", st0.UsedMemory, stEnded.UsedMemory, st1.UsedMemory, st2.UsedMemory))

	// What is left: keys of the jobs (SCAN: here only), and the
	// fleet-wide entries naming them.
	left := int64(0)
	iter := re.rdb.Scan(ctx, 0, js.Prefix()+"job:{*", 1000).Iterator()
	for iter.Next(ctx) {
		left++
	}
	if err := iter.Err(); err != nil {
		return err
	}
	for _, k := range []string{"jobs", "finished", "retained"} {
		c, err := re.rdb.ZCard(ctx, js.Prefix()+k).Result()
		if err != nil {
			return err
		}
		left += c
	}
	claims, err := re.rdb.HLen(ctx, js.Prefix()+"claims").Result()
	if err != nil {
		return err
	}
	left += claims
	b.rec.add("retention.keys_left", float64(left)/float64(n))

	// Archives: each job's, and a sample read back and matched.
	docs := 0
	for _, id := range ids {
		if _, err := store.Stat(ctx, jobs.ArchiveKey(id)); err == nil {
			docs++
		}
	}
	for id, rec := range sample {
		rc, _, err := store.Open(ctx, jobs.ArchiveKey(id))
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			return err
		}
		var a jobs.Archive
		if err := json.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("archive of %s: %w", id, err)
		}
		if a.Record == nil || a.Record.State != rec.State || a.Record.SHA256 != rec.SHA256 || a.Record.VideoID != rec.VideoID || len(a.History) < 4 {
			docs-- // counted, but not matching
			b.logf("retention: archive of %s does not match its record", id)
		}
	}
	b.rec.add("retention.archives", float64(docs)/float64(n))
	b.logf("retention: %d jobs, %d B/job retained, %.2f cmds/job, %d keys left, used_memory %+.1f %%", n,
		(st1.UsedMemory-st0.UsedMemory)/int64(n), compactCmds+forgetCmds+1, left, 100*float64(st2.UsedMemory-st0.UsedMemory)/float64(st0.UsedMemory))
	return nil
}

// sumCalls is the total of a commandstats reading.
func sumCalls(cs map[string]int64) int64 {
	var t int64
	for _, v := range cs {
		t += v
	}
	return t
}
