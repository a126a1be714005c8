package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// Settings of the system under test that the flags do not change.
const (
	apiKey           = "soak-api-key"
	queuedFor        = 200 * time.Millisecond
	processingFor    = time.Second
	pollAfterSeconds = 1
	pollInterval     = time.Second
	shutdownTimeout  = 2 * time.Second
	webhookTimeScale = 0.01 // retries after 0.6 s, 3 s and 9 s
	statusWorkers    = 8    // parallel status reads of the monitor
	submitWorkers    = 4
	retentionSweep   = 2 * time.Second // JOB_RETENTION_SWEEP_INTERVAL of the workers
)

// harness is one soak run: the processes it started and what it saw.
type harness struct {
	cfg Config
	// archMu guards the archive counts of the report and badArchives
	// (readRecords reads in parallel).
	archMu      sync.Mutex
	badArchives []string
	// archives is the workers' storage, read for archive documents.
	archives storage.Store
	out      io.Writer // progress lines
	rep      *Report
	t0       time.Time
	rng      *mrand.Rand // kills; used by the chaos goroutine only
	dir      string
	keep     bool

	bin      string
	storeDir string
	logDir   string

	redis     *redistest.Server
	stopRedis func()
	rdb       *redis.Client
	producer  *tasks.Client

	api     *standin.Server
	holds   *timeouts
	apiHTTP *http.Server
	apiDone chan struct{}
	apiURL  string

	serve         *proc
	webhookURL    string
	webhookSecret string
	fleet         *fleet
	callbacks     *callbackReceiver // nil unless -callbacks

	restartCount atomic.Int64
	restartsMu   sync.Mutex // guards rep.Chaos.RedisRestarts while running

	track *tracker
}

// Run runs one soak with cfg and returns its report. An error means the
// run could not be set up or was interrupted; a finished run that found
// problems returns a report whose Pass is false.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano() & 0x7fff_ffff
	}
	h := &harness{cfg: cfg, out: progress, t0: time.Now(), rng: mrand.New(mrand.NewPCG(uint64(cfg.Seed), 0x50a4))}
	h.rep = &Report{StartedAt: h.t0.UTC(), Config: reportConfig(cfg)}
	h.rep.Machine = Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()}
	h.track = newTracker(cfg.Jobs)
	defer h.teardown()
	if err := h.setup(ctx); err != nil {
		h.keep = true
		return nil, err
	}
	h.rep.Timings.SetupSec = since(h.t0)
	h.runLoad(ctx)
	// Stop everything that changes state before counting.
	h.rep.Chaos.KilledAtStop = h.fleet.stopAll(shutdownTimeout + 5*time.Second)
	if h.serve != nil {
		h.serve.stop(5 * time.Second)
	}
	h.api.Close()
	vstart := time.Now()
	// Verify even after an interrupt: a partial report beats none.
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	if err := h.verify(vctx); err != nil {
		h.keep = true
		return nil, err
	}
	h.rep.Timings.VerifySec = roundSec(time.Since(vstart))
	h.verdict()
	if !h.rep.Pass || cfg.Keep || cfg.WorkDir != "" {
		h.keep = true
		h.rep.WorkDir = h.dir
	}
	h.rep.FinishedAt = time.Now().UTC()
	h.rep.Timings.TotalSec = since(h.t0)
	if ctx.Err() != nil {
		h.rep.Timings.Interrupted = true
		return h.rep, ctx.Err()
	}
	return h.rep, nil
}

func (h *harness) logf(format string, a ...any) {
	fmt.Fprintf(h.out, "[%6.1fs] %s\n", time.Since(h.t0).Seconds(), fmt.Sprintf(format, a...))
}

