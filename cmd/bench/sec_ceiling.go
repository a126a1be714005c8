package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

func defineCeiling(r *recorder) {
	s := "Ceiling (raw asynq, no-op tasks)"
	r.define(figureDef{Key: "ceiling.enqueue", Section: s, Label: "raw enqueue, 8 goroutines", Unit: "tasks/s"})
	r.define(figureDef{Key: "ceiling.process", Section: s, Label: "raw no-op tasks processed", Unit: "tasks/s"})
	r.define(figureDef{Key: "ceiling.cmds", Section: s, Label: "Redis commands per raw task (enqueue+process)", Unit: "cmds", Digits: 1})
	r.define(figureDef{Key: "ceiling.process_1q", Section: s, Label: "raw no-op tasks processed, one queue (asynq's best case)", Unit: "tasks/s"})
	r.define(figureDef{Key: "ceiling.cmds_1q", Section: s, Label: "Redis commands per raw task, one queue", Unit: "cmds", Digits: 1})
}

// runCeiling enqueues n no-op tasks, then processes them with an asynq
// server configured like the worker's (queues, concurrency, check
// intervals), on a fresh redis-server; then again with the same server
// serving the one queue the tasks are in (asynq's best configuration: no
// dequeue attempt on an empty queue).
func runCeiling(ctx context.Context, b *bench) error {
	enq, proc, cmds, err := ceilingRun(ctx, b, false)
	if err != nil {
		return err
	}
	b.rec.add("ceiling.enqueue", enq)
	b.rec.add("ceiling.process", proc)
	b.rec.add("ceiling.cmds", cmds)
	_, proc1, cmds1, err := ceilingRun(ctx, b, true)
	if err != nil {
		return err
	}
	b.rec.add("ceiling.process_1q", proc1)
	b.rec.add("ceiling.cmds_1q", cmds1)
	b.logf("ceiling: %d tasks, enqueue %.0f/s, process %.0f/s (worker's queues), %.0f/s (one queue)", b.sz.ceilingTasks, enq, proc, proc1)
	return nil
}

// ceilingRun is one ceiling measurement on a fresh redis-server: rates of
// enqueue and processing (tasks/s) and Redis commands per task.
func ceilingRun(ctx context.Context, b *bench, oneQueue bool) (enqRate, procRate, cmds float64, err error) {
	re, err := startRedis()
	if err != nil {
		return 0, 0, 0, err
	}
	defer re.close()
	n := b.sz.ceilingTasks
	st0, err := re.settledStats(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	aq := asynq.NewClientFromRedisClient(re.rdb)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	t0 := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := aq.EnqueueContext(ctx, asynq.NewTask("bench:noop", nil, asynq.Queue(tasks.QueueCreate))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	enq := time.Since(t0)
	select {
	case err := <-errs:
		return 0, 0, 0, fmt.Errorf("enqueue: %w", err)
	default:
	}

	cfg := benchWorkerConfig(b.opts.concurrency)
	w, err := worker.New(cfg, worker.Deps{Redis: re.rdb, API: nopAPI{}, Store: nopStore{}})
	if err != nil {
		return 0, 0, 0, err
	}
	scfg := w.ServerConfig() // same queues, concurrency and check intervals as the worker
	scfg.Logger = worker.NewAsynqLogger(slog.New(slog.DiscardHandler))
	if oneQueue {
		scfg.Queues = map[string]int{tasks.QueueCreate: 1}
	}
	var done atomic.Int64
	finished := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(re.rdb, scfg)
	t1 := time.Now()
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(n) {
			close(finished)
		}
		return nil
	})); err != nil {
		return 0, 0, 0, err
	}
	select {
	case <-finished:
	case <-ctx.Done():
		srv.Shutdown()
		return 0, 0, 0, ctx.Err()
	case <-time.After(10 * time.Minute):
		srv.Shutdown()
		return 0, 0, 0, fmt.Errorf("ceiling: %d of %d tasks processed after 10 min", done.Load(), n)
	}
	proc := time.Since(t1)
	srv.Shutdown()
	st1, err := re.settledStats(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	return float64(n) / enq.Seconds(), float64(n) / proc.Seconds(), float64(st1.Commands-st0.Commands) / float64(n), nil
}
