package tasks

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/wake"
)

// JobID identifies a video job. Callers may choose it (to make Submit
// idempotent) or let Submit generate one.
type JobID string

// String returns the id.
func (id JobID) String() string { return string(id) }

// Request is a video job to submit.
type Request struct {
	// JobID is optional. When set, Submit is idempotent on it: submitting
	// the same id again returns it without a second job; submitting it with
	// a different Video gives ErrJobIDConflict. 1–128 characters of
	// [A-Za-z0-9._:-].
	JobID JobID
	// Video is the generation request sent to the API. Model and Prompt are
	// required. Webhook must be empty: the worker subscribes its own.
	Video apiclient.CreateRequest
	// Timeout, when positive, overrides the worker's default overall
	// deadline for this job, counted from submission.
	Timeout time.Duration
	// Labels are free-form metadata kept on the job record and stored with
	// the video.
	Labels map[string]string
	// Retention, when positive, is how long this job stays in Redis once
	// finished (jobs.MinRetention to jobs.MaxRetention), instead of the
	// fleet's JOB_RETENTION. It applies only where retention is on.
	Retention time.Duration
	// CallbackURL, when set, receives the job's terminal state as a signed
	// POST (see the README, "Completion callbacks"; VerifyCallback checks
	// one). It must be https (plain http only to a loopback host, when
	// ClientOptions.CallbackPolicy allows loopback) and may not name a
	// private, link-local or metadata address unless the policy allows
	// private addresses. Empty: ClientOptions.DefaultCallbackURL.
	CallbackURL string
	// Tenant is whose job it is: 1-63 characters of a-z 0-9 . _ -,
	// starting with a letter or digit (jobs.ValidateTenant). Empty:
	// jobs.DefaultTenant. With tenancy on (ClientOptions.Tenancy) jobs
	// are admitted round-robin across tenants, within each tenant's
	// limit; see docs/tenants.md.
	Tenant string
}

// ErrJobIDConflict is returned when a job id is reused with a different
// request.
var ErrJobIDConflict = errors.New("job id already used for a different request")

// ErrInvalidRequest wraps every validation error of Submit.
var ErrInvalidRequest = errors.New("invalid request")

// plainJobID reports whether id is 1-128 characters of [A-Za-z0-9._:-]
// (a loop rather than a regular expression: a batch checks thousands).
func plainJobID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidateJobID reports whether id is a usable job id.
func ValidateJobID(id string) error {
	if !plainJobID(id) {
		return fmt.Errorf("job id %q: want 1-128 characters of A-Z a-z 0-9 . _ : -", truncate(id, 40))
	}
	return nil
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// Prefix is the job record key prefix; jobs.DefaultPrefix when empty.
	// Producers and workers must agree on it.
	Prefix string
	// Logger receives one line per submitted job; discarded when nil.
	Logger *slog.Logger
	// KeyTemplate is the workers' storage key template
	// (storage.DefaultKeyTemplate when empty). Submit refuses a job id
	// that would render an invalid storage key with it (field job_id),
	// rather than let the job fail after its generation was paid for.
	KeyTemplate string
	// NoWake turns off the wake-up (one PUBLISH, package wake) sent after
	// each enqueue; idle workers then find the task at their next idle
	// check (worker.Config.IdleCheckInterval) instead of at once.
	NoWake bool
	// Retention is how long finished jobs stay in Redis (0: forever); it
	// must be the workers' (see jobs.Store.SetRetention): a user's cancel
	// ends a job here.
	Retention time.Duration
	// DefaultCallbackURL is the callback URL of a Request without one
	// (CALLBACK_URL); empty: none.
	DefaultCallbackURL string
	// CallbackPolicy says which callback URLs Submit accepts; the workers
	// check the addresses a name resolves to at every delivery with theirs.
	CallbackPolicy callback.Policy
	// WaitPollInterval is how often Wait reads a job's record besides
	// listening for the transition that ends it (a fallback for a lost
	// message). Default 30 s.
	WaitPollInterval time.Duration
	// Tenancy, when set, turns fair admission across tenants on: a
	// submitted job waits in tenant_wait in its tenant's list until
	// admitted (see jobs.Tenancy). It must be on, with the same limits,
	// in every producer and worker. Nil: off, no Redis command added.
	Tenancy *jobs.Tenancy
	// TracerProvider, when set, gives each submitted job one trace: a
	// "video.submit" span (a new trace per job, linked to the span of the
	// caller's context if any), whose context the job's record and tasks
	// carry so that the workers' spans join it (see docs/tracing.md). Nil:
	// tracing off, nothing added to records or tasks.
	TracerProvider trace.TracerProvider
}