func (h *harness) setup(ctx context.Context) error {
	var err error
	if h.dir = h.cfg.WorkDir; h.dir == "" {
		if h.dir, err = os.MkdirTemp("", "soak-"); err != nil {
			return err
		}
	}
	h.storeDir, h.logDir = filepath.Join(h.dir, "videos"), filepath.Join(h.dir, "logs")
	for _, d := range []string{h.storeDir, h.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Locations are compared with the walked paths: no symlinks in them.
	if h.storeDir, err = filepath.EvalSymlinks(h.storeDir); err != nil {
		return err
	}
	if h.archives, err = storage.NewDisk(h.storeDir); err != nil {
		return err
	}
	h.logf("work directory %s, seed %d", h.dir, h.cfg.Seed)
	if err := h.build(ctx); err != nil {
		return err
	}

	// Redis with AOF (appendfsync everysec), noeviction.
	h.redis, h.stopRedis, err = redistest.StartMain(redistest.Options{AppendOnly: true, Dir: filepath.Join(h.dir, "redis"), Databases: 16})
	if err != nil {
		return err
	}
	h.rdb = redis.NewClient(&redis.Options{Addr: h.redis.Addr(), MaxRetries: 2, DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
	popts := tasks.ClientOptions{}
	if h.cfg.Callbacks {
		h.callbacks = newCallbackReceiver()
		popts.DefaultCallbackURL, popts.CallbackPolicy = h.callbacks.srv.URL+"/video-done", callback.Policy{AllowLoopback: true}
	}
	if h.cfg.Tenants {
		limits, errs := jobs.ParseTenantLimits(soakTenantLimits)
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		popts.Tenancy = jobs.NewTenancy(jobs.NewStore(h.rdb, ""), jobs.TenancyConfig{Limits: limits})
	}
	h.producer = tasks.NewClient(h.rdb, popts)
	if info, err := h.rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				h.rep.Machine.RedisVersion = v
			}
		}
	}
	h.logf("redis-server %s at %s (appendonly yes, appendfsync everysec)", h.rep.Machine.RedisVersion, h.redis.Addr())

	if err := h.startAPI(); err != nil {
		return err
	}
	env := h.env()
	if h.cfg.Webhooks {
		if err := h.startServe(ctx, env); err != nil {
			return err
		}
		env = append(env, "WEBHOOK_PUBLIC_URL="+h.webhookURL, "WEBHOOK_SECRETS="+h.webhookSecret)
	}
	if h.cfg.Callbacks {
		env = append(env, "CALLBACK_SECRETS="+callbackSecret, "CALLBACK_ALLOW_LOOPBACK=true")
	}
	if h.cfg.Budgets {
		b := h.budget()
		env = append(env, "BUDGETS=model:"+b.Model+"/day="+apiclient.FormatMicros(b.Limit), "BUDGET_POLICY=reject",
			"MODEL_PRICES="+b.Model+"="+apiclient.FormatMicros(budgetPricePerSecond)+"/s")
		h.logf("budgets: %s may spend %s a day (%s a job), policy reject", b.Model, apiclient.FormatMicros(b.Limit), apiclient.FormatMicros(b.JobEstimate))
	}
	if h.cfg.Tenants {
		env = append(env, "TENANT_LIMITS="+soakTenantLimits)
		h.logf("tenants: every fourth job %s's, the rest %s's; TENANT_LIMITS=%s", soakTenantSmall, soakTenantBulk, soakTenantLimits)
	}
	h.fleet = newFleet(h.bin, env, h.logDir, h.t0)
	if err := h.fleet.start(h.cfg.Workers); err != nil {
		return err
	}
	h.logf("%d workers started (concurrency %d each); logs in %s", h.cfg.Workers, h.cfg.Concurrency, h.logDir)
	return nil
}

