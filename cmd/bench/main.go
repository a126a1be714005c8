// Command bench measures videoworker's performance against its targets
// (issue 7) and writes a table to stdout and a JSON file with every figure,
// its runs, the machine and the module versions.
//
// Each section starts its own redis-server (no persistence); the stand-in
// API runs in-process over real HTTP on loopback; workers run in-process,
// except in the scale section (the worker runs in a child process, this
// binary re-executed, so that its CPU time is its own), the transfer
// section (each transfer in a child process, for its peak RSS) and the
// idle section (1, 10 and 50 idle worker processes, each a child).
//
//	go run ./cmd/bench -quick
//	go run ./cmd/bench -only pipeline,latency -runs 5 -cpuprofile /tmp/prof
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/videoworker/videoworker/internal/s3test"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(ctx, mode, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	quick       bool
	runs        int
	out         string
	only        []string
	cpuprofile  string
	concurrency int
	models      int
	// createConcurrency is worker.Config.CreateConcurrency (0: default).
	createConcurrency int
	pipelineStore     string
	delayedCheck      time.Duration
	scaleJobs         int
	scalePoll         int
	plot              string
	// breakdown runs the pipeline section under MONITOR (see monitor).
	breakdown bool
	// trace traces the pipeline section's jobs (see pipelineTracer).
	trace bool
}

// sizes are the workloads of a mode.
type sizes struct {
	ceilingTasks     int
	pipelineJobs     int
	scaleJobs        int
	scaleWindow      time.Duration
	scalePollAfter   int
	latencyJobs      int
	latencyInstant   int
	latencySpread    time.Duration
	latencyPollAfter int
	transferBytes    int64
	producerFor      time.Duration
	idleWindow       time.Duration
	retentionJobs    int
	fairnessJobs     int
}

var (
	// Full: 50,000 jobs in flight polled every 60 s is the check rate
	// (833/s) of 100,000 polled at the worker's longest interval (2 min);
	// 100,000 themselves do not fit the 15-minute budget (their drain alone
	// takes about 5 minutes here).
	fullSizes = sizes{ceilingTasks: 30_000, pipelineJobs: 5_000, scaleJobs: 50_000, scaleWindow: 60 * time.Second, scalePollAfter: 60,
		latencyJobs: 200, latencyInstant: 10, latencySpread: 8 * time.Second, latencyPollAfter: 5, transferBytes: 1 << 30, producerFor: 5 * time.Second, idleWindow: 20 * time.Second,
		retentionJobs: 20_000, fairnessJobs: 5_000}
	quickSizes = sizes{ceilingTasks: 10_000, pipelineJobs: 1_500, scaleJobs: 5_000, scaleWindow: 15 * time.Second, scalePollAfter: 5,
		latencyJobs: 60, latencyInstant: 5, latencySpread: 3 * time.Second, latencyPollAfter: 3, transferBytes: 256 << 20, producerFor: 2 * time.Second, idleWindow: 6 * time.Second,
		retentionJobs: 2_000, fairnessJobs: 1_000}
)

// section is one group of figures.
type section struct {
	name   string
	define func(*recorder, sizes)
	run    func(context.Context, *bench) error
	// once: a single run whatever -runs says (too long to repeat).
	once bool
}

var sections = []section{
	{name: "ceiling", define: func(r *recorder, _ sizes) { defineCeiling(r) }, run: runCeiling},
	{name: "pipeline", define: func(r *recorder, _ sizes) { definePipeline(r) }, run: runPipeline},
	{name: "scale", define: defineScale, run: runScale, once: true},
	{name: "latency", define: defineLatency, run: runLatency},
	{name: "transfer", define: defineTransfer, run: runTransfer},
	{name: "producer", define: func(r *recorder, _ sizes) { defineProducer(r) }, run: runProducer},
	{name: "idle", define: defineIdle, run: runIdle, once: true},
	{name: "retention", define: defineRetention, run: runRetention, once: true},
	{name: "budget", define: func(r *recorder, _ sizes) { defineBudget(r) }, run: runBudget},
	{name: "fairness", define: defineFairness, run: runFairness, once: true},
}

