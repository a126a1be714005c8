// Package worker runs the asynq handlers that carry a video job from
// "create" through delayed "poll" checks to "download" into storage.
//
// Every handler reads as: load the job's record, decide, apply one
// transition of the job's life (jobs.Table, through jobs.Store.Do), and
// enqueue the task the record then waits on (tasks.NextTask). Transitions
// are conditional, so a retried, duplicated or stale task is a no-op
// rather than a second API call:
//
//   - create saves the API's video id before anything else. A create whose
//     outcome is in doubt (request sent, no answer) is reconciled against
//     the API's job list before anything is submitted again.
//   - poll is a chain of delayed tasks numbered by the record's poll_seq;
//     only the task whose number matches does work, so at most one chain is
//     alive per job. Rate limits and "not ready" answers move the next check
//     later instead of burning retry attempts.
//   - download streams the content into storage with constant memory,
//     verifies size and sha256, and marks the job stored; an object already
//     stored and verified is not written again.
//
// Permanent failures end the job in a terminal state with the API's error
// code and message, and the task is archived with that reason.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/wake"
)

// VideoAPI is what the worker needs of the AI Stats API.
type VideoAPI interface {
	Create(ctx context.Context, req apiclient.CreateRequest, opts apiclient.CreateOptions) (*apiclient.Video, error)
	Get(ctx context.Context, id string) (*apiclient.Video, error)
	List(ctx context.Context, p apiclient.ListParams) (*apiclient.VideoList, error)
	Content(ctx context.Context, id string, index int) (*apiclient.Content, error)
	Cancel(ctx context.Context, id string) (*apiclient.Video, error)
	// Timeout bounds each call: a create that started at t and never
	// answered was over by t+Timeout. The worker reads it for the window
	// in which it looks for a create cut short by a crash, and for the
	// create lock's lease.
	Timeout() time.Duration
}

var _ VideoAPI = (*apiclient.Client)(nil)

