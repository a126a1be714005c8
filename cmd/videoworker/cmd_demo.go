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
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/wake"
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

// demoWebhookFaults are the stand-in's deliberate webhook faults in the
// demo, for the dashboard to count: a few deliveries sent twice and a few
// signed with a wrong secret (rejected, then retried).
var demoWebhookFaults = standin.WebhookFaults{DuplicateRate: 0.1, WrongSecretRate: 0.05}

// demoStandinConfig is the stand-in of the demo: each job waits 1 s in the
// API's queue, generates for 4 s and downloads for about 1 s, so that a
// run of a few dozen jobs shows jobs in every stage for long enough to
// look at the dashboard.
func demoStandinConfig(failRate float64) standin.Config {
	return standin.Config{APIKey: "demo-key", QueuedFor: time.Second, ProcessingFor: 4 * time.Second,
		PollAfterSeconds: 1, ContentSize: 256 << 10, FailRate: failRate, Seed: time.Now().UnixNano(),
		Faults:           standin.Faults{Latency: time.Second, Endpoints: []string{standin.EndpointContent}},
		WebhookTimeScale: 0.005, WebhookFaults: demoWebhookFaults}
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	n := fs.Int("jobs", 5, "number of sample jobs to submit")
	exitWhenDone := fs.Bool("exit-when-done", false, "exit once every job is finished (status 1 if any failed)")
	quiet := fs.Bool("quiet", false, "no live progress line")
	addr := fs.String("addr", envOr("DEMO_ADDR", "127.0.0.1:0"), "listen address of the dashboard, the job API and the asynq UI (DEMO_ADDR)")
	failRate := fs.Float64("fail-rate", 0, "fraction of the stand-in API's generations that fail, 0 to 1")
	interval := fs.Duration("interval", 0, "wait between two submissions (e.g. 300ms, to see jobs in every state)")
	if done, err := parseFlags(fs, args, stdout, stderr); done || err != nil {
		return err
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
	// Deferred first, so that it runs last: the spans still buffered are
	// flushed once everything that makes them has stopped.
	tp, stopTracing, err := setupTracing(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopTracing()

	// Ctrl-C (ctx ending) is how a user stops the demo: not a failure.
	defer func() {
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil
		}
	}()

	// What stops, in this order, when the demo ends (deferred calls run
	// last first): the worker and the progress watch; the stand-in's
	// webhook delivery, whose connections go to the dashboard; the
	// stand-in API, once the worker has closed its connections; the
	// dashboard; then Redis.
	var wg sync.WaitGroup
	defer wg.Wait()

	// The pages (and, with the stand-in, the webhook receiver) listen
	// first: the address and the login are the first thing printed.
	pages, err := listenDemoPages(*addr)
	if err != nil {
		return err
	}
	defer pages.ln.Close() // in case serve is never reached
	pages.printLogin(stdout)
	pagesCtx, stopPages := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPages()

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
		tickCtx, stopTick := context.WithCancel(context.WithoutCancel(ctx))
		defer stopTick()
		wg.Add(1)
		go func() { // miniredis expires keys only when told time passed
			defer wg.Done()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tickCtx.Done():
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
	// The dashboard, then the webhook receiver's counter writer, stop
	// before Redis closes (registered after it).
	var srvDone <-chan struct{}
	var stopHooks context.CancelFunc
	var hooksDone chan struct{}
	defer func() {
		stopPages()
		if srvDone != nil {
			<-srvDone
		}
		if stopHooks != nil {
			stopHooks()
			<-hooksDone
		}
	}()

	// The API: the stand-in unless AISTATS_API_KEY is set. It delivers
	// signed webhooks to the demo's receiver, with a few duplicates and
	// wrongly signed attempts (retried) for the dashboard to count.
	apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAPI()
	var hooks *apiclient.WebhookSubscription
	if !keySet {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		sc := demoStandinConfig(*failRate)
		cfg.APIKey = sc.APIKey
		srv := standin.New(sc, log.With("component", "standin"))
		hooks = pages.subscription()
		cfg.APIBaseURL = "http://" + ln.Addr().String() + "/v1"
		apiDone := make(chan struct{})
		go func() {
			defer close(apiDone)
			if err := serveHTTP(apiCtx, ln, standinHTTPServer(srv, log)); err != nil {
				log.Error("stand-in API stopped", "err", err.Error())
			}
		}()
		defer func() { stopAPI(); <-apiDone }()
		srv.Start()
		defer srv.Close() // before the dashboard and the API stop
		fmt.Fprintf(stdout, "stand-in AI Stats API at %s (set AISTATS_API_KEY and AISTATS_BASE_URL to use the real one)\n", cfg.APIBaseURL)
		fmt.Fprintf(stdout, "  its videos are random bytes, not playable; on purpose it signs about %.0f%% of webhook deliveries\n"+
			"  with a wrong secret (the dashboard counts them as bad signatures; the retry succeeds) and sends %.0f%% twice\n",
			demoWebhookFaults.WrongSecretRate*100, demoWebhookFaults.DuplicateRate*100)
	}
	var hookSecrets []string
	if hooks != nil {
		hookSecrets = []string{hooks.Secret}
	}
	api, err := apiclient.New(apiclient.Config{BaseURL: cfg.APIBaseURL, APIKey: cfg.APIKey, Secrets: hookSecrets, AllowInsecureHTTP: cfg.insecureAPIAllowed(), Timeout: cfg.APITimeout, Logger: log})
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	w, err := newWorker(cfg, rdb, api, store, log, nil, tp, func(wc *worker.Config) {
		wc.PollInterval = time.Second
		wc.DelayedTaskCheckInterval = 200 * time.Millisecond
		wc.ShutdownTimeout = 5 * time.Second
		wc.Webhook = hooks
	})
	if err != nil {
		return err
	}
	producer := tasks.NewClient(rdb, tasks.ClientOptions{Prefix: cfg.KeyPrefix, KeyTemplate: cfg.KeyTemplate, NoWake: !cfg.Wake, Retention: cfg.retention(),
		TracerProvider: tp})
	js := cfg.jobStore(rdb)
	deps := server.Deps{Redis: rdb, Store: store, Producer: producer, Jobs: js, Monitoring: true, Logger: log.With("component", "http")}
	if hooks != nil {
		v, err := webhook.NewVerifier([]string{hooks.Secret}, 5*time.Minute, nil)
		if err != nil {
			return err
		}
		// The stand-in's wrongly signed deliveries are on purpose (said
		// above, counted on the dashboard): not worth a warning each.
		hookLog := log
		if os.Getenv("LOG_LEVEL") == "" {
			hookLog = newLogger(stderr, cfg.LogFormat, "error")
		}
		recv := webhook.NewHandler(v, js, wake.NewEnqueuer(rdb, cfg.Wake), hookLog.With("component", "webhook"))
		deps.Webhooks = recv
		// The receiver's rejection counts reach Redis every few seconds,
		// and once more after the dashboard has stopped.
		hooksCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		hooksDone = make(chan struct{})
		stopHooks = cancel
		go func() { defer close(hooksDone); recv.Run(hooksCtx) }()
	}
	srvDone = pages.serve(pagesCtx, deps, log)

	// The worker runs until the demo ends; it stops first.
	workCtx, stopWork := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() {
		werr <- w.Run(workCtx)
		api.CloseIdleConnections()
	}()
	workerStopped := false
	stopWorker := func() error {
		if workerStopped {
			return nil
		}
		workerStopped = true
		stopWork()
		return <-werr
	}
	defer func() { _ = stopWorker() }() // on the normal path its error is returned below

	start := time.Now()
	ids := make([]tasks.JobID, 0, *n)
	run := start.UTC().Format("150405")
	watch := newProgressWatch(producer, stdout, *n, isTerminal(stdout), *quiet, start, log)
	for i := 0; i < *n; i++ {
		id, err := producer.Submit(ctx, tasks.Request{
			JobID: tasks.JobID(fmt.Sprintf("demo-%s-%03d", run, i+1)),
			Video: apiclient.CreateRequest{Model: demoModels[i%len(demoModels)], Prompt: demoPrompts[i%len(demoPrompts)], Duration: 8, Resolution: "720p"},
		})
		if err != nil {
			return err
		}
		ids = append(ids, id)
		if i == 0 {
			fmt.Fprintf(stdout, "submitting %d jobs; videos go to %s\n", *n, cfg.StorageURL)
		}
		if *interval > 0 && i < *n-1 {
			if err := watch.waitAndShow(ctx, ids, *interval); err != nil {
				return err
			}
		}
	}
	recs, err := watch.untilDone(ctx, ids)
	if err != nil {
		return err
	}
	stored, failed := 0, 0
	for _, r := range recs {
		if r.State == jobs.StateStored {
			stored++
		} else {
			failed++
			fmt.Fprintf(stdout, "  %s %s: %s %s\n", r.ID, r.State, r.ErrorCode, r.Error)
		}
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "done in %s (%.1f jobs/s); 'videoworker status JOB_ID' shows a job's history\n", elapsed.Round(time.Millisecond), float64(len(ids))/elapsed.Seconds())
	fmt.Fprintf(stdout, "%d stored, %d failed\n", stored, failed)
	if !*exitWhenDone {
		// Failures are the stand-in's on purpose (-fail-rate) or the
		// API's, listed above; stopping with Ctrl-C is a success.
		fmt.Fprintf(stdout, "the worker and the dashboard (%s/) keep running; press Ctrl-C to stop\n", pages.base)
		<-ctx.Done()
		return stopWorker()
	}
	if err := stopWorker(); err != nil {
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

// randomPassword makes up a password of 16 URL-safe characters.
func randomPassword() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// listenDemoPages listens on addr and makes up the login and the webhook
// signing secret.
func listenDemoPages(addr string) (*demoPages, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	pass, err := randomPassword()
	if err != nil {
		return nil, err
	}
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
		pass: pass, auth: auth, hookSecret: "whsec_" + hex.EncodeToString(b[:])}, nil
}

// subscription is the webhook the worker subscribes on each create: the
// receiver on this server, which the stand-in on this machine can reach.
func (p *demoPages) subscription() *apiclient.WebhookSubscription {
	return &apiclient.WebhookSubscription{URL: p.base + webhook.Path, Secret: p.hookSecret,
		Events: []string{"video.completed", "video.failed", "video.cancelled", "video.expired"}}
}

// printLogin prints the dashboard's address and login.
func (p *demoPages) printLogin(stdout io.Writer) {
	fmt.Fprintf(stdout, "dashboard at %s/ (asynq UI at %s%s/, job API at %s/v1/jobs)\n", p.base, p.base, server.MonitoringPath, p.base)
	fmt.Fprintf(stdout, "  log in as demo / %s (operator; generated for this run)\n", p.pass)
}

// serve serves deps until ctx ends. The returned channel closes when the
// server has stopped.
func (p *demoPages) serve(ctx context.Context, deps server.Deps, log *slog.Logger) <-chan struct{} {
	deps.Auth = p.auth
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serveHTTP(ctx, p.ln, server.NewHTTPServer(server.New(deps), log)); err != nil {
			log.Error("demo dashboard stopped", "err", err.Error())
		}
	}()
	return done
}

// redactURL hides a password in a URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}