// Client is the producer API: it submits video jobs and looks them up.
// It is safe for concurrent use.
type Client struct {
	rdb         redis.UniversalClient
	aq          *asynq.Client
	wake        *wake.Publisher // nil: announce nothing
	insp        *asynq.Inspector
	store       *jobs.Store
	log         *slog.Logger
	keyTemplate string
	cbDefault   string
	cbPolicy    callback.Policy
	waitPoll    time.Duration
	tenancy     *jobs.Tenancy
	tracer      *tracing.Tracer // nil: off
}

// NewClient returns a Client that uses rdb. The client holds nothing but
// rdb (asynq's client and inspector on it), which stays the caller's to
// close: there is no Close.
func NewClient(rdb redis.UniversalClient, opts ClientOptions) *Client {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tmpl := opts.KeyTemplate
	if tmpl == "" {
		tmpl = storage.DefaultKeyTemplate
	}
	c := &Client{aq: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), store: jobs.NewStore(rdb, opts.Prefix), log: log, keyTemplate: tmpl,
		rdb: rdb, cbDefault: opts.DefaultCallbackURL, cbPolicy: opts.CallbackPolicy, waitPoll: opts.WaitPollInterval, tenancy: opts.Tenancy,
		tracer: tracing.New(opts.TracerProvider)}
	if c.waitPoll <= 0 {
		c.waitPoll = 30 * time.Second
	}
	if !opts.NoWake {
		c.wake = wake.NewPublisher(rdb)
	}
	c.store.SetRetention(opts.Retention)
	return c
}

// Submit records the job and enqueues its create task. It returns once
// both are durable in Redis. It is idempotent on Request.JobID: a retry
// after a timeout or crash returns the same id and never starts a second
// generation.
func (c *Client) Submit(ctx context.Context, req Request) (JobID, error) {
	id, _, err := c.SubmitCreated(ctx, req)
	return id, err
}

// SubmitCreated is Submit that also reports whether this call created the
// job: of any number of concurrent calls with one job id, exactly one
// reports true (the record is created atomically in Redis); the others
// find the job and report false, or ErrJobIDConflict when their request
// differs from its (video request, labels or timeout).
func (c *Client) SubmitCreated(ctx context.Context, req Request) (_ JobID, _ bool, err error) {
	req = c.withDefaults(req)
	if err := c.validate(req); err != nil {
		return "", false, err
	}
	id := req.JobID
	if id == "" {
		id = newJobID()
	}
	rec := c.newRecord(id, req, time.Now().UTC())
	if c.tracer.On() {
		var sp tracing.Span
		ctx, sp = c.startJob(ctx, rec)
		defer func() { sp.End(err) }()
	}
	created, existing, err := c.store.Create(ctx, rec)
	if err != nil {
		return "", false, fmt.Errorf("submit %s: %w", id, err)
	}
	if created && rec.State == jobs.StateTenantWait {
		adm, err := c.tenancy.Enter(ctx, string(id), rec.Tenant)
		if err != nil {
			// The record is durable: the stranded-job reconciler puts it
			// in its tenant's list; a retry of Submit finds it.
			return "", false, fmt.Errorf("submit %s: %w", id, err)
		}
		if err := c.enqueueAdmitted(ctx, adm); err != nil {
			return "", false, fmt.Errorf("submit %s: %w", id, err)
		}
		c.log.InfoContext(ctx, "job submitted", "job_id", string(id), "model", req.Video.Model, "tenant", rec.Tenant)
		return id, true, nil
	}
	if !created {
		if !sameRequest(existing, req) {
			return "", false, fmt.Errorf("submit %s: %w", id, ErrJobIDConflict)
		}
		if existing.State != jobs.StateQueued {
			return id, false, nil // already past creation: nothing to enqueue
		}
		rec = existing
		tracing.Current(ctx).Bool(tracing.AttrCreated, false)
	}
	next, err := NextTask(rec, 0)
	if err != nil {
		return "", false, err
	}
	if err := enqueue(ctx, c.aq, c.wake, next); err != nil {
		return "", false, fmt.Errorf("submit %s: %w", id, err)
	}
	if created {
		c.log.InfoContext(ctx, "job submitted", "job_id", string(id), "model", req.Video.Model)
	}
	return id, created, nil
}

