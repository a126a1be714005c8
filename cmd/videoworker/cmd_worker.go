package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/worker"
)

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	concurrency := fs.Int("concurrency", 0, "override WORKER_CONCURRENCY")
	queues := fs.String("queues", "", "override WORKER_QUEUES, e.g. video_download:1 for a download-only worker")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	cfg, err := loadConfig()
	if *concurrency > 0 {
		cfg.Concurrency = *concurrency
	}
	if *queues != "" {
		cfg.Queues = *queues
		err = cfg.Validate()
	}
	if err != nil {
		return err
	}
	if err := cfg.requireAPIKey(); err != nil {
		return err
	}
	sc, err := loadServeConfig()
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	checkRedisSafety(ctx, rdb, log)
	m := metrics.New()
	lim := sc.limiter(rdb, cfg.KeyPrefix)
	log.Info("API budgets", "create", sc.CreateRate, "read", sc.ReadRate)
	api, err := newAPIClient(cfg, log, m, lim)
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	sub := sc.Subscription()
	if sub == nil {
		log.Info("webhooks off (WEBHOOK_PUBLIC_URL and WEBHOOK_SECRETS not set): jobs finish by polling alone")
	}
	w, err := newWorker(cfg, rdb, api, store, log, m, func(wc *worker.Config) { wc.Webhook = sub })
	if err != nil {
		return err
	}
	if sc.MetricsAddr != "" {
		ln, err := net.Listen("tcp", sc.MetricsAddr)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		done := make(chan struct{})
		go func() { defer close(done); _ = serveHTTP(ctx, ln, server.NewHTTPServer(mux, log)) }()
		defer func() { <-done }() // serveHTTP returns once ctx ends
		log.Info("worker metrics", "addr", ln.Addr().String())
	}
	log.Info("videoworker worker", "api", cfg.APIBaseURL, "storage", cfg.StorageURL, "redis", redactURL(cfg.RedisURL))
	return w.Run(ctx)
}
