package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/standin"
)

// standinFlags registers the stand-in's knobs on fs.
func standinFlags(fs *flag.FlagSet) *standin.Config {
	c := &standin.Config{}
	fs.StringVar(&c.APIKey, "api-key", os.Getenv("AISTATS_API_KEY"), "bearer key the stand-in requires (default AISTATS_API_KEY; empty accepts any)")
	fs.DurationVar(&c.QueuedFor, "queued-for", 2*time.Second, "time a job stays queued")
	fs.DurationVar(&c.ProcessingFor, "processing-for", 8*time.Second, "time a job stays processing")
	fs.IntVar(&c.PollAfterSeconds, "poll-after", 2, "poll_after_seconds reported (0 omits the field)")
	fs.Int64Var(&c.ContentSize, "content-size", 256<<10, "bytes of each video")
	fs.Float64Var(&c.FailRate, "fail-rate", 0, "fraction of jobs that end failed")
	fs.Float64Var(&c.ExpireRate, "expire-rate", 0, "fraction of jobs that end expired")
	fs.Int64Var(&c.Seed, "seed", 1, "seed of content bytes, outcomes and faults")
	fs.Float64Var(&c.Faults.ServerErrorRate, "error-rate", 0, "fraction of calls answered 5xx")
	fs.Float64Var(&c.Faults.RateLimitRate, "rate-limit-rate", 0, "fraction of calls answered 429")
	fs.DurationVar(&c.Faults.RetryAfter, "retry-after", time.Second, "Retry-After of injected 429s")
	fs.DurationVar(&c.Faults.Latency, "latency", 0, "latency added to every call")
	fs.Float64Var(&c.Faults.DropRate, "drop-rate", 0, "fraction of calls whose connection is dropped after handling")
	fs.Float64Var(&c.Faults.TruncateRate, "truncate-rate", 0, "fraction of content downloads cut short")
	fs.Float64Var(&c.WebhookFaults.DuplicateRate, "webhook-duplicate-rate", 0, "fraction of webhook attempts sent twice")
	fs.Float64Var(&c.WebhookFaults.WrongSecretRate, "webhook-wrong-secret-rate", 0, "fraction of webhook attempts signed with a wrong secret (retried)")
	fs.Float64Var(&c.WebhookFaults.DropRate, "webhook-drop-rate", 0, "fraction of webhook attempts silently lost (never retried)")
	fs.Float64Var(&c.WebhookFaults.OutOfOrderRate, "webhook-out-of-order-rate", 0, "fraction of webhook events held back until the job's next event")
	fs.DurationVar(&c.WebhookFaults.Latency, "webhook-latency", 0, "wait before each webhook attempt")
	fs.Float64Var(&c.WebhookTimeScale, "webhook-time-scale", 1, "multiplies the webhook retry delays (1, 5, 15 min) and the 30 s delivery timeout")
	fs.StringVar(&c.WebhookRevision, "webhook-revision", standin.WebhookRevisionInline, "the create's webhook contract: inline ({url, events, secret}) or endpoint (the newest API: {endpoint_id, events} only; inline url/secret answered 400)")
	fs.Func("webhook-endpoint", "with -webhook-revision endpoint: a workspace webhook endpoint, ID=URL, signed with the first of WEBHOOK_SECRETS (repeatable)", func(v string) error {
		id, u, ok := strings.Cut(v, "=")
		if !ok || id == "" || u == "" {
			return errors.New("want ID=URL")
		}
		secret, _, _ := strings.Cut(os.Getenv("WEBHOOK_SECRETS"), ",")
		if c.WebhookEndpoints == nil {
			c.WebhookEndpoints = map[string]standin.WebhookEndpoint{}
		}
		c.WebhookEndpoints[id] = standin.WebhookEndpoint{URL: u, Secret: strings.TrimSpace(secret)}
		return nil
	})
	return c
}

func runStandin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("standin", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	cfg := standinFlags(fs)
	if done, err := parseFlags(fs, args, stdout, stderr); done || err != nil {
		return err
	}
	if r := cfg.WebhookRevision; r != standin.WebhookRevisionInline && r != standin.WebhookRevisionEndpoint {
		return fmt.Errorf("standin: -webhook-revision %q: want inline or endpoint", r)
	}
	log := newLogger(stderr, envOr("LOG_FORMAT", "auto"), envOr("LOG_LEVEL", "info"))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("standin: %w", err)
	}
	srv := standin.New(*cfg, log)
	// Webhook delivery runs beside the API and stops first, so that its
	// idle connections to receivers are closed before the process ends.
	srv.Start()
	defer srv.Close()
	fmt.Fprintf(stdout, "stand-in AI Stats API at http://%s/v1 (delivers the webhooks jobs subscribe)\n", ln.Addr())
	return serveHTTP(ctx, ln, standinHTTPServer(srv, log))
}

// serveHTTP serves hs on ln until ctx ends, then shuts down gracefully:
// requests in flight finish (within 5 s), idle connections close at once,
// and so do connections that were opened but never carried a request.
// http.Server.Shutdown alone waits up to 5 s for those, and clients open
// them ahead of need (an HTTP transport dialing beside a connection that
// frees up; browsers preconnecting), so a shutdown stalled and ended in an
// error now and then.
func serveHTTP(ctx context.Context, ln net.Listener, hs *http.Server) error {
	fresh := trackFreshConns(hs)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(sctx) }()
	// Shutdown has closed the listener once Serve returns; no new
	// connection arrives after that.
	serr := <-errc
	fresh.closeAll()
	err := <-shut
	if serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// freshConns are a server's connections that have not yet carried a
// request (http.StateNew).
type freshConns struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// trackFreshConns makes hs record its fresh connections, keeping any
// ConnState hook it already has.
func trackFreshConns(hs *http.Server) *freshConns {
	f := &freshConns{conns: map[net.Conn]struct{}{}}
	prev := hs.ConnState
	hs.ConnState = func(c net.Conn, st http.ConnState) {
		f.mu.Lock()
		switch {
		case st == http.StateNew && f.closed:
			c.Close() // accepted as the listener closed
		case st == http.StateNew:
			f.conns[c] = struct{}{}
		default:
			delete(f.conns, c)
		}
		f.mu.Unlock()
		if prev != nil {
			prev(c, st)
		}
	}
	return f
}

// closeAll closes the fresh connections, and any that becomes known later.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		c.Close()
		delete(f.conns, c)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// standinHTTPServer is the stand-in's http.Server: the project's timeouts,
// except that it streams videos of any size, so no read or write timeout.
func standinHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	hs := server.NewHTTPServer(h, log)
	hs.WriteTimeout, hs.ReadTimeout = 0, 0
	return hs
}