// Config tunes the worker. Zero values take the defaults named.
type Config struct {
	// Concurrency is how many tasks run at once in this process. Default 20.
	Concurrency int
	// Queues maps queue names to priorities; tasks.DefaultQueues() when
	// nil. A worker given only some queues processes only those steps.
	Queues map[string]int
	// StrictPriority drains higher-priority queues first.
	StrictPriority bool
	// PollInterval is the first wait between checks when the API gives no
	// poll_after_seconds; it grows by half each check up to MaxPollInterval,
	// with ±10% jitter. Default 20 s (the API's documented cadence).
	PollInterval time.Duration
	// MaxPollInterval caps the wait between checks. Default 2 min.
	MaxPollInterval time.Duration
	// MinPollInterval is the shortest wait honoured from the API. Default 1 s.
	MinPollInterval time.Duration
	// JobTimeout is the default overall deadline of a job from submission;
	// a job still unfinished then ends timed_out. Default 2 h.
	JobTimeout time.Duration
	// KeyTemplate is the storage key template; storage.DefaultKeyTemplate
	// when empty.
	KeyTemplate string
	// ReconcileDelay is the least wait before an in-doubt create is
	// reconciled, so the API's list has caught up. Default 3 s.
	ReconcileDelay time.Duration
	// ClockTolerance widens the window in which a reconciliation looks for
	// a job created by an in-doubt call, for clock skew. Default 2 s.
	ClockTolerance time.Duration
	// RetryBaseDelay and MaxRetryDelay bound the backoff of failed tasks.
	// Defaults 1 s and 5 min.
	RetryBaseDelay, MaxRetryDelay time.Duration
	// ShutdownTimeout is how long a stopping worker lets running tasks
	// finish before they are re-queued. Default 30 s.
	ShutdownTimeout time.Duration
	// DelayedTaskCheckInterval is how often asynq's forwarder looks at
	// the scheduled tasks (polls, and retries) to move due ones to their
	// queues; it bounds how late a poll fires. Default 200 ms (asynq's own
	// default is 5 s). With the wake-up gate on (IdleCheckInterval > 0)
	// a look costs Redis nothing until the earliest task is due; with it
	// off each look is 6 scripts (3 queues × scheduled, retry).
	DelayedTaskCheckInterval time.Duration
	// TaskCheckInterval is how long asynq waits before it looks at the
	// queues again after finding them empty. Default 20 ms (asynq's own
	// default is 1 s). With the gate on, a look at a queue found empty
	// with no wake-up since costs Redis nothing; with it off an idle
	// worker asks Redis 100 times a second (50 for each of its two asynq
	// servers, see Run).
	TaskCheckInterval time.Duration
	// IdleCheckInterval turns on the wake-up gate (package wake) and is
	// how often an idle worker looks in Redis itself: producers, the
	// webhook receiver and workers announce each task they enqueue, and
	// a worker only looks at a queue after such a wake-up, or after
	// IdleCheckInterval (which bounds how late a task whose wake-up was
	// lost is taken). An idle worker then costs about 9 commands per
	// IdleCheckInterval plus asynq's heartbeats. Default 2 s; negative
	// turns the gate off (asynq polls at TaskCheckInterval and
	// DelayedTaskCheckInterval, and this worker announces nothing).
	IdleCheckInterval time.Duration
	// CreateConcurrency is how many create tasks run at once in this
	// process (creates of one model are serialised fleet-wide anyway).
	// Run gives the create queue an asynq server of its own with this
	// many goroutines, next to the Concurrency goroutines of the other
	// queues, so creates never crowd out polls and downloads and a
	// backlog of creates waits in its queue rather than cycling through
	// the retry set. Default 4.
	CreateConcurrency int
	// StrandedCheckInterval is how often one worker of the fleet looks for
	// unfinished jobs whose next task is missing and re-enqueues it.
	// Default 30 s; negative turns it off.
	StrandedCheckInterval time.Duration
	// StrandedGrace leaves alone jobs changed more recently than this.
	// Default 1 min.
	StrandedGrace time.Duration
	// RetentionSweepInterval is how often one worker of the fleet forgets
	// finished jobs whose retention has passed (archiving them first),
	// when the job store has a retention (jobs.Store.SetRetention).
	// Default 1 min; negative turns the sweep off.
	RetentionSweepInterval time.Duration
	// NoArchive forgets finished jobs without writing their archive
	// documents to storage (JOB_ARCHIVE=off).
	NoArchive bool
	// Webhook, when set, is subscribed on every create. The job id is
	// added to its URL as the query parameter job_id. With EndpointID set
	// (a workspace webhook endpoint, the API's newest revision) creates
	// send {endpoint_id, events} and no URL or secret.
	Webhook *apiclient.WebhookSubscription
	// Callback tunes the delivery of completion callbacks to the jobs'
	// callback URLs.
	Callback CallbackConfig
	// Budgets, when set, prices each job and reserves its estimate before
	// the create call (nil: budgets off, no Redis command added).
	Budgets *jobs.Budgeter
	// BudgetPolicy is BudgetWait (default) or BudgetReject.
	BudgetPolicy string
	// BudgetRetryInterval is how often a job in budget_wait tries again.
	// Default 30 s.
	BudgetRetryInterval time.Duration
	// Tenancy, when set, admits jobs fairly across tenants (see
	// jobs.Tenancy): the worker tells it when a create starts and when a
	// job goes past generating, enqueues the create tasks of the jobs
	// then admitted, and its stranded-job check repairs and sweeps it.
	// Nil: off, no Redis command added.
	Tenancy *jobs.Tenancy
	// ModelPricesRefresh is how often the worker reads the API's model
	// catalogue (GET /videos/models) for the prices of models that
	// MODEL_PRICES does not name, with budgets on only; read once at
	// start too. Default 10 min; negative: only at start.
	ModelPricesRefresh time.Duration
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 20
	}
	if len(c.Queues) == 0 {
		c.Queues = tasks.DefaultQueues()
	}
	def(&c.PollInterval, 20*time.Second)
	def(&c.MaxPollInterval, 2*time.Minute)
	def(&c.MinPollInterval, time.Second)
	def(&c.JobTimeout, 2*time.Hour)
	def(&c.ReconcileDelay, 3*time.Second)
	def(&c.ClockTolerance, 2*time.Second)
	def(&c.RetryBaseDelay, time.Second)
	def(&c.MaxRetryDelay, 5*time.Minute)
	def(&c.ShutdownTimeout, 30*time.Second)
	def(&c.DelayedTaskCheckInterval, 200*time.Millisecond)
	def(&c.TaskCheckInterval, 20*time.Millisecond)
	if c.IdleCheckInterval == 0 {
		c.IdleCheckInterval = wake.DefaultIdleCheck
	}
	if c.CreateConcurrency <= 0 {
		c.CreateConcurrency = 4
	}
	if c.StrandedCheckInterval == 0 {
		c.StrandedCheckInterval = 30 * time.Second
	}
	def(&c.StrandedGrace, time.Minute)
	if c.RetentionSweepInterval == 0 {
		c.RetentionSweepInterval = time.Minute
	}
	def(&c.BudgetRetryInterval, 30*time.Second)
	if c.ModelPricesRefresh == 0 {
		c.ModelPricesRefresh = 10 * time.Minute
	}
	if c.KeyTemplate == "" {
		c.KeyTemplate = storage.DefaultKeyTemplate
	}
	c.Callback.setDefaults()
}