// Status returns the job's record, or an error wrapping jobs.ErrNotFound.
func (c *Client) Status(ctx context.Context, id JobID) (*jobs.Record, error) {
	return c.store.Get(ctx, string(id))
}

// History returns the job's state changes, oldest first.
func (c *Client) History(ctx context.Context, id JobID) ([]jobs.Event, error) {
	return c.store.Events(ctx, string(id), 0)
}

// ValidationError lists every problem of a request, by field name (the
// JSON names: job_id, model, prompt, negative_prompt, size, resolution,
// aspect_ratio, duration, sample_count, seed, compression_quality,
// input_references, provider_params, provider, person_generation,
// resize_mode, labels, webhook, timeout, callback_url, tenant). errors.Is(err, ErrInvalidRequest) is true for it.
type ValidationError struct {
	Fields map[string]string
	order  []string
}

func (e *ValidationError) add(field, msg string) {
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	if _, ok := e.Fields[field]; !ok {
		e.order = append(e.order, field)
	}
	e.Fields[field] = msg
}

func (e *ValidationError) Error() string {
	parts := make([]string, 0, len(e.order))
	for _, f := range e.order {
		parts = append(parts, e.Fields[f])
	}
	return ErrInvalidRequest.Error() + ": " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalidRequest) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidRequest }

func (c *Client) validate(req Request) error {
	ve := &ValidationError{}
	if req.JobID != "" {
		if err := ValidateJobID(string(req.JobID)); err != nil {
			ve.add("job_id", err.Error())
		} else if err := c.checkKey(req); err != nil {
			ve.add("job_id", "job id gives no usable storage key: "+err.Error())
		}
	}
	if req.Video.Model == "" {
		ve.add("model", "video.model is required")
	}
	if req.Video.Prompt == "" {
		ve.add("prompt", "video.prompt is required")
	}
	checkPrompt(ve, "prompt", req.Video.Prompt)
	checkPrompt(ve, "negative_prompt", req.Video.NegativePrompt)
	for _, f := range []struct{ name, v string }{
		{"model", req.Video.Model}, {"size", req.Video.Size}, {"resolution", req.Video.Resolution},
		{"aspect_ratio", req.Video.AspectRatio}, {"person_generation", req.Video.PersonGeneration},
		{"resize_mode", req.Video.ResizeMode},
	} {
		if msg := textProblem(f.v, MaxFieldBytes, false); msg != "" {
			ve.add(f.name, "video."+f.name+" "+msg)
		}
	}
	if msg := labelsProblem(req.Labels); msg != "" {
		ve.add("labels", msg)
	}
	if s := req.Video.Seed; s != nil && (*s < 0 || *s > MaxSeed) {
		ve.add("seed", fmt.Sprintf("video.seed must be between 0 and %d", int64(MaxSeed)))
	}
	if q := req.Video.CompressionQuality; q != nil && (*q < 0 || *q > 100) {
		ve.add("compression_quality", "video.compression_quality must be between 0 and 100")
	}
	if n := len(req.Video.InputReferences); n > MaxInputReferences {
		ve.add("input_references", fmt.Sprintf("video.input_references has %d items, more than %d", n, MaxInputReferences))
	}
	for _, f := range []struct {
		name string
		v    map[string]any
	}{{"provider_params", req.Video.ProviderParams}, {"provider", req.Video.Provider}} {
		if len(f.v) == 0 {
			continue
		}
		if b, err := json.Marshal(f.v); err != nil || len(b) > MaxObjectBytes {
			ve.add(f.name, fmt.Sprintf("video.%s must encode to at most %d bytes of JSON", f.name, MaxObjectBytes))
		}
	}
	if req.Video.Webhook != nil {
		ve.add("webhook", "video.webhook must be empty: the worker subscribes its own webhook")
	}
	if req.Video.Size != "" && (req.Video.Resolution != "" || req.Video.AspectRatio != "") {
		ve.add("size", "video.size cannot be combined with video.resolution or video.aspect_ratio")
	}
	if req.Video.Duration < 0 || req.Video.Duration > 120 {
		ve.add("duration", "video.duration must be between 0 and 120 seconds")
	}
	if req.Video.SampleCount < 0 || req.Video.SampleCount > 4 {
		ve.add("sample_count", "video.sample_count must be between 1 and 4 (0 or absent: the API's default)")
	}
	if req.Timeout < 0 || (req.Timeout > 0 && req.Timeout < MinTimeout) || req.Timeout > MaxTimeout {
		ve.add("timeout", fmt.Sprintf("timeout must be 0 (the workers' default) or between %s and %s", MinTimeout, MaxTimeout))
	}
	if req.Retention != 0 && (req.Retention < jobs.MinRetention || req.Retention > jobs.MaxRetention) {
		ve.add("retention", fmt.Sprintf("retention must be 0 (the fleet's) or between %s and %s", jobs.MinRetention, jobs.MaxRetention))
	}
	if req.CallbackURL != "" {
		if err := c.cbPolicy.CheckURL(req.CallbackURL); err != nil {
			ve.add("callback_url", "callback_url: "+err.Error())
		}
	}
	if req.Tenant != "" {
		if err := jobs.ValidateTenant(req.Tenant); err != nil {
			ve.add("tenant", "tenant: "+err.Error())
		}
	}
	if len(ve.Fields) > 0 {
		return ve
	}
	return nil
}

