package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// The fleet idle cost section starts idle worker processes (this binary
// re-executed, mode "idle") against a redis-server of its own and counts
// the commands Redis processes (INFO stats total_commands_processed,
// which counts the commands a script runs too) and its CPU time over a
// window, for the worker's default configuration, for its configuration
// before the wake-up gate (package wake) and for a plain asynq server
// with asynq's defaults.

// idleConfig configures an idle process.
type idleConfig struct {
	RedisAddr string `json:"redis_addr"`
	// Kind: "worker" (the worker's defaults), "nowake" (the worker with
	// the gate off: asynq polling at 20 ms / 200 ms, as before the gate),
	// "asynq" (asynq.Server with asynq's defaults on the worker's queues).
	Kind string `json:"kind"`
}

// idleRun is one measured configuration.
type idleRun struct {
	kind  string
	procs int
	key   string // figure key prefix
}

var idleRuns = []idleRun{
	{kind: "worker", procs: 1, key: "idle.worker_1"},
	{kind: "worker", procs: 10, key: "idle.worker_10"},
	{kind: "worker", procs: 50, key: "idle.worker_50"},
	{kind: "asynq", procs: 1, key: "idle.asynq_1"},
	{kind: "asynq", procs: 50, key: "idle.asynq_50"},
	{kind: "nowake", procs: 1, key: "idle.nowake_1"},
}

func defineIdle(r *recorder, sz sizes) {
	s := fmt.Sprintf("Fleet idle cost (idle processes, no jobs; %s window; Redis commands include those run inside scripts)", sz.idleWindow)
	for _, ir := range idleRuns {
		what := map[string]string{"worker": "videoworker worker (default config)", "asynq": "plain asynq server (asynq defaults)",
			"nowake": "videoworker worker, wake-up gate off (the config before it)"}[ir.kind]
		d := figureDef{Key: ir.key + ".cmds", Section: s, Label: fmt.Sprintf("%s × %d: Redis commands/s per process", what, ir.procs), Unit: "cmds/s", Digits: 1}
		if ir.kind == "worker" {
			d.Target, d.Pass = "≤ 15", atMost(15)
		}
		r.define(d)
		if ir.procs > 1 {
			r.define(figureDef{Key: ir.key + ".total", Section: s, Label: fmt.Sprintf("%s × %d: Redis commands/s in total", what, ir.procs), Unit: "cmds/s", Digits: 0})
			cpu := figureDef{Key: ir.key + ".redis_cpu", Section: s, Label: fmt.Sprintf("%s × %d: redis-server CPU", what, ir.procs), Unit: "% of a core", Digits: 1}
			if ir.kind == "worker" && ir.procs == 50 {
				cpu.Target, cpu.Pass = "≤ 5 %", atMost(5)
			}
			r.define(cpu)
		}
	}
}

func runIdle(ctx context.Context, b *bench) error {
	var errs []error
	for _, ir := range idleRuns {
		if err := runIdleOne(ctx, b, ir); err != nil {
			errs = append(errs, fmt.Errorf("%s × %d: %w", ir.kind, ir.procs, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

func runIdleOne(ctx context.Context, b *bench, ir idleRun) error {
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	var procs []*childProc
	defer func() {
		for _, p := range procs {
			_ = p.stop()
		}
	}()
	for range ir.procs {
		p, err := startIdleProc(idleConfig{RedisAddr: re.srv.Addr(), Kind: ir.kind})
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.ready(); err != nil {
			return err
		}
	}
	// Let start-up settle: the first look at every queue and set, the
	// subscriptions, the first heartbeats.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(min(5*time.Second, b.sz.idleWindow/2)):
	}
	c0, err := re.commandStats(ctx)
	if err != nil {
		return err
	}
	s0, err := re.stats(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.sz.idleWindow):
	}
	s1, err := re.stats(ctx)
	if err != nil {
		return err
	}
	c1, err := re.commandStats(ctx)
	if err != nil {
		return err
	}
	win := time.Since(t0).Seconds()
	// The count includes one command of the bench's: the first INFO
	// (each INFO is counted once it has run).
	total := float64(s1.Commands-s0.Commands-1) / win
	per := total / float64(ir.procs)
	b.rec.add(ir.key+".cmds", per)
	if ir.procs > 1 {
		b.rec.add(ir.key+".total", total)
		b.rec.add(ir.key+".redis_cpu", 100*(s1.CPU-s0.CPU)/win)
	}
	top := topCommands(c0, c1, max(int(win*float64(ir.procs)), 1), 5)
	b.rec.note(ir.key+".cmds", "per process per second: "+top)
	b.logf("idle: %s × %d: %.1f commands/s per process (%.0f in total), redis-server %.1f %% of a core; %s",
		ir.kind, ir.procs, per, total, 100*(s1.CPU-s0.CPU)/win, top)
	return nil
}

// startIdleProc starts an idle child process.
func startIdleProc(c idleConfig) (*childProc, error) {
	return startChild("idle", c, 30*time.Second)
}

// ready waits for an idle child's "ready" line.
func (p *childProc) ready() error {
	if !p.out.Scan() {
		return fmt.Errorf("%s: not ready: %v", p.name, p.out.Err())
	}
	return nil
}

// childIdle runs an idle worker or asynq server until its input ends.
func childIdle(ctx context.Context, c idleConfig, in io.Reader, out io.Writer) error {
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wait func() error
	switch c.Kind {
	case "worker", "nowake":
		cfg := worker.Config{}
		if c.Kind == "nowake" {
			cfg.IdleCheckInterval = -1
		}
		w, err := worker.New(cfg, worker.Deps{Redis: rdb, API: nopAPI{}, Store: nopStore{}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		wait = func() error { return <-done }
	case "asynq":
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: tasks.DefaultQueues(), LogLevel: asynq.ErrorLevel})
		if err := srv.Start(asynq.NewServeMux()); err != nil {
			return err
		}
		wait = func() error { <-ctx.Done(); srv.Shutdown(); return nil }
	default:
		return fmt.Errorf("unknown idle kind %q", c.Kind)
	}
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, in) // until the bench closes our input
	cancel()
	return wait()
}
