package server

import (
	"html/template"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/webhook"
)

// The dashboard's charts are inline SVG built here, once per snapshot: the
// pages allow no script. Each chart carries a <title> and <desc>, and its
// numbers again as a table in a <details> element, for readers who cannot
// see it.

// series is one coloured part of the bars of a chart.
type series struct {
	Name  string // legend text
	Class string // CSS class that colours it
}

// column is one bar of a chart: a minute or a range of durations.
type column struct {
	Label  string  // names the column in tooltips and the table
	Tick   string  // axis label at the column's left edge; "" for none
	Values []int64 // one per series
	// Missing marks a column with no data (a minute nobody observed): it
	// is drawn as a grey band, not as zero.
	Missing bool
}

// barChart is a stacked bar chart.
type barChart struct {
	ID      string // prefix of its element ids; unique on the page
	Title   string
	Desc    string // a sentence with the totals, also shown as the caption
	Unit    string // what is counted, plural ("jobs")
	Series  []series
	Columns []column
	EndTick string // axis label at the right edge
	// Marker, when MarkerAt >= 0, draws a dashed line at that column
	// position (in columns, fractional) labelled Marker.
	Marker   string
	MarkerAt float64
	// Empty is the text shown instead of the chart when it has no value
	// and no missing column.
	Empty string
	// Note is a line of small print under the chart.
	Note string
}

// Geometry of a chart's viewBox; the stylesheet scales it to its box.
const (
	chartW, chartH        = 640, 170
	chartLeft, chartRight = 40, 8
	chartTop, chartBottom = 10, 22
	plotW                 = chartW - chartLeft - chartRight
	plotH                 = chartH - chartTop - chartBottom
)

// total is the sum of every value of the chart.
func (c *barChart) total() int64 {
	var n int64
	for _, col := range c.Columns {
		for _, v := range col.Values {
			n += v
		}
	}
	return n
}

// niceCeil is the smallest of 1, 2, 5, 10, 20, 50, … at least n.
func niceCeil(n int64) int64 {
	for m := int64(1); ; m *= 10 {
		for _, f := range []int64{1, 2, 5} {
			if f*m >= n {
				return f * m
			}
		}
	}
}