func sectionNames() []string {
	var out []string
	for _, s := range sections {
		out = append(out, s.name)
	}
	return out
}

// parseFlags reads the command line. -h prints the flags on stdout and
// returns flag.ErrHelp (run then ends with success); a mistake prints
// them on stderr.
func parseFlags(args []string, stdout, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	var only string
	fs.BoolVar(&o.quick, "quick", false, "small workloads, one run: every figure in about 2.5 minutes")
	fs.IntVar(&o.runs, "runs", 0, "runs per figure (default 3; 1 with -quick); the scale section always runs once")
	fs.StringVar(&o.out, "out", "", "JSON output (default bench/results/bench-<UTC timestamp>.json)")
	fs.StringVar(&only, "only", "", "comma-separated sections to run: "+strings.Join(sectionNames(), ","))
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "directory for CPU profiles: <section>.pprof of this process, scale-worker.pprof, transfer-<mode>.pprof")
	fs.IntVar(&o.concurrency, "concurrency", 50, "worker concurrency (asynq), also used by the ceiling")
	fs.IntVar(&o.createConcurrency, "create-concurrency", 0, "the worker's per-process create slots in the pipeline and latency sections (0: the worker's default)")
	fs.DurationVar(&o.delayedCheck, "delayed-check", 0, "the worker's DelayedTaskCheckInterval in every section (0: the worker's default, 200 ms)")
	fs.StringVar(&o.pipelineStore, "pipeline-store", "disk", "store of the pipeline section: disk, or mem (keeps only size and sha256: what storing costs)")
	fs.IntVar(&o.models, "models", len(models), "spread jobs over this many models (the catalogue's 3, then made-up names); creates of one model are serialised")
	fs.IntVar(&o.scaleJobs, "scale-jobs", 0, "jobs in flight in the scale section (default 100,000; 5,000 with -quick)")
	fs.IntVar(&o.scalePoll, "scale-poll", 0, "poll_after_seconds the stand-in sends in the scale section (default 20, the real gateway's; 5 with -quick)")
	fs.BoolVar(&o.breakdown, "breakdown", false, "run the pipeline section under redis-cli MONITOR and print its Redis commands per job by purpose (asynq's scripts, the job's transitions, ...): counts only, its rates are slowed by MONITOR")
	fs.BoolVar(&o.trace, "trace", false, "trace the pipeline section's jobs (producer and worker) over OTLP/HTTP: to OTEL_EXPORTER_OTLP_ENDPOINT when set, else to an in-process receiver that decodes what it gets, as a collector does")
	fs.StringVar(&o.plot, "plot", "", "SVG plot of the latency distributions (default: next to the JSON, .svg)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
		} else {
			fs.SetOutput(stderr) // main prints err itself
		}
		fs.Usage()
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.runs <= 0 {
		o.runs = 3
		if o.quick {
			o.runs = 1
		}
	}
	if only != "" {
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(sectionNames(), s) {
				return o, fmt.Errorf("-only: unknown section %q (have %s)", s, strings.Join(sectionNames(), ", "))
			}
			o.only = append(o.only, s)
		}
	}
	if o.out == "" {
		o.out = filepath.Join("bench", "results", "bench-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	}
	if o.plot == "" {
		o.plot = strings.TrimSuffix(o.out, ".json") + ".svg"
	}
	if o.pipelineStore != "disk" && o.pipelineStore != "mem" {
		return o, fmt.Errorf("-pipeline-store %q: want disk or mem", o.pipelineStore)
	}
	if o.concurrency <= 0 {
		return o, errors.New("-concurrency must be positive")
	}
	return o, nil
}

// bench is one invocation's state.
type bench struct {
	opts     options
	sz       sizes
	rec      *recorder
	stderr   io.Writer
	runIndex int
	start    time.Time

	tmpMu sync.Mutex
	tmps  []string

	s3Once sync.Once
	s3     *s3test.Server
	s3Stop func()
	s3Err  error
}

// loadAvg is the machine's 1-minute load average: the bench shares the
// machine with whatever else runs, and says so.
func loadAvg() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	f, _, _ := strings.Cut(string(raw), " ")
	v, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// tempDir makes a directory removed when the bench ends.
func (b *bench) tempDir(prefix string) string {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		panic(err)
	}
	b.tmpMu.Lock()
	b.tmps = append(b.tmps, d)
	b.tmpMu.Unlock()
	return d
}

