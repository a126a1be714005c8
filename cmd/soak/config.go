package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// Config is one soak run. defaultConfig holds the defaults; flags override
// them.
type Config struct {
	Jobs        int // jobs submitted
	Workers     int // worker processes alive at any time
	Concurrency int // WORKER_CONCURRENCY of each worker

	KillEvery time.Duration // SIGKILL a random worker this often (0: never)
	MaxKills  int           // stop after this many kills (0: no limit)
	// KillUntil stops the kills once this fraction of the jobs is
	// terminal, so that the run ends: a killed worker's tasks come back
	// only after asynq's lease recovery (about a minute).
	KillUntil     float64
	RedisRestarts int  // Redis restarts, spread evenly over the drain
	RedisCrash    bool // restart Redis with SIGKILL instead of SIGTERM

	DrainTimeout time.Duration // after the last submission; jobs not terminal by then are lost
	SubmitRate   float64       // jobs per second; 0 submits as fast as Redis takes them
	Seed         int64         // 0: derived from the clock

	Models      []string // used in turn; creates of one model are serialised fleet-wide
	ContentSize int64    // bytes of each video

	// Faults of the stand-in API, per call.
	ServerErrorRate float64
	RateLimitRate   float64
	DropRate        float64
	TruncateRate    float64
	Latency         time.Duration
	// TimeoutRate holds this fraction of calls for Hold, longer than
	// APITimeout: half before the API sees them, half after it answered.
	TimeoutRate float64
	Hold        time.Duration
	APITimeout  time.Duration // AISTATS_TIMEOUT of the workers
	FailRate    float64       // jobs the API fails
	ExpireRate  float64       // jobs the API expires

	// Webhooks: a separate `videoworker serve` receives them.
	Webhooks bool
	// Callbacks: every job has a callback URL to a receiver in the soak
	// process; the drain waits for the deliveries too.
	Callbacks bool
	// Retention is the workers' JOB_RETENTION (0: their default, 7d).
	// Either way the sweep runs every retentionSweep: ended jobs are
	// archived and compacted during the run, and with a short retention
	// forgotten too; the verifier reads them from their archives.
	Retention time.Duration
	// Budgets: a day budget on the first model that about half of its
	// jobs fit, BUDGET_POLICY=reject (see budgetEnv).
	Budgets bool
	// Tenants: two tenants (every fourth job soakTenantSmall's, the rest
	// soakTenantBulk's), tenancy on in the producer and the workers with
	// TENANT_LIMITS soakTenantLimits; the verifier checks each job kept
	// its tenant.
	Tenants                bool
	WebhookDropRate        float64 // lost deliveries
	WebhookDuplicateRate   float64
	WebhookWrongSecretRate float64

	Out  string // JSON report path
	Bin  string // prebuilt videoworker binary; "" builds one
	Keep bool   // keep the work directory
	// WorkDir, when set, is used (and kept) instead of a new temporary
	// directory. Tests set it.
	WorkDir string
}

func defaultConfig() Config {
	return Config{
		Jobs:                   2000,
		Workers:                3,
		Concurrency:            20,
		KillEvery:              4 * time.Second,
		KillUntil:              0.97,
		RedisRestarts:          2,
		DrainTimeout:           10 * time.Minute,
		Models:                 []string{"google/veo-3.1-lite", "google/veo-3.1", "openai/sora-2"},
		ContentSize:            64 << 10,
		ServerErrorRate:        0.03,
		RateLimitRate:          0.02,
		DropRate:               0.02,
		TruncateRate:           0.03,
		Latency:                2 * time.Millisecond,
		TimeoutRate:            0.01,
		Hold:                   3 * time.Second,
		APITimeout:             2 * time.Second,
		FailRate:               0.01,
		ExpireRate:             0.005,
		Webhooks:               true,
		WebhookDropRate:        0.05,
		WebhookDuplicateRate:   0.05,
		WebhookWrongSecretRate: 0.02,
	}
}

