package main

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/videoworker/videoworker/jobs"
)

func TestProgressCountsStages(t *testing.T) {
	var c progressCounts
	for _, r := range []jobs.Record{
		{State: jobs.StateQueued}, {State: jobs.StateSubmitting}, {State: jobs.StateGenerating, APIStatus: "queued"},
		{State: jobs.StateGenerating, APIStatus: "processing"}, {State: jobs.StateDownloading},
		{State: jobs.StateStored}, {State: jobs.StateFailed}, {State: jobs.StateExpired}, {State: jobs.StateTimedOut},
	} {
		c.add(&r)
	}
	want := progressCounts{Queued: 3, Generating: 1, Downloading: 1, Stored: 1, Failed: 3}
	if c != want {
		t.Errorf("counts = %+v, want %+v", c, want)
	}
}

func TestRenderProgress(t *testing.T) {
	for _, tc := range []struct {
		c       progressCounts
		elapsed time.Duration
		want    []string
		bar     string
	}{
		{progressCounts{Total: 30}, 0, []string{"0/30 done", "queued 0", "0.0 jobs/s"}, strings.Repeat(" ", 24)},
		{progressCounts{Total: 30, Queued: 6, Generating: 6, Downloading: 3, Stored: 12, Failed: 3}, 10 * time.Second,
			[]string{"15/30 done", "queued 6", "generating 6", "downloading 3", "stored 12", "failed 3", "1.5 jobs/s", "10s"},
			strings.Repeat("█", 12) + strings.Repeat("▒", 7) + strings.Repeat("░", 5)},
		{progressCounts{Total: 3, Stored: 3}, 1500 * time.Millisecond, []string{"3/3 done", "2.0 jobs/s", "1s"}, strings.Repeat("█", 24)},
		// More jobs seen than announced never overflows the bar.
		{progressCounts{Total: 1, Stored: 2, Queued: 1}, time.Second, []string{"2/1 done"}, strings.Repeat("█", 16) + strings.Repeat("░", 8)},
	} {
		got := renderProgress(tc.c, tc.elapsed)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("renderProgress(%+v) = %q, lacks %q", tc.c, got, w)
			}
		}
		bar := strings.TrimPrefix(got[:strings.Index(got, "]")], "[")
		if bar != tc.bar || utf8.RuneCountInString(bar) != progressBarWidth {
			t.Errorf("renderProgress(%+v) bar = %q, want %q", tc.c, bar, tc.bar)
		}
		if strings.Contains(got, "\n") {
			t.Errorf("renderProgress(%+v) spans lines: %q", tc.c, got)
		}
	}
}

// TestProgressPlainLines: when stdout is not a terminal, the line is
// printed when it changed and at most every 2 s, and always at the end.
func TestProgressPlainLines(t *testing.T) {
	var out strings.Builder
	p := newProgressWatch(nil, &out, 3, false, false, time.Now(), nil)
	p.show(progressCounts{Total: 3, Queued: 3}, false)
	p.show(progressCounts{Total: 3, Generating: 3}, false) // changed, too soon
	p.show(progressCounts{Total: 3, Generating: 3}, false)
	p.show(progressCounts{Total: 3, Stored: 3}, true)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "queued 3") || !strings.Contains(lines[1], "stored 3") || strings.Contains(out.String(), "\r") {
		t.Errorf("plain output:\n%s", out.String())
	}
	// On a terminal: redrawn in place, one newline at the end.
	out.Reset()
	p = newProgressWatch(nil, &out, 3, true, false, time.Now(), nil)
	p.show(progressCounts{Total: 3, Queued: 3}, false)
	p.show(progressCounts{Total: 3, Generating: 3}, false)
	p.show(progressCounts{Total: 3, Stored: 3}, true)
	if strings.Count(out.String(), "\r") != 3 || strings.Count(out.String(), "\n") != 1 || !strings.HasSuffix(out.String(), "\n") {
		t.Errorf("live output: %q", out.String())
	}
}

func TestFitWidth(t *testing.T) {
	line := renderProgress(progressCounts{Total: 30, Stored: 3}, time.Second)
	if got := fitWidth(line, 80); utf8.RuneCountInString(got) != 79 || !strings.HasSuffix(got, "…") {
		t.Errorf("fitWidth(…, 80) = %q (%d runes)", got, utf8.RuneCountInString(got))
	}
	if fitWidth(line, 0) != line || fitWidth(line, 500) != line {
		t.Error("fitWidth cut a line that fits or of unknown width")
	}
}
