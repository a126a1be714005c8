package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON (one object per job)")
	if done, err := parseFlags(fs, args, stdout, stderr); done || err != nil {
		return err
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
	c := tasks.NewClient(rdb, tasks.ClientOptions{Prefix: cfg.KeyPrefix, Retention: cfg.retention()})
	var missing []string
	var store storage.Store // opened for the first job with several outputs
	var storeErr error
	for _, id := range fs.Args() {
		rec, err := c.Status(ctx, tasks.JobID(id))
		if errors.Is(err, jobs.ErrNotFound) {
			// A job finished longer ago than its retention is forgotten:
			// its archive says so.
			if store == nil && storeErr == nil && cfg.retention() > 0 {
				if store, storeErr = openStore(ctx, cfg); storeErr != nil {
					storeErr = fmt.Errorf("STORAGE_URL: %w", storeErr)
				}
			}
			if store != nil {
				if info, err := store.Stat(ctx, jobs.ArchiveKey(id)); err == nil {
					if *asJSON {
						b, _ := json.Marshal(map[string]any{"job_id": id, "forgotten": true, "archive": info.Location})
						fmt.Fprintln(stdout, string(b))
					} else {
						fmt.Fprintf(stdout, "job %s  forgotten: finished and past its retention (JOB_RETENTION); record and history archived at %s\n", id, info.Location)
					}
					continue
				}
			}
			missing = append(missing, id)
			fmt.Fprintf(stderr, "job %s: not found (nor an archive of it)\n", id)
			continue
		}
		if err != nil {
			return err
		}
		hist, err := c.History(ctx, tasks.JobID(id))
		if err != nil {
			return err
		}
		if !rec.ArchivedAt.IsZero() {
			// Archived by the retention sweep: the record in Redis may be
			// compact, the history is in the archive document.
			if store == nil && storeErr == nil {
				if store, storeErr = openStore(ctx, cfg); storeErr != nil {
					storeErr = fmt.Errorf("STORAGE_URL: %w", storeErr)
				}
			}
			if store != nil {
				if a, err := jobs.LoadArchive(ctx, store, id); err == nil {
					rec, hist = a.With(rec, hist)
				} else {
					fmt.Fprintf(stderr, "job %s: its archive could not be read (%v): showing what Redis keeps\n", id, err)
				}
			}
		}
		var files []outputFile
		if rec.Outputs > 1 && rec.State == jobs.StateStored {
			if store == nil {
				if store, storeErr = openStore(ctx, cfg); storeErr != nil {
					storeErr = fmt.Errorf("STORAGE_URL: %w", storeErr)
				}
			}
			files = outputFiles(ctx, cfg, store, storeErr, rec)
		}
		if *asJSON {
			line := map[string]any{"job": rec, "history": hist}
			if files != nil {
				line["files"] = files
			}
			b, _ := json.Marshal(line)
			fmt.Fprintln(stdout, string(b))
			continue
		}
		printRecord(stdout, rec, hist, files)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d job(s) not found: %s", len(missing), strings.Join(missing, ", "))
	}
	return nil
}

// outputFile is one stored output of a job with several.
type outputFile struct {
	Index    int    `json:"index"`
	Key      string `json:"key"`
	Location string `json:"location,omitempty"`
	Bytes    int64  `json:"bytes,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Problem  string `json:"problem,omitempty"` // why it could not be read
}

// outputFiles finds each output of a stored job with several: the record
// keeps the first output's location and sha256 and the total size, and the
// worker names output i by STORAGE_KEY_TEMPLATE with {index} = i.
func outputFiles(ctx context.Context, cfg Config, store storage.Store, storeErr error, r *jobs.Record) []outputFile {
	files := make([]outputFile, 0, r.Outputs)
	for i := range r.Outputs {
		f := outputFile{Index: i}
		key, err := storage.RenderKey(cfg.KeyTemplate, storage.KeyVars{JobID: r.ID, VideoID: r.VideoID, Index: i, Date: r.SubmittedAt})
		switch {
		case i == 0 && r.StorageKey != "":
			f.Key, f.Location, f.SHA256 = r.StorageKey, r.Location, r.SHA256
		case err != nil:
			f.Problem = "STORAGE_KEY_TEMPLATE: " + err.Error()
		default:
			f.Key = key
		}
		switch {
		case f.Key == "" || (i == 0 && storeErr != nil):
		case storeErr != nil:
			f.Problem = storeErr.Error()
		default:
			info, err := store.Stat(ctx, f.Key)
			if err != nil {
				f.Problem = err.Error()
				break
			}
			f.Location, f.Bytes, f.SHA256 = info.Location, info.Size, info.SHA256
		}
		files = append(files, f)
	}
	return files
}

// printRecord writes a job and its history for a human; files lists the
// outputs of a job with several.
func printRecord(w io.Writer, r *jobs.Record, hist []jobs.Event, files []outputFile) {
	fmt.Fprintf(w, "job %s  state %s", r.ID, r.State)
	if r.VideoID != "" {
		fmt.Fprintf(w, "  video %s", r.VideoID)
	}
	if r.APIStatus != "" {
		fmt.Fprintf(w, "  api %s %d%%", r.APIStatus, r.Progress)
	}
	fmt.Fprintln(w)
	if r.Tenant != "" && r.Tenant != jobs.DefaultTenant {
		fmt.Fprintf(w, "  tenant %s", r.Tenant)
	}
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
	if !r.ArchivedAt.IsZero() {
		fmt.Fprintf(w, "  archived %s (record and history in storage: %s)\n", r.ArchivedAt.Format(time.RFC3339), jobs.ArchiveKey(r.ID))
	}
	if r.EstimatedCost.Known || r.SettledCost.Known {
		fmt.Fprintf(w, "  cost: estimated $%s, settled $%s", r.EstimatedCost, r.SettledCost)
		if r.BillingState != "" {
			fmt.Fprintf(w, " (billing %s)", r.BillingState)
		}
		fmt.Fprintln(w)
	}
	switch {
	case len(files) > 0:
		fmt.Fprintf(w, "  stored %d outputs, %d bytes in all:\n", len(files), r.Bytes)
		for _, f := range files {
			switch {
			case f.Problem != "":
				fmt.Fprintf(w, "    %d: %s (%s)\n", f.Index, cmp.Or(f.Location, f.Key), f.Problem)
			case f.Bytes > 0:
				fmt.Fprintf(w, "    %d: %s (%d bytes, sha256 %s)\n", f.Index, f.Location, f.Bytes, f.SHA256)
			default:
				fmt.Fprintf(w, "    %d: %s (sha256 %s)\n", f.Index, f.Location, f.SHA256)
			}
		}
	case r.Location != "":
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
