package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/worker"
)

// openRedis connects to REDIS_URL (standalone, Sentinel or Cluster) and
// checks that Redis answers.
func openRedis(ctx context.Context, rawURL string) (redis.UniversalClient, error) {
	t, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	rdb := t.client()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s (REDIS_URL): %w", t.addr(), err)
	}
	return rdb, nil
}

// checkRedisSafety warns about Redis settings that can lose tasks: an
// eviction policy other than noeviction (evicted lease keys strand running
// tasks) and no persistence (a restart loses every queued task).
func checkRedisSafety(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	if v, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result(); err == nil {
		if p := v["maxmemory-policy"]; p != "" && p != "noeviction" {
			log.Warn("redis evicts keys under memory pressure; set maxmemory-policy noeviction or tasks can be stranded", "maxmemory_policy", p)
		}
	}
	aof, err1 := rdb.ConfigGet(ctx, "appendonly").Result()
	save, err2 := rdb.ConfigGet(ctx, "save").Result()
	if err1 == nil && err2 == nil && aof["appendonly"] != "yes" && save["save"] == "" {
		log.Warn("redis runs without persistence (no AOF, no RDB snapshots): a Redis restart loses every queued task; enable appendonly yes")
	}
}

// openStore opens STORAGE_URL with the S3 settings of the configuration;
// for S3 it checks within 30 s that the bucket answers.
func openStore(ctx context.Context, cfg Config) (storage.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return storage.OpenWith(ctx, cfg.StorageURL, cfg.storageOptions())
}

// newAPIClient builds the API client from the configuration; with m set,
// every call is counted. secrets (the webhook signing secrets) are masked,
// like the API key, in whatever the API sends back.
func newAPIClient(cfg Config, log *slog.Logger, m *metrics.Metrics, lim apiclient.Limiter, secrets []string) (*apiclient.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 128
	return apiclient.New(apiclient.Config{BaseURL: cfg.APIBaseURL, APIKey: cfg.APIKey, Secrets: secrets, AllowInsecureHTTP: cfg.insecureAPIAllowed(), Timeout: cfg.APITimeout, Logger: log,
		HTTPClient: &http.Client{Transport: m.Transport(tr)}, Limiter: lim})
}

// newWorker builds a worker from the configuration and its parts.
// tp is the tracer provider (nil: tracing off).
func newWorker(cfg Config, rdb redis.UniversalClient, api worker.VideoAPI, store storage.Store, log *slog.Logger, m *metrics.Metrics, tp trace.TracerProvider, tune func(*worker.Config)) (*worker.Worker, error) {
	queues, err := parseQueues(cfg.Queues)
	if err != nil {
		return nil, err
	}
	wc := worker.Config{
		Concurrency:       cfg.Concurrency,
		CreateConcurrency: cfg.CreateConcurrency,
		Queues:            queues,
		PollInterval:      cfg.PollInterval,
		MaxPollInterval:   cfg.MaxPollInterval,
		JobTimeout:        cfg.JobTimeout,
		KeyTemplate:       cfg.KeyTemplate,
		ShutdownTimeout:   cfg.ShutdownTimeout,

		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedCheckInterval,
		IdleCheckInterval:        cfg.IdleCheckInterval,
		RetentionSweepInterval:   cfg.RetentionSweepInterval,
		NoArchive:                cfg.JobArchive == "off",

		Callback: worker.CallbackConfig{Secrets: cfg.CallbackSecrets, Policy: cfg.callbackPolicy(),
			Timeout: cfg.CallbackTimeout, MaxAge: cfg.CallbackMaxAge},

		Budgets:            cfg.budgeter(rdb),
		BudgetPolicy:       cfg.BudgetPolicy,
		ModelPricesRefresh: cfg.ModelPricesRefresh,
	}
	js := cfg.jobStore(rdb)
	wc.Tenancy = cfg.tenancy(js)
	if !cfg.Wake {
		wc.IdleCheckInterval = -1
	}
	if tune != nil {
		tune(&wc)
	}
	return worker.New(wc, worker.Deps{Redis: rdb, API: api, Store: store, Jobs: js, Logger: log, Metrics: m,
		TracerProvider: tp})
}
