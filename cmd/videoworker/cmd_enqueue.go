package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/tasks"
)

// labelFlags collects repeated -label key=value flags.
type labelFlags map[string]string

func (l labelFlags) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	l[k] = v
	return nil
}

func runEnqueue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	model := fs.String("model", "google/veo-3.1-lite", "model id")
	prompt := fs.String("prompt", "", "prompt (required); with -count N each job gets ' #i' appended")
	count := fs.Int("count", 1, "number of jobs to submit")
	jobID := fs.String("job-id", "", "job id (idempotent); with -count N the ids are ID-1..ID-N")
	duration := fs.Int("duration", 0, "duration in seconds (model dependent)")
	size := fs.String("size", "", "explicit WxH, e.g. 1280x720")
	resolution := fs.String("resolution", "", "480p, 720p, 1080p, …")
	aspect := fs.String("aspect-ratio", "", "16:9, 9:16, 1:1, …")
	samples := fs.Int("sample-count", 0, "outputs per job (1-4)")
	timeout := fs.Duration("timeout", 0, "overall deadline of each job (default: the worker's JOB_TIMEOUT)")
	tenant := fs.String("tenant", "", "tenant of the jobs (default: default); see docs/tenants.md")
	callbackURL := fs.String("callback-url", "", "URL that receives each job's terminal state as a signed POST (default: CALLBACK_URL)")
	labels := labelFlags{}
	fs.Var(labels, "label", "key=value label kept with the job (repeatable)")
	if done, err := parseFlags(fs, args, stdout, stderr); done || err != nil {
		return err
	}
	if *prompt == "" || *count < 1 {
		return usageError{"enqueue: -prompt is required and -count must be at least 1"}
	}
	cfg, err := loadConfig()
	if err != nil {
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
	c := tasks.NewClient(rdb, cfg.producerOptions(log, rdb, tp))
	for i := 1; i <= *count; i++ {
		req := tasks.Request{
			Video: apiclient.CreateRequest{Model: *model, Prompt: *prompt, Duration: *duration, Size: *size,
				Resolution: *resolution, AspectRatio: *aspect, SampleCount: *samples},
			Timeout:     *timeout,
			Labels:      labels,
			CallbackURL: *callbackURL,
			Tenant:      *tenant,
		}
		if *count > 1 {
			req.Video.Prompt = fmt.Sprintf("%s #%d", *prompt, i)
		}
		if *jobID != "" {
			req.JobID = tasks.JobID(*jobID)
			if *count > 1 {
				req.JobID = tasks.JobID(fmt.Sprintf("%s-%d", *jobID, i))
			}
		}
		id, err := c.Submit(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id)
	}
	return nil
}
