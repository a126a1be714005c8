package server

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
)

// bar is one drawn segment of a chart.
type bar struct {
	class, series string
	n             int64
	x, y, w, h    float64
}

var barRE = regexp.MustCompile(`<rect class="([^"]+)" data-series="([^"]*)" data-n="(\d+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)">`)

func bars(t *testing.T, html string) []bar {
	t.Helper()
	var out []bar
	for _, m := range barRE.FindAllStringSubmatch(html, -1) {
		num := func(s string) float64 {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		n, _ := strconv.ParseInt(m[3], 10, 64)
		out = append(out, bar{class: m[1], series: m[2], n: n, x: num(m[4]), y: num(m[5]), w: num(m[6]), h: num(m[7])})
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) <= 0.11 }

func TestBarChartBarsAreProportionalAndStacked(t *testing.T) {
	c := &barChart{ID: "c", Title: "T", Desc: "D", Series: []series{{"a", "s-a"}, {"b", "s-b"}}, Columns: []column{
		{Label: "one", Values: []int64{2, 0}},
		{Label: "two", Values: []int64{4, 1}},
		{Label: "three", Values: []int64{0, 0}},
	}}
	html := string(c.render())
	bs := bars(t, html)
	if len(bs) != 3 {
		t.Fatalf("%d bars drawn, want 3 (zero values draw nothing):\n%s", len(bs), html)
	}
	a1, a2, b2 := bs[0], bs[1], bs[2]
	if a1.series != "a" || a2.series != "a" || b2.series != "b" || a1.n != 2 || a2.n != 4 || b2.n != 1 {
		t.Fatalf("bars %+v", bs)
	}
	// The scale tops at 5 (the highest column, 4+1, rounded to 1-2-5), so
	// 2 is 2/5 of the plot's height and the stack of 5 fills it.
	if !near(a1.h, 2.0/5*plotH) || !near(a2.h, 2*a1.h) || !near(b2.h, a1.h/2) || !near(a2.h+b2.h, plotH) {
		t.Errorf("heights %v %v %v are not proportional to 2, 4, 1 on a scale of 5 (plot %d)", a1.h, a2.h, b2.h, plotH)
	}
	base := float64(chartTop + plotH)
	if !near(a1.y+a1.h, base) || !near(a2.y+a2.h, base) || !near(b2.y+b2.h, a2.y) {
		t.Errorf("bars do not stand on the axis or stack: %+v", bs)
	}
	if a1.x >= a2.x || !near(a1.w, a2.w) {
		t.Errorf("columns out of order or of different widths: %+v", bs)
	}
	for _, s := range []string{
		`role="img" aria-labelledby="c-t c-d"`, `<title id="c-t">T</title>`, `<desc id="c-d">D</desc>`,
		`<title>two: 4 a</title>`, // tooltip
		`<tr><th>one</th><td class="num">2</td><td class="num">0</td></tr>`, `<tr><th>two</th><td class="num">4</td><td class="num">1</td></tr>`,
	} {
		if !strings.Contains(html, s) {
			t.Errorf("chart lacks %q", s)
		}
	}
	if strings.Contains(html, "<th>three</th>") {
		t.Error("the numbers list a column without values")
	}
}

func TestBarChartEmptyAndMissing(t *testing.T) {
	c := &barChart{ID: "c", Title: "Nothing", Empty: "No job finished.", Series: []series{{"a", "s-a"}},
		Columns: []column{{Label: "x", Values: []int64{0}}, {Label: "y", Values: []int64{0}}}}
	html := string(c.render())
	if !strings.Contains(html, `<p class="empty chart-empty">No job finished.</p>`) || strings.Contains(html, "<svg") {
		t.Errorf("an empty chart does not show its empty state:\n%s", html)
	}
	c = &barChart{ID: "c", Title: "Nothing", Empty: "none", Series: []series{{"a", "s-a"}}}
	if html := string(c.render()); !strings.Contains(html, "chart-empty") {
		t.Errorf("a chart without columns does not show its empty state:\n%s", html)
	}
	// Columns nobody observed are grey bands, not zeros nor an empty state.
	c.Columns = []column{{Label: "x", Values: []int64{0}, Missing: true}, {Label: "y", Values: []int64{0}}}
	html = string(c.render())
	if strings.Contains(html, "chart-empty") || strings.Count(html, `<rect class="gap"`) != 1 || !strings.Contains(html, "not observed") {
		t.Errorf("a missing column is not drawn as such:\n%s", html)
	}
}

func TestBarChartEscapes(t *testing.T) {
	c := &barChart{ID: "c", Title: "<b>t</b>", Desc: `"d"`, Series: []series{{"<script>", "s-a"}},
		Columns: []column{{Label: "<i>", Tick: "<u>", Values: []int64{1}}}}
	html := string(c.render())
	for _, bad := range []string{"<b>t", "<script>", "<i>", "<u>"} {
		if strings.Contains(html, bad) {
			t.Errorf("chart does not escape %q:\n%s", bad, html)
		}
	}
}

func TestFinishedChart(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 30, 20, 0, time.UTC)
	rec := func(st jobs.State, finishedAgo time.Duration) *jobs.Record {
		r := &jobs.Record{State: st, SubmittedAt: now.Add(-50 * time.Minute)}
		if st.Terminal() {
			r.FinishedAt = now.Add(-finishedAgo)
		}
		return r
	}
	window := []*jobs.Record{
		rec(jobs.StateStored, 0), rec(jobs.StateStored, 10*time.Second), rec(jobs.StateFailed, 15*time.Second), // this minute
		rec(jobs.StateStored, 5*time.Minute), rec(jobs.StateTimedOut, 5*time.Minute), rec(jobs.StateCancelled, 59*time.Minute),
		rec(jobs.StateExpired, 2*time.Hour), // too old
		rec(jobs.StateGenerating, 0),        // unfinished
	}
	c := finishedChart(window, false, now)
	if len(c.Columns) != chartMinutes || c.Columns[chartMinutes-1].Label != "10:30Z" || c.Columns[0].Label != "09:31Z" {
		t.Fatalf("columns %d, from %s to %s", len(c.Columns), c.Columns[0].Label, c.Columns[len(c.Columns)-1].Label)
	}
	want := map[int][]int64{chartMinutes - 1: {2, 1, 0, 0, 0}, chartMinutes - 6: {1, 0, 1, 0, 0}, 0: {0, 0, 0, 0, 1}}
	for i, col := range c.Columns {
		w := want[i]
		if w == nil {
			w = make([]int64, 5)
		}
		for j := range w {
			if col.Values[j] != w[j] {
				t.Errorf("minute %s: %s = %d, want %d", col.Label, c.Series[j].Name, col.Values[j], w[j])
			}
		}
	}
	if c.total() != 6 || !strings.HasPrefix(c.Desc, "6 jobs ended in the last hour: 3 stored, 1 failed, 1 timed_out, 1 cancelled.") {
		t.Errorf("total %d, desc %q", c.total(), c.Desc)
	}
	if c.Marker != "" {
		t.Error("a window holding every job has a marker")
	}
	// A window that does not hold every job marks where it begins.
	c = finishedChart(window, true, now)
	if c.Marker == "" || !near(c.MarkerAt, 9+20.0/60) || !strings.Contains(c.Note, "09:40:20Z") {
		t.Errorf("marker %q at %v, note %q", c.Marker, c.MarkerAt, c.Note)
	}
	if html := string(finishedChart(nil, false, now).render()); !strings.Contains(html, "No job finished in the last hour.") {
		t.Errorf("no jobs: %s", html)
	}
}