// checkKey renders the storage key of the job's last output with the
// workers' template, so that a job id giving an invalid key (a segment too
// long, a reserved name) is refused now rather than after the generation.
func (c *Client) checkKey(req Request) error {
	if !strings.Contains(c.keyTemplate, "{job_id}") {
		return nil
	}
	_, err := storage.RenderKey(c.keyTemplate, storage.KeyVars{JobID: string(req.JobID), VideoID: "v",
		Index: max(req.Video.SampleCount, 1) - 1, Date: time.Now()})
	return err
}

// Limits of a Request that Submit enforces besides the API's own (prompt
// length, duration, sample count, compression quality). They keep one
// job's record small (a full Redis with noeviction stops the pipeline) and
// every number inside the range where it means what it says.
const (
	// MinTimeout and MaxTimeout bound Request.Timeout when it is set.
	MinTimeout = time.Second
	MaxTimeout = 7 * 24 * time.Hour
	// MaxPromptChars is the API's limit on prompt, applied to
	// negative_prompt too, in characters (Unicode code points).
	MaxPromptChars = 32000
	// MaxFieldBytes bounds each short string field of the request
	// (model, size, resolution, aspect_ratio, person_generation,
	// resize_mode).
	MaxFieldBytes = 256
	// MaxLabels, MaxLabelKeyBytes and MaxLabelValueBytes bound labels.
	MaxLabels          = 16
	MaxLabelKeyBytes   = 64
	MaxLabelValueBytes = 256
	// MaxSeed is the largest seed (providers take an unsigned 32-bit one).
	MaxSeed = 1<<32 - 1
	// MaxInputReferences bounds the input_references items.
	MaxInputReferences = 16
	// MaxObjectBytes bounds the JSON of provider_params and of provider.
	MaxObjectBytes = 16 << 10
)

// checkPrompt checks a prompt's length in characters and refuses control
// characters other than tab and line breaks.
func checkPrompt(ve *ValidationError, field, v string) {
	if n := utf8.RuneCountInString(v); n > MaxPromptChars {
		ve.add(field, fmt.Sprintf("video.%s is %d characters, longer than %d", field, n, MaxPromptChars))
		return
	}
	if msg := textProblem(v, -1, true); msg != "" {
		ve.add(field, "video."+field+" "+msg)
	}
}

// textProblem describes what is wrong with a text value: longer than max
// bytes (max < 0: no limit), not UTF-8, or holding a control character
// (tab and line breaks allowed when multiline). "" when nothing is.
func textProblem(v string, max int, multiline bool) string {
	if max >= 0 && len(v) > max {
		return fmt.Sprintf("is %d bytes, longer than %d", len(v), max)
	}
	if !utf8.ValidString(v) {
		return "is not valid UTF-8"
	}
	for _, r := range v {
		if unicode.IsControl(r) && !(multiline && (r == '\t' || r == '\n' || r == '\r')) {
			return fmt.Sprintf("contains control character %U", r)
		}
	}
	return ""
}

