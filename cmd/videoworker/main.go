// Command videoworker runs the video pipeline: workers that carry AI video
// jobs from create through status polls to storage, a command to enqueue
// jobs and one to read their status, a stand-in of the AI Stats API, and a
// self-contained demo.
//
// Usage:
//
//	videoworker worker              run a worker until SIGTERM
//	videoworker enqueue [flags]     submit jobs; prints their ids
//	videoworker status JOB_ID...    show jobs and their history
//	videoworker serve               job API, dashboard, asynq UI, webhooks, health checks
//	videoworker standin [flags]     serve the stand-in AI Stats API
//	videoworker demo [flags]        everything in one process, no set-up
//	videoworker healthcheck [URL]   exit 0 when URL answers 2xx (for containers)
//
// Configuration comes from the environment; see the README.
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

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis logs connection-pool trouble itself, a line per failed dial,
	// before the error it returns reaches us and is reported in one line
	// with what it means. The setting is process-wide, hence here.
	redis.SetLogger(silentRedisLog{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "videoworker:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "videoworker:", err)
		os.Exit(1)
	}
}

// silentRedisLog drops go-redis's internal log lines; every failure also
// comes back as an error, which the program reports.
type silentRedisLog struct{}

func (silentRedisLog) Printf(context.Context, string, ...any) {}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `usage: videoworker COMMAND [flags]

commands:
  worker    run a worker until SIGTERM or Ctrl-C
  enqueue   submit video jobs; prints one job id per line
  status    show jobs and their history: status JOB_ID...
  serve     serve the job API, the dashboard (/), the asynq UI (/monitoring/),
            the webhook receiver and health checks (SERVE_ADDR)
  standin   serve the stand-in AI Stats API and deliver its webhooks (tests, demos)
  demo      run Redis, the stand-in API, a worker and the dashboard in one process and
            submit sample jobs
  healthcheck exit 0 when a URL answers 2xx (default the server's /healthz); the
            image has no shell, so its container health checks run this

Configuration is read from the environment (see README.md). Run
'videoworker COMMAND -h' for a command's flags.`

// run is the whole program; tests call it too.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{"no command"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "worker":
		return runWorker(ctx, rest, stdout, stderr)
	case "enqueue":
		return runEnqueue(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "standin":
		return runStandin(ctx, rest, stdout, stderr)
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// parseFlags parses a command's flags. -h (or -help) prints the command's
// flags on stdout and reports done, a success; a mistake prints them on
// stderr and returns a usageError.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (done bool, err error) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: videoworker %s [flags]%s\n\nflags:\n", fs.Name(), commandArgs[fs.Name()])
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return true, nil
	case err != nil:
		fs.SetOutput(stderr)
		fs.Usage()
		return false, usageError{fs.Name() + ": " + err.Error()}
	}
	return false, nil
}

// commandArgs are the arguments a command takes after its flags.
var commandArgs = map[string]string{"status": " JOB_ID..."}
