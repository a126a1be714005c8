package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
	"github.com/videoworker/videoworker/worker"
)

// demoModels are the sample jobs' models, used in turn.
var demoModels = []string{"google/veo-3.1-lite", "openai/sora-2"}

// demoPrompts are the sample jobs' prompts, used in turn.
var demoPrompts = []string{
	"a paper boat drifting down a rainy street at dusk",
	"timelapse of a city skyline from day to night",
	"a red fox walking through fresh snow, slow motion",
	"waves crashing on black volcanic sand, aerial view",
	"a cup of coffee steaming on a wooden table, morning light",
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("jobs", 5, "number of sample jobs to submit")
	exitWhenDone := fs.Bool("exit-when-done", false, "exit once every job is finished (status 1 if any failed)")
	quiet := fs.Bool("quiet", false, "no live progress lines")
	addr := fs.String("addr", envOr("DEMO_ADDR", "127.0.0.1:0"), "listen address of the dashboard, the job API and the asynq UI (DEMO_ADDR)")
	failRate := fs.Float64("fail-rate", 0, "fraction of the stand-in API's generations that fail, 0 to 1")
	interval := fs.Duration("interval", 0, "wait between two submissions (e.g. 500ms, to see jobs in every state)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *n < 0 {
		return usageError{"demo: -jobs must not be negative"}
	}
	if *failRate < 0 || *failRate > 1 || *interval < 0 {
		return usageError{"demo: -fail-rate must be between 0 and 1 and -interval not negative"}
	}
	_, redisSet := os.LookupEnv("REDIS_URL")
	_, keySet := os.LookupEnv("AISTATS_API_KEY")
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if os.Getenv("LOG_LEVEL") == "" {
		cfg.LogLevel = "warn" // the demo prints its own progress
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// The stand-in API stops after the worker, its client, has stopped and
	// closed its idle connections: the server's graceful shutdown waits up
	// to 5 s on a connection that was opened but never carried a request.
	apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAPI()

	// Redis: embedded unless REDIS_URL is set.
	var rdb redis.UniversalClient
	if redisSet {
		if rdb, err = openRedis(ctx, cfg.RedisURL); err != nil {
			return err
		}
	} else {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		defer mr.Close()
		wg.Add(1)
		go func() { // miniredis expires keys only when told time passed
			defer wg.Done()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					mr.FastForward(250 * time.Millisecond)
				}
			}
		}()
		rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
		fmt.Fprintf(stdout, "embedded Redis at %s (set REDIS_URL to use your own)\n", mr.Addr())
	}
	defer rdb.Close()

	// The pages (and, with the stand-in, the webhook receiver): listen
	// first, so that the worker can subscribe the receiver's address.
	pages, err := listenDemoPages(*addr)
	if err != nil {
		return err
	}
	defer pages.ln.Close() // in case serve is never reached

	// The API: the stand-in unless AISTATS_API_KEY is set. It delivers
	// signed webhooks to the demo's receiver, with a few duplicates and
	// wrongly signed attempts (retried) for the dashboard to count.
	var hooks *apiclient.WebhookSubscription
	if !keySet {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		cfg.APIKey = "demo-key"
		srv := standin.New(standin.Config{APIKey: cfg.APIKey, QueuedFor: 500 * time.Millisecond, ProcessingFor: 2 * time.Second,
			PollAfterSeconds: 1, ContentSize: 256 << 10, FailRate: *failRate, Seed: time.Now().UnixNano(),
			WebhookTimeScale: 0.005, WebhookFaults: standin.WebhookFaults{DuplicateRate: 0.1, WrongSecretRate: 0.05}}, log.With("component", "standin"))
		srv.Start()
		defer srv.Close()
		hooks = pages.subscription()
		cfg.APIBaseURL = "http://" + ln.Addr().String() + "/v1"
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveHTTP(apiCtx, ln, standinHTTPServer(srv, log)); err != nil {
				log.Error("stand-in API stopped", "err", err.Error())
			}
		}()
		fmt.Fprintf(stdout, "stand-in AI Stats API at %s (set AISTATS_API_KEY and AISTATS_BASE_URL to use the real one)\n", cfg.APIBaseURL)
	}
	api, err := apiclient.New(apiclient.Config{BaseURL: cfg.APIBaseURL, APIKey: cfg.APIKey, Timeout: cfg.APITimeout, Logger: log})
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	w, err := newWorker(cfg, rdb, api, store, log, nil, func(wc *worker.Config) {
		wc.PollInterval = time.Second
		wc.DelayedTaskCheckInterval = 200 * time.Millisecond
		wc.ShutdownTimeout = 5 * time.Second
		wc.Webhook = hooks
	})
	if err != nil {
		return err
	}
	werr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stopAPI()
		werr <- w.Run(ctx)
		api.CloseIdleConnections()
	}()

	producer := tasks.NewClient(rdb, tasks.ClientOptions{Prefix: cfg.KeyPrefix})
	js := jobs.NewStore(rdb, cfg.KeyPrefix)
	deps := server.Deps{Redis: rdb, Store: store, Producer: producer, Jobs: js, Monitoring: true, Logger: log.With("component", "http")}
	if hooks != nil {
		v, err := webhook.NewVerifier([]string{hooks.Secret}, 5*time.Minute, nil)
		if err != nil {
			return err
		}
		deps.Webhooks = webhook.NewHandler(v, js, asynq.NewClientFromRedisClient(rdb), log.With("component", "webhook"))
	}
	srvDone := pages.serve(ctx, deps, stdout, log)
	defer func() { cancel(); <-srvDone }() // before Redis closes
	start := time.Now()
	ids := make([]tasks.JobID, 0, *n)
	run := start.UTC().Format("150405")
	for i := 0; i < *n; i++ {
		id, err := producer.Submit(ctx, tasks.Request{
			JobID: tasks.JobID(fmt.Sprintf("demo-%s-%03d", run, i+1)),
			Video: apiclient.CreateRequest{Model: demoModels[i%len(demoModels)], Prompt: demoPrompts[i%len(demoPrompts)], Duration: 8, Resolution: "720p"},
		})
		if err != nil {
			return err
		}
		ids = append(ids, id)
		if *interval > 0 && i < *n-1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(*interval):
			}
		}
	}
	fmt.Fprintf(stdout, "submitted %d jobs; storing videos under %s\n", len(ids), cfg.StorageURL)

	recs, err := watchJobs(ctx, producer, ids, stdout, *quiet, log)
	if err != nil {
		return err
	}
	stored, failed := 0, 0
	for _, r := range recs {
		if r.State == jobs.StateStored {
			stored++
			if !*quiet {
				fmt.Fprintf(stdout, "  %s → %s\n", r.ID, r.Location)
			}
		} else {
			failed++
			fmt.Fprintf(stdout, "  %s %s: %s %s\n", r.ID, r.State, r.ErrorCode, r.Error)
		}
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "done in %s (%.1f jobs/s)\n", elapsed.Round(time.Millisecond), float64(len(ids))/elapsed.Seconds())
	fmt.Fprintf(stdout, "%d stored, %d failed\n", stored, failed)
	if !*exitWhenDone {
		fmt.Fprintln(stdout, "the worker keeps running; press Ctrl-C to stop")
		<-ctx.Done()
	}
	cancel()
	if err := <-werr; err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d jobs failed", failed, len(ids))
	}
	return nil
}

