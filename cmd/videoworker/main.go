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
//
// Configuration comes from the environment; see the README.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
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
  standin   serve the stand-in AI Stats API (for tests and demos)
  demo      run Redis, the stand-in API, a worker and the dashboard in one process and
            submit sample jobs

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
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}
