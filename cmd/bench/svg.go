package main

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// latencySVG draws the latency samples as empirical CDFs on a log time
// axis: every series' share of jobs done by a given latency.
func latencySVG(rep *Report) string {
	const (
		w, h                     = 880, 500
		left, right, top, bottom = 70, 30, 60, 150
	)
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	names := sortedKeys(rep.Samples)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, n := range names {
		for _, v := range rep.Samples[n] {
			if v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0.01, 10
	}
	decLo, decHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if decHi <= decLo {
		decHi = decLo + 1
	}
	x := func(v float64) float64 {
		v = max(v, math.Pow(10, decLo))
		return float64(left) + pw*(math.Log10(v)-decLo)/(decHi-decLo)
	}
	y := func(frac float64) float64 { return float64(top) + ph*(1-frac) }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">videoworker latency distributions (cumulative share of jobs)</text>`+"\n", left)
	fmt.Fprintf(&b, `<text x="%d" y="44" fill="#555">%s</text>`+"\n", left, html.EscapeString(fmt.Sprintf("%s mode, %s, %d cores, Go %s, redis %s, commit %s",
		rep.Mode, rep.Machine.CPUModel, rep.Machine.NumCPU, strings.TrimPrefix(rep.Machine.GoVersion, "go"), rep.Machine.RedisVersion, rep.Machine.GitCommit)))
	// Grid and axes.
	for d := decLo; d <= decHi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > decHi+1e-9 {
				continue
			}
			px := x(v)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", px, top, px, y(0), stroke)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`+"\n", px, y(0)+18, secondsLabel(v))
		}
	}
	for _, f := range []float64{0, 0.25, 0.5, 0.75, 0.9, 0.99, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", left, y(f), w-right, y(f))
		if f != 0.99 { // too close to 100 % to label
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#333">%g %%</text>`+"\n", left-6, y(f)+4, 100*f)
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">latency (log scale)</text>`+"\n", float64(left)+pw/2, y(0)+40)
	// Series.
	for i, n := range names {
		s := slices.Clone(rep.Samples[n])
		slices.Sort(s)
		c := colors[i%len(colors)]
		var pts strings.Builder
		for j, v := range s {
			fmt.Fprintf(&pts, "%.1f,%.1f %.1f,%.1f ", x(v), y(float64(j)/float64(len(s))), x(v), y(float64(j+1)/float64(len(s))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.TrimSpace(pts.String()))
		ly := float64(h-bottom) + 62 + float64(i)*18
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", left, ly-4, left+24, ly-4, c)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f">%s</text>`+"\n", left+32, ly, html.EscapeString(fmt.Sprintf("%s — n=%d, p50 %s, p99 %s",
			n, len(s), secondsLabel(sortedPercentile(s, 0.5)), secondsLabel(sortedPercentile(s, 0.99)))))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// secondsLabel renders a duration in seconds as "50 ms" or "2 s".
func secondsLabel(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v < 1:
		return fmt.Sprintf("%.3g ms", v*1000)
	default:
		return fmt.Sprintf("%.3g s", v)
	}
}
