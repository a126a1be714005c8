package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// progressCounts are the demo's jobs by stage, as a user sees them.
type progressCounts struct {
	Total       int // jobs the demo will submit
	Queued      int // waiting: in our queue, being submitted, or queued at the API
	Generating  int // the API is generating the video
	Downloading int // being copied into storage
	Stored      int
	Failed      int // failed, cancelled, expired or timed out
}

// add counts one job's record.
func (c *progressCounts) add(r *jobs.Record) {
	switch {
	case r.State == jobs.StateStored:
		c.Stored++
	case r.State.Terminal():
		c.Failed++
	case r.State == jobs.StateDownloading:
		c.Downloading++
	case r.State == jobs.StateGenerating && r.APIStatus != "queued":
		c.Generating++
	default:
		c.Queued++
	}
}

func (c progressCounts) finished() int { return c.Stored + c.Failed }

const progressBarWidth = 24

// renderProgress is the demo's progress line: a bar (█ finished, ▒ being
// generated or downloaded, ░ waiting, blank not yet submitted), the count
// of jobs in each stage and the rate of finished jobs.
func renderProgress(c progressCounts, elapsed time.Duration) string {
	total := max(c.Total, c.finished()+c.Downloading+c.Generating+c.Queued, 1)
	cell := func(n int) int { return n * progressBarWidth / total }
	done := cell(c.finished())
	busy := cell(c.finished()+c.Downloading+c.Generating) - done
	wait := cell(c.finished()+c.Downloading+c.Generating+c.Queued) - done - busy
	bar := strings.Repeat("█", done) + strings.Repeat("▒", busy) + strings.Repeat("░", wait) +
		strings.Repeat(" ", progressBarWidth-done-busy-wait)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(c.finished()) / s
	}
	return fmt.Sprintf("[%s] %d/%d done · queued %d · generating %d · downloading %d · stored %d · failed %d · %.1f jobs/s · %s",
		bar, c.finished(), c.Total, c.Queued, c.Generating, c.Downloading, c.Stored, c.Failed, rate, elapsed.Truncate(time.Second))
}

const (
	progressTick  = 250 * time.Millisecond // how often the jobs are read
	progressPlain = 2 * time.Second        // least time between two plain lines
)

// progressWatch reads the demo's jobs and shows one progress line: redrawn
// in place on a terminal, otherwise printed as a plain line when it
// changed, at most every 2 s.
type progressWatch struct {
	c     *tasks.Client
	out   io.Writer
	total int
	live  bool // redraw in place (a terminal)
	quiet bool
	start time.Time
	log   *slog.Logger

	last   string    // the counts of the last line shown
	lastAt time.Time // when it was shown
	onLine bool      // a live line is on screen, without its newline
}

func newProgressWatch(c *tasks.Client, out io.Writer, total int, live, quiet bool, start time.Time, log *slog.Logger) *progressWatch {
	return &progressWatch{c: c, out: out, total: total, live: live, quiet: quiet, start: start, log: log}
}

// read returns the jobs' records (those readable) and their counts.
func (p *progressWatch) read(ctx context.Context, ids []tasks.JobID) ([]*jobs.Record, progressCounts, error) {
	recs := make([]*jobs.Record, 0, len(ids))
	counts := progressCounts{Total: p.total}
	for _, id := range ids {
		r, err := p.c.Status(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, counts, ctx.Err()
			}
			p.log.Warn("status", "job_id", string(id), "err", err.Error())
			continue
		}
		recs = append(recs, r)
		counts.add(r)
	}
	return recs, counts, nil
}

// show prints the line for counts when due; final prints it regardless and
// ends it with a newline.
func (p *progressWatch) show(counts progressCounts, final bool) {
	if p.quiet {
		return
	}
	now := time.Now()
	key := fmt.Sprint(counts)
	line := renderProgress(counts, now.Sub(p.start))
	switch {
	case p.live:
		// Cut to the terminal's width: a wrapped line cannot be redrawn
		// in place. The clock moves: redraw every time.
		fmt.Fprintf(p.out, "\r%s\x1b[K", fitWidth(line, termWidth(p.out)))
		p.onLine = true
		if final {
			fmt.Fprintln(p.out)
			p.onLine = false
		}
	case final || (key != p.last && now.Sub(p.lastAt) >= progressPlain):
		fmt.Fprintln(p.out, line)
	default:
		return
	}
	p.last, p.lastAt = key, now
}

// waitAndShow keeps the line up to date for d.
func (p *progressWatch) waitAndShow(ctx context.Context, ids []tasks.JobID, d time.Duration) error {
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(progressTick)
	defer tick.Stop()
	for {
		_, counts, err := p.read(ctx, ids)
		if err != nil {
			p.endLine()
			return err
		}
		p.show(counts, false)
		select {
		case <-ctx.Done():
			p.endLine()
			return ctx.Err()
		case <-end.C:
			return nil
		case <-tick.C:
		}
	}
}

// untilDone keeps the line up to date until every job is finished and
// returns their records.
func (p *progressWatch) untilDone(ctx context.Context, ids []tasks.JobID) ([]*jobs.Record, error) {
	tick := time.NewTicker(progressTick)
	defer tick.Stop()
	for {
		recs, counts, err := p.read(ctx, ids)
		if err != nil {
			p.endLine()
			return nil, err
		}
		if len(recs) == len(ids) && counts.finished() == len(ids) {
			p.show(counts, true)
			return recs, nil
		}
		p.show(counts, false)
		select {
		case <-ctx.Done():
			p.endLine()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// endLine ends a live line left on screen, so that what follows starts on
// a line of its own.
func (p *progressWatch) endLine() {
	if p.onLine {
		fmt.Fprintln(p.out)
		p.onLine = false
	}
}

// fitWidth cuts s to fit in width columns (one left free for the cursor);
// width 0 means unknown: s is kept whole.
func fitWidth(s string, width int) string {
	if width <= 1 || utf8.RuneCountInString(s) < width {
		return s
	}
	r := []rune(s)
	return string(r[:width-2]) + "…"
}