// Deps are the worker's collaborators.
type Deps struct {
	Redis  redis.UniversalClient
	API    VideoAPI
	Store  storage.Store
	Jobs   *jobs.Store
	Logger *slog.Logger
	// Metrics, when set, records finished jobs, stored bytes and latencies.
	Metrics *metrics.Metrics
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// TracerProvider, when set, runs every task in a span of the job's
	// trace, with the API calls, storage writes and callback deliveries
	// of the step as its children (see docs/tracing.md). Nil: tracing
	// off, at no cost per task.
	TracerProvider trace.TracerProvider
}

// Worker processes video tasks.
type Worker struct {
	cfg   Config
	rdb   redis.UniversalClient
	api   VideoAPI
	store storage.Store
	jobs  *jobs.Store
	log   *slog.Logger
	aq    *asynq.Client
	insp  *asynq.Inspector
	// wake announces the worker's enqueues; nil with the gate off.
	wake *wake.Publisher
	// gate is Run's wake-up gate (nil before Run, or with the gate off):
	// create lock waiters hear of releases through it.
	gate atomic.Pointer[wake.Gate]
	met  *metrics.Metrics
	// apiTimeout is api.Timeout(), read once: the API client's timeout is
	// the only one (a copy in Config could disagree with it and let a
	// reconciliation miss a create that was still in flight).
	apiTimeout time.Duration
	now        func() time.Time
	// inlineRefusedUntil: see webhookRefused.
	inlineRefusedUntil atomic.Int64
	// callbacks delivers completion callbacks (SSRF-guarded).
	callbacks *http.Client
	// tracer makes the tasks' spans; nil: tracing off.
	tracer *tracing.Tracer
}

// New returns a Worker. It validates the key template and the deps.
func New(cfg Config, d Deps) (*Worker, error) {
	cfg.setDefaults()
	var errs []error
	if d.Redis == nil {
		errs = append(errs, errors.New("worker: Redis is nil"))
	}
	if d.API == nil {
		errs = append(errs, errors.New("worker: API is nil"))
	}
	if d.Store == nil {
		errs = append(errs, errors.New("worker: Store is nil"))
	}
	if err := storage.CheckKeyTemplate(cfg.KeyTemplate); err != nil {
		errs = append(errs, fmt.Errorf("worker: key template: %w", err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if d.Jobs == nil {
		d.Jobs = jobs.NewStore(d.Redis, "")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	var pub *wake.Publisher
	if cfg.IdleCheckInterval > 0 {
		pub = wake.NewPublisher(d.Redis)
	}
	return &Worker{cfg: cfg, rdb: d.Redis, api: d.API, store: d.Store, jobs: d.Jobs, log: d.Logger,
		aq: asynq.NewClientFromRedisClient(d.Redis), insp: asynq.NewInspectorFromRedisClient(d.Redis), wake: pub, met: d.Metrics,
		apiTimeout: d.API.Timeout(),
		now:        func() time.Time { return d.Now().UTC() },
		callbacks:  callback.NewHTTPClient(cfg.Callback.Policy, cfg.Callback.Timeout),
		tracer:     tracing.New(d.TracerProvider)}, nil
}

// Handler returns the task mux: one handler per task type.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	if w.tracer.On() {
		mux.Use(w.traced)
	}
	mux.HandleFunc(tasks.TypeCreate, w.handleCreate)
	mux.HandleFunc(tasks.TypePoll, w.handlePoll)
	mux.HandleFunc(tasks.TypeDownload, w.handleDownload)
	mux.HandleFunc(tasks.TypeCancel, w.handleCancel)
	mux.HandleFunc(tasks.TypeCallback, w.handleCallback)
	return mux
}

// ServerConfig is the asynq server configuration of all the worker's
// queues together: queues, concurrency, retry policy and logger. Run
// splits it in two (see Run).
func (w *Worker) ServerConfig() asynq.Config {
	return asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   w.cfg.Queues,
		StrictPriority:           w.cfg.StrictPriority,
		IsFailure:                isFailure,
		RetryDelayFunc:           w.retryDelay,
		Logger:                   NewAsynqLogger(w.log),
		LogLevel:                 asynq.WarnLevel,
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			id, _ := asynq.GetTaskID(ctx)
			var rl *retryLater
			if errors.As(err, &rl) {
				w.log.DebugContext(ctx, "task deferred", "task", t.Type(), "task_id", id, "after", rl.after, "reason", err.Error())
				return
			}
			w.log.WarnContext(ctx, "task failed", "task", t.Type(), "task_id", id, "err", err.Error())
		}),
	}
}

