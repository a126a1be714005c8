package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/internal/tracing/otlptest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

const smallVideo = 64 << 10

func definePipeline(r *recorder) {
	s := "Pipeline throughput (instant API, 64 KiB video, polling)"
	r.define(figureDef{Key: "pipeline.jobs", Section: s, Label: "jobs stored per second (10–90 % window)", Unit: "jobs/s"})
	r.define(figureDef{Key: "pipeline.tasks_per_job", Section: s, Label: "tasks per job", Unit: "tasks", Digits: 2})
	r.define(figureDef{Key: "pipeline.ratio", Section: s, Label: "jobs/s × tasks/job ÷ raw tasks/s", Unit: "%", Digits: 1,
		Target: "≥ 60 %", Pass: atLeast(60)})
	r.define(figureDef{Key: "pipeline.cmds_worker", Section: s, Label: "Redis commands per job, worker", Unit: "cmds", Digits: 1})
	r.define(figureDef{Key: "pipeline.cmds_total", Section: s, Label: "Redis commands per job, with Submit", Unit: "cmds", Digits: 1})
	r.define(figureDef{Key: "pipeline.mem", Section: s, Label: "Redis memory per stored job (kept)", Unit: "bytes"})
	r.define(figureDef{Key: "pipeline.cpu", Section: s, Label: "CPU per job, bench process (worker + stand-in)", Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "pipeline.stage_create", Section: s, Label: "stage: create call (lock held)", Unit: "ms", Digits: 1})
	r.define(figureDef{Key: "pipeline.stage_poll", Section: s, Label: "stage: created → a poll sees it completed", Unit: "ms", Digits: 0})
	r.define(figureDef{Key: "pipeline.stage_dlwait", Section: s, Label: "stage: completed → download starts", Unit: "ms", Digits: 1})
	r.define(figureDef{Key: "pipeline.stage_dl", Section: s, Label: "stage: download and store", Unit: "ms", Digits: 1})
	r.define(figureDef{Key: "pipeline.redis_cpu", Section: s, Label: "CPU per job, redis-server", Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "pipeline.allocs", Section: s, Label: "heap allocations per job, bench process (producer, worker, stand-in)", Unit: "allocs", Digits: 0})
	r.define(figureDef{Key: "pipeline.spans", Section: s, Label: "spans exported per job (-trace)", Unit: "spans", Digits: 1})
}

// pipelineTracer is the tracer provider of a -trace run: an OTLP/HTTP
// exporter to OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) when set,
// else to an in-process receiver (recv, nil otherwise) that decodes every
// export as a collector does, its cost counted in the bench process.
func pipelineTracer(ctx context.Context) (*sdktrace.TracerProvider, *otlptest.Receiver, func(), error) {
	var opts []otlptracehttp.Option
	var recv *otlptest.Receiver
	stopRecv := func() {}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		recv, stopRecv = otlptest.Serve()
		opts = append(opts, otlptracehttp.WithEndpointURL(recv.URL))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		stopRecv()
		return nil, nil, nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	return tp, recv, func() { _ = tp.Shutdown(context.Background()); stopRecv() }, nil
}

