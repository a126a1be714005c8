package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/ratelimit"
	"github.com/videoworker/videoworker/server"
)

// ServeConfig is the configuration of the HTTP server and of webhooks,
// read from the environment like Config. Workers read the webhook part too:
// they subscribe each new job's webhook when it is complete.
type ServeConfig struct {
	Addr           string        `envconfig:"SERVE_ADDR" default:":8080" desc:"listen address of videoworker serve"`
	PublicURL      string        `envconfig:"WEBHOOK_PUBLIC_URL" desc:"URL the API delivers webhooks to (https, or http://localhost for development); with WEBHOOK_SECRETS it turns webhooks on"`
	EndpointID     string        `envconfig:"WEBHOOK_ENDPOINT_ID" desc:"a workspace webhook endpoint of the API (its newest revision takes only these): creates subscribe it instead of WEBHOOK_PUBLIC_URL; its secret goes first in WEBHOOK_SECRETS, its URL (set at the API) must reach this receiver"`
	Secrets        []string      `envconfig:"WEBHOOK_SECRETS" desc:"webhook signing secrets, comma separated; the first signs new jobs, all verify (rotation). Secret"`
	Tolerance      time.Duration `envconfig:"WEBHOOK_TOLERANCE" default:"5m" desc:"how far a delivery's timestamp may be from now"`
	Progress       bool          `envconfig:"WEBHOOK_PROGRESS" default:"false" desc:"also subscribe progress events"`
	APITokens      string        `envconfig:"API_TOKENS" desc:"bearer tokens of the job API, comma separated (at least 16 characters each). Secret"`
	CreateRate     string        `envconfig:"API_CREATE_RATE" desc:"fleet-wide budget of create calls: N/s, N/m or N/h, optionally +burst (e.g. 10/m+2); empty = unlimited"`
	ReadRate       string        `envconfig:"API_READ_RATE" desc:"fleet-wide budget of status, list and content calls, same form; empty = unlimited"`
	MetricsAddr    string        `envconfig:"METRICS_ADDR" desc:"worker only: address of the worker's own /metrics (unauthenticated; bind it to a private interface); empty = off"`
	Operators      string        `envconfig:"OPERATORS" desc:"dashboard and monitoring logins: user:password:role,… with role viewer (read-only) or operator. Secret"`
	TrustedProxies string        `envconfig:"TRUSTED_PROXIES" desc:"reverse proxies whose X-Forwarded-For names the client (access log, login throttling): CIDRs or addresses, comma separated; empty = none, the header is ignored"`
}

// LogValue keeps the secrets out of logs.
func (c ServeConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("addr", c.Addr), slog.String("webhook_public_url", c.PublicURL), slog.String("webhook_endpoint_id", c.EndpointID),
		slog.Int("webhook_secrets", len(c.Secrets)), slog.Duration("webhook_tolerance", c.Tolerance),
		slog.Bool("api_tokens_set", c.APITokens != ""), slog.Bool("operators_set", c.Operators != ""),
		slog.String("trusted_proxies", c.TrustedProxies))
}

// loadServeConfig reads the environment and validates the result, naming
// every problem at once.
func loadServeConfig() (ServeConfig, error) {
	c, errs := readServeConfig()
	return c, configProblems(append(errs, c.Validate())...)
}

// readServeConfig reads the environment; the errors are the values that do
// not parse (those fields keep their defaults).
func readServeConfig() (ServeConfig, []error) {
	var c ServeConfig
	errs := readEnv(&c)
	var secrets []string
	for _, s := range c.Secrets {
		if s = strings.TrimSpace(s); s != "" {
			secrets = append(secrets, s)
		}
	}
	c.Secrets = secrets
	return c, errs
}

// Validate names every problem.
func (c ServeConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("SERVE_ADDR: want host:port or :port"))
	}
	if c.PublicURL != "" {
		if err := checkWebhookURL(c.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("WEBHOOK_PUBLIC_URL: %v", err))
		}
		if len(c.Secrets) == 0 {
			errs = append(errs, errors.New("WEBHOOK_SECRETS: required with WEBHOOK_PUBLIC_URL (the API signs deliveries with it)"))
		}
	}
	if c.EndpointID != "" && len(c.Secrets) == 0 {
		errs = append(errs, errors.New("WEBHOOK_SECRETS: required with WEBHOOK_ENDPOINT_ID (the endpoint's secret verifies its deliveries)"))
	}
	for i, s := range c.Secrets {
		if len(s) < 16 {
			errs = append(errs, fmt.Errorf("WEBHOOK_SECRETS: secret %d is shorter than 16 characters", i+1))
		}
	}
	if _, err := ratelimit.ParseLimit(c.CreateRate); err != nil {
		errs = append(errs, fmt.Errorf("API_CREATE_RATE: %v", err))
	}
	if _, err := ratelimit.ParseLimit(c.ReadRate); err != nil {
		errs = append(errs, fmt.Errorf("API_READ_RATE: %v", err))
	}
	if _, err := server.ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if _, err := server.NewAuth(c.APITokens, c.Operators); err != nil {
		errs = append(errs, err)
	}
	if c.Tolerance < time.Second || c.Tolerance > time.Hour {
		errs = append(errs, errors.New("WEBHOOK_TOLERANCE: want between 1s and 1h"))
	}
	return errors.Join(errs...)
}

// checkWebhookURL applies the API's rules: https, or http for localhost,
// 127.0.0.1 and [::1] (local development).
func checkWebhookURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		switch u.Hostname() {
		case "localhost", "127.0.0.1", "::1":
			return nil
		}
		return errors.New("http is allowed only for localhost, 127.0.0.1 and [::1]; use https")
	}
	return errors.New("want https")
}

// Subscription is the webhook each new job subscribes, or nil when
// webhooks are off.
func (c ServeConfig) Subscription() *apiclient.WebhookSubscription {
	if (c.PublicURL == "" && c.EndpointID == "") || len(c.Secrets) == 0 {
		return nil
	}
	events := []string{"video.completed", "video.failed", "video.cancelled", "video.expired"}
	if c.Progress {
		events = append(events, "video.progress")
	}
	if c.EndpointID != "" {
		return &apiclient.WebhookSubscription{EndpointID: c.EndpointID, Events: events}
	}
	return &apiclient.WebhookSubscription{URL: c.PublicURL, Events: events, Secret: c.Secrets[0]}
}

// limiter is the fleet-wide API limiter of the configured budgets. Pauses
// after a 429 apply even when no budget is set.
func (c ServeConfig) limiter(rdb redis.UniversalClient, prefix string) *ratelimit.Limiter {
	create, _ := ratelimit.ParseLimit(c.CreateRate)
	read, _ := ratelimit.ParseLimit(c.ReadRate)
	return ratelimit.New(rdb, prefix, map[string]ratelimit.Limit{apiclient.ClassCreate: create, apiclient.ClassRead: read})
}
