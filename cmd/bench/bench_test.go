package main

import (
	"io"
	"math"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	xs := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct{ q, want float64 }{{0, 1}, {0.5, 3}, {1, 5}, {0.25, 2}, {0.99, 4.96}} {
		if got := percentile(xs, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("percentile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if xs[0] != 5 {
		t.Error("percentile sorted its input")
	}
	if !math.IsNaN(percentile(nil, 0.5)) {
		t.Error("percentile of nothing is not NaN")
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	s := summarize([]float64{3, math.NaN(), 1, 2})
	if s != (summary{Min: 1, Median: 2, Max: 3, N: 3}) {
		t.Errorf("summarize = %+v", s)
	}
	if s := summarize(nil); !math.IsNaN(s.Median) || s.N != 0 {
		t.Errorf("summarize(nil) = %+v", s)
	}
}

func TestHistQuantile(t *testing.T) {
	t.Parallel()
	// 10 observations: 4 in (0, 0.1], 4 in (0.1, 1], 1 in (1, 2], 1 above 2.
	bs := []bucket{{0.1, 4}, {1, 8}, {2, 9}}
	if v, inf := histQuantile(bs, 10, 0.5); inf || math.Abs(v-0.325) > 1e-9 {
		t.Errorf("p50 = %v (inf %v), want 0.325", v, inf)
	}
	if v, inf := histQuantile(bs, 10, 0.2); inf || math.Abs(v-0.05) > 1e-9 {
		t.Errorf("p20 = %v, want 0.05", v)
	}
	if v, inf := histQuantile(bs, 10, 0.99); !inf || v != 2 {
		t.Errorf("p99 = %v (inf %v), want 2 and inf", v, inf)
	}
	if v, _ := histQuantile(bs, 0, 0.5); !math.IsNaN(v) {
		t.Errorf("quantile of no observations = %v", v)
	}
	d := histDelta([]bucket{{0.1, 10}, {1, 20}}, []bucket{{0.1, 4}, {1, 8}})
	if d[0].Count != 6 || d[1].Count != 12 {
		t.Errorf("histDelta = %+v", d)
	}
}

func TestFormatValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v      float64
		digits int
		want   string
	}{{1234567.891, 0, "1,234,568"}, {1234.5, 2, "1,234.50"}, {-9876, 0, "-9,876"}, {12, 1, "12.0"}, {math.NaN(), 1, "—"}} {
		if got := formatValue(tc.v, tc.digits); got != tc.want {
			t.Errorf("formatValue(%v, %d) = %q, want %q", tc.v, tc.digits, got, tc.want)
		}
	}
}

func TestRecorderAndTable(t *testing.T) {
	t.Parallel()
	r := newRecorder()
	r.define(figureDef{Key: "a", Section: "S", Label: "alpha", Unit: "x/s", Target: "≥ 10", Pass: atLeast(10)})
	r.define(figureDef{Key: "b", Section: "S", Label: "beta", Unit: "ms", Target: "< 5", Pass: below(5)})
	r.define(figureDef{Key: "c", Section: "S", Label: "gamma", Unit: "B"})
	for _, v := range []float64{9, 12, 11} {
		r.add("a", v)
	}
	r.add("b", 7)
	figs := r.figures()
	if figs[0].Median != 11 || figs[0].Pass != "pass" || figs[1].Pass != "FAIL" || figs[2].Pass != "" {
		t.Errorf("figures: %+v %+v %+v", figs[0], figs[1], figs[2])
	}
	rep := &Report{Mode: "quick", Runs: 3, Figures: figs, Sections: []string{"s"}, Load: map[string][]float64{"s": {1.5}},
		Samples: map[string][]float64{"x": {0.01, 0.2, 3}}}
	var sb strings.Builder
	writeTable(&sb, rep)
	for _, want := range []string{"alpha", "11", "9 … 12", "pass", "FAIL", "(1 run)", "load average"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
	svg := latencySVG(rep)
	if !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "polyline") || !strings.Contains(svg, "n=3") {
		t.Errorf("SVG looks wrong: %.200s", svg)
	}
	if _, err := (figs[2]).MarshalJSON(); err != nil {
		t.Errorf("a figure without runs does not encode: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"-quick", "-only", "latency,producer"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.runs != 1 || len(o.only) != 2 || !strings.HasSuffix(o.out, ".json") || !strings.HasSuffix(o.plot, ".svg") {
		t.Errorf("options %+v", o)
	}
	if o, err := parseFlags(nil, io.Discard, io.Discard); err != nil || o.runs != 3 {
		t.Errorf("default runs = %d, %v", o.runs, err)
	}
	if _, err := parseFlags([]string{"-only", "nonsense"}, io.Discard, io.Discard); err == nil {
		t.Error("an unknown section was accepted")
	}
}

// TestHelp: -h prints the flags on stdout and succeeds (as videoworker's
// commands do), rather than failing with "flag: help requested".
func TestHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	if err := run(t.Context(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Fatalf("-h: %v (stderr %q)", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "-quick") || stderr.Len() != 0 {
		t.Errorf("-h: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if err := run(t.Context(), []string{"-nonsense"}, &stdout, &stderr); err == nil || !strings.Contains(stderr.String(), "-quick") {
		t.Errorf("a bad flag: %v, stderr %q", err, stderr.String())
	}
}

func TestGenerator(t *testing.T) {
	t.Parallel()
	a, _ := io.ReadAll(newGenerator(7, 100_000))
	b, _ := io.ReadAll(newGenerator(7, 100_000))
	if len(a) != 100_000 || string(a) != string(b) {
		t.Fatalf("generator: %d bytes, deterministic %v", len(a), string(a) == string(b))
	}
	if generatedSHA256(7, 100_000) == generatedSHA256(8, 100_000) {
		t.Error("different seeds give the same bytes")
	}
}