// demoPages is the demo's HTTP server: the dashboard, the job API, the
// asynq UI and the webhook receiver, behind a login made up for the run.
type demoPages struct {
	ln         net.Listener
	base       string // http://host:port
	pass       string // of the operator "demo"
	auth       *server.Auth
	hookSecret string
}

// listenDemoPages listens on addr and makes up the login and the webhook
// signing secret.
func listenDemoPages(addr string) (*demoPages, error) {
	var b [36]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	pass := base64.RawURLEncoding.EncodeToString(b[:12])
	auth, err := server.NewAuth("", "demo:"+pass+":operator")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo dashboard: %w", err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return &demoPages{ln: ln, base: "http://" + net.JoinHostPort(host, port),
		pass: pass, auth: auth, hookSecret: "whsec_" + hex.EncodeToString(b[12:])}, nil
}

// subscription is the webhook the worker subscribes on each create: the
// receiver on this server, which the stand-in on this machine can reach.
func (p *demoPages) subscription() *apiclient.WebhookSubscription {
	return &apiclient.WebhookSubscription{URL: p.base + webhook.Path, Secret: p.hookSecret,
		Events: []string{"video.completed", "video.failed", "video.cancelled", "video.expired"}}
}

// serve serves deps until ctx ends and prints the address and login. The
// returned channel closes when the server has stopped.
func (p *demoPages) serve(ctx context.Context, deps server.Deps, stdout io.Writer, log *slog.Logger) <-chan struct{} {
	deps.Auth = p.auth
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serveHTTP(ctx, p.ln, server.NewHTTPServer(server.New(deps), log)); err != nil {
			log.Error("demo dashboard stopped", "err", err.Error())
		}
	}()
	fmt.Fprintf(stdout, "dashboard at %s/ (asynq UI at %s%s/, job API at %s/v1/jobs)\n", p.base, p.base, server.MonitoringPath, p.base)
	fmt.Fprintf(stdout, "  log in as demo / %s (operator; generated for this run)\n", p.pass)
	return done
}

// watchJobs prints a line whenever a job changes state or progress, until
// every job is terminal or ctx ends.
func watchJobs(ctx context.Context, c *tasks.Client, ids []tasks.JobID, out io.Writer, quiet bool, log *slog.Logger) ([]*jobs.Record, error) {
	last := map[tasks.JobID]string{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		recs := make([]*jobs.Record, 0, len(ids))
		done := 0
		for _, id := range ids {
			r, err := c.Status(ctx, id)
			if err != nil {
				if errors.Is(ctx.Err(), context.Canceled) {
					return nil, ctx.Err()
				}
				log.Warn("status", "job_id", string(id), "err", err.Error())
				continue
			}
			recs = append(recs, r)
			if r.State.Terminal() {
				done++
			}
			line := fmt.Sprintf("%-22s %-12s %-10s %3d%%", r.ID, r.State, r.APIStatus, r.Progress)
			if !quiet && last[id] != line {
				last[id] = line
				fmt.Fprintln(out, strings.TrimRight(line, " "))
			}
		}
		if done == len(ids) {
			return recs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// redactURL hides a password in a URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}