// render draws the chart as a figure: caption, legend, SVG and its
// numbers as a table; or the empty state when it has nothing to show.
func (c *barChart) render() template.HTML {
	var b strings.Builder
	put := func(ss ...string) {
		for _, s := range ss {
			b.WriteString(s)
		}
	}
	esc := template.HTMLEscapeString
	put(`<figure class="chart" id="`, esc(c.ID), `">`)
	put(`<figcaption><b>`, esc(c.Title), `</b>`)
	total := c.total()
	missing := slices.ContainsFunc(c.Columns, func(col column) bool { return col.Missing })
	if total == 0 && !missing {
		put(`</figcaption><p class="empty chart-empty">`, esc(c.Empty), `</p>`)
		if c.Note != "" {
			put(`<p class="note">`, esc(c.Note), `</p>`)
		}
		b.WriteString(`</figure>`)
		return template.HTML(b.String())
	}
	put(` <span class="muted">`, esc(c.Desc), `</span></figcaption>`)

	// Legend: the series with a value, and the grey band if any.
	used := make([]bool, len(c.Series))
	bars := 0
	for _, col := range c.Columns {
		for i, v := range col.Values {
			if v != 0 {
				used[i] = true
				bars++
			}
		}
	}
	b.Grow(1500 + 130*len(c.Columns) + 250*bars) // about what follows
	b.WriteString(`<ul class="legend">`)
	for i, s := range c.Series {
		if used[i] || len(c.Series) == 1 {
			put(`<li><span class="sw `, esc(s.Class), `"></span>`, esc(s.Name), `</li>`)
		}
	}
	if missing {
		b.WriteString(`<li><span class="sw gap"></span>not observed</li>`)
	}
	b.WriteString(`</ul>`)

	var top int64
	for _, col := range c.Columns {
		var sum int64
		for _, v := range col.Values {
			sum += v
		}
		top = max(top, sum)
	}
	top = niceCeil(max(top, 1))
	n := max(len(c.Columns), 1)
	colW := float64(plotW) / float64(n)
	barW := min(colW*0.8, max(colW-6, 0), 48)
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) }

	id := esc(c.ID)
	put(`<svg viewBox="0 0 `, strconv.Itoa(chartW), ` `, strconv.Itoa(chartH), `" role="img" aria-labelledby="`, id, `-t `, id,
		`-d" preserveAspectRatio="xMidYMid meet">`)
	put(`<title id="`, id, `-t">`, esc(c.Title), `</title><desc id="`, id, `-d">`, esc(c.Desc), `</desc>`)
	// Grid: the baseline, the top and the middle when it is whole.
	grid := []int64{0, top}
	if top%2 == 0 {
		grid = append(grid, top/2)
	}
	for _, g := range grid {
		y := float64(chartTop) + float64(plotH) - float64(g)/float64(top)*float64(plotH)
		cls := "grid"
		if g == 0 {
			cls = "axis"
		}
		put(`<line class="`, cls, `" x1="`, strconv.Itoa(chartLeft), `" x2="`, strconv.Itoa(chartW-chartRight),
			`" y1="`, f(y), `" y2="`, f(y), `"/>`)
		put(`<text class="ylab" x="`, strconv.Itoa(chartLeft-4), `" y="`, f(y+3), `">`, groupDigits(strconv.FormatInt(g, 10)), `</text>`)
	}
	base := float64(chartTop + plotH)
	for i, col := range c.Columns {
		x := float64(chartLeft) + float64(i)*colW
		bx := x + (colW-barW)/2
		if col.Missing { // a band as wide as the column: runs of them join
			put(`<rect class="gap" x="`, f(x), `" y="`, strconv.Itoa(chartTop), `" width="`, f(colW), `" height="`, strconv.Itoa(plotH),
				`"><title>`, esc(col.Label), `: not observed</title></rect>`)
		}
		y := base
		for j, v := range col.Values {
			if v <= 0 || j >= len(c.Series) {
				continue
			}
			h := float64(v) / float64(top) * float64(plotH)
			y -= h
			n := strconv.FormatInt(v, 10)
			put(`<rect class="`, esc(c.Series[j].Class), `" data-series="`, esc(c.Series[j].Name), `" data-n="`, n,
				`" x="`, f(bx), `" y="`, f(y), `" width="`, f(barW), `" height="`, f(h),
				`"><title>`, esc(col.Label), `: `, groupDigits(n), ` `, esc(c.Series[j].Name), `</title></rect>`)
		}
		if col.Tick != "" {
			put(`<text class="xlab" x="`, f(x), `" y="`, strconv.Itoa(chartH-6), `">`, esc(col.Tick), `</text>`)
		}
	}
	if c.EndTick != "" {
		put(`<text class="xlab end" x="`, strconv.Itoa(chartW-chartRight), `" y="`, strconv.Itoa(chartH-6), `">`, esc(c.EndTick), `</text>`)
	}
	if c.Marker != "" && c.MarkerAt >= 0 {
		x := float64(chartLeft) + c.MarkerAt*colW
		put(`<line class="marker" x1="`, f(x), `" x2="`, f(x), `" y1="`, strconv.Itoa(chartTop), `" y2="`, f(base), `"/>`)
		put(`<text class="mlab" x="`, f(x+3), `" y="`, strconv.Itoa(chartTop+8), `">`, esc(c.Marker), `</text>`)
	}
	b.WriteString(`</svg>`)
	if c.Note != "" {
		put(`<p class="note">`, esc(c.Note), `</p>`)
	}

	// The numbers: one row per column with a value.
	b.WriteString(`<details><summary>the numbers</summary><table class="chart-data"><thead><tr><th></th>`)
	for i, s := range c.Series {
		if used[i] {
			put(`<th>`, esc(s.Name), `</th>`)
		}
	}
	b.WriteString(`</tr></thead><tbody>`)
	for _, col := range c.Columns {
		var sum int64
		for _, v := range col.Values {
			sum += v
		}
		if sum == 0 {
			continue
		}
		put(`<tr><th>`, esc(col.Label), `</th>`)
		for i := range c.Series {
			if used[i] {
				var v int64
				if i < len(col.Values) {
					v = col.Values[i]
				}
				put(`<td class="num">`, groupDigits(strconv.FormatInt(v, 10)), `</td>`)
			}
		}
		b.WriteString(`</tr>`)
	}
	b.WriteString(`</tbody></table></details></figure>`)
	return template.HTML(b.String())
}

