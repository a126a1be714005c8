package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON (one object per job)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		return usageError{"status: give one or more job ids"}
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	c := tasks.NewClient(rdb, tasks.ClientOptions{Prefix: cfg.KeyPrefix})
	var missing []string
	for _, id := range fs.Args() {
		rec, err := c.Status(ctx, tasks.JobID(id))
		if errors.Is(err, jobs.ErrNotFound) {
			missing = append(missing, id)
			fmt.Fprintf(stderr, "job %s: not found\n", id)
			continue
		}
		if err != nil {
			return err
		}
		hist, err := c.History(ctx, tasks.JobID(id))
		if err != nil {
			return err
		}
		if *asJSON {
			b, _ := json.Marshal(map[string]any{"job": rec, "history": hist})
			fmt.Fprintln(stdout, string(b))
			continue
		}
		printRecord(stdout, rec, hist)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d job(s) not found: %s", len(missing), strings.Join(missing, ", "))
	}
	return nil
}

// printRecord writes a job and its history for a human.
func printRecord(w io.Writer, r *jobs.Record, hist []jobs.Event) {
	fmt.Fprintf(w, "job %s  state %s", r.ID, r.State)
	if r.VideoID != "" {
		fmt.Fprintf(w, "  video %s", r.VideoID)
	}
	if r.APIStatus != "" {
		fmt.Fprintf(w, "  api %s %d%%", r.APIStatus, r.Progress)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  model %s  prompt %q\n", r.Request.Model, clip(r.Request.Prompt, 60))
	steps := []struct {
		name string
		t    time.Time
	}{{"submitted", r.SubmittedAt}, {"created", r.CreatedAt}, {"completed", r.CompletedAt}, {"stored", r.StoredAt}, {"finished", r.FinishedAt}}
	var parts []string
	for _, s := range steps {
		if !s.t.IsZero() {
			parts = append(parts, fmt.Sprintf("%s %s (+%s)", s.name, s.t.Format("15:04:05.000"), s.t.Sub(r.SubmittedAt).Round(time.Millisecond)))
		}
	}
	fmt.Fprintf(w, "  %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(w, "  create attempts %d, polls %d, download attempts %d\n", r.CreateAttempts, r.Polls, r.DownloadAttempts)
	if r.Location != "" {
		fmt.Fprintf(w, "  stored at %s (%d bytes, sha256 %s)\n", r.Location, r.Bytes, r.SHA256)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  last error %s: %s\n", r.ErrorCode, r.Error)
	}
	if r.Reconcile != "" {
		fmt.Fprintf(w, "  reconcile: %s\n", r.Reconcile)
	}
	fmt.Fprintln(w, "  history:")
	for _, e := range hist {
		line := fmt.Sprintf("    %s  %-12s %-16s", e.At.Format("15:04:05.000"), e.State, e.Event)
		if e.Detail != "" {
			line += " " + clip(e.Detail, 120)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

func clip(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