// build builds the videoworker binary, unless -bin names one.
func (h *harness) build(ctx context.Context) error {
	if h.cfg.Bin != "" {
		abs, err := filepath.Abs(h.cfg.Bin)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("-bin: %w", err)
		}
		h.bin = abs
		return nil
	}
	start := time.Now()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return errors.New("run the soak from inside the videoworker module (or give -bin)")
	}
	h.bin = filepath.Join(h.dir, "videoworker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", h.bin, "./cmd/videoworker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/videoworker: %w\n%s", err, out)
	}
	h.rep.Timings.BuildSec = roundSec(time.Since(start))
	h.logf("built %s in %s", h.bin, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// startAPI serves the stand-in in this process, behind the timeout
// injector, on a loopback port.
func (h *harness) startAPI() error {
	c := h.cfg
	var prices map[string]float64
	if c.Budgets {
		// The price the workers' MODEL_PRICES names is the one billed.
		prices = map[string]float64{h.budget().Model: float64(budgetPricePerSecond) / 1e6}
	}
	h.api = standin.New(standin.Config{
		PricePerSecond: prices,
		APIKey:         apiKey, QueuedFor: queuedFor, ProcessingFor: processingFor, PollAfterSeconds: pollAfterSeconds,
		ContentSize: c.ContentSize, FailRate: c.FailRate, ExpireRate: c.ExpireRate, Seed: c.Seed,
		Faults: standin.Faults{ServerErrorRate: c.ServerErrorRate, RateLimitRate: c.RateLimitRate, RetryAfter: time.Second,
			Latency: c.Latency, DropRate: c.DropRate, TruncateRate: c.TruncateRate},
		WebhookTimeScale: webhookTimeScale,
		WebhookFaults: standin.WebhookFaults{DropRate: c.WebhookDropRate, DuplicateRate: c.WebhookDuplicateRate,
			WrongSecretRate: c.WebhookWrongSecretRate},
	}, nil)
	h.holds = newTimeouts(h.api, c.TimeoutRate, c.Hold, c.Seed)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h.apiURL = "http://" + ln.Addr().String()
	h.apiHTTP = &http.Server{Handler: h.holds, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	h.apiDone = make(chan struct{})
	go func() { // owned by teardown: Shutdown ends it
		defer close(h.apiDone)
		_ = h.apiHTTP.Serve(ln)
	}()
	if c.Webhooks {
		h.api.Start()
	}
	h.logf("stand-in API at %s/v1 (queued %s, processing %s, poll_after_seconds %d)", h.apiURL, queuedFor, processingFor, pollAfterSeconds)
	return nil
}

// env is the environment of every child: nothing inherited but PATH,
// HOME and TMPDIR, so that the caller's settings cannot leak in.
func (h *harness) env() []string {
	env := []string{
		"REDIS_URL=" + h.redis.URL(0),
		"AISTATS_BASE_URL=" + h.apiURL + "/v1",
		"AISTATS_API_KEY=" + apiKey,
		"AISTATS_TIMEOUT=" + h.cfg.APITimeout.String(),
		"STORAGE_URL=file://" + h.storeDir,
		fmt.Sprintf("WORKER_CONCURRENCY=%d", h.cfg.Concurrency),
		"POLL_INTERVAL=" + pollInterval.String(),
		"POLL_MAX_INTERVAL=5s",
		"SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"JOB_RETENTION_SWEEP_INTERVAL=" + retentionSweep.String(),
	}
	if h.cfg.Retention > 0 {
		env = append(env, "JOB_RETENTION="+h.cfg.Retention.String())
	}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// startServe runs `videoworker serve` as the webhook receiver and waits
// until it answers /healthz.
func (h *harness) startServe(ctx context.Context, env []string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	h.webhookSecret = "whsec_soak_" + hex.EncodeToString(b[:])
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	h.webhookURL = "http://" + addr + "/webhooks/aistats"
	env = append(env, "SERVE_ADDR="+addr, "WEBHOOK_PUBLIC_URL="+h.webhookURL, "WEBHOOK_SECRETS="+h.webhookSecret)
	if h.serve, err = startProc("serve", h.bin, []string{"serve"}, env, filepath.Join(h.logDir, "serve.log")); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		res, err := client.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if h.serve.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("videoworker serve did not come up on %s:\n%s", addr, h.serve.logTail(2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.logf("webhook receiver (videoworker serve) at %s", h.webhookURL)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// teardown stops whatever is still running and removes the work directory
// unless it is kept.
func (h *harness) teardown() {
	if h.fleet != nil {
		h.fleet.stopAll(shutdownTimeout + 5*time.Second)
	}
	if h.serve != nil {
		h.serve.stop(5 * time.Second)
	}
	if h.api != nil {
		h.api.Close()
	}
	if h.apiHTTP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = h.apiHTTP.Shutdown(ctx)
		cancel()
		_ = h.apiHTTP.Close()
		<-h.apiDone
	}
	if h.callbacks != nil {
		h.callbacks.srv.Close()
	}
	if h.rdb != nil {
		_ = h.rdb.Close()
	}
	if h.stopRedis != nil {
		h.stopRedis()
	}
	if h.dir != "" && !h.keep && h.cfg.WorkDir == "" {
		_ = os.RemoveAll(h.dir)
	}
}

// Job i's id, prompt and model.
func (h *harness) jobID(i int) tasks.JobID {
	return tasks.JobID(fmt.Sprintf("soak-%d-%06d", h.cfg.Seed, i))
}

func (h *harness) prompt(i int) string {
	return fmt.Sprintf("soak %d job %06d: a paper boat drifting down a rainy street", h.cfg.Seed, i)
}

func (h *harness) model(i int) string { return h.cfg.Models[i%len(h.cfg.Models)] }

// The tenants of -tenants: a small one with a limit and a bulk one.
const (
	soakTenantSmall  = "acme"
	soakTenantBulk   = "bulk"
	soakTenantLimits = soakTenantSmall + "=8"
)

// tenant is job i's tenant: "" (the default) without -tenants.
func (h *harness) tenant(i int) string {
	switch {
	case !h.cfg.Tenants:
		return ""
	case i%4 == 0:
		return soakTenantSmall
	default:
		return soakTenantBulk
	}
}

// runLoad submits the jobs and drains them while the chaos goroutine kills
// workers and restarts Redis.
func (h *harness) runLoad(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	submitStart := time.Now()
	var submitEnd atomic.Int64 // unix nanos; 0 while submitting
	wg.Add(3)
	go func() { defer wg.Done(); h.fleet.supervise(ctx) }()
	go func() {
		defer wg.Done()
		h.submitAll(ctx, submitStart)
		submitEnd.Store(time.Now().UnixNano())
	}()
	go func() { defer wg.Done(); h.chaos(ctx, submitStart) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastPrint := time.Time{}
	var deadline time.Time
	for {
		h.track.refresh(ctx, h.producer, h.jobID, h.hasArchive)
		end := submitEnd.Load()
		if end != 0 && deadline.IsZero() {
			deadline = time.Unix(0, end).Add(h.cfg.DrainTimeout)
			h.rep.Timings.SubmitSec = roundSec(time.Unix(0, end).Sub(submitStart))
			h.logf("all %d jobs submitted in %s", h.cfg.Jobs, time.Unix(0, end).Sub(submitStart).Round(10*time.Millisecond))
		}
		drained := end != 0 && h.track.pendingCount() == 0 && (!h.cfg.Callbacks || h.callbacksDue(ctx) == 0)
		timedOut := !deadline.IsZero() && time.Now().After(deadline)
		if drained || timedOut || ctx.Err() != nil || time.Since(lastPrint) >= 5*time.Second {
			lastPrint = time.Now()
			h.logf("%s; workers %d, kills %d, redis restarts %d", h.track.summary(), h.fleet.liveCount(), len(h.killsSoFar()), h.restartCount.Load())
		}
		if drained || timedOut || ctx.Err() != nil {
			h.rep.Timings.Drained = drained
			h.rep.Timings.DrainSec = roundSec(time.Since(submitStart))
			if end != 0 {
				h.rep.Timings.DrainAfterSubmitSec = roundSec(time.Since(time.Unix(0, end)))
			}
			if h.rep.Timings.DrainSec > 0 {
				h.rep.Timings.JobsPerSec = float64(int(10*float64(h.cfg.Jobs)/h.rep.Timings.DrainSec)) / 10
			}
			switch {
			case drained:
				h.logf("drained: every job is terminal")
			case timedOut:
				h.logf("drain timeout (%s after the last submission): %d jobs not terminal", h.cfg.DrainTimeout, h.track.pendingCount())
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func (h *harness) killsSoFar() []Kill {
	k, _, _ := h.fleet.snapshot()
	return k
}

// submitAll submits every job through the producer API, retrying each
// (with its fixed job id, so idempotently) while Redis is away.
func (h *harness) submitAll(ctx context.Context, start time.Time) {
	var next atomic.Int64
	var retries atomic.Int64
	var wg sync.WaitGroup
	for range submitWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= h.cfg.Jobs || ctx.Err() != nil {
					return
				}
				if h.cfg.SubmitRate > 0 {
					at := start.Add(time.Duration(float64(i) / h.cfg.SubmitRate * float64(time.Second)))
					if !wait(ctx, time.Until(at)) {
						return
					}
				}
				req := tasks.Request{JobID: h.jobID(i), Tenant: h.tenant(i), Video: apiclient.CreateRequest{Model: h.model(i), Prompt: h.prompt(i)}}
				backoff := 50 * time.Millisecond
				for {
					_, err := h.producer.Submit(ctx, req)
					if err == nil {
						break
					}
					if ctx.Err() != nil || errors.Is(err, tasks.ErrInvalidRequest) || errors.Is(err, tasks.ErrJobIDConflict) {
						h.logf("submit %s: %v", req.JobID, err)
						return
					}
					retries.Add(1)
					wait(ctx, backoff)
					backoff = min(2*backoff, 2*time.Second)
				}
				h.track.submitted(i)
			}
		}()
	}
	wg.Wait()
	h.rep.Jobs.SubmitRetries = int(retries.Load())
}

// chaos kills a random worker every KillEvery (starting a replacement at
// once) until KillUntil of the jobs are terminal, and restarts Redis when
// each 1/(RedisRestarts+1) of the jobs is terminal.
func (h *harness) chaos(ctx context.Context, start time.Time) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	nextKill := start.Add(h.cfg.KillEvery)
	kills := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		terminal := h.track.terminalCount()
		if h.cfg.KillEvery > 0 && (h.cfg.MaxKills == 0 || kills < h.cfg.MaxKills) &&
			float64(terminal) < h.cfg.KillUntil*float64(h.cfg.Jobs) && !time.Now().Before(nextKill) {
			k, err := h.fleet.killRandom(h.rng)
			if err != nil {
				h.logf("kill: %v", err)
			} else {
				kills++
				h.logf("SIGKILL %s (pid %d, up %.1fs); replacement %s", k.Worker, k.PID, k.UptimeSec, k.Replacement)
			}
			nextKill = time.Now().Add(h.cfg.KillEvery)
		}
		n := int(h.restartCount.Load())
		if n < h.cfg.RedisRestarts && terminal*(h.cfg.RedisRestarts+1) >= (n+1)*h.cfg.Jobs {
			h.restartRedis(terminal)
		}
	}
}

// restartRedis restarts Redis on the same port and directory: SIGTERM
// (the AOF is flushed) or, with -redis-crash, SIGKILL (up to a second of
// acknowledged writes is lost).
func (h *harness) restartRedis(terminal int) {
	mode := "sigterm"
	if h.cfg.RedisCrash {
		mode = "sigkill"
	}
	r := RedisRestart{AtSec: since(h.t0), Terminal: terminal, Mode: mode}
	h.logf("restarting Redis (%s) at %d terminal jobs", mode, terminal)
	start := time.Now()
	var err error
	if h.cfg.RedisCrash {
		err = h.redis.Kill()
	}
	if err == nil {
		err = h.redis.Restart()
	}
	r.DowntimeSec = roundSec(time.Since(start))
	if err != nil {
		r.Err = err.Error()
		h.logf("Redis restart failed: %v", err)
	} else {
		h.logf("Redis is back after %s", time.Since(start).Round(10*time.Millisecond))
	}
	h.restartsMu.Lock()
	h.rep.Chaos.RedisRestarts = append(h.rep.Chaos.RedisRestarts, r)
	h.restartsMu.Unlock()
	h.restartCount.Add(1)
}

func reportConfig(c Config) ReportConfig {
	r := ReportConfig{Jobs: c.Jobs, Workers: c.Workers, Concurrency: c.Concurrency, KillEvery: c.KillEvery.String(), MaxKills: c.MaxKills,
		KillUntil: c.KillUntil, RedisRestarts: c.RedisRestarts, RedisMode: "sigterm", DrainTimeout: c.DrainTimeout.String(),
		SubmitRate: c.SubmitRate, Seed: c.Seed, Models: c.Models, ContentSize: c.ContentSize,
		Redis:      "redis-server, appendonly yes, appendfsync everysec, maxmemory-policy noeviction",
		APITimeout: c.APITimeout.String(), PollInterval: pollInterval.String()}
	if c.RedisCrash {
		r.RedisMode = "sigkill"
	}
	r.API.QueuedFor, r.API.ProcessingFor, r.API.PollAfterSeconds = queuedFor.String(), processingFor.String(), pollAfterSeconds
	r.API.ServerErrorRate, r.API.RateLimitRate, r.API.RetryAfter = c.ServerErrorRate, c.RateLimitRate, time.Second.String()
	r.API.DropRate, r.API.TruncateRate, r.API.Latency = c.DropRate, c.TruncateRate, c.Latency.String()
	r.API.TimeoutRate, r.API.TimeoutHold, r.API.FailRate, r.API.ExpireRate = c.TimeoutRate, c.Hold.String(), c.FailRate, c.ExpireRate
	r.Webhooks.On, r.Webhooks.DropRate, r.Webhooks.DuplicateRate = c.Webhooks, c.WebhookDropRate, c.WebhookDuplicateRate
	r.Webhooks.WrongSecretRate, r.Webhooks.TimeScale = c.WebhookWrongSecretRate, webhookTimeScale
	r.Retention, r.RetentionSweep = "7d (the default)", retentionSweep.String()
	if c.Retention > 0 {
		r.Retention = c.Retention.String()
	}
	r.Callbacks, r.Budgets = c.Callbacks, c.Budgets
	if c.Tenants {
		r.TenantLimits = soakTenantLimits
	}
	return r
}

// hasArchive reports whether job id has an archive document (it was
// forgotten after its retention).
func (h *harness) hasArchive(ctx context.Context, id tasks.JobID) bool {
	_, err := h.archives.Stat(ctx, jobs.ArchiveKey(string(id)))
	return err == nil
}

// tracker follows the state of every submitted job.
type tracker struct {
	mu       sync.Mutex
	n        int
	isSub    []bool
	nSub     int
	pending  map[int]bool
	final    []*jobs.Record // terminal records, by index
	current  map[int]jobs.State
	missing  map[int]bool // submitted, yet no record (last look)
	terminal atomic.Int64
}

func newTracker(n int) *tracker {
	return &tracker{n: n, isSub: make([]bool, n), pending: map[int]bool{}, final: make([]*jobs.Record, n),
		current: map[int]jobs.State{}, missing: map[int]bool{}}
}

func (t *tracker) submitted(i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.isSub[i] {
		t.isSub[i] = true
		t.nSub++
		t.pending[i] = true
		t.current[i] = jobs.StateQueued
	}
}

func (t *tracker) pendingCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

func (t *tracker) terminalCount() int { return int(t.terminal.Load()) }

// refresh reads the record of every job not yet terminal.
func (t *tracker) refresh(ctx context.Context, c *tasks.Client, id func(int) tasks.JobID, archived func(context.Context, tasks.JobID) bool) {
	t.mu.Lock()
	todo := make([]int, 0, len(t.pending))
	for i := range t.pending {
		todo = append(todo, i)
	}
	t.mu.Unlock()
	work := make(chan int)
	var wg sync.WaitGroup
	for range statusWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				rec, err := c.Status(rctx, id(i))
				forgotten := errors.Is(err, jobs.ErrNotFound) && archived(rctx, id(i))
				cancel()
				t.mu.Lock()
				switch {
				case forgotten: // ended, archived and forgotten between two looks
					delete(t.missing, i)
					if t.pending[i] {
						delete(t.pending, i)
						t.terminal.Add(1)
					}
				case errors.Is(err, jobs.ErrNotFound):
					t.missing[i] = true
				case err != nil: // Redis away: look again next round
				default:
					delete(t.missing, i)
					t.current[i] = rec.State
					if rec.State.Terminal() && t.pending[i] {
						delete(t.pending, i)
						t.final[i] = rec
						t.terminal.Add(1)
					}
				}
				t.mu.Unlock()
			}
		}()
	}
	for _, i := range todo {
		select {
		case work <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
}

// summary is one progress line.
func (t *tracker) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	counts := map[jobs.State]int{}
	for _, s := range t.current {
		counts[s]++
	}
	var parts []string
	for _, s := range jobs.AllStates {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, counts[s]))
		}
	}
	line := fmt.Sprintf("submitted %d/%d, terminal %d [%s]", t.nSub, t.n, t.terminal.Load(), strings.Join(parts, ", "))
	if len(t.missing) > 0 {
		line += fmt.Sprintf(", %d without a record", len(t.missing))
	}
	return line
}

// budgetPricePerSecond is the price (micro-dollars per second of video)
// of the budgeted model with -budgets, billed by the stand-in and named
// in MODEL_PRICES; a job (8 s, one sample) costs 8 times it.
const budgetPricePerSecond = 50_000

// soakBudget is the budget of -budgets: on Model, at most Limit
// micro-dollars a day, about half of that model's jobs.
type soakBudget struct {
	Model              string
	Limit, JobEstimate int64
}

func (h *harness) budget() soakBudget {
	m := h.cfg.Models[0]
	n := 0
	for i := range h.cfg.Jobs {
		if h.model(i) == m {
			n++
		}
	}
	est := budgetPricePerSecond * int64(jobs.DefaultDurationSeconds)
	return soakBudget{Model: m, Limit: est * int64(max((n+1)/2, 1)), JobEstimate: est}
}