// Run processes tasks until ctx ends, then shuts down gracefully: it stops
// taking tasks and gives running ones ShutdownTimeout to finish; the rest
// go back to their queues.
//
// It runs up to two asynq servers on the worker's Redis client: one for
// the create queue with CreateConcurrency goroutines, one for the other
// queues with Concurrency goroutines (asynqmon lists both). With
// IdleCheckInterval > 0 both poll through one wake-up gate (package wake),
// whose subscriber runs until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	var gate *wake.Gate
	gateCtx, stopGate := context.WithCancel(ctx)
	defer stopGate()
	gateDone := make(chan struct{})
	if w.cfg.IdleCheckInterval > 0 {
		gate = wake.NewGate(w.rdb, wake.Options{IdleCheck: w.cfg.IdleCheckInterval, Logger: w.log})
		w.gate.Store(gate)
		defer w.gate.Store(nil)
		go func() { defer close(gateDone); gate.Run(gateCtx) }()
	} else {
		close(gateDone)
	}
	if w.cfg.Budgets != nil {
		// Before the first job: a model priced only by the API would
		// otherwise be refused as unpriced. A failure is logged, not
		// fatal: MODEL_PRICES still apply.
		_ = w.refreshPrices(ctx)
	}
	var servers []*asynq.Server
	for _, cfg := range w.serverConfigs() {
		rdb := w.rdb
		if gate != nil {
			rdb = gate.Client(slices.Collect(maps.Keys(cfg.Queues)))
		}
		srv := asynq.NewServerFromRedisClient(rdb, cfg)
		if err := srv.Start(w.Handler()); err != nil {
			for _, s := range servers {
				s.Shutdown()
			}
			stopGate()
			<-gateDone
			return fmt.Errorf("start worker: %w", err)
		}
		servers = append(servers, srv)
		w.log.InfoContext(ctx, "worker started", "concurrency", cfg.Concurrency, "queues", cfg.Queues)
	}
	checks, sweeps, prices := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(prices)
		if w.cfg.Budgets != nil && w.cfg.ModelPricesRefresh > 0 {
			w.runPriceRefresh(ctx, w.cfg.ModelPricesRefresh)
		}
	}()
	go func() {
		defer close(checks)
		if w.cfg.StrandedCheckInterval > 0 {
			w.runStrandedChecks(ctx, w.cfg.StrandedCheckInterval)
		}
	}()
	go func() {
		defer close(sweeps)
		if w.cfg.RetentionSweepInterval > 0 && w.jobs.Retention() > 0 {
			w.runRetentionSweeps(ctx, w.cfg.RetentionSweepInterval)
		}
	}()
	<-ctx.Done()
	<-checks
	<-sweeps
	<-prices
	<-gateDone // the gate lets every call through from now on
	if gate != nil {
		st := gate.Stats()
		w.log.Info("wake-up gate stopped", "polls_to_redis", st.Passed.Load(), "polls_answered_locally", st.Answered.Load(),
			"idle_checks", st.Probes.Load(), "wake_ups", st.Wakes.Load())
	}
	w.log.Info("worker stopping", "grace", w.cfg.ShutdownTimeout)
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(srv.Shutdown) // in parallel: the grace applies once
	}
	wg.Wait()
	w.log.Info("worker stopped")
	return nil
}