func TestLatencyChart(t *testing.T) {
	var ds []time.Duration
	for range 90 {
		ds = append(ds, 30*time.Millisecond) // 20–50ms
	}
	for range 9 {
		ds = append(ds, 150*time.Millisecond) // 100–200ms
	}
	ds = append(ds, 3*time.Second) // 2s–5s
	c := latencyChart("l", "lat", "none", ds)
	var labels []string
	var counts []int64
	for _, col := range c.Columns {
		labels = append(labels, col.Label)
		counts = append(counts, col.Values[0])
	}
	// Cropped to the buckets from the first to the last with a value,
	// widened to eight.
	if strings.Join(labels, " ") != "20ms–50ms 50ms–100ms 100ms–200ms 200ms–500ms 500ms–1s 1s–2s 2s–5s 5s–10s" || c.EndTick != "10s" {
		t.Errorf("buckets %q, end %q", labels, c.EndTick)
	}
	if want := []int64{90, 0, 9, 0, 0, 0, 1, 0}; !slicesEqual(counts, want) {
		t.Errorf("counts %v, want %v", counts, want)
	}
	if c.Desc != "100 jobs: p50 30 ms, p90 150 ms, p99 3.0 s, max 3.0 s." {
		t.Errorf("desc %q", c.Desc)
	}
	// A duration on an edge counts in the bucket it starts.
	c = latencyChart("l", "lat", "none", []time.Duration{time.Second, 0})
	if c.Columns[0].Label != "0–10ms" || c.Columns[len(c.Columns)-1].Label != "1s–2s" {
		t.Errorf("edges: %+v", c.Columns)
	}
	// Widened on both sides in turn.
	c = latencyChart("l", "lat", "none", []time.Duration{3 * time.Second})
	if len(c.Columns) != latencyMinColumns || c.Columns[0].Label != "200ms–500ms" || c.Columns[3].Values[0] != 1 || c.EndTick != "1m" {
		t.Errorf("one value: %+v, end %q", c.Columns, c.EndTick)
	}
	// Widened downwards at the top of the scale; the last bucket is open.
	c = latencyChart("l", "lat", "none", []time.Duration{2 * time.Hour})
	if len(c.Columns) != latencyMinColumns || c.Columns[len(c.Columns)-1].Label != "≥ 1h00m" || c.EndTick != "" || c.Columns[0].Label != "30s–1m" {
		t.Errorf("top bucket: %+v, end %q", c.Columns, c.EndTick)
	}
	if c := latencyChart("l", "lat", "nothing stored", nil); !strings.Contains(string(c.render()), "nothing stored") {
		t.Error("no durations: no empty state")
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStoredLatencies(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	window := []*jobs.Record{
		{State: jobs.StateStored, SubmittedAt: t0, CompletedAt: t0.Add(time.Minute), StoredAt: t0.Add(time.Minute + 40*time.Millisecond)},
		// retried: from the retry
		{State: jobs.StateStored, SubmittedAt: t0, RetriedAt: t0.Add(time.Hour), CompletedAt: t0.Add(time.Hour + time.Minute), StoredAt: t0.Add(time.Hour + 2*time.Minute)},
		{State: jobs.StateFailed, SubmittedAt: t0, CompletedAt: t0, FinishedAt: t0.Add(time.Second)},
		{State: jobs.StateStored, SubmittedAt: t0, StoredAt: t0.Add(time.Second)}, // no completion time
	}
	c, s := storedLatencies(window)
	if len(c) != 2 || c[0] != 40*time.Millisecond || c[1] != time.Minute {
		t.Errorf("completion → stored %v", c)
	}
	if len(s) != 3 || s[0] != time.Minute+40*time.Millisecond || s[1] != 2*time.Minute || s[2] != time.Second {
		t.Errorf("submit → stored %v", s)
	}
}

func TestHookHistory(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 10, 0, time.UTC)
	var h hookHistory
	counts := func(acc, dup, sig, odd int64) []outcomeCount {
		return []outcomeCount{{"accepted", acc}, {"duplicate", dup}, {"bad_signature", sig}, {"something_new", odd}}
	}
	if c := h.chart(t0); !strings.Contains(string(c.render()), "Collecting") {
		t.Error("no reads yet: not the collecting state")
	}
	h.observe(t0, counts(100, 5, 7, 0)) // the baseline: nothing counted
	if c := h.chart(t0); c.total() != 0 || !strings.Contains(string(c.render()), "Collecting") {
		t.Errorf("one read: total %d", c.total())
	}
	h.observe(t0.Add(5*time.Second), counts(103, 6, 7, 0))
	h.observe(t0.Add(55*time.Second), counts(104, 6, 9, 2)) // next minute (10:01:05)
	c := h.chart(t0.Add(55 * time.Second))
	last, prev := c.Columns[chartMinutes-1], c.Columns[chartMinutes-2]
	if last.Label != "10:01Z" || prev.Label != "10:00Z" || last.Missing || prev.Missing || !c.Columns[0].Missing {
		t.Fatalf("columns: %+v … %+v %+v", c.Columns[0], prev, last)
	}
	// accepted, duplicate, early, bad_signature, …, other
	if prev.Values[0] != 3 || prev.Values[1] != 1 || last.Values[0] != 1 || last.Values[3] != 2 || last.Values[len(hookOutcomes)-1] != 2 {
		t.Errorf("10:00 %v, 10:01 %v", prev.Values, last.Values)
	}
	if c.total() != 9 || !strings.HasPrefix(c.Desc, "9 deliveries in the minutes observed: 4 accepted, 1 duplicate, 2 bad_signature, 2 other.") {
		t.Errorf("total %d, desc %q", c.total(), c.Desc)
	}
	// Ten minutes without a read: the difference is not placed.
	t1 := t0.Add(11 * time.Minute)
	h.observe(t1, counts(150, 6, 9, 2))
	c = h.chart(t1)
	if c.total() != 9 || !c.Columns[chartMinutes-1].Missing || !strings.Contains(c.Note, "46 deliveries between 10:01Z and 10:11Z") {
		t.Errorf("after a gap: total %d, last column %+v, note %q", c.total(), c.Columns[chartMinutes-1], c.Note)
	}
	// Counters reset (a new Redis): the new values are the deliveries.
	h.observe(t1.Add(5*time.Second), counts(4, 0, 0, 0))
	if c = h.chart(t1.Add(5 * time.Second)); c.Columns[chartMinutes-1].Values[0] != 4 {
		t.Errorf("after a reset: %v", c.Columns[chartMinutes-1].Values)
	}
	// An hour later the old minutes are gone.
	t2 := t1.Add(2 * time.Hour)
	h.observe(t2, counts(4, 0, 0, 0))
	h.observe(t2.Add(time.Second), counts(4, 0, 0, 0))
	c = h.chart(t2.Add(time.Second))
	if c.total() != 0 || len(h.mins) != 0 || len(h.seen) != 1 || strings.Contains(c.Note, "arrived") {
		t.Errorf("an hour later: total %d, %d minutes kept, note %q", c.total(), len(h.seen), c.Note)
	}
	// Observed, but no delivery: the empty state says so.
	if html := string(c.render()); !strings.Contains(html, "No webhook delivery in the minutes this page was open") {
		t.Errorf("no deliveries: %s", html)
	}
}

// BenchmarkCharts draws the dashboard's charts over a full window of
// records (as BenchmarkDashboard's): the cost the charts add to a
// snapshot, without Redis.
func BenchmarkCharts(b *testing.B) {
	now := time.Now()
	var window []*jobs.Record
	for i := range dashboardWindow {
		end := now.Add(-time.Duration(i%3600) * time.Second)
		r := &jobs.Record{State: jobs.StateStored, SubmittedAt: end.Add(-time.Duration(30+i%90) * time.Second),
			CompletedAt: end.Add(-time.Duration(20+i%500) * time.Millisecond), StoredAt: end, FinishedAt: end}
		switch {
		case i%4 == 0:
			r = &jobs.Record{State: jobs.StateGenerating, SubmittedAt: end, Progress: i % 100}
		case i%10 == 1:
			r = &jobs.Record{State: jobs.StateFailed, SubmittedAt: end, FinishedAt: end}
		}
		window = append(window, r)
	}
	var p pages
	outcomes := []outcomeCount{{"accepted", 0}, {"duplicate", 0}, {"bad_signature", 0}}
	for i := range chartMinutes * 12 { // an hour of reads every 5 s
		outcomes[i%3].Count += int64(i % 7)
		p.hooks.observe(now.Add(time.Duration(i-chartMinutes*12)*5*time.Second), outcomes)
	}
	size := 0
	for b.Loop() {
		s := &snapshot{Taken: now, Total: dashboardWindow, Webhooks: webhookPanel{Outcomes: outcomes}}
		p.charts(s, window)
		size = len(s.Charts.Finished) + len(s.Charts.Webhooks) + len(s.Charts.Completion) + len(s.Charts.Submit)
	}
	b.ReportMetric(float64(size), "html-bytes")
}