// tenantsDrainTimeout is -drain-timeout's default with -tenants: with
// tenancy on, jobs are admitted through a create window of two, which
// the kills stall now and then, and 2,000 jobs drain in 9-10 min.
const tenantsDrainTimeout = 20 * time.Minute

// MaxJobs is the largest run the harness accepts.
const MaxJobs = 100_000

// parseFlags reads args over the defaults.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./cmd/soak [flags]\n\nRuns N jobs through separate worker processes, a real redis-server with AOF and the\nstand-in API injecting faults, while workers are SIGKILLed and Redis restarted; prints a\nreport, writes it as JSON and exits 1 on any lost job, duplicate create, corrupt or\nduplicate object.\n\nflags:")
		fs.PrintDefaults()
	}
	fs.IntVar(&c.Jobs, "jobs", c.Jobs, fmt.Sprintf("jobs to submit (1-%d)", MaxJobs))
	fs.IntVar(&c.Workers, "workers", c.Workers, "worker processes")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "WORKER_CONCURRENCY of each worker")
	fs.DurationVar(&c.KillEvery, "kill-every", c.KillEvery, "SIGKILL a random worker (and start a replacement) this often; 0 never")
	fs.IntVar(&c.MaxKills, "max-kills", c.MaxKills, "stop killing after this many kills (0: no limit)")
	fs.Float64Var(&c.KillUntil, "kill-until", c.KillUntil, "stop killing once this fraction of jobs is terminal (a killed worker's tasks return after ~1 min)")
	fs.IntVar(&c.RedisRestarts, "redis-restarts", c.RedisRestarts, "Redis restarts, at even fractions of the jobs finished")
	fs.BoolVar(&c.RedisCrash, "redis-crash", c.RedisCrash, "restart Redis with SIGKILL (loses up to 1 s of writes under appendfsync everysec) instead of SIGTERM")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long after the last submission every job must be terminal; the rest are lost (20m when -tenants is given and this is not: admission through the create window drains in about 9-10 min under the kills)")
	fs.Float64Var(&c.SubmitRate, "submit-rate", c.SubmitRate, "jobs submitted per second (0: as fast as possible)")
	fs.Int64Var(&c.Seed, "seed", c.Seed, "seed of the fault draws and the kills (0: from the clock)")
	models := fs.String("models", strings.Join(c.Models, ","), "models used in turn, comma separated")
	fs.Int64Var(&c.ContentSize, "content-size", c.ContentSize, "bytes of each video")
	fs.Float64Var(&c.ServerErrorRate, "error-rate", c.ServerErrorRate, "fraction of API calls answered 5xx")
	fs.Float64Var(&c.RateLimitRate, "rate-limit-rate", c.RateLimitRate, "fraction of API calls answered 429 with Retry-After: 1")
	fs.Float64Var(&c.DropRate, "drop-rate", c.DropRate, "fraction of API calls whose connection is dropped after the API handled them")
	fs.Float64Var(&c.TruncateRate, "truncate-rate", c.TruncateRate, "fraction of downloads cut short")
	fs.Float64Var(&c.TimeoutRate, "timeout-rate", c.TimeoutRate, "fraction of API calls held past the workers' AISTATS_TIMEOUT")
	fs.Float64Var(&c.FailRate, "fail-rate", c.FailRate, "fraction of jobs the API fails")
	fs.Float64Var(&c.ExpireRate, "expire-rate", c.ExpireRate, "fraction of jobs the API expires")
	fs.BoolVar(&c.Webhooks, "webhooks", c.Webhooks, "deliver webhooks to a separate `videoworker serve`")
	fs.DurationVar(&c.Retention, "retention", c.Retention, "JOB_RETENTION of the workers (e.g. 20s; 0: their default, 7d): ended jobs are forgotten during the run and checked against their archive documents")
	fs.BoolVar(&c.Callbacks, "callbacks", c.Callbacks, "give every job a callback URL (a receiver in this process) and check each terminal state arrives, signed")
	fs.BoolVar(&c.Budgets, "budgets", c.Budgets, "set BUDGETS (a day budget on the first model that about half its jobs fit), BUDGET_POLICY=reject and MODEL_PRICES for the workers; jobs refused budget_exceeded are expected, and that model's settled spend must stay within the budget plus one job's estimate")
	fs.BoolVar(&c.Tenants, "tenants", c.Tenants, "two tenants (every fourth job acme's, limited to 8 generating at once; the rest bulk's, unlimited), tenancy on in the producer and the workers; each job must keep its tenant")
	fs.Float64Var(&c.WebhookDropRate, "webhook-drop-rate", c.WebhookDropRate, "fraction of webhook deliveries lost")
	fs.Float64Var(&c.WebhookDuplicateRate, "webhook-dup-rate", c.WebhookDuplicateRate, "fraction of webhook deliveries sent twice")
	fs.StringVar(&c.Out, "out", "", "JSON report path (default bench/results/soak-<UTC time>.json)")
	fs.StringVar(&c.Bin, "bin", "", "videoworker binary to run (default: go build ./cmd/videoworker into the work directory)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the work directory (logs, Redis data, videos); it is kept anyway when the run fails")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	drainSet := false
	fs.Visit(func(f *flag.Flag) { drainSet = drainSet || f.Name == "drain-timeout" })
	if c.Tenants && !drainSet {
		c.DrainTimeout = tenantsDrainTimeout
	}
	c.Models = nil
	for _, m := range strings.Split(*models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.Models = append(c.Models, m)
		}
	}
	if c.Out == "" {
		c.Out = fmt.Sprintf("bench/results/soak-%s.json", time.Now().UTC().Format("20060102T150405Z"))
	}
	return c, c.Validate()
}