// serverConfigs splits ServerConfig by queue: the create queue (if the
// worker serves it) gets CreateConcurrency goroutines of its own.
func (w *Worker) serverConfigs() []asynq.Config {
	base := w.ServerConfig()
	weight, ok := w.cfg.Queues[tasks.QueueCreate]
	if !ok {
		return []asynq.Config{base}
	}
	creates := base
	creates.Queues = map[string]int{tasks.QueueCreate: weight}
	creates.Concurrency = w.cfg.CreateConcurrency
	if len(w.cfg.Queues) == 1 {
		return []asynq.Config{creates}
	}
	others := base
	others.Queues = map[string]int{}
	for q, p := range w.cfg.Queues {
		if q != tasks.QueueCreate {
			others.Queues[q] = p
		}
	}
	return []asynq.Config{others, creates}
}

// retryLater asks for the task to run again after a wait without counting
// a failed attempt: the API is rate limiting, or the thing is not ready.
type retryLater struct {
	after time.Duration
	err   error
}

func (e *retryLater) Error() string { return fmt.Sprintf("retry in %s: %v", e.after, e.err) }
func (e *retryLater) Unwrap() error { return e.err }

// isFailure tells asynq whether err uses up one of the task's retries:
// every error does except a deferral (retryLater) and an outage of Redis.
func isFailure(err error) bool {
	var rl *retryLater
	return !errors.As(err, &rl) && !redisUnavailable(err)
}

// redisUnavailable reports an error of Redis being down, failing over or
// loading its data after a restart: waiting it out must not use up the
// task's retries. The class is decided where the Redis call is made (the
// jobs store, the rate limiter and enqueue wrap such errors in a
// *jobs.UnavailableError); an error of the API, of storage or of a
// content stream is never taken for one, however it looks.
func redisUnavailable(err error) bool { return errors.Is(err, jobs.ErrUnavailable) }

// retryDelay is exponential backoff with jitter, at least any Retry-After
// the error carries.
func (w *Worker) retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var rl *retryLater
	if errors.As(err, &rl) {
		return max(rl.after, 100*time.Millisecond)
	}
	d := jitter(min(w.cfg.RetryBaseDelay<<min(n, 20), w.cfg.MaxRetryDelay), 0.25)
	if r := apiclient.RetryAfter(err); r > d {
		d = r
	}
	return d
}

func jitter(d time.Duration, frac float64) time.Duration {
	if d <= 0 {
		return d
	}
	delta := time.Duration(float64(d) * frac)
	if delta <= 0 {
		return d
	}
	return d - delta + rand.N(2*delta+1)
}

// lastAttempt reports whether the running task will be archived if it
// fails now.
func lastAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	m, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && n >= m
}

// permanent marks an error that must not be retried: the task is archived
// with it as the reason.
func permanent(err error) error { return fmt.Errorf("%w (%w)", err, asynq.SkipRetry) }

// errorCode is a short machine code for err, for the job record.
func errorCode(err error) string {
	var ae *apiclient.APIError
	if errors.As(err, &ae) {
		if ae.Code != "" {
			return ae.Code
		}
		return fmt.Sprintf("http_%d", ae.StatusCode)
	}
	var te *apiclient.TransportError
	if errors.As(err, &te) {
		if te.Timeout {
			return "timeout"
		}
		return "transport_error"
	}
	switch storage.KindOf(err) {
	case storage.KindInvalidKey:
		return "invalid_storage_key"
	case storage.KindIntegrity:
		return "integrity_error"
	case storage.KindKeyConflict:
		return "storage_key_conflict"
	}
	if errors.Is(err, tasks.ErrBadPayload) {
		return "bad_payload"
	}
	return "error"
}

// maxIntegrityRetries is how many times a download task is retried before
// a mismatch of the bytes against the API's size or sha256 fails the job:
// each attempt fetches the whole video again, and a source that gave
// mismatched bytes once usually gives them again.
const maxIntegrityRetries = 3

