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
	return c
}

func runStandin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("standin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	cfg := standinFlags(fs)
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	log := newLogger(stderr, envOr("LOG_FORMAT", "auto"), envOr("LOG_LEVEL", "info"))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("standin: %w", err)
	}
	srv := standin.New(*cfg, log)
	fmt.Fprintf(stdout, "stand-in AI Stats API at http://%s/v1\n", ln.Addr())
	return serveHTTP(ctx, ln, standinHTTPServer(srv, log))
}

// serveHTTP serves hs on ln until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, ln net.Listener, hs *http.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
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
