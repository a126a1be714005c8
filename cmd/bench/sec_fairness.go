package main

import (
	"context"
	"fmt"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// fairnessB is how many jobs tenant B submits behind A's backlog.
const fairnessB = 10

// fairnessCostJobs is how many jobs the commands-per-job figures run,
// with tenancy off and on.
const fairnessCostJobs = 300

// fairnessAhead is TENANT_ADMIT_AHEAD of the fairness run (0: the default).
var fairnessAhead = 0 // the default

func defineFairness(r *recorder, sz sizes) {
	s := fmt.Sprintf("Fairness across tenants (tenancy on, one model; tenant A has %d jobs waiting, then B submits %d)", sz.fairnessJobs, fairnessB)
	r.define(figureDef{Key: "fairness.a_rate", Section: s, Label: "creates started per second, A alone", Unit: "creates/s", Digits: 1})
	r.define(figureDef{Key: "fairness.b_first", Section: s, Label: "B's first create starts, after B's submission", Unit: "s", Digits: 2})
	r.define(figureDef{Key: "fairness.b_last", Section: s, Label: fmt.Sprintf("B's %d creates all started, after B's submission", fairnessB), Unit: "s", Digits: 2})
	r.define(figureDef{Key: "fairness.window_creates", Section: s, Label: "creates of either tenant started from B's submission to B's last create (fair turns: 20)", Unit: "creates", Digits: 0})
	r.define(figureDef{Key: "fairness.ratio", Section: s, Label: fmt.Sprintf("B's last create ÷ (2 × %d ÷ create rate over that window)", fairnessB), Unit: "×", Digits: 2,
		Target: "≤ 1", Pass: atMost(1)})
	r.define(figureDef{Key: "fairness.ratio_a_rate", Section: s, Label: fmt.Sprintf("B's last create ÷ (2 × %d ÷ A's create rate alone, measured before)", fairnessB), Unit: "×", Digits: 2})
	r.define(figureDef{Key: "fairness.cmds_off", Section: s, Label: "Redis commands per job, Submit and worker, tenancy off", Unit: "cmds", Digits: 1})
	r.define(figureDef{Key: "fairness.cmds_on", Section: s, Label: "Redis commands per job, Submit and worker, tenancy on (two tenants)", Unit: "cmds", Digits: 1})
}

// runFairness: A's backlog waits in tenant_wait while a worker creates
// its jobs; B's jobs, submitted behind it, must be admitted in turn with
// A's (round-robin), not after it. Then the Redis cost of tenancy.
func runFairness(ctx context.Context, b *bench) error {
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	api, err := startAPI(standin.Config{ContentSize: smallVideo, Seed: 1})
	if err != nil {
		return err
	}
	defer api.close()
	js := jobs.NewStore(re.rdb, "")
	ten := jobs.NewTenancy(js, jobs.TenancyConfig{AdmitAhead: fairnessAhead})
	producer := tasks.NewClient(re.rdb, tasks.ClientOptions{Tenancy: ten})
	model := models[0]
	n := b.sz.fairnessJobs
	for i := 0; i < n; i += tasks.MaxBatch {
		var reqs []tasks.Request
		for j := i; j < min(i+tasks.MaxBatch, n); j++ {
			id := fmt.Sprintf("a-%07d", j)
			reqs = append(reqs, tasks.Request{JobID: tasks.JobID(id), Tenant: "a", Video: apiclient.CreateRequest{Model: model, Prompt: "bench " + id}})
		}
		if _, err := producer.SubmitMany(ctx, reqs); err != nil {
			return err
		}
	}
	cfg := benchWorkerConfigCreates(b.opts.concurrency, b.opts.createConcurrency)
	// Creates are what is measured: polls every second keep the created
	// jobs' polls and downloads from taking more and more of the two cores
	// as they pile up, which made the create rate drift down during the
	// run (at 1 ms polls, 3× slower at B's turn than in A's measured tenth).
	cfg.PollInterval, cfg.MinPollInterval = time.Second, time.Second
	cfg.Tenancy = ten
	w, err := startWorker(cfg, worker.Deps{Redis: re.rdb, API: api.client, Store: newMemStore(), Jobs: js, Metrics: metrics.New()})
	if err != nil {
		return err
	}
	defer w.stop()
	waiting := func() (int64, error) {
		f, err := ten.Figures(ctx)
		if err != nil || len(f) == 0 {
			return 0, err
		}
		return f[0].Waiting, nil
	}
	// A alone: its create rate, once the pipeline runs (a tenth of A's
	// jobs admitted), over the next tenth.
	var w0 int64
	var t0 time.Time
	if err := waitUntil(ctx, 5*time.Minute, 5*time.Millisecond, "A's creates under way", func() (bool, error) {
		left, err := waiting()
		w0, t0 = left, time.Now()
		return left <= int64(n)*9/10, err
	}); err != nil {
		return err
	}
	var w1 int64
	if err := waitUntil(ctx, 5*time.Minute, 5*time.Millisecond, "A's create rate", func() (bool, error) {
		left, err := waiting()
		w1 = left
		return left <= w0-int64(n)/10, err
	}); err != nil {
		return err
	}
	rate := float64(w0-w1) / time.Since(t0).Seconds()
	// B submits behind A's backlog.
	bStart := time.Now()
	var bIDs []string
	for i := range fairnessB {
		id := fmt.Sprintf("b-%02d", i)
		if _, err := producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Tenant: "b", Video: apiclient.CreateRequest{Model: model, Prompt: "bench " + id}}); err != nil {
			return err
		}
		bIDs = append(bIDs, id)
	}
	var first, last time.Duration
	if err := waitUntil(ctx, 5*time.Minute, 10*time.Millisecond, "B's creates started", func() (bool, error) {
		first, last = 0, 0
		for _, id := range bIDs {
			rec, err := js.Load(ctx, id)
			if err != nil {
				return false, err
			}
			if rec.CreateStartedAt.IsZero() {
				return false, nil
			}
			d := rec.CreateStartedAt.Sub(bStart)
			if first == 0 || d < first {
				first = d
			}
			last = max(last, d)
		}
		return true, nil
	}); err != nil {
		return err
	}
	aLeft, err := waiting()
	if err != nil {
		return err
	}
	if err := w.stop(); err != nil {
		return err
	}
	// The creates of any tenant started from B's submission to B's last
	// start: with perfect turns, B's last is the 20th (10 of B's, 10 of
	// A's); the create rate over that window is this count over the time.
	inWindow := 0
	for i := range n {
		rec, err := js.Load(ctx, fmt.Sprintf("a-%07d", i))
		if err != nil {
			return err
		}
		if at := rec.CreateStartedAt; !at.IsZero() && !at.Before(bStart) && !at.After(bStart.Add(last)) {
			inWindow++
		}
	}
	inWindow += fairnessB
	windowRate := float64(inWindow) / last.Seconds()
	b.rec.add("fairness.a_rate", rate)
	b.rec.add("fairness.b_first", first.Seconds())
	b.rec.add("fairness.b_last", last.Seconds())
	b.rec.add("fairness.window_creates", float64(inWindow))
	b.rec.add("fairness.ratio", last.Seconds()/(2*fairnessB/windowRate))
	b.rec.add("fairness.ratio_a_rate", last.Seconds()/(2*fairnessB/rate))
	b.logf("fairness: A alone %.1f creates/s; B's %d creates started %.3f–%.3f s after B's submission, its last as create %d of that window (%.1f creates/s; fair turns: ≤ %d), with %d of A's %d jobs still waiting",
		rate, fairnessB, first.Seconds(), last.Seconds(), inWindow, windowRate, 2*fairnessB, aLeft, n)

	off, err := tenancyCost(ctx, false)
	if err != nil {
		return err
	}
	on, err := tenancyCost(ctx, true)
	if err != nil {
		return err
	}
	b.rec.add("fairness.cmds_off", off)
	b.rec.add("fairness.cmds_on", on)
	b.logf("fairness: %.1f Redis commands per job with tenancy off, %.1f with it on (%+.1f)", off, on, on-off)
	return nil
}

