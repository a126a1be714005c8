package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

const apiKey = "sk-bench-0123456789"

// models are the stand-in catalogue's models; jobs are spread over them
// round robin (creates of one model are serialised fleet-wide by design).
var models = []string{"google/veo-3.1-lite", "google/veo-3.1", "openai/sora-2"}

// redisEnv is one section run's own redis-server (no persistence) and a
// client of database 0.
type redisEnv struct {
	srv  *redistest.Server
	stop func()
	rdb  *redis.Client
}

func startRedis() (*redisEnv, error) {
	srv, stop, err := redistest.StartMain(redistest.Options{Databases: 16})
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	return &redisEnv{srv: srv, stop: stop, rdb: rdb}, nil
}

func (e *redisEnv) close() {
	e.rdb.Close()
	e.stop()
}

// redisStats is a snapshot of the INFO figures the bench uses.
type redisStats struct {
	UsedMemory int64
	Commands   int64
	CPU        float64 // used_cpu_user + used_cpu_sys, seconds
	Keys       int64
}

func (e *redisEnv) stats(ctx context.Context) (redisStats, error) {
	txt, err := e.rdb.Info(ctx, "memory", "stats", "cpu", "keyspace").Result()
	if err != nil {
		return redisStats{}, err
	}
	var st redisStats
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "used_memory":
			st.UsedMemory, _ = strconv.ParseInt(v, 10, 64)
		case "total_commands_processed":
			st.Commands, _ = strconv.ParseInt(v, 10, 64)
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			st.CPU += f
		case "db0":
			for _, kv := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(kv, "keys="); ok {
					st.Keys, _ = strconv.ParseInt(n, 10, 64)
				}
			}
		}
	}
	return st, nil
}

// settledStats reads INFO after asking jemalloc to settle, twice, and
// keeps the second reading (the first INFO call's own allocations are then
// counted in both).
func (e *redisEnv) settledStats(ctx context.Context) (redisStats, error) {
	_ = e.rdb.Do(ctx, "MEMORY", "PURGE").Err()
	if _, err := e.stats(ctx); err != nil {
		return redisStats{}, err
	}
	return e.stats(ctx)
}

// apiEnv is the stand-in API served over real HTTP on loopback.
type apiEnv struct {
	srv    *standin.Server
	hs     *httptest.Server
	url    string
	client *apiclient.Client
}

func startAPI(cfg standin.Config) (*apiEnv, error) {
	cfg.APIKey = apiKey
	srv := standin.New(cfg, nil)
	hs := httptest.NewServer(srv)
	// httptest's default keeps few idle connections; the worker's client
	// pools 128 per host, so serve them all.
	hs.Config.ReadHeaderTimeout = 30 * time.Second
	client, err := newAPIClient(hs.URL + "/v1")
	if err != nil {
		hs.Close()
		return nil, err
	}
	return &apiEnv{srv: srv, hs: hs, url: hs.URL + "/v1", client: client}, nil
}

func newAPIClient(base string) (*apiclient.Client, error) {
	return apiclient.New(apiclient.Config{BaseURL: base, APIKey: apiKey, Timeout: 30 * time.Second, ContentIdleTimeout: 30 * time.Second})
}

func (a *apiEnv) close() {
	a.srv.Close()
	a.hs.Close()
}

// inProcWorker runs a worker in this process until stop.
type inProcWorker struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func startWorker(cfg worker.Config, deps worker.Deps) (*inProcWorker, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	w, err := worker.New(cfg, deps)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcWorker{cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- w.Run(ctx) }()
	return p, nil
}

func (p *inProcWorker) stop() error {
	p.once.Do(func() {
		p.cancel()
		p.err = <-p.done
	})
	return p.err
}

// delayedCheck is -delayed-check: the worker's DelayedTaskCheckInterval.
var delayedCheck time.Duration

// benchWorkerConfig is the worker configuration of the pipeline figures:
// the product defaults except concurrency and the shutdown grace.
func benchWorkerConfig(concurrency int) worker.Config {
	return benchWorkerConfigCreates(concurrency, 0)
}

// benchWorkerConfigCreates is benchWorkerConfig with the per-process create
// slots set (0: the worker's default).
func benchWorkerConfigCreates(concurrency, creates int) worker.Config {
	return worker.Config{
		Concurrency:           concurrency,
		ShutdownTimeout:       5 * time.Second,
		StrandedCheckInterval: -1, // the reconciler is not part of any figure
		CreateConcurrency:     creates,
		// 0 keeps the worker's default.
		DelayedTaskCheckInterval: delayedCheck,
	}
}

// submitAll submits n jobs with conc goroutines, the models round robin,
// and returns the ids in submission order plus each Submit's latency.
func submitAll(ctx context.Context, p *tasks.Client, prefix string, n, conc int, models []string) ([]string, []time.Duration, error) {
	ids := make([]string, n)
	lat := make([]time.Duration, n)
	var next int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if i >= int64(n) || stop || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("%s-%07d", prefix, i)
				t0 := time.Now()
				_, err := p.Submit(ctx, tasks.Request{JobID: tasks.JobID(id),
					Video: apiclient.CreateRequest{Model: models[i%int64(len(models))], Prompt: "bench " + id}})
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("submit %s: %w", id, err)
					}
					mu.Unlock()
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return ids, lat, firstErr
}

// waitUntil polls cond every interval until it is true, ctx ends or limit
// passes.
func waitUntil(ctx context.Context, limit, every time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not done after %s", what, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// queueBacklog sums pending, active, scheduled and retry tasks of the
// queues, read straight from asynq's keys (the Inspector's queue stats
// also sample memory usage, which is slow on big queues).
func queueBacklog(ctx context.Context, rdb redis.UniversalClient, queues ...string) (int64, error) {
	pipe := rdb.Pipeline()
	var cmds []*redis.IntCmd
	for _, q := range queues {
		p := "asynq:{" + q + "}:"
		cmds = append(cmds, pipe.LLen(ctx, p+"pending"), pipe.LLen(ctx, p+"active"), pipe.ZCard(ctx, p+"scheduled"), pipe.ZCard(ctx, p+"retry"))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// processedTotal sums asynq's all-time processed counters of the queues.
func processedTotal(ctx context.Context, rdb redis.UniversalClient, queues ...string) (int64, error) {
	var n int64
	for _, q := range queues {
		v, err := rdb.Get(ctx, "asynq:{"+q+"}:processed").Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		n += v
	}
	return n, nil
}

var allQueues = []string{tasks.QueueCreate, tasks.QueuePoll, tasks.QueueDownload}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// commandStats reads INFO commandstats: calls per command.
func (e *redisEnv) commandStats(ctx context.Context) (map[string]int64, error) {
	txt, err := e.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out, nil
}

// topCommands describes the largest per-job deltas between two
// commandstats readings, e.g. "evalsha 12.0, hgetall 3.0".
func topCommands(before, after map[string]int64, jobs, top int) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			all = append(all, kv{k, float64(d) / float64(jobs)})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for i, e := range all {
		if i == top {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.1f", e.k, e.v))
	}
	return strings.Join(parts, ", ")
}