// runPipeline submits n jobs to an idle system, then starts a worker and
// measures how fast they go create → poll → download → stored, with the
// stand-in completing every job at once.
func runPipeline(ctx context.Context, b *bench) error {
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
	dir, err := os.MkdirTemp("", "bench-pipeline-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var store storage.Store = newMemStore()
	if b.opts.pipelineStore == "disk" {
		if store, err = storage.NewDisk(dir); err != nil {
			return err
		}
	} else {
		b.rec.note("pipeline.jobs", "-pipeline-store mem: videos hashed and dropped, not stored")
	}
	n := b.sz.pipelineJobs
	var tp trace.TracerProvider // nil: tracing off
	var sdk *sdktrace.TracerProvider
	var recv *otlptest.Receiver
	if b.opts.trace {
		var stop func()
		if sdk, recv, stop, err = pipelineTracer(ctx); err != nil {
			return err
		}
		defer stop()
		tp = sdk
		b.rec.note("pipeline.jobs", "-trace: every job traced, spans exported over OTLP/HTTP")
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	producer := tasks.NewClient(re.rdb, tasks.ClientOptions{TracerProvider: tp})
	js := jobs.NewStore(re.rdb, "")
	st0, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	if _, _, err := submitAll(ctx, producer, "pipe", n, 16, models); err != nil {
		return err
	}
	st1, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	cs1, err := re.commandStats(ctx)
	if err != nil {
		return err
	}
	var mon *monitor
	if b.opts.breakdown {
		if mon, err = startMonitor(re.srv.Addr()); err != nil {
			return err
		}
		defer mon.close()
		b.rec.note("pipeline.jobs", "-breakdown: this run is under MONITOR, its rates and CPU figures are not comparable")
	}
	m := metrics.New()
	cfg := benchWorkerConfigCreates(b.opts.concurrency, b.opts.createConcurrency)
	// The API completes at once; poll again as soon as asynq can.
	cfg.PollInterval, cfg.MinPollInterval = time.Millisecond, time.Millisecond
	cpu0, t0 := selfCPU(), time.Now()
	deps := worker.Deps{Redis: re.rdb, API: api.client, Store: store, Jobs: js, Metrics: m, TracerProvider: tp}
	w, err := startWorker(cfg, deps)
	if err != nil {
		return err
	}
	type point struct {
		at     time.Duration
		stored float64
	}
	var mu sync.Mutex
	var points []point
	err = waitUntil(ctx, 10*time.Minute, 20*time.Millisecond, "pipeline jobs stored", func() (bool, error) {
		v := counterValue(m.Registry(), "videoworker_jobs_finished_total", "state", "stored")
		mu.Lock()
		points = append(points, point{time.Since(t0), v})
		mu.Unlock()
		if v >= float64(n) {
			return true, nil
		}
		left, err := js.ActiveCount(ctx)
		return left == 0, err
	})
	total := time.Since(t0)
	cpu := selfCPU() - cpu0
	if serr := w.stop(); err == nil {
		err = serr
	}
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	b.rec.add("pipeline.allocs", float64(ms1.Mallocs-ms0.Mallocs)/float64(n))
	if sdk != nil {
		if ferr := sdk.ForceFlush(ctx); ferr != nil && err == nil {
			err = fmt.Errorf("pipeline: flush spans: %w", ferr)
		}
		if recv != nil {
			spans, posts := recv.Count()
			b.rec.add("pipeline.spans", float64(spans)/float64(n))
			b.logf("pipeline: %d spans received in %d OTLP/HTTP exports", spans, posts)
		}
	}
	if mon != nil {
		if r := mon.stop(ctx, re.rdb); r != nil && err == nil {
			rows, total := commandBreakdown(r, n)
			b.logf("pipeline: Redis commands per job by purpose (MONITOR, worker side):\n%s", breakdownTable(rows, total))
		}
	}
	if err != nil {
		return err
	}
	stored := counterValue(m.Registry(), "videoworker_jobs_finished_total", "state", "stored")
	if stored != float64(n) {
		return fmt.Errorf("pipeline: %v of %d jobs stored", stored, n)
	}
	st2, err := re.settledStats(ctx)
	if err != nil {
		return err
	}
	processed, err := processedTotal(ctx, re.rdb, allQueues...)
	if err != nil {
		return err
	}
	cs2, err := re.commandStats(ctx)
	if err != nil {
		return err
	}
	top := topCommands(cs1, cs2, n, 12)
	b.rec.note("pipeline.cmds_worker", "largest per job: "+top)
	b.logf("pipeline: Redis commands per job by command: %s", top)
	// Where a job's time goes, from its record (a sample of 200).
	var create, waitPoll, waitDL, dl float64
	k := 0
	for i := 0; i < n; i += max(n/200, 1) {
		rec, err := js.Get(ctx, fmt.Sprintf("pipe-%07d", i))
		if err != nil {
			return err
		}
		create += rec.CreateEndedAt.Sub(rec.CreateStartedAt).Seconds()
		waitPoll += rec.CompletedAt.Sub(rec.CreateEndedAt).Seconds()
		waitDL += rec.DownloadStartedAt.Sub(rec.CompletedAt).Seconds()
		dl += rec.StoredAt.Sub(rec.DownloadStartedAt).Seconds()
		k++
	}
	b.rec.add("pipeline.stage_create", 1000*create/float64(k))
	b.rec.add("pipeline.stage_poll", 1000*waitPoll/float64(k))
	b.rec.add("pipeline.stage_dlwait", 1000*waitDL/float64(k))
	b.rec.add("pipeline.stage_dl", 1000*dl/float64(k))
	// Steady-state rate: between 10 % and 90 % of the jobs stored.
	var t10, t90 time.Duration
	for _, p := range points {
		if t10 == 0 && p.stored >= 0.1*float64(n) {
			t10 = p.at
		}
		if t90 == 0 && p.stored >= 0.9*float64(n) {
			t90 = p.at
		}
	}
	rate := float64(n) / total.Seconds()
	if t90 > t10 {
		rate = 0.8 * float64(n) / (t90 - t10).Seconds()
	}
	tpj := float64(processed) / float64(n)
	b.rec.add("pipeline.jobs", rate)
	b.rec.add("pipeline.tasks_per_job", tpj)
	ceiling := b.rec.median("ceiling.process")
	if math.IsNaN(ceiling) {
		ceiling = referenceCeiling
		b.rec.note("pipeline.ratio", fmt.Sprintf("ceiling section not run: ratio against the reference %d tasks/s of dependencies.md", referenceCeiling))
	}
	b.rec.add("pipeline.ratio", 100*rate*tpj/ceiling)
	b.rec.add("pipeline.cmds_worker", float64(st2.Commands-st1.Commands)/float64(n))
	b.rec.add("pipeline.cmds_total", float64(st2.Commands-st0.Commands)/float64(n))
	b.rec.add("pipeline.mem", float64(st2.UsedMemory-st0.UsedMemory)/float64(n))
	b.rec.add("pipeline.cpu", cpu.Seconds()*1000/float64(n))
	b.rec.add("pipeline.redis_cpu", (st2.CPU-st1.CPU)*1000/float64(n))
	b.logf("pipeline: %d jobs in %s (%.0f jobs/s steady, %.0f overall), %.2f tasks/job", n, total.Round(time.Millisecond), rate, float64(n)/total.Seconds(), tpj)
	return nil
}

// referenceCeiling is raw asynq's rate measured on this machine
// (dependencies.md), used when the ceiling section is not run.
const referenceCeiling = 7500

// counterValue reads a counter (or the sum of a counter vector's series
// matching label=value; all series when label is "") from reg.
func counterValue(reg *prometheus.Registry, name, label, value string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return math.NaN()
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label && lp.GetValue() == value {
						ok = true
					}
				}
				if !ok {
					continue
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// histogramSnapshot reads a histogram's cumulative finite buckets and its
// count (which includes the +Inf bucket) from reg.
func histogramSnapshot(reg *prometheus.Registry, name string) ([]bucket, uint64) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		var out []bucket
		for _, bk := range h.GetBucket() {
			out = append(out, bucket{Upper: bk.GetUpperBound(), Count: bk.GetCumulativeCount()})
		}
		return out, h.GetSampleCount()
	}
	return nil, 0
}