// Validate names every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Jobs < 1 || c.Jobs > MaxJobs {
		add("-jobs: want 1-%d, got %d", MaxJobs, c.Jobs)
	}
	if c.Workers < 1 || c.Workers > 64 {
		add("-workers: want 1-64, got %d", c.Workers)
	}
	if c.Concurrency < 1 || c.Concurrency > 1000 {
		add("-concurrency: want 1-1000, got %d", c.Concurrency)
	}
	if c.KillEvery < 0 || c.MaxKills < 0 || c.RedisRestarts < 0 {
		add("-kill-every, -max-kills and -redis-restarts must not be negative")
	}
	if c.KillEvery > 0 && c.Workers < 2 {
		add("-kill-every needs at least 2 workers (one keeps working while the other restarts)")
	}
	if c.KillUntil < 0 || c.KillUntil > 1 {
		add("-kill-until: want 0-1")
	}
	if c.DrainTimeout < time.Second {
		add("-drain-timeout: want at least 1s")
	}
	if c.SubmitRate < 0 {
		add("-submit-rate must not be negative")
	}
	if len(c.Models) == 0 {
		add("-models: give at least one")
	}
	if c.ContentSize < 1 {
		add("-content-size: want at least 1")
	}
	for name, r := range map[string]float64{"error-rate": c.ServerErrorRate, "rate-limit-rate": c.RateLimitRate, "drop-rate": c.DropRate,
		"truncate-rate": c.TruncateRate, "timeout-rate": c.TimeoutRate, "fail-rate": c.FailRate, "expire-rate": c.ExpireRate,
		"webhook-drop-rate": c.WebhookDropRate, "webhook-dup-rate": c.WebhookDuplicateRate} {
		if r < 0 || r > 0.5 {
			add("-%s: want 0-0.5, got %g", name, r)
		}
	}
	if c.TimeoutRate > 0 && c.Hold <= c.APITimeout {
		add("the timeout hold (%s) must be longer than AISTATS_TIMEOUT (%s)", c.Hold, c.APITimeout)
	}
	return errors.Join(errs...)
}