// labelsProblem checks the labels' count, sizes and characters.
func labelsProblem(labels map[string]string) string {
	if len(labels) > MaxLabels {
		return fmt.Sprintf("%d labels, more than %d", len(labels), MaxLabels)
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same message for the same labels
	for _, k := range keys {
		if k == "" {
			return "a label key is empty"
		}
		if msg := textProblem(k, MaxLabelKeyBytes, false); msg != "" {
			return fmt.Sprintf("label key %q %s", truncate(k, 40), msg)
		}
		if msg := textProblem(labels[k], MaxLabelValueBytes, false); msg != "" {
			return fmt.Sprintf("label %q: value %s", truncate(k, 40), msg)
		}
	}
	return ""
}

// sameRequest reports whether req asks for what the existing job was
// submitted with: the same video request, labels, callback URL, tenant
// and timeout. A record compacted by retention keeps a digest of the
// first three (jobs.RequestSum).
func sameRequest(existing *jobs.Record, req Request) bool {
	if existing.Tenant != cmp.Or(req.Tenant, jobs.DefaultTenant) {
		return false
	}
	if existing.Compact && existing.RequestSum != "" {
		if jobs.RequestSum(req.Video, req.Labels, req.CallbackURL) != existing.RequestSum {
			return false
		}
	} else {
		ja, _ := json.Marshal(existing.Request)
		jb, _ := json.Marshal(req.Video)
		if string(ja) != string(jb) || !maps.Equal(existing.Labels, req.Labels) || existing.CallbackURL != req.CallbackURL {
			return false
		}
	}
	// The timeout is kept as the deadline, in milliseconds, counted from
	// submission (or from the last retry, which restarts it).
	var timeout time.Duration
	if !existing.Deadline.IsZero() {
		start := existing.SubmittedAt
		if existing.RetriedAt.After(start) {
			start = existing.RetriedAt
		}
		timeout = existing.Deadline.Sub(start)
	}
	return (timeout - req.Timeout).Abs() <= time.Millisecond
}

func newJobID() JobID {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return JobID("job_" + hex.EncodeToString(b[:]))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ListOptions selects jobs for List.
type ListOptions struct {
	// States keeps only jobs in these states; empty means all.
	States []jobs.State
	// Limit is the page size (1–200, default 50).
	Limit int
	// Cursor continues a previous page ("" for the newest jobs).
	Cursor string
	// Tenant keeps only this tenant's jobs; empty means all.
	Tenant string
}

// maxScan bounds how many index entries one List call reads when a state
// filter hides most jobs; the returned cursor continues from there.
const maxScan = 5000

// List returns a page of jobs, newest first, and the cursor of the next
// page ("" when there is none).
func (c *Client) List(ctx context.Context, o ListOptions) ([]*jobs.Record, string, error) {
	if o.Limit <= 0 {
		o.Limit = 50
	}
	if o.Limit > 200 {
		o.Limit = 200
	}
	cur, err := jobs.ParseCursor(o.Cursor)
	if err != nil {
		return nil, "", fmt.Errorf("%w: cursor: %v", ErrInvalidRequest, err)
	}
	want := map[jobs.State]bool{}
	for _, s := range o.States {
		want[s] = true
	}
	var out []*jobs.Record
	scanned := 0
	for len(out) < o.Limit && scanned < maxScan {
		ids, next, err := c.store.Page(ctx, cur, o.Limit)
		if err != nil {
			return nil, "", err
		}
		scanned += len(ids)
		for i, id := range ids {
			rec, err := c.store.Get(ctx, id)
			if errors.Is(err, jobs.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, "", err
			}
			if (len(want) == 0 || want[rec.State]) && (o.Tenant == "" || rec.Tenant == o.Tenant) {
				out = append(out, rec)
				if len(out) == o.Limit {
					if i == len(ids)-1 {
						return out, next.String(), nil
					}
					return out, jobs.Cursor{SubmittedMS: rec.SubmittedAt.UnixMilli(), ID: id}.String(), nil
				}
			}
		}
		if next.ID == "" {
			return out, "", nil
		}
		cur = next
	}
	return out, cur.String(), nil
}

// ErrNotCancellable is returned when cancelling a job that already ended.
var ErrNotCancellable = errors.New("job already ended")

// ErrNotRetryable is returned when retrying a job that is not failed or
// timed out.
var ErrNotRetryable = jobs.ErrNotRetryable

// Cancel ends a job that has not finished: no further step runs for it
// (each step checks the record first), and a worker asks the API to cancel
// the generation where the API supports it, recording the answer. A job
// that already ended gives ErrNotCancellable.
func (c *Client) Cancel(ctx context.Context, id JobID, reason string) (*jobs.Record, error) {
	if reason == "" {
		reason = "cancelled by a user"
	}
	before, err := c.store.Load(ctx, string(id))
	if err != nil {
		return nil, err
	}
	// The generation's last status is stale once nobody polls: the record
	// says "unknown" (""), unless the API had ended it, or until the cancel
	// step records the API's answer.
	stale := before.APIStatus != "" && !apiclient.Status(before.APIStatus).Terminal()
	res, err := c.store.Do(ctx, string(id), jobs.Cancelled{Reason: reason, ClearAPIStatus: stale})
	if errors.Is(err, jobs.ErrIllegalTransition) {
		return nil, fmt.Errorf("cancel %s: %w (state %s)", id, ErrNotCancellable, res.State)
	}
	if err != nil {
		return nil, err
	}
	if c.tenancy != nil && res.Applied {
		if err := c.tenantLeft(ctx, before); err != nil {
			c.log.WarnContext(ctx, "tenancy after cancel", "job_id", string(id), "err", err.Error())
		}
	}
	rec, err := c.store.Get(ctx, string(id))
	if err != nil {
		return nil, err
	}
	next, err := NextTask(rec, 0)
	if err != nil {
		return nil, err
	}
	if err := enqueue(ctx, c.aq, c.wake, next); err != nil {
		return nil, fmt.Errorf("cancel %s: %w", id, err)
	}
	c.log.InfoContext(ctx, "job cancelled", "job_id", string(id), "reason", reason)
	return rec, nil
}

// Retry brings a failed or timed-out job back without duplicating its
// remote generation (jobs.PlanRetry says how) and enqueues the task the
// job then waits on. The job's default deadline restarts now.
func (c *Client) Retry(ctx context.Context, id JobID) (*jobs.Record, error) {
	rec, _, err := RetryJob(ctx, c.store, c.aq, c.insp, c.wake, string(id))
	if err != nil {
		return nil, err
	}
	c.log.InfoContext(ctx, "job retried", "job_id", rec.ID, "video_id", rec.VideoID, "state", string(rec.State))
	return rec, nil
}

// RetryJob retries a failed or timed-out job: it applies jobs.PlanRetry's
// transition and enqueues the task the job then waits on (NextTask),
// first deleting an archived task with the same id, which would block it.
// It returns the record after the retry and that task. The producer's
// Retry and the worker's dead-letter revival both use it; pub (nil: none)
// announces the task to idle workers.
func RetryJob(ctx context.Context, store *jobs.Store, aq *asynq.Client, insp *asynq.Inspector, pub *wake.Publisher, id string) (*jobs.Record, *Next, error) {
	rec, err := store.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	plan, err := jobs.PlanRetry(rec, time.Now().UTC())
	if err != nil {
		return nil, nil, err
	}
	res, err := store.Do(ctx, id, plan)
	if err != nil {
		return nil, nil, fmt.Errorf("retry %s: %w", id, err)
	}
	if !res.Applied {
		return nil, nil, fmt.Errorf("retry %s: the job changed meanwhile (state %s)", id, res.State)
	}
	after := res.Record
	after.Request, after.Labels = rec.Request, rec.Labels // the spec never changes
	if after.Trace == "" {
		after.Trace = rec.Trace // the retried job's tasks stay in its trace
	}
	next, err := NextTask(after, 0)
	if err != nil || next == nil {
		return after, nil, err
	}
	// An archived task with the same id (from an older release or a
	// manual enqueue) would block the new one. A failure here shows in
	// the enqueue that follows, or leaves a live task that does the job.
	_ = insp.DeleteTask(next.Queue, next.ID)
	if err := enqueue(ctx, aq, pub, next); err != nil {
		return nil, nil, fmt.Errorf("retry %s: %w", id, err)
	}
	return after, next, nil
}

// tenantLeft takes an ended job out of the tenancy structures (its
// tenant's waiting list, or its tenant's admitted jobs) and enqueues the
// create tasks of the jobs then admitted. A failure leaves it to the
// stranded-job reconciler (jobs.Tenancy.Sweep).
func (c *Client) tenantLeft(ctx context.Context, before *jobs.Record) error {
	var adm []jobs.Admission
	var err error
	if before.State == jobs.StateTenantWait {
		adm, err = c.tenancy.Withdraw(ctx, before.ID, before.Tenant)
	} else {
		adm, err = c.tenancy.Left(ctx, before.ID, before.Tenant)
	}
	if err != nil {
		return err
	}
	return c.enqueueAdmitted(ctx, adm)
}

// enqueueAdmitted enqueues the create tasks of jobs just admitted. A job
// whose task is lost here is queued without a task: the stranded-job
// reconciler enqueues it.
func (c *Client) enqueueAdmitted(ctx context.Context, adm []jobs.Admission) error {
	return EnqueueAdmitted(ctx, c.aq, c.wake, adm)
}

// EnqueueAdmitted enqueues the create task of each admitted job (through
// NextTask) and announces it with pub (nil: none). It tries every job and
// returns the first failure; a job whose task is lost is queued without a
// task, which the stranded-job reconciler enqueues. Producers and workers
// both use it after an admission round.
func EnqueueAdmitted(ctx context.Context, aq *asynq.Client, pub *wake.Publisher, adm []jobs.Admission) error {
	nexts, err := admittedTasks(adm)
	for _, next := range nexts {
		if eerr := enqueue(ctx, aq, pub, next); eerr != nil && err == nil {
			err = fmt.Errorf("enqueue admitted job: %w", eerr)
		}
	}
	return err
}

// admittedTasks is the create task of each admitted job: the one place
// where an admission becomes a task.
func admittedTasks(adm []jobs.Admission) ([]*Next, error) {
	out := make([]*Next, 0, len(adm))
	for _, a := range adm {
		next, err := NextTask(a.Record(), 0)
		if err != nil {
			return out, fmt.Errorf("admitted job %s: %w", a.ID, err)
		}
		out = append(out, next)
	}
	return out, nil
}

// enqueue enqueues n and announces it to idle workers with pub (nil:
// none); a task with the same id already there counts as done (the id is
// what makes the step idempotent). A lost announcement costs at most the
// workers' idle check interval.
func enqueue(ctx context.Context, aq *asynq.Client, pub *wake.Publisher, n *Next) error {
	if n == nil {
		return nil
	}
	info, err := aq.EnqueueContext(ctx, n.Task)
	if err == nil {
		_ = pub.Announce(ctx, info)
		return nil
	}
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s %s: %w", n.Type, n.ID, err)
	}
	return nil
}

// startJob starts the root span of rec's trace (tracing on) and keeps its
// context on rec, which the job's tasks then carry. A resubmission that
// finds the job keeps the job's first trace (the record's); its own span
// says created=false.
func (c *Client) startJob(ctx context.Context, rec *jobs.Record) (context.Context, tracing.Span) {
	ctx, sp := c.tracer.StartJob(ctx, rec.ID)
	sp.Str(tracing.AttrModel, rec.Request.Model)
	sp.Str(tracing.AttrTenant, rec.Tenant)
	rec.Trace = sp.Traceparent()
	return ctx, sp
}

// newRecord is the record of a job submitted now with req: Submit and
// SubmitMany both build it here, so that a field of the request is never
// kept by one and lost by the other. With tenancy on it starts in
// tenant_wait.
func (c *Client) newRecord(id JobID, req Request, now time.Time) *jobs.Record {
	rec := &jobs.Record{ID: string(id), State: jobs.StateQueued, Request: req.Video, Labels: req.Labels, SubmittedAt: now, Tenant: req.Tenant}
	if rec.Tenant == "" {
		rec.Tenant = jobs.DefaultTenant
	}
	if c.tenancy != nil {
		rec.State = jobs.StateTenantWait
	}
	if req.Timeout > 0 {
		rec.Deadline = now.Add(req.Timeout)
	}
	rec.RetentionMS = req.Retention.Milliseconds()
	rec.CallbackURL = req.CallbackURL
	return rec
}

// withDefaults fills in what the client's options give a request that
// does not say (the default callback URL); Submit and SubmitMany both use
// it.
func (c *Client) withDefaults(req Request) Request {
	if req.CallbackURL == "" {
		req.CallbackURL = c.cbDefault
	}
	return req
}