// counted is n with its noun: "1 job", "1,200 jobs".
func counted(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return groupDigits(strconv.FormatInt(n, 10)) + " " + many
}

// ---- jobs finished per minute ----

// chartMinutes is how far back the per-minute charts look.
const chartMinutes = 60

// finishedOutcomes are the terminal states, in the order they stack.
var finishedOutcomes = []jobs.State{jobs.StateStored, jobs.StateFailed, jobs.StateTimedOut, jobs.StateExpired, jobs.StateCancelled}

// minuteColumns returns chartMinutes empty columns ending with the minute
// of now, with a tick every ten minutes, and the index of a time's column.
func minuteColumns(now time.Time, nSeries int) ([]column, func(time.Time) int, string) {
	end := now.UTC().Truncate(time.Minute)
	first := end.Add(-(chartMinutes - 1) * time.Minute)
	cols := make([]column, chartMinutes)
	for i := range cols {
		m := first.Add(time.Duration(i) * time.Minute)
		cols[i] = column{Label: m.Format("15:04") + "Z", Values: make([]int64, nSeries)}
		if m.Minute()%10 == 0 && i < chartMinutes-4 { // not on top of "now"

			cols[i].Tick = m.Format("15:04")
		}
	}
	index := func(t time.Time) int {
		if t.IsZero() {
			return -1
		}
		i := int(t.UTC().Truncate(time.Minute).Sub(first) / time.Minute)
		if i < 0 || i >= chartMinutes {
			return -1
		}
		return i
	}
	return cols, index, "now"
}

// finishedChart counts the jobs of window that ended in each of the last
// chartMinutes minutes, by final state. When the window holds fewer jobs
// than the index, jobs submitted before its oldest one are not counted: a
// marker shows where that begins to matter.
func finishedChart(window []*jobs.Record, full bool, now time.Time) *barChart {
	c := &barChart{ID: "chart-finished", Title: "Jobs finished per minute, last hour", Unit: "jobs", MarkerAt: -1,
		Empty: "No job finished in the last hour."}
	for _, st := range finishedOutcomes {
		c.Series = append(c.Series, series{Name: string(st), Class: "s-" + string(st)})
	}
	cols, index, end := minuteColumns(now, len(finishedOutcomes))
	c.Columns, c.EndTick = cols, end
	byState := make([]int64, len(finishedOutcomes))
	var oldest time.Time
	for _, r := range window {
		if oldest.IsZero() || r.SubmittedAt.Before(oldest) {
			oldest = r.SubmittedAt
		}
		if !r.State.Terminal() {
			continue
		}
		i := index(r.FinishedAt)
		if i < 0 {
			continue
		}
		j := slices.Index(finishedOutcomes, r.State)
		if j < 0 {
			continue
		}
		cols[i].Values[j]++
		byState[j]++
	}
	var parts []string
	for j, st := range finishedOutcomes {
		if byState[j] > 0 {
			parts = append(parts, groupDigits(strconv.FormatInt(byState[j], 10))+" "+string(st))
		}
	}
	c.Desc = counted(c.total(), "job", "jobs") + " ended in the last hour"
	if len(parts) > 0 {
		c.Desc += ": " + strings.Join(parts, ", ")
	}
	c.Desc += ". Times in UTC."
	if full && !oldest.IsZero() {
		if i := index(oldest); i >= 0 {
			c.MarkerAt = float64(i) + float64(oldest.Sub(oldest.Truncate(time.Minute)))/float64(time.Minute)
			c.Marker = "oldest job read"
			c.Note = "Counted over the newest job records read; jobs submitted before " + oldest.UTC().Format("15:04:05") +
				"Z (the dashed line) are not, so the bars left of it are low."
		}
	}
	return c
}

// ---- latency histograms ----

// latencyEdges are the lower edges of the histogram's buckets; the last
// bucket is open.
var latencyEdges = []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute, time.Hour}

// latencyMinColumns is the fewest buckets a histogram shows.
const latencyMinColumns = 8

// shortDuration names a bucket edge: 0, 10ms, 1s, 2m, 1h.
func shortDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d < time.Hour:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
}

// preciseDuration is a measured duration: 45 ms, 4.8 s, 3m12s.
func preciseDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	}
	return humanDuration(d)
}

