package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/wake"
	"github.com/videoworker/videoworker/webhook"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "", "override SERVE_ADDR")
	genLogin := fs.Bool("generate-login", false, "when OPERATORS is empty, make up an operator login for this run and print it (docker compose's demo set-up)")
	if done, err := parseFlags(fs, args, stdout, stderr); done || err != nil {
		return err
	}
	cfg, errs := readConfig()
	sc, serveErrs := readServeConfig()
	if *addr != "" {
		sc.Addr = *addr
	}
	if err := configProblems(append(append(errs, serveErrs...), cfg.Validate(), sc.Validate())...); err != nil {
		return err
	}
	var login string
	if *genLogin && strings.TrimSpace(sc.Operators) == "" {
		pass, err := randomPassword()
		if err != nil {
			return err
		}
		sc.Operators = "admin:" + pass + ":operator"
		login = "log in as admin / " + pass + " (operator; generated at start: set OPERATORS to choose the logins)"
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
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	h, hooks, err := newServerHandler(cfg, sc, rdb, store, log, tp)
	if err != nil {
		return err
	}
	if hooks != nil {
		// The receiver's rejection counts reach Redis every few seconds,
		// and once more after the HTTP server has stopped.
		hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		var wg sync.WaitGroup
		wg.Go(func() { hooks.Run(hctx) })
		defer wg.Wait()
		defer stop()
	}
	ln, err := net.Listen("tcp", sc.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(stdout, "videoworker serving on http://%s (dashboard at /, asynq UI at %s/, webhooks at %s)\n", ln.Addr(), server.MonitoringPath, webhook.Path)
	if login != "" {
		fmt.Fprintln(stdout, "  "+login)
	}
	log.Info("videoworker serve", "config", sc, "webhooks", sc.PublicURL != "" || len(sc.Secrets) > 0)
	return serveHTTP(ctx, ln, server.NewHTTPServer(h, log))
}

// newServerHandler builds the server's routes from the configuration. The
// webhook receiver, when webhooks are on, is returned too: its caller runs
// it (webhook.Handler.Run).
func newServerHandler(cfg Config, sc ServeConfig, rdb redis.UniversalClient, store storage.Store, log *slog.Logger, tp trace.TracerProvider) (http.Handler, *webhook.Handler, error) {
	auth, err := server.NewAuth(sc.APITokens, sc.Operators)
	if err != nil {
		return nil, nil, err
	}
	if sc.APITokens == "" && sc.Operators == "" {
		log.Warn("API_TOKENS and OPERATORS not set: the job API and operator pages refuse every request")
	}
	m := metrics.New()
	m.AddQueues(asynq.NewInspectorFromRedisClient(rdb))
	js := cfg.jobStore(rdb)
	proxies, err := server.ParseTrustedProxies(sc.TrustedProxies)
	if err != nil {
		return nil, nil, err
	}
	popts := cfg.producerOptions(log, rdb, tp)
	popts.Tenancy = cfg.tenancy(js)
	if ten := popts.Tenancy; ten != nil {
		m.AddTenants(func(ctx context.Context) ([]metrics.TenantJobs, error) {
			figs, err := ten.Figures(ctx)
			out := make([]metrics.TenantJobs, len(figs))
			for i, f := range figs {
				out[i] = metrics.TenantJobs{Tenant: f.Tenant, Waiting: f.Waiting, Admitted: f.Admitted}
			}
			return out, err
		})
	}
	deps := server.Deps{Redis: rdb, Store: store, Logger: log, Auth: auth, Metrics: m, Jobs: js, Monitoring: true, TrustedProxies: proxies, Budgets: cfg.budgeter(rdb),
		Tenancy: popts.Tenancy, Producer: tasks.NewClient(rdb, popts)}
	var hooks *webhook.Handler
	if len(sc.Secrets) > 0 {
		v, err := webhook.NewVerifier(sc.Secrets, sc.Tolerance, nil)
		if err != nil {
			return nil, nil, err
		}
		hooks = webhook.NewHandler(v, js, wake.NewEnqueuer(rdb, cfg.Wake), log.With("component", "webhook")).WithMetrics(m)
		deps.Webhooks = hooks
	} else {
		log.Warn("WEBHOOK_SECRETS not set: the webhook receiver is off, jobs finish by polling alone")
	}
	return server.New(deps), hooks, nil
}