// storageFailure applies the policy for err, an error of storing (or
// checking) an output of rec, by the class storage gave it where it was
// raised:
//   - an invalid key (storage.KindInvalidKey) can never be stored: the job
//     fails invalid_storage_key and the task is archived;
//   - a key holding another job's object (storage.ErrKeyConflict) is never
//     written over: the job fails storage_key_conflict and the task is
//     archived;
//   - a mismatch (storage.KindIntegrity) is retried like any failure until
//     the task has been retried maxIntegrityRetries times; a mismatch after
//     that fails the job integrity_error (at most 4 whole downloads);
//   - anything else (storage unreachable, a disk error, the content
//     stream cut) is retried with backoff until the retries run out.
func (w *Worker) storageFailure(ctx context.Context, rec *jobs.Record, err error) error {
	switch storage.KindOf(err) {
	case storage.KindInvalidKey, storage.KindKeyConflict: // permanent: fail now
	case storage.KindIntegrity:
		if n, _ := asynq.GetRetryCount(ctx); n < maxIntegrityRetries {
			return err
		}
	default:
		return err
	}
	w.failJob(ctx, rec, jobs.StateFailed, errorCode(err), err)
	return permanent(err)
}

// badPayload handles a task whose payload cannot be processed (malformed,
// or written by a newer release): the task is archived, and when the
// payload still names an existing job, that job fails bad_payload instead
// of waiting for a step that will never run (retry it with the job API
// once every worker can read the task).
func (w *Worker) badPayload(ctx context.Context, t *asynq.Task, err error) error {
	w.log.ErrorContext(ctx, "bad task payload", "task", t.Type(), "err", err.Error())
	var p struct {
		JobID string `json:"job_id"`
	}
	if json.Unmarshal(t.Payload(), &p) != nil || tasks.ValidateJobID(p.JobID) != nil {
		return permanent(err)
	}
	rec, gerr := w.jobs.Get(ctx, p.JobID)
	if errors.Is(gerr, jobs.ErrNotFound) {
		return permanent(err)
	}
	if gerr != nil {
		return gerr // Redis: try again later
	}
	w.failJob(ctx, rec, jobs.StateFailed, "bad_payload", err)
	return w.onTaskError(ctx, rec, permanent(err))
}

// failJob ends the job as failed (or another terminal state) with err's
// code and message, unless it has ended already. The record keeps the
// API's status only when it is one of the API's terminal ones (the caller
// puts a terminal status just seen into rec.APIStatus); a status of a
// generation still running is cleared, since nobody looks again.
func (w *Worker) failJob(ctx context.Context, rec *jobs.Record, to jobs.State, code string, err error) {
	w.failJobBilled(ctx, rec, to, code, err, jobs.Billing{})
}

// failJobBilled is failJob recording the API's billing of the ended
// generation too.
func (w *Worker) failJobBilled(ctx context.Context, rec *jobs.Record, to jobs.State, code string, err error, bill jobs.Billing) {
	step := map[jobs.State]string{jobs.StateQueued: "create", jobs.StateBudgetWait: "create", jobs.StateSubmitting: "create", jobs.StateGenerating: "poll", jobs.StateDownloading: "download"}[rec.State]
	switch code {
	case "generation_failed", "expired", "cancelled":
		step = "generation"
	}
	res, uerr := w.jobs.Do(ctx, rec.ID, jobs.Failed{To: to, Code: code, Err: err.Error(), Step: step, APIStatus: lastAPIStatus(rec.APIStatus), Billing: bill})
	if uerr != nil && !errors.Is(uerr, jobs.ErrIllegalTransition) {
		w.log.ErrorContext(ctx, "could not record job failure", "job_id", rec.ID, "err", uerr.Error())
		return
	}
	if res.Applied {
		w.tenantLeft(ctx, rec)
		w.met.JobFinished(string(to))
		w.met.Spend(bill.Model, rec.Tenant, bill.Settled.Micros)
		if w.cfg.Budgets != nil {
			w.settleBudget(ctx, rec, bill)
		}
		w.log.WarnContext(ctx, "job ended", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(to), "error_code", code, "error", err.Error())
		if err := w.enqueueEnded(context.WithoutCancel(ctx), rec, to); err != nil {
			// The job has ended; only its callback is late: the next
			// retry of this task, or an operator's, enqueues it.
			w.log.ErrorContext(ctx, "could not enqueue the job's callback", "job_id", rec.ID, "err", err.Error())
		}
	}
}

// lastAPIStatus is what an ended job records of the API's status s: s when
// it is terminal at the API (completed, failed, cancelled, expired), else
// "" (unknown), never a stale "processing".
func lastAPIStatus(s string) string {
	if apiclient.Status(s).Terminal() {
		return s
	}
	return ""
}