// s3Server starts versitygw once per bench.
func (b *bench) s3Server() (*s3test.Server, error) {
	b.s3Once.Do(func() { b.s3, b.s3Stop, b.s3Err = s3test.StartMain() })
	return b.s3, b.s3Err
}

func (b *bench) cleanup() {
	if b.s3Stop != nil {
		b.s3Stop()
	}
	for _, d := range b.tmps {
		os.RemoveAll(d)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := len(models); i < o.models; i++ {
		models = append(models, fmt.Sprintf("bench/model-%02d", i))
	}
	models = models[:max(o.models, 1)]
	delayedCheck = o.delayedCheck
	b := &bench{opts: o, sz: fullSizes, rec: newRecorder(), stderr: stderr, start: time.Now()}
	mode := "full"
	if o.quick {
		b.sz, mode = quickSizes, "quick"
	}
	if o.scaleJobs > 0 {
		b.sz.scaleJobs = o.scaleJobs
	}
	if o.scalePoll > 0 {
		b.sz.scalePollAfter = o.scalePoll
	}
	defer b.cleanup()
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return err
		}
	}
	rep := &Report{Started: b.start.UTC(), Mode: mode, Runs: o.runs, Machine: machineInfo(), Modules: moduleVersions(),
		Settings: map[string]any{"concurrency": o.concurrency, "sizes": fmt.Sprintf("%+v", b.sz), "models": models}, Load: map[string][]float64{}}
	for _, sec := range sections {
		if len(o.only) > 0 && !slices.Contains(o.only, sec.name) {
			continue
		}
		rep.Sections = append(rep.Sections, sec.name)
		sec.define(b.rec, b.sz)
		runs := o.runs
		if sec.once {
			runs = 1
		}
		stopProfile := func() {}
		if o.cpuprofile != "" {
			f, err := os.Create(filepath.Join(o.cpuprofile, sec.name+".pprof"))
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return err
			}
			stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		}
		for i := range runs {
			b.runIndex = i
			la := loadAvg()
			rep.Load[sec.name] = append(rep.Load[sec.name], la)
			b.logf("%s: run %d of %d (load average %.2f)", sec.name, i+1, runs, la)
			if err := sec.run(ctx, b); err != nil {
				msg := fmt.Sprintf("%s run %d: %v", sec.name, i+1, err)
				rep.Errors = append(rep.Errors, msg)
				b.logf("ERROR %s", msg)
				if ctx.Err() != nil {
					stopProfile()
					return ctx.Err()
				}
			}
		}
		stopProfile()
	}
	rep.Figures = b.rec.figures()
	rep.Samples = b.rec.samples
	rep.Duration = time.Since(b.start).Seconds()
	writeTable(stdout, rep)
	if err := writeJSON(o.out, rep); err != nil {
		return err
	}
	md := strings.TrimSuffix(o.out, ".json") + ".md"
	var sb strings.Builder
	writeMarkdown(&sb, rep)
	if err := os.WriteFile(md, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	if len(rep.Samples) > 0 {
		if err := os.WriteFile(o.plot, []byte(latencySVG(rep)), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plot: %s\n", o.plot)
	}
	fmt.Fprintf(stdout, "results: %s (table as Markdown: %s); took %s\n", o.out, md, time.Since(b.start).Round(time.Second))
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d section run(s) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}
