package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// figureDef describes one figure of the table.
type figureDef struct {
	Key     string
	Section string
	Label   string
	Unit    string
	// Target is the goal in words ("≥ 60 %"); empty for context figures.
	Target string
	// Pass judges the median; nil for context figures.
	Pass func(v float64) bool
	// Digits is the number of decimals shown.
	Digits int
}

func atLeast(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
func atMost(x float64) func(float64) bool  { return func(v float64) bool { return v <= x } }
func below(x float64) func(float64) bool   { return func(v float64) bool { return v < x } }

// Figure is one measured figure: its runs and their summary, as written to
// the JSON file.
type Figure struct {
	Key     string    `json:"key"`
	Section string    `json:"section"`
	Label   string    `json:"label"`
	Unit    string    `json:"unit"`
	Runs    []float64 `json:"runs"`
	Min     float64   `json:"min"`
	Median  float64   `json:"median"`
	Max     float64   `json:"max"`
	Target  string    `json:"target,omitempty"`
	// Pass is "pass", "FAIL" or "" (no target); judged on the median.
	Pass string `json:"pass,omitempty"`
	Note string `json:"note,omitempty"`
	def  figureDef
}

// recorder collects figures in the order they are first defined.
type recorder struct {
	mu      sync.Mutex
	figs    map[string]*Figure
	order   []string
	notes   map[string]string
	samples map[string][]float64 // raw latency samples (seconds), for the plot
}

func newRecorder() *recorder {
	return &recorder{figs: map[string]*Figure{}, notes: map[string]string{}, samples: map[string][]float64{}}
}

// define registers a figure (idempotent) so that it is listed even when a
// run fails to produce it.
func (r *recorder) define(d figureDef) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.figs[d.Key]; ok {
		return
	}
	r.figs[d.Key] = &Figure{Key: d.Key, Section: d.Section, Label: d.Label, Unit: d.Unit, Target: d.Target, def: d}
	r.order = append(r.order, d.Key)
}

// add records one run's value of a defined figure.
func (r *recorder) add(key string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.figs[key]
	if !ok {
		panic("bench: figure not defined: " + key)
	}
	f.Runs = append(f.Runs, v)
}

func (r *recorder) note(key, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes[key] = text
}

func (r *recorder) addSamples(series string, xs []float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[series] = append(r.samples[series], xs...)
}

// median returns the median of a figure's runs so far (NaN if none).
func (r *recorder) median(key string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.figs[key]
	if !ok {
		return math.NaN()
	}
	return summarize(f.Runs).Median
}

// figures finalises the summaries.
func (r *recorder) figures() []*Figure {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Figure, 0, len(r.order))
	for _, k := range r.order {
		f := r.figs[k]
		s := summarize(f.Runs)
		f.Min, f.Median, f.Max = s.Min, s.Median, s.Max
		f.Note = r.notes[k]
		f.Pass = ""
		if f.def.Pass != nil {
			switch {
			case math.IsNaN(s.Median):
				f.Pass = "n/a"
			case f.def.Pass(s.Median):
				f.Pass = "pass"
			default:
				f.Pass = "FAIL"
			}
		}
		out = append(out, f)
	}
	return out
}

// formatValue renders v with the figure's decimals and thousands separators.
func formatValue(v float64, digits int) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.IsInf(v, 1):
		return "∞"
	}
	s := fmt.Sprintf("%.*f", digits, math.Abs(v))
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	if v < 0 {
		return "-" + b.String()
	}
	return b.String()
}

func (f *Figure) cells() (value, spread string) {
	d := f.def.Digits
	value = formatValue(f.Median, d)
	if len(f.Runs) > 1 {
		spread = formatValue(f.Min, d) + " … " + formatValue(f.Max, d)
	} else {
		spread = "(1 run)"
	}
	return value, spread
}

// writeTable prints the human-readable table.
func writeTable(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	section := ""
	fmt.Fprintf(tw, "figure\tmedian\tmin … max\tunit\ttarget\tresult\n")
	for _, f := range rep.Figures {
		if f.Section != section {
			section = f.Section
			fmt.Fprintf(tw, "— %s —\t\t\t\t\t\n", section)
		}
		v, sp := f.cells()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Label, v, sp, f.Unit, f.Target, f.Pass)
	}
	tw.Flush()
	for _, f := range rep.Figures {
		if f.Note != "" {
			fmt.Fprintf(w, "  note, %s: %s\n", f.Label, f.Note)
		}
	}
	fmt.Fprintf(w, "\nmachine: %s, %d cores, %s RAM; %s; redis-server %s; commit %s\n",
		rep.Machine.CPUModel, rep.Machine.NumCPU, formatBytes(rep.Machine.MemTotalBytes), rep.Machine.GoVersion, rep.Machine.RedisVersion, rep.Machine.GitCommit)
	fmt.Fprintf(w, "mode %s, %d run(s) per figure unless marked; pass/fail judged on the median\n", rep.Mode, rep.Runs)
	var la []string
	for _, s := range rep.Sections {
		var vs []string
		for _, v := range rep.Load[s] {
			vs = append(vs, fmt.Sprintf("%.1f", v))
		}
		la = append(la, s+" "+strings.Join(vs, "/"))
	}
	fmt.Fprintf(w, "load average (1 min) as each run started: %s\n", strings.Join(la, ", "))
}

// writeMarkdown renders the table as Markdown (for the README).
func writeMarkdown(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "| figure | median | min … max | unit | target | |\n|---|---:|---:|---|---|---|\n")
	section := ""
	for _, f := range rep.Figures {
		if f.Section != section {
			section = f.Section
			fmt.Fprintf(w, "| **%s** | | | | | |\n", section)
		}
		v, sp := f.cells()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", f.Label, v, sp, f.Unit, f.Target, f.Pass)
	}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// Report is the JSON file.
type Report struct {
	Started  time.Time            `json:"started"`
	Duration float64              `json:"duration_seconds"`
	Mode     string               `json:"mode"`
	Runs     int                  `json:"runs"`
	Sections []string             `json:"sections"`
	Machine  Machine              `json:"machine"`
	Modules  map[string]string    `json:"modules"`
	Settings map[string]any       `json:"settings"`
	Figures  []*Figure            `json:"figures"`
	Samples  map[string][]float64 `json:"latency_samples_seconds,omitempty"`
	// Load is the machine's 1-minute load average as each section run
	// started (other processes share the machine).
	Load   map[string][]float64 `json:"load_average_at_start"`
	Errors []string             `json:"errors,omitempty"`
}

func writeJSON(path string, rep *Report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	// NaN is not JSON: the encoder refuses it, so figures carry null.
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// MarshalJSON writes NaN summaries and runs as null.
func (f *Figure) MarshalJSON() ([]byte, error) {
	type plain struct {
		Key     string     `json:"key"`
		Section string     `json:"section"`
		Label   string     `json:"label"`
		Unit    string     `json:"unit"`
		Runs    []*float64 `json:"runs"`
		Min     *float64   `json:"min"`
		Median  *float64   `json:"median"`
		Max     *float64   `json:"max"`
		Target  string     `json:"target,omitempty"`
		Pass    string     `json:"pass,omitempty"`
		Note    string     `json:"note,omitempty"`
	}
	num := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	p := plain{Key: f.Key, Section: f.Section, Label: f.Label, Unit: f.Unit, Min: num(f.Min), Median: num(f.Median), Max: num(f.Max),
		Target: f.Target, Pass: f.Pass, Note: f.Note}
	for _, r := range f.Runs {
		p.Runs = append(p.Runs, num(r))
	}
	return json.Marshal(p)
}
