package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// Config is every setting of the program, read from the environment. The
// README's configuration table is written from this struct; keep them in
// step.
type Config struct {
	RedisURL  string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0" desc:"Redis holding the queues and job records"`
	KeyPrefix string `envconfig:"KEY_PREFIX" default:"videoworker:" desc:"prefix of the job record keys (producers and workers must agree)"`

	APIBaseURL string `envconfig:"AISTATS_BASE_URL" default:"https://api.phaseo.app/v1" desc:"AI Stats API root, including /v1"`
	APIKey     string `envconfig:"AISTATS_API_KEY" desc:"AI Stats API key (secret; never logged)"`
	// StandinURL lets docker compose start on the stand-in and switch to
	// the real API when the key is set, with no other change.
	StandinURL string        `envconfig:"AISTATS_STANDIN_URL" desc:"worker only: a stand-in API to use while AISTATS_API_KEY is empty (docker compose sets it); empty = AISTATS_API_KEY is required"`
	APITimeout time.Duration `envconfig:"AISTATS_TIMEOUT" default:"30s" desc:"timeout of each API call (content: until the headers arrive)"`
	// APIAllowInsecure: "true", or the hosts (comma separated) that
	// AISTATS_BASE_URL may reach over plain http although not loopback.
	APIAllowInsecure string `envconfig:"AISTATS_ALLOW_INSECURE" desc:"allow a plain-http AISTATS_BASE_URL to a non-loopback host (the API key crosses the network in clear): true, or that host name (comma separated list)"`

	StorageURL  string `envconfig:"STORAGE_URL" default:"file://./data" desc:"where videos are stored: file://PATH, a plain path, or s3://BUCKET[/PREFIX]"`
	KeyTemplate string `envconfig:"STORAGE_KEY_TEMPLATE" default:"videos/{date}/{job_id}.{ext}" desc:"object key template: {job_id} {video_id} {date} {index} {ext}"`

	// S3 settings, used when STORAGE_URL is s3://…; query parameters of
	// the URL (endpoint, region, path_style, ssl) override the first four.
	S3Endpoint    string `envconfig:"S3_ENDPOINT" desc:"S3 server: host[:port] or http(s)://host[:port] (default: AWS, s3.amazonaws.com)"`
	S3Region      string `envconfig:"S3_REGION" desc:"the bucket's region (default: asked from the server; MinIO and versitygw use us-east-1)"`
	S3PathStyle   bool   `envconfig:"S3_PATH_STYLE" default:"false" desc:"path-style requests (host/bucket/key); MinIO, versitygw and Garage need true"`
	S3UseSSL      bool   `envconfig:"S3_USE_SSL" default:"true" desc:"https to the S3 server (an http:// S3_ENDPOINT turns it off)"`
	S3PartSizeMiB int    `envconfig:"S3_PART_SIZE_MIB" default:"16" desc:"multipart part size in MiB (5-5120); an upload holds up to four parts in memory"`
	// Credentials: the S3_ pair, else the standard AWS_ names, else the
	// machine's role (web identity, ECS task role, EC2 instance role).
	S3AccessKeyID      string `envconfig:"S3_ACCESS_KEY_ID" desc:"S3 access key id (takes precedence over AWS_ACCESS_KEY_ID)"`
	S3SecretAccessKey  string `envconfig:"S3_SECRET_ACCESS_KEY" desc:"S3 secret key (secret; never logged)"`
	AWSAccessKeyID     string `envconfig:"AWS_ACCESS_KEY_ID" desc:"S3 access key id when S3_ACCESS_KEY_ID is unset"`
	AWSSecretAccessKey string `envconfig:"AWS_SECRET_ACCESS_KEY" desc:"S3 secret key when S3_SECRET_ACCESS_KEY is unset (secret; never logged)"`
	AWSSessionToken    string `envconfig:"AWS_SESSION_TOKEN" desc:"session token of temporary AWS_ credentials (secret; never logged)"`

	Concurrency       int           `envconfig:"WORKER_CONCURRENCY" default:"20" desc:"tasks run at once per worker process"`
	CreateConcurrency int           `envconfig:"WORKER_CREATE_CONCURRENCY" default:"4" desc:"create calls run at once per worker process, besides WORKER_CONCURRENCY"`
	Queues            string        `envconfig:"WORKER_QUEUES" desc:"queues and priorities, e.g. video_download:6,video_poll:5 (default: all three)"`
	PollInterval      time.Duration `envconfig:"POLL_INTERVAL" default:"20s" desc:"first wait between status checks when the API gives no poll_after_seconds"`
	MaxPollInterval   time.Duration `envconfig:"POLL_MAX_INTERVAL" default:"2m" desc:"longest wait between status checks"`
	JobTimeout        time.Duration `envconfig:"JOB_TIMEOUT" default:"2h" desc:"overall deadline of a job from submission (per-job override in the request)"`
	ShutdownTimeout   time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"grace period for running tasks on SIGTERM; the rest are re-queued"`

	// Polling and wake-ups (package wake; the README's table gives what
	// each costs in Redis commands per second).
	Wake                 bool          `envconfig:"WAKE" default:"true" desc:"announce each enqueued task to idle workers (one PUBLISH); workers look at Redis only after a wake-up or WORKER_IDLE_CHECK_INTERVAL"`
	IdleCheckInterval    time.Duration `envconfig:"WORKER_IDLE_CHECK_INTERVAL" default:"2s" desc:"how often an idle worker looks at its queues and scheduled tasks without a wake-up (bounds the delay of a lost wake-up)"`
	TaskCheckInterval    time.Duration `envconfig:"WORKER_TASK_CHECK_INTERVAL" default:"20ms" desc:"asynq's pause after finding the queues empty (local while the wake-up gate is on)"`
	DelayedCheckInterval time.Duration `envconfig:"WORKER_DELAYED_CHECK_INTERVAL" default:"200ms" desc:"how often due scheduled tasks (polls, retries) are moved to their queues; bounds how late a poll fires"`

	// Retention of finished jobs (see the README's operations section).
	JobRetention           string        `envconfig:"JOB_RETENTION" default:"7d" desc:"how long a finished job stays in Redis; then one worker archives it to storage and removes it: a duration (e.g. 72h, 7d) or off (keep every job forever); a job may carry its own (retention_seconds)"`
	JobArchive             string        `envconfig:"JOB_ARCHIVE" default:"on" desc:"on: write each finished job's record and history to storage (records/…json) before it leaves Redis; off: forget it without an archive"`
	RetentionSweepInterval time.Duration `envconfig:"JOB_RETENTION_SWEEP_INTERVAL" default:"1m" desc:"how often one worker of the fleet forgets the finished jobs whose retention has passed"`

	// Completion callbacks to producers (package callback).
	CallbackURL           string        `envconfig:"CALLBACK_URL" desc:"default callback URL of a job submitted without one (empty: none); see Completion callbacks"`
	CallbackSecrets       []string      `envconfig:"CALLBACK_SECRETS" desc:"worker: secrets that sign completion callbacks, comma separated, the first signs (receivers verify with any during a rotation). Secret"`
	CallbackAllowPrivate  bool          `envconfig:"CALLBACK_ALLOW_PRIVATE" default:"false" desc:"let callback URLs reach private, link-local, CGNAT and metadata addresses"`
	CallbackAllowLoopback bool          `envconfig:"CALLBACK_ALLOW_LOOPBACK" default:"false" desc:"let callback URLs reach loopback addresses, over plain http too (development)"`
	CallbackTimeout       time.Duration `envconfig:"CALLBACK_TIMEOUT" default:"10s" desc:"worker: timeout of one callback delivery attempt"`
	CallbackMaxAge        time.Duration `envconfig:"CALLBACK_MAX_AGE" default:"24h" desc:"worker: how long after a job ended its callback is still retried"`

	// Spend control (package jobs, budget.go): off while BUDGETS is empty.
	Budgets              string        `envconfig:"BUDGETS" desc:"fleet-wide spend limits in USD, e.g. day=200,month=4000,model:openai/sora-2/day=50 (empty: off)"`
	ModelPrices          string        `envconfig:"MODEL_PRICES" desc:"prices that budgets reserve before a create, e.g. google/veo-3.1-lite=0.05/s,openai/sora-2=0.80 (per second, or per video), times samples; before the API's own (GET /videos/models)"`
	ModelPricesRefresh   time.Duration `envconfig:"MODEL_PRICES_REFRESH" default:"10m" desc:"worker, budgets on: how often the API's model catalogue is read for the prices of models MODEL_PRICES does not name (also at start)"`
	BudgetPolicy         string        `envconfig:"BUDGET_POLICY" default:"wait" desc:"a job over a budget: wait (state budget_wait, retried) or reject (failed, budget_exceeded)"`
	BudgetReservationTTL time.Duration `envconfig:"BUDGET_RESERVATION_TTL" default:"24h" desc:"how long a job's reservation holds budget if it is never settled (its worker died)"`

	// Tenancy (package jobs, tenants.go): off unless TENANT_LIMITS is set
	// or TENANT_FAIRNESS is on. Producers and workers must agree.
	TenantLimits     string `envconfig:"TENANT_LIMITS" desc:"most jobs each tenant may have admitted and not yet past generating, e.g. default=5,acme=20,bulk=2 (0: no limit); setting it turns tenancy on (docs/tenants.md)"`
	TenantWeights    string `envconfig:"TENANT_WEIGHTS" desc:"with tenancy on, each tenant's share of admissions while several have jobs waiting, e.g. acme=3,default=1 (1-1000; 1 for tenants not named); setting it turns tenancy on like TENANT_LIMITS"`
	TenantFairness   string `envconfig:"TENANT_FAIRNESS" default:"auto" desc:"on: creates are admitted round-robin across tenants (state tenant_wait); off; auto: on when TENANT_LIMITS or TENANT_WEIGHTS is set"`
	TenantAdmitAhead int    `envconfig:"TENANT_ADMIT_AHEAD" default:"2" desc:"with tenancy on, how many admitted jobs may wait in the create queue at once (fewer: fairer; more: fewer idle create slots)"`

	// Tracing (docs/tracing.md): on when an OTLP endpoint is set. The
	// exporter and the SDK read these variables themselves (and the other
	// standard OTEL_EXPORTER_OTLP_* ones: timeout, compression,
	// certificates); they are here to be checked at start and listed.
	OTLPEndpoint       string `envconfig:"OTEL_EXPORTER_OTLP_ENDPOINT" desc:"OTLP/HTTP collector, e.g. http://localhost:4318 (traces go to its /v1/traces); set it or the next to export traces; both empty: tracing off, at no cost"`
	OTLPTracesEndpoint string `envconfig:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" desc:"full URL of the collector's traces endpoint, e.g. http://localhost:4318/v1/traces (wins over OTEL_EXPORTER_OTLP_ENDPOINT)"`
	OTLPHeaders        string `envconfig:"OTEL_EXPORTER_OTLP_HEADERS" desc:"headers of every export, key=value comma separated, e.g. authorization=Bearer%20TOKEN (secret; never logged)"`
	OTLPTracesHeaders  string `envconfig:"OTEL_EXPORTER_OTLP_TRACES_HEADERS" desc:"headers of trace exports, as OTEL_EXPORTER_OTLP_HEADERS (secret; never logged)"`
	OTLPProtocol       string `envconfig:"OTEL_EXPORTER_OTLP_PROTOCOL" desc:"only http/protobuf is supported (empty: http/protobuf)"`
	OTLPTracesProtocol string `envconfig:"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" desc:"as OTEL_EXPORTER_OTLP_PROTOCOL, for traces"`
	OTelServiceName    string `envconfig:"OTEL_SERVICE_NAME" default:"videoworker" desc:"service.name of the exported spans"`
	OTelSampler        string `envconfig:"OTEL_TRACES_SAMPLER" desc:"which jobs are traced: parentbased_always_on (empty: the default), always_on, always_off, traceidratio, parentbased_traceidratio, parentbased_always_off"`
	OTelSamplerArg     string `envconfig:"OTEL_TRACES_SAMPLER_ARG" desc:"the ratio of the traceidratio samplers, 0-1 (e.g. 0.1: one job in ten)"`
	OTelSDKDisabled    bool   `envconfig:"OTEL_SDK_DISABLED" default:"false" desc:"true turns tracing off even with an endpoint set"`

	LogFormat string `envconfig:"LOG_FORMAT" default:"auto" desc:"auto (text on a terminal, else JSON), text or json"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// loadConfig reads the environment and validates the result, naming every
// problem at once.
func loadConfig() (Config, error) {
	c, errs := readConfig()
	return c, configProblems(append(errs, c.Validate())...)
}

// readConfig reads the environment; the errors are the values that do not
// parse (those fields keep their defaults).
func readConfig() (Config, []error) {
	var c Config
	return c, readEnv(&c)
}

// configError lists every problem of the configuration.
type configError struct{ problems []error }

func (e *configError) Error() string {
	if len(e.problems) == 1 {
		return "configuration: " + e.problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "configuration has %d problems:", len(e.problems))
	for _, p := range e.problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *configError) Unwrap() []error { return e.problems }

// configProblems gathers errs (nil ones skipped, joined ones flattened)
// into one configError, or nil when there are none.
func configProblems(errs ...error) error {
	var all []error
	var flatten func(error)
	flatten = func(err error) {
		switch e := err.(type) {
		case nil:
		case *configError:
			all = append(all, e.problems...)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				flatten(inner)
			}
		default:
			all = append(all, err)
		}
	}
	for _, err := range errs {
		flatten(err)
	}
	if len(all) == 0 {
		return nil
	}
	return &configError{all}
}

// readEnv fills the tagged fields of the struct dst points to from the
// environment: each field's variable (its envconfig tag), or its default
// tag when the variable is unset (or empty, for a field other than a
// string). A value that does not parse is named in plain words and the
// field keeps its default, so that validation reports only the other
// problems. Every bad value is reported, not just the first.
func readEnv(dst any) []error {
	v := reflect.ValueOf(dst).Elem()
	var errs []error
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name := f.Tag.Get("envconfig")
		if name == "" {
			continue
		}
		def := f.Tag.Get("default")
		raw, ok := os.LookupEnv(name)
		if !ok || (raw == "" && f.Type.Kind() != reflect.String) {
			raw = def
		}
		field := v.Field(i)
		if err := setEnvField(field, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: want %s, got %q", name, err.Error(), clip(raw, 40)))
			field.SetZero()
			_ = setEnvField(field, def)
		}
	}
	return errs
}

// durationType is the type of time.Duration fields.
var durationType = reflect.TypeFor[time.Duration]()

// setEnvField parses raw into field; an error says what was wanted.
func setEnvField(field reflect.Value, raw string) error {
	if raw == "" && field.Kind() != reflect.String && field.Kind() != reflect.Slice {
		return nil // no value and no default: the zero value
	}
	switch {
	case field.Type() == durationType:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("a duration such as 500ms, 30s, 5m or 1h30m")
		}
		field.SetInt(int64(d))
	case field.Kind() == reflect.String:
		field.SetString(raw)
	case field.Kind() == reflect.Int || field.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return errors.New("a whole number")
		}
		field.SetInt(n)
	case field.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("true or false")
		}
		field.SetBool(b)
	case field.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil {
			return errors.New("a number")
		}
		field.SetFloat(f)
	case field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.String:
		if raw == "" {
			field.SetZero()
			return nil
		}
		field.Set(reflect.ValueOf(strings.Split(raw, ",")))
	default:
		panic(fmt.Sprintf("config: no parser for %s fields", field.Type())) // a programming error
	}
	return nil
}

// Validate returns every problem of c, joined.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, err := parseRedisURL(c.RedisURL); err != nil {
		add("REDIS_URL: %v", err)
	}
	if u, err := url.Parse(c.APIBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("AISTATS_BASE_URL: want an absolute http(s) URL")
	} else if apiclient.PlainHTTPToRemote(u) && !c.insecureAPIAllowed() {
		add("AISTATS_BASE_URL: plain http to %s would send the API key in clear; use https, or set AISTATS_ALLOW_INSECURE=true (or =%s) on a trusted network", u.Hostname(), u.Hostname())
	}
	if u, err := url.Parse(c.StandinURL); c.StandinURL != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
		add("AISTATS_STANDIN_URL: want an absolute http(s) URL")
	}
	if c.APITimeout <= 0 {
		add("AISTATS_TIMEOUT: must be positive")
	}
	c.validateStorage(add)
	if err := storage.CheckKeyTemplate(c.KeyTemplate); err != nil {
		add("STORAGE_KEY_TEMPLATE: %v", err)
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		add("WORKER_CONCURRENCY: want 1-10000, got %d", c.Concurrency)
	}
	if c.CreateConcurrency < 1 || c.CreateConcurrency > 1000 {
		add("WORKER_CREATE_CONCURRENCY: want 1-1000, got %d", c.CreateConcurrency)
	}
	if _, err := parseQueues(c.Queues); err != nil {
		add("WORKER_QUEUES: %v", err)
	}
	if c.PollInterval < time.Second {
		add("POLL_INTERVAL: want at least 1s")
	}
	if c.MaxPollInterval < c.PollInterval {
		add("POLL_MAX_INTERVAL: must not be shorter than POLL_INTERVAL")
	}
	if c.JobTimeout < time.Minute {
		add("JOB_TIMEOUT: want at least 1m")
	}
	if c.ShutdownTimeout <= 0 {
		add("SHUTDOWN_TIMEOUT: must be positive")
	}
	if c.IdleCheckInterval < 100*time.Millisecond || c.IdleCheckInterval > time.Hour {
		add("WORKER_IDLE_CHECK_INTERVAL: want 100ms-1h")
	}
	if c.TaskCheckInterval < time.Millisecond || c.TaskCheckInterval > time.Minute {
		add("WORKER_TASK_CHECK_INTERVAL: want 1ms-1m")
	}
	if c.DelayedCheckInterval < 10*time.Millisecond || c.DelayedCheckInterval > time.Minute {
		add("WORKER_DELAYED_CHECK_INTERVAL: want 10ms-1m")
	}
	if _, err := parseRetention(c.JobRetention); err != nil {
		add("JOB_RETENTION: %v", err)
	}
	if c.JobArchive != "on" && c.JobArchive != "off" {
		add("JOB_ARCHIVE: want on or off")
	}
	if c.RetentionSweepInterval < time.Second || c.RetentionSweepInterval > time.Hour {
		add("JOB_RETENTION_SWEEP_INTERVAL: want 1s-1h")
	}
	if c.CallbackURL != "" {
		if err := c.callbackPolicy().CheckURL(c.CallbackURL); err != nil {
			add("CALLBACK_URL: %v", err)
		}
	}
	for i, s := range c.CallbackSecrets {
		if len(strings.TrimSpace(s)) < 16 {
			add("CALLBACK_SECRETS: secret %d is shorter than 16 characters", i+1)
		}
	}
	if c.CallbackTimeout <= 0 || c.CallbackTimeout > time.Minute {
		add("CALLBACK_TIMEOUT: want more than 0, at most 1m (the callback task's own timeout is 2m)")
	}
	if c.CallbackMaxAge < time.Minute {
		add("CALLBACK_MAX_AGE: want at least 1m")
	}
	c.validateBudgets(add)
	c.validateTenancy(add)
	c.validateTracing(add)
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		add("LOG_FORMAT: want auto, text or json")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		add("LOG_LEVEL: %v", err)
	}
	return errors.Join(errs...)
}

// validateBudgets checks BUDGETS, MODEL_PRICES and BUDGET_POLICY.
func (c Config) validateBudgets(add func(format string, a ...any)) {
	// An empty MODEL_PRICES with BUDGETS set is fine: the API's model
	// catalogue may price every model (a model priced by neither is
	// refused at its create, unpriced_model).
	_, errs := jobs.ParseBudgets(c.Budgets)
	for _, err := range errs {
		add("BUDGETS: %v", err)
	}
	_, errs = jobs.ParsePrices(c.ModelPrices)
	for _, err := range errs {
		add("MODEL_PRICES: %v", err)
	}
	if c.ModelPricesRefresh < time.Minute {
		add("MODEL_PRICES_REFRESH: want at least 1m")
	}
	switch c.BudgetPolicy {
	case worker.BudgetWait, worker.BudgetReject:
	default:
		add("BUDGET_POLICY: want wait or reject, got %q", clip(c.BudgetPolicy, 20))
	}
	if c.BudgetReservationTTL < time.Minute {
		add("BUDGET_RESERVATION_TTL: want at least 1m")
	}
}

// validateTenancy checks TENANT_LIMITS, TENANT_WEIGHTS, TENANT_FAIRNESS
// and TENANT_ADMIT_AHEAD.
func (c Config) validateTenancy(add func(format string, a ...any)) {
	_, errs := jobs.ParseTenantLimits(c.TenantLimits)
	for _, err := range errs {
		add("TENANT_LIMITS: %v", err)
	}
	switch c.TenantFairness {
	case "auto", "on", "off":
	default:
		add("TENANT_FAIRNESS: want auto, on or off, got %q", clip(c.TenantFairness, 20))
	}
	if c.TenantFairness == "off" && strings.TrimSpace(c.TenantLimits) != "" {
		add("TENANT_LIMITS: set while TENANT_FAIRNESS is off: limits need tenancy on")
	}
	_, errs = jobs.ParseTenantWeights(c.TenantWeights)
	for _, err := range errs {
		add("TENANT_WEIGHTS: %v", err)
	}
	if c.TenantFairness == "off" && strings.TrimSpace(c.TenantWeights) != "" {
		add("TENANT_WEIGHTS: set while TENANT_FAIRNESS is off: weights need tenancy on")
	}
	if c.TenantAdmitAhead < 1 || c.TenantAdmitAhead > 1000 {
		add("TENANT_ADMIT_AHEAD: want 1-1000, got %d", c.TenantAdmitAhead)
	}
}

// tenancy is the fleet's tenancy on store's jobs, or nil when it is off.
func (c Config) tenancy(store *jobs.Store) *jobs.Tenancy {
	set := strings.TrimSpace(c.TenantLimits) != "" || strings.TrimSpace(c.TenantWeights) != ""
	if c.TenantFairness != "on" && (c.TenantFairness != "auto" || !set) {
		return nil
	}
	limits, _ := jobs.ParseTenantLimits(c.TenantLimits)
	weights, _ := jobs.ParseTenantWeights(c.TenantWeights)
	return jobs.NewTenancy(store, jobs.TenancyConfig{Limits: limits, Weights: weights, AdmitAhead: c.TenantAdmitAhead})
}

// budgeter is the fleet's budgets, or nil when BUDGETS is empty (off).
func (c Config) budgeter(rdb redis.UniversalClient) *jobs.Budgeter {
	budgets, _ := jobs.ParseBudgets(c.Budgets)
	prices, _ := jobs.ParsePrices(c.ModelPrices)
	return jobs.NewBudgeter(rdb, c.KeyPrefix, jobs.BudgetConfig{Budgets: budgets, Prices: prices, ReservationTTL: c.BudgetReservationTTL})
}

// insecureAPIAllowed reports whether AISTATS_ALLOW_INSECURE lets
// AISTATS_BASE_URL be plain http to its (non-loopback) host.
func (c Config) insecureAPIAllowed() bool {
	v := strings.TrimSpace(c.APIAllowInsecure)
	if ok, err := strconv.ParseBool(v); err == nil {
		return ok
	}
	u, err := url.Parse(c.APIBaseURL)
	if err != nil {
		return false
	}
	for _, h := range strings.Split(v, ",") {
		if h = strings.TrimSpace(h); h != "" && strings.EqualFold(h, u.Hostname()) {
			return true
		}
	}
	return false
}

// callbackPolicy is which addresses callback URLs may reach.
func (c Config) callbackPolicy() callback.Policy {
	return callback.Policy{AllowPrivate: c.CallbackAllowPrivate, AllowLoopback: c.CallbackAllowLoopback}
}

// producerOptions are the tasks.Client options of the commands that
// submit jobs.
// tp is the tracer provider (nil: tracing off).
func (c Config) producerOptions(log *slog.Logger, rdb redis.UniversalClient, tp trace.TracerProvider) tasks.ClientOptions {
	return tasks.ClientOptions{Prefix: c.KeyPrefix, Logger: log, KeyTemplate: c.KeyTemplate, NoWake: !c.Wake,
		DefaultCallbackURL: c.CallbackURL, CallbackPolicy: c.callbackPolicy(), Retention: c.retention(),
		Tenancy: c.tenancy(c.jobStore(rdb)), TracerProvider: tp}
}

// validateStorage checks STORAGE_URL and, for s3:// URLs, the S3 settings.
func (c Config) validateStorage(add func(format string, a ...any)) {
	u, err := url.Parse(c.StorageURL)
	switch {
	case strings.TrimSpace(c.StorageURL) == "":
		add("STORAGE_URL: want file://PATH, a plain path or s3://BUCKET[/PREFIX]")
	case err != nil || u.Scheme == "" || len(u.Scheme) == 1 || u.Scheme == "file":
		// A path or file URL: storage.Open reports what is wrong with it.
	case u.Scheme == "s3":
		if _, err := storage.ParseS3URL(c.StorageURL, c.storageOptions().S3); err != nil {
			add("STORAGE_URL: %v", strings.TrimPrefix(err.Error(), "storage: "))
		}
		if c.S3PartSizeMiB < 5 || c.S3PartSizeMiB > 5120 {
			add("S3_PART_SIZE_MIB: want 5-5120, got %d", c.S3PartSizeMiB)
		}
		for _, pair := range [][4]string{
			{"S3_ACCESS_KEY_ID", c.S3AccessKeyID, "S3_SECRET_ACCESS_KEY", c.S3SecretAccessKey},
			{"AWS_ACCESS_KEY_ID", c.AWSAccessKeyID, "AWS_SECRET_ACCESS_KEY", c.AWSSecretAccessKey},
		} {
			if (pair[1] == "") != (pair[3] == "") {
				add("%s and %s: set both or neither", pair[0], pair[2])
			}
		}
	default:
		add("STORAGE_URL: unknown scheme %q: want file://PATH, a plain path or s3://BUCKET[/PREFIX]", u.Scheme)
	}
}

// storageOptions are the settings storage.OpenWith takes from the
// configuration rather than from STORAGE_URL.
func (c Config) storageOptions() storage.OpenOptions {
	ak, sk, token := c.S3AccessKeyID, c.S3SecretAccessKey, ""
	if ak == "" && sk == "" {
		ak, sk, token = c.AWSAccessKeyID, c.AWSSecretAccessKey, c.AWSSessionToken
	}
	return storage.OpenOptions{S3: storage.S3Config{
		Endpoint: c.S3Endpoint, Region: c.S3Region, PathStyle: c.S3PathStyle, UseSSL: c.S3UseSSL,
		PartSize: uint64(max(c.S3PartSizeMiB, 0)) << 20, AccessKey: ak, SecretKey: sk, SessionToken: token,
	}}
}

// requireAPIKey is checked by the commands that call the API.
func (c Config) requireAPIKey() error {
	if strings.TrimSpace(c.APIKey) == "" && c.StandinURL == "" {
		return errors.New("AISTATS_API_KEY: required to call the API")
	}
	return nil
}

// standinKey is the bearer sent to AISTATS_STANDIN_URL; a stand-in
// started without -api-key accepts any.
const standinKey = "standin"

// useStandin points c at AISTATS_STANDIN_URL when AISTATS_API_KEY is
// empty and reports whether it did.
func (c *Config) useStandin() bool {
	if strings.TrimSpace(c.APIKey) != "" || c.StandinURL == "" {
		return false
	}
	c.APIBaseURL, c.APIKey = c.StandinURL, standinKey
	return true
}

// parseQueues reads "name:priority,…"; empty means the defaults.
func parseQueues(s string) (map[string]int, error) {
	if strings.TrimSpace(s) == "" {
		return tasks.DefaultQueues(), nil
	}
	known := tasks.DefaultQueues()
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		name, prio, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			prio = "1"
		}
		if _, isKnown := known[name]; !isKnown {
			return nil, fmt.Errorf("unknown queue %q (known: %s, %s, %s)", name, tasks.QueueCreate, tasks.QueuePoll, tasks.QueueDownload)
		}
		n, err := strconv.Atoi(prio)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("queue %s: priority must be a positive integer", name)
		}
		out[name] = n
	}
	return out, nil
}

// parseRetention reads JOB_RETENTION: off or 0 (keep forever), a Go
// duration, or a number of days ("7d"); at least 1s.
func parseRetention(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "off" || v == "0" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > 3650 {
			return 0, errors.New("want off, a duration such as 72h, or days such as 7d")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, errors.New("want off, a duration of at least 1s such as 72h, or days such as 7d")
	}
	return d, nil
}

// retention is JOB_RETENTION (0: off, or not valid).
func (c Config) retention() time.Duration {
	d, _ := parseRetention(c.JobRetention)
	return d
}

// jobStore is the job store of the configuration: its key prefix and
// retention.
func (c Config) jobStore(rdb redis.UniversalClient) *jobs.Store {
	s := jobs.NewStore(rdb, c.KeyPrefix)
	s.SetRetention(c.retention())
	return s
}