// onTaskError runs when a handler is about to return err: when this was
// the task's last attempt, the job ends failed so that it is not stranded,
// and the task is archived with the reason.
func (w *Worker) onTaskError(ctx context.Context, rec *jobs.Record, err error) error {
	if err == nil || rec == nil {
		return err
	}
	if !errors.Is(err, asynq.SkipRetry) {
		if !lastAttempt(ctx) {
			return err
		}
		w.failJob(ctx, rec, jobs.StateFailed, "retries_exhausted", err)
		err = permanent(err)
	}
	// The task goes to the archive (asynq's dead letters): remember which,
	// so that retrying it from there retries the job.
	if dead := deadTaskRef(ctx); dead != "" {
		_, _ = w.jobs.Do(context.WithoutCancel(ctx), rec.ID, jobs.DeadLettered{Task: dead})
	}
	return err
}

// deadTaskRef is "queue/id" of the running task.
func deadTaskRef(ctx context.Context) string {
	id, ok1 := asynq.GetTaskID(ctx)
	q, ok2 := asynq.GetQueueName(ctx)
	if !ok1 || !ok2 {
		return ""
	}
	return q + "/" + id
}

// revived reports whether the running task is the job's archived dead
// letter being run again (asynqmon's "retry"). If so it retries the job
// the way the job API does (tasks.RetryJob: jobs.PlanRetry, so no second
// generation of a video that was made, then the task the job waits on)
// and the caller ends the task.
func (w *Worker) revived(ctx context.Context, rec *jobs.Record) (bool, error) {
	if (rec.State != jobs.StateFailed && rec.State != jobs.StateTimedOut) || rec.DeadTask == "" || rec.DeadTask != deadTaskRef(ctx) {
		return false, nil
	}
	if _, _, err := tasks.RetryJob(ctx, w.jobs, w.aq, w.insp, w.wake, rec.ID); err != nil {
		return true, err
	}
	w.log.InfoContext(ctx, "job retried from the dead-letter archive", "job_id", rec.ID, "video_id", rec.VideoID, "task", rec.DeadTask)
	return true, nil
}

// deadline is the job's overall deadline.
func (w *Worker) deadline(rec *jobs.Record) time.Time {
	if !rec.Deadline.IsZero() {
		return rec.Deadline
	}
	if rec.RetriedAt.After(rec.SubmittedAt) {
		return rec.RetriedAt.Add(w.cfg.JobTimeout)
	}
	return rec.SubmittedAt.Add(w.cfg.JobTimeout)
}

// enqueueNext enqueues the task rec waits on (tasks.NextTask), a poll
// link after delay; an existing task with the same id counts as success.
func (w *Worker) enqueueNext(ctx context.Context, rec *jobs.Record, delay time.Duration) error {
	next, err := tasks.NextTask(rec, delay)
	if err != nil {
		return err
	}
	return w.enqueue(ctx, next)
}

// enqueue enqueues n (nil: nothing) and announces it to idle workers
// (package wake); an existing task with the same id counts as success.
// Any other failure, unless ctx has ended, is Redis's (the asynq client
// talks to nothing else, and reports Redis's errors only as text): it is
// a *jobs.UnavailableError, which does not use up the running task's
// retries.
func (w *Worker) enqueue(ctx context.Context, n *tasks.Next) error {
	if n == nil {
		return nil
	}
	info, err := w.aq.EnqueueContext(ctx, n.Task)
	if err == nil {
		_ = w.wake.Announce(ctx, info) // a lost wake-up costs at most IdleCheckInterval
		return nil
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	if ctx.Err() == nil {
		err = &jobs.UnavailableError{Err: err}
	}
	return fmt.Errorf("enqueue %s %s: %w", n.Type, n.ID, err)
}

// loadJob reads the job of a task (without its request and labels, which
// only the create step needs: see loadJobSpec); a missing record is
// permanent.
func (w *Worker) loadJob(ctx context.Context, id string) (*jobs.Record, error) {
	rec, err := w.jobs.Load(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, permanent(err)
	}
	annotate(ctx, rec)
	return rec, err
}

// loadJobSpec reads the job of a task with its request and labels.
func (w *Worker) loadJobSpec(ctx context.Context, id string) (*jobs.Record, error) {
	rec, err := w.jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, permanent(err)
	}
	annotate(ctx, rec)
	return rec, err
}
