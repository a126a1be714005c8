package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// Config is every setting of the program, read from the environment. The
// README's configuration table is written from this struct; keep them in
// step.
type Config struct {
	RedisURL  string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0" desc:"Redis holding the queues and job records"`
	KeyPrefix string `envconfig:"KEY_PREFIX" default:"videoworker:" desc:"prefix of the job record keys (producers and workers must agree)"`

	APIBaseURL string        `envconfig:"AISTATS_BASE_URL" default:"https://api.phaseo.app/v1" desc:"AI Stats API root, including /v1"`
	APIKey     string        `envconfig:"AISTATS_API_KEY" desc:"AI Stats API key (secret; never logged)"`
	APITimeout time.Duration `envconfig:"AISTATS_TIMEOUT" default:"30s" desc:"timeout of each API call (content: until the headers arrive)"`

	StorageURL  string `envconfig:"STORAGE_URL" default:"file://./data" desc:"where videos are stored: file://PATH"`
	KeyTemplate string `envconfig:"STORAGE_KEY_TEMPLATE" default:"videos/{date}/{job_id}.{ext}" desc:"object key template: {job_id} {video_id} {date} {index} {ext}"`

	Concurrency     int           `envconfig:"WORKER_CONCURRENCY" default:"20" desc:"tasks run at once per worker process"`
	Queues          string        `envconfig:"WORKER_QUEUES" desc:"queues and priorities, e.g. video_download:6,video_poll:5 (default: all three)"`
	PollInterval    time.Duration `envconfig:"POLL_INTERVAL" default:"20s" desc:"first wait between status checks when the API gives no poll_after_seconds"`
	MaxPollInterval time.Duration `envconfig:"POLL_MAX_INTERVAL" default:"2m" desc:"longest wait between status checks"`
	JobTimeout      time.Duration `envconfig:"JOB_TIMEOUT" default:"2h" desc:"overall deadline of a job from submission (per-job override in the request)"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"grace period for running tasks on SIGTERM; the rest are re-queued"`

	LogFormat string `envconfig:"LOG_FORMAT" default:"auto" desc:"auto (text on a terminal, else JSON), text or json"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// loadConfig reads the environment and validates the result, naming every
// problem at once.
func loadConfig() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return c, fmt.Errorf("configuration: %w", err)
	}
	return c, c.Validate()
}

// Validate returns every problem of c, joined.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		add("REDIS_URL: want redis://[user:password@]host:port/db or rediss://…")
	}
	if u, err := url.Parse(c.APIBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("AISTATS_BASE_URL: want an absolute http(s) URL")
	}
	if c.APITimeout <= 0 {
		add("AISTATS_TIMEOUT: must be positive")
	}
	if u, err := url.Parse(c.StorageURL); err != nil || c.StorageURL == "" || (u.Scheme != "file" && u.Scheme != "") {
		add("STORAGE_URL: want file://PATH or a plain path")
	}
	if _, err := storage.RenderKey(c.KeyTemplate, storage.KeyVars{JobID: "j", VideoID: "v", Date: time.Now()}); err != nil {
		add("STORAGE_KEY_TEMPLATE: %v", err)
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		add("WORKER_CONCURRENCY: want 1-10000, got %d", c.Concurrency)
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

// requireAPIKey is checked by the commands that call the API.
func (c Config) requireAPIKey() error {
	if strings.TrimSpace(c.APIKey) == "" {
		return errors.New("AISTATS_API_KEY: required to call the API")
	}
	return nil
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