// latencyChart is a histogram of ds (which it sorts) over latencyEdges,
// cropped to the buckets from the first to the last with a value, with
// the percentiles in its description.
func latencyChart(id, title, empty string, ds []time.Duration) *barChart {
	c := &barChart{ID: id, Title: title, Unit: "jobs", MarkerAt: -1, Empty: empty,
		Series: []series{{Name: "jobs", Class: "s-latency"}}}
	if len(ds) == 0 {
		return c
	}
	slices.Sort(ds)
	counts := make([]int64, len(latencyEdges))
	for _, d := range ds {
		i, found := slices.BinarySearch(latencyEdges, d)
		if !found {
			i--
		}
		counts[max(i, 0)]++
	}
	lo := slices.IndexFunc(counts, func(n int64) bool { return n > 0 })
	hi := len(counts) - 1
	for counts[hi] == 0 {
		hi--
	}
	// At least latencyMinColumns buckets, so one bucket is not one wide
	// block: widen on both sides in turn, upwards first.
	for hi-lo+1 < latencyMinColumns && (hi+1 < len(counts) || lo > 0) {
		if hi+1 < len(counts) {
			hi++
		}
		if lo > 0 && hi-lo+1 < latencyMinColumns {
			lo--
		}
	}
	for i := lo; i <= hi; i++ {
		label := "≥ " + preciseDuration(latencyEdges[i])
		if i+1 < len(latencyEdges) {
			label = shortDuration(latencyEdges[i]) + "–" + shortDuration(latencyEdges[i+1])
		}
		c.Columns = append(c.Columns, column{Label: label, Tick: shortDuration(latencyEdges[i]), Values: []int64{counts[i]}})
	}
	if hi+1 < len(latencyEdges) {
		c.EndTick = shortDuration(latencyEdges[hi+1])
	}
	pct := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	c.Desc = counted(int64(len(ds)), "job", "jobs") + ": p50 " + preciseDuration(pct(.50)) + ", p90 " + preciseDuration(pct(.90)) +
		", p99 " + preciseDuration(pct(.99)) + ", max " + preciseDuration(ds[len(ds)-1]) + "."
	return c
}

// storedLatencies returns, for the stored jobs of window, the time from
// the API's completion to storage and from submission (or the last
// retry) to storage.
func storedLatencies(window []*jobs.Record) (completion, submit []time.Duration) {
	for _, r := range window {
		if r.State != jobs.StateStored || r.StoredAt.IsZero() {
			continue
		}
		if !r.CompletedAt.IsZero() && !r.StoredAt.Before(r.CompletedAt) {
			completion = append(completion, r.StoredAt.Sub(r.CompletedAt))
		}
		if s := runningSince(r); !s.IsZero() && !r.StoredAt.Before(s) {
			submit = append(submit, r.StoredAt.Sub(s))
		}
	}
	return completion, submit
}

// ---- webhook deliveries per minute ----

// hookGapMax is the longest time between two reads of the webhook
// counters whose difference is still put in the minute of the second.
// Longer gaps (no dashboard open) are left out of the chart.
const hookGapMax = 2 * time.Minute

// hookOutcomes are the webhook outcomes in the order they stack, with
// their colours; other outcomes are drawn as "other".
var hookOutcomes = []series{
	{webhook.OutcomeAccepted, "o-accepted"}, {webhook.OutcomeDuplicate, "o-duplicate"}, {webhook.OutcomeEarly, "o-early"},
	{webhook.OutcomeBadSignature, "o-bad_signature"}, {webhook.OutcomeBadTimestamp, "o-bad_timestamp"},
	{webhook.OutcomeBadRequest, "o-bad_request"}, {webhook.OutcomeUnknownJob, "o-unknown_job"},
	{webhook.OutcomeMismatch, "o-video_mismatch"}, {webhook.OutcomeError, "o-error"}, {"other", "o-other"},
}

// hookHistory turns the fleet-wide webhook counters, which the dashboard
// reads anyway, into deliveries per minute: each read's difference from
// the one before goes to the minute of the read. It costs no Redis
// command, and covers the minutes this server process had the dashboard
// open (a read at most hookGapMax after the previous one).
type hookHistory struct {
	mu     sync.Mutex
	prev   map[string]int64
	prevAt time.Time
	// mins holds the counted minutes (Unix minute → counts by outcome
	// index); seen the minutes covered by reads.
	mins map[int64][]int64
	seen map[int64]bool
	// Deliveries counted over gaps longer than hookGapMax within the
	// chart's hour, which the chart cannot place.
	unplaced                 int64
	unplacedFrom, unplacedTo time.Time
}