// tenancyCost runs fairnessCostJobs jobs of two tenants through Submit
// and a worker on a Redis of their own, and returns the Redis commands
// per job.
func tenancyCost(ctx context.Context, on bool) (float64, error) {
	re, err := startRedis()
	if err != nil {
		return 0, err
	}
	defer re.close()
	api, err := startAPI(standin.Config{ContentSize: smallVideo, Seed: 1})
	if err != nil {
		return 0, err
	}
	defer api.close()
	js := jobs.NewStore(re.rdb, "")
	var ten *jobs.Tenancy
	if on {
		ten = jobs.NewTenancy(js, jobs.TenancyConfig{})
	}
	producer := tasks.NewClient(re.rdb, tasks.ClientOptions{Tenancy: ten})
	st0, err := re.settledStats(ctx)
	if err != nil {
		return 0, err
	}
	for i := range fairnessCostJobs {
		id := fmt.Sprintf("c-%05d", i)
		tenant := []string{"a", "b"}[i%2]
		if _, err := producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Tenant: tenant, Video: apiclient.CreateRequest{Model: models[0], Prompt: "bench " + id}}); err != nil {
			return 0, err
		}
	}
	cfg := benchWorkerConfig(50)
	cfg.PollInterval, cfg.MinPollInterval = time.Millisecond, time.Millisecond
	cfg.Tenancy = ten
	m := metrics.New()
	w, err := startWorker(cfg, worker.Deps{Redis: re.rdb, API: api.client, Store: newMemStore(), Jobs: js, Metrics: m})
	if err != nil {
		return 0, err
	}
	err = waitUntil(ctx, 5*time.Minute, 20*time.Millisecond, "tenancy cost jobs stored", func() (bool, error) {
		return counterValue(m.Registry(), "videoworker_jobs_finished_total", "state", "stored") >= fairnessCostJobs, nil
	})
	if serr := w.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return 0, err
	}
	st1, err := re.settledStats(ctx)
	if err != nil {
		return 0, err
	}
	return float64(st1.Commands-st0.Commands) / fairnessCostJobs, nil
}
