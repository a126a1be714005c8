package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/worker"
)

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	concurrency := fs.Int("concurrency", 0, "override WORKER_CONCURRENCY")
	queues := fs.String("queues", "", "override WORKER_QUEUES, e.g. video_download:1 for a download-only worker")
	if done, err := parseFlags(fs, args, stdout, stderr); done || err != nil {
		return err
	}
	cfg, errs := readConfig()
	sc, serveErrs := readServeConfig()
	if *concurrency > 0 {
		cfg.Concurrency = *concurrency
	}
	if *queues != "" {
		cfg.Queues = *queues
	}
	if err := configProblems(append(append(errs, serveErrs...), cfg.Validate(), sc.Validate(), cfg.requireAPIKey())...); err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	// Deferred first, so that it runs last: the spans still buffered are
	// flushed once everything that makes them has stopped.
	tp, stopTracing, err := setupTracing(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	checkRedisSafety(ctx, rdb, log)
	if cfg.useStandin() {
		log.Warn("AISTATS_API_KEY is not set: using the stand-in API of AISTATS_STANDIN_URL, whose videos are random bytes; set AISTATS_API_KEY to use the real API",
			"api", cfg.APIBaseURL)
	}
	// One free call tells at start whether the API answers and takes the
	// key, rather than the first jobs failing; it never stops the start.
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		logAPICheck(ctx, cfg, log)
	}()
	defer func() { <-checked }()
	m := metrics.New()
	lim := sc.limiter(rdb, cfg.KeyPrefix)
	log.Info("API budgets", "create", budgetText(sc.CreateRate), "read", budgetText(sc.ReadRate))
	api, err := newAPIClient(cfg, log, m, lim, sc.Secrets)
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
	if len(cfg.CallbackSecrets) == 0 {
		log.Info("CALLBACK_SECRETS not set: jobs with a callback_url wait (retried up to CALLBACK_MAX_AGE) for a worker that can sign their callback")
	}
	w, err := newWorker(cfg, rdb, api, store, log, m, tp, func(wc *worker.Config) { wc.Webhook = sub })
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
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		done := make(chan struct{})
		go func() { defer close(done); _ = serveHTTP(ctx, ln, server.NewHTTPServer(mux, log)) }()
		defer func() { <-done }() // serveHTTP returns once ctx ends
		log.Info("worker metrics and health check", "addr", ln.Addr().String(), "paths", "/metrics /healthz")
	}
	log.Info("videoworker worker", "api", cfg.APIBaseURL, "storage", cfg.StorageURL, "redis", redactURL(cfg.RedisURL))
	return w.Run(ctx)
}

// budgetText is how a budget reads in the log: "unlimited" for none.
func budgetText(s string) string {
	if strings.TrimSpace(s) == "" {
		return "unlimited"
	}
	return s
}