// observe records a read of the counters at now.
func (h *hookHistory) observe(now time.Time, outcomes []outcomeCount) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := make(map[string]int64, len(outcomes))
	for _, o := range outcomes {
		cur[o.Name] = o.Count
	}
	if h.mins == nil {
		h.mins, h.seen = map[int64][]int64{}, map[int64]bool{}
	}
	prev, prevAt := h.prev, h.prevAt
	h.prev, h.prevAt = cur, now
	if prev == nil || !now.After(prevAt) {
		return
	}
	delta := make([]int64, len(hookOutcomes))
	var sum int64
	for _, k := range slices.Sorted(maps.Keys(cur)) {
		d := cur[k] - prev[k]
		if d < 0 { // the counters were reset
			d = cur[k]
		}
		if d == 0 {
			continue
		}
		i := slices.IndexFunc(hookOutcomes, func(s series) bool { return s.Name == k })
		if i < 0 {
			i = len(hookOutcomes) - 1
		}
		delta[i] += d
		sum += d
	}
	nowMin, prevMin := now.Unix()/60, prevAt.Unix()/60
	if now.Sub(prevAt) > hookGapMax {
		if sum > 0 {
			if h.unplaced == 0 || now.Sub(h.unplacedFrom) > chartMinutes*time.Minute {
				h.unplaced, h.unplacedFrom = 0, prevAt
			}
			h.unplaced += sum
			h.unplacedTo = now
		}
	} else {
		for m := prevMin; m <= nowMin; m++ {
			h.seen[m] = true
		}
		if sum > 0 {
			if h.mins[nowMin] == nil {
				h.mins[nowMin] = make([]int64, len(hookOutcomes))
			}
			for i, d := range delta {
				h.mins[nowMin][i] += d
			}
		}
	}
	for m := range h.seen {
		if m <= nowMin-chartMinutes {
			delete(h.seen, m)
			delete(h.mins, m)
		}
	}
}

// chart draws the last chartMinutes minutes up to now.
func (h *hookHistory) chart(now time.Time) *barChart {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &barChart{ID: "chart-webhooks", Title: "Webhook deliveries per minute, last hour", Unit: "deliveries", MarkerAt: -1,
		Series: hookOutcomes,
		Empty: "Collecting: this chart counts the deliveries between reloads of this page (no Redis cost), " +
			"so it fills in while the dashboard is open."}
	cols, _, end := minuteColumns(now, len(hookOutcomes))
	c.Columns, c.EndTick = cols, end
	first := now.Unix()/60 - chartMinutes + 1
	observed := false
	totals := make([]int64, len(hookOutcomes))
	for i := range cols {
		m := first + int64(i)
		if !h.seen[m] {
			cols[i].Missing = true
			continue
		}
		observed = true
		if v := h.mins[m]; v != nil {
			copy(cols[i].Values, v)
			for j, n := range v {
				totals[j] += n
			}
		}
	}
	if !observed || c.total() == 0 {
		if observed {
			c.Empty = "No webhook delivery in the minutes this page was open (webhooks may be off)."
		}
		for i := range cols {
			cols[i].Missing = false
		}
		return c
	}
	var parts []string
	for j, s := range hookOutcomes {
		if totals[j] > 0 {
			parts = append(parts, groupDigits(strconv.FormatInt(totals[j], 10))+" "+s.Name)
		}
	}
	c.Desc = counted(c.total(), "delivery", "deliveries") + " in the minutes observed"
	if len(parts) > 0 {
		c.Desc += ": " + strings.Join(parts, ", ")
	}
	c.Desc += ". Times in UTC."
	c.Note = "From the fleet-wide counters, read on each reload of this page: grey minutes had no dashboard open on this server."
	if h.unplaced > 0 && now.Sub(h.unplacedTo) < chartMinutes*time.Minute {
		c.Note += " " + counted(h.unplaced, "delivery", "deliveries") + " between " + h.unplacedFrom.UTC().Format("15:04") +
			"Z and " + h.unplacedTo.UTC().Format("15:04") + "Z arrived while it was closed."
	}
	return c
}
