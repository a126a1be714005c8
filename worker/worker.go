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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// VideoAPI is what the worker needs of the AI Stats API.
type VideoAPI interface {
	Create(ctx context.Context, req apiclient.CreateRequest, opts apiclient.CreateOptions) (*apiclient.Video, error)
	Get(ctx context.Context, id string) (*apiclient.Video, error)
	List(ctx context.Context, p apiclient.ListParams) (*apiclient.VideoList, error)
	Content(ctx context.Context, id string, index int) (*apiclient.Content, error)
	Cancel(ctx context.Context, id string) (*apiclient.Video, error)
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
	// APITimeout is the create call's timeout (as configured on the API
	// client); it bounds the window of a create cut short by a crash.
	// Default 30 s.
	APITimeout time.Duration
	// RetryBaseDelay and MaxRetryDelay bound the backoff of failed tasks.
	// Defaults 1 s and 5 min.
	RetryBaseDelay, MaxRetryDelay time.Duration
	// ShutdownTimeout is how long a stopping worker lets running tasks
	// finish before they are re-queued. Default 30 s.
	ShutdownTimeout time.Duration
	// DelayedTaskCheckInterval is how often scheduled tasks (polls, and
	// retries) are moved to their queues; it bounds how late a poll
	// fires. Default 200 ms (asynq's own default is 1 s, which made a
	// poll fire 0.4 s late at the median); each process then runs about
	// 30 small forwarding scripts a second in Redis.
	DelayedTaskCheckInterval time.Duration
	// TaskCheckInterval is how long an idle worker waits before it looks
	// at its queues again; it bounds how fast a webhook's status check
	// starts. Default 20 ms (asynq's own default is 1 s); an idle worker
	// then asks Redis 100 times a second (50 for each of its two asynq
	// servers, see Run).
	TaskCheckInterval time.Duration
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
	// Webhook, when set, is subscribed on every create. The job id is
	// added to its URL as the query parameter job_id.
	Webhook *apiclient.WebhookSubscription
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
	def(&c.APITimeout, 30*time.Second)
	def(&c.RetryBaseDelay, time.Second)
	def(&c.MaxRetryDelay, 5*time.Minute)
	def(&c.ShutdownTimeout, 30*time.Second)
	def(&c.DelayedTaskCheckInterval, 200*time.Millisecond)
	def(&c.TaskCheckInterval, 20*time.Millisecond)
	if c.CreateConcurrency <= 0 {
		c.CreateConcurrency = 4
	}
	if c.StrandedCheckInterval == 0 {
		c.StrandedCheckInterval = 30 * time.Second
	}
	def(&c.StrandedGrace, time.Minute)
	if c.KeyTemplate == "" {
		c.KeyTemplate = storage.DefaultKeyTemplate
	}
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
	met   *metrics.Metrics
	now   func() time.Time
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
	if _, err := storage.RenderKey(cfg.KeyTemplate, storage.KeyVars{JobID: "j", VideoID: "v", Date: time.Now()}); err != nil {
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
	return &Worker{cfg: cfg, rdb: d.Redis, api: d.API, store: d.Store, jobs: d.Jobs, log: d.Logger,
		aq: asynq.NewClientFromRedisClient(d.Redis), insp: asynq.NewInspectorFromRedisClient(d.Redis), met: d.Metrics,
		now: func() time.Time { return d.Now().UTC() }}, nil
}

// Handler returns the task mux: one handler per task type.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeCreate, w.handleCreate)
	mux.HandleFunc(tasks.TypePoll, w.handlePoll)
	mux.HandleFunc(tasks.TypeDownload, w.handleDownload)
	mux.HandleFunc(tasks.TypeCancel, w.handleCancel)
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
// queues with Concurrency goroutines (asynqmon lists both).
func (w *Worker) Run(ctx context.Context) error {
	var servers []*asynq.Server
	for _, cfg := range w.serverConfigs() {
		srv := asynq.NewServerFromRedisClient(w.rdb, cfg)
		if err := srv.Start(w.Handler()); err != nil {
			for _, s := range servers {
				s.Shutdown()
			}
			return fmt.Errorf("start worker: %w", err)
		}
		servers = append(servers, srv)
		w.log.InfoContext(ctx, "worker started", "concurrency", cfg.Concurrency, "queues", fmt.Sprint(cfg.Queues))
	}
	checks := make(chan struct{})
	go func() {
		defer close(checks)
		if w.cfg.StrandedCheckInterval > 0 {
			w.runStrandedChecks(ctx, w.cfg.StrandedCheckInterval)
		}
	}()
	<-ctx.Done()
	<-checks
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

func isFailure(err error) bool {
	var rl *retryLater
	return !errors.As(err, &rl) && !redisUnavailable(err)
}

// redisUnavailable reports an error of Redis being down or loading its
// data after a restart (not of the API): waiting it out must not use up
// the task's retries.
func redisUnavailable(err error) bool {
	var te *apiclient.TransportError
	var ae *apiclient.APIError
	if errors.As(err, &te) || errors.As(err, &ae) {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, "LOADING") || strings.Contains(msg, "MASTERDOWN") || strings.Contains(msg, "TRYAGAIN") || strings.Contains(msg, "CLUSTERDOWN") {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

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
	if errors.Is(err, storage.ErrIntegrity) {
		return "integrity_error"
	}
	if errors.Is(err, tasks.ErrBadPayload) {
		return "bad_payload"
	}
	return "error"
}

// failJob ends the job as failed (or another terminal state) with err's
// code and message, unless it has ended already.
func (w *Worker) failJob(ctx context.Context, rec *jobs.Record, to jobs.State, code string, err error) {
	step := map[jobs.State]string{jobs.StateQueued: "create", jobs.StateSubmitting: "create", jobs.StateGenerating: "poll", jobs.StateDownloading: "download"}[rec.State]
	switch code {
	case "generation_failed", "expired", "cancelled":
		step = "generation"
	}
	res, uerr := w.jobs.Do(ctx, rec.ID, jobs.Failed{To: to, Code: code, Err: err.Error(), Step: step})
	if uerr != nil && !errors.Is(uerr, jobs.ErrIllegalTransition) {
		w.log.ErrorContext(ctx, "could not record job failure", "job_id", rec.ID, "err", uerr.Error())
		return
	}
	if res.Applied {
		w.met.JobFinished(string(to))
		w.log.WarnContext(ctx, "job ended", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(to), "error_code", code, "error", err.Error())
	}
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
	if _, _, err := tasks.RetryJob(ctx, w.jobs, w.aq, w.insp, rec.ID); err != nil {
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

// enqueue enqueues n (nil: nothing); an existing task with the same id
// counts as success.
func (w *Worker) enqueue(ctx context.Context, n *tasks.Next) error {
	if n == nil {
		return nil
	}
	if _, err := w.aq.EnqueueContext(ctx, n.Task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s %s: %w", n.Type, n.ID, err)
	}
	return nil
}

// loadJob reads the job of a task (without its request and labels, which
// only the create step needs: see loadJobSpec); a missing record is
// permanent.
func (w *Worker) loadJob(ctx context.Context, id string) (*jobs.Record, error) {
	rec, err := w.jobs.Load(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, permanent(err)
	}
	return rec, err
}

// loadJobSpec reads the job of a task with its request and labels.
func (w *Worker) loadJobSpec(ctx context.Context, id string) (*jobs.Record, error) {
	rec, err := w.jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, permanent(err)
	}
	return rec, err
}
