// Command soak is the soak harness of the video pipeline (`make soak`).
//
// It builds videoworker, starts a real redis-server with AOF (appendfsync
// everysec), serves the stand-in AI Stats API in this process with faults
// on (5xx, 429 with Retry-After, calls held past the client's timeout,
// dropped connections, truncated downloads, lost, duplicated and wrongly
// signed webhooks), runs `videoworker serve` as the webhook receiver and
// several `videoworker worker` processes, and submits N jobs. While the
// jobs drain it SIGKILLs a random worker every few seconds (starting a
// replacement) and restarts Redis. Then it stops the fleet and checks
// every job: its final state, the API's creates for its prompt (exactly
// one), and the stored file re-hashed against the API's sha256. It prints
// a report, writes it as JSON, and exits 1 on any lost job, duplicate
// create, corrupt or duplicate object.
//
// Usage:
//
//	go run ./cmd/soak [-jobs 2000] [-workers 3] [-kill-every 4s] [-redis-restarts 2] [flags]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program; it returns the exit status: 0 pass, 1 fail,
// 2 bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 2
	}
	rep, err := Run(ctx, cfg, stdout)
	if rep == nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	rep.writeText(stdout)
	if werr := rep.writeJSON(cfg.Out); werr != nil {
		fmt.Fprintln(stderr, "soak: report:", werr)
		return 1
	}
	fmt.Fprintf(stdout, "JSON report: %s\n", cfg.Out)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	if !rep.Pass {
		return 1
	}
	return 0
}
