// Package server is the project's HTTP server: the webhook receiver, the
// health checks, the job API and the operator pages (the job dashboard at
// / and the asynq web UI at /monitoring/). It wraps every route with panic
// recovery and one access-log line per request; query strings are never
// logged.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
)

// Deps are what the server serves.
type Deps struct {
	Redis redis.UniversalClient
	Store storage.Store
	// Webhooks is the receiver; nil when webhooks are not configured (the
	// route then answers 404).
	Webhooks http.Handler
	// Metrics, when set, is served at /metrics (viewer credentials or an
	// API token).
	Metrics *metrics.Metrics
	// Producer backs the job API; nil leaves it out.
	Producer *tasks.Client
	// Auth guards everything but health checks and webhooks; required
	// when Producer is set.
	Auth *Auth
	// Jobs reads the job records for the dashboard, which is served at /
	// (with a page per job at /jobs/{id}) whenever Producer is set; nil
	// means jobs.NewStore(Redis, "") (the default key prefix).
	Jobs *jobs.Store
	// Monitoring mounts the asynq web UI (asynqmon) at /monitoring/ for
	// viewers (read-only) and operators. It uses the Redis client above
	// and opens no connection of its own.
	Monitoring bool
	// Tenancy, when set, shows a table per tenant on the dashboard
	// (waiting, admitted, limit, finished today, spend).
	Tenancy *jobs.Tenancy
	// Budgets, when set, shows each budget's use on the dashboard.
	Budgets *jobs.Budgeter
	Logger  *slog.Logger
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client (for the access log and login throttling); from any
	// other peer the header is ignored.
	TrustedProxies []netip.Prefix
	// Throttle limits failed logins; nil means one with the default
	// ThrottlePolicy, in this process's memory.
	Throttle *LoginThrottle
	// Clock is the server's clock (tests); nil means time.Now. It decides
	// how long /readyz answers from its last probe (ReadyCacheFor) and
	// drives the default Throttle.
	Clock func() time.Time
}

// New returns the server's handler.
func New(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	if d.Webhooks != nil {
		mux.Handle(webhook.Path, d.Webhooks)
	}
	if d.Auth == nil {
		d.Auth = &Auth{}
	}
	if d.Throttle == nil {
		d.Throttle = NewLoginThrottle(ThrottlePolicy{}, d.Clock)
	}
	d.Auth = d.Auth.bound(d.Throttle, d.Logger)
	// Browsers send a logged-in operator's Basic credentials with any
	// request to this host, also one a foreign page makes them send:
	// cross-origin writes are refused everywhere but at the webhooks.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(csrfRefused))
	if d.Producer != nil {
		if d.Jobs == nil {
			d.Jobs = jobs.NewStore(d.Redis, "")
		}
		api := &jobsAPI{producer: d.Producer}
		if d.Jobs.Retention() > 0 {
			api.archive = d.Store // forgotten jobs are looked up in it
		}
		api.routes(mux, func(h http.Handler) http.Handler { return csrf.Handler(d.Auth.requireRead(h)) })
		(&pages{producer: d.Producer, jobs: d.Jobs, store: d.Store, monitoring: d.Monitoring, log: d.Logger, budgets: d.Budgets, tenancy: d.Tenancy}).routes(mux, d.Auth, csrf.Handler)
	}
	if d.Monitoring {
		mux.Handle(MonitoringPath+"/", csrf.Handler(d.Auth.requireRead(newMonitoring(d.Redis))))
	}
	if d.Metrics != nil {
		mux.Handle("GET /metrics", d.Auth.require(RoleViewer, d.Metrics.Handler()))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	now := d.Clock
	if now == nil {
		now = time.Now
	}
	probe := &readiness{d: d, now: now}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		checks, ok := probe.get(r.Context())
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"ready": ok, "checks": checks})
	})
	return accessLog(d.Logger, d.TrustedProxies, recoverer(d.Logger, mux))
}

// ready checks that Redis answers and storage takes a write. /readyz
// calls it through readiness, at most once per ReadyCacheFor.
func ready(ctx context.Context, d Deps) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	checks := map[string]string{}
	ok := true
	if err := d.Redis.Ping(ctx).Err(); err != nil {
		checks["redis"] = "unreachable"
		ok = false
	} else {
		checks["redis"] = "ok"
	}
	if d.Store != nil {
		key := fmt.Sprintf("_readyz/probe-%d", time.Now().UnixNano())
		if _, err := d.Store.Put(ctx, key, bytes.NewReader(nil), storage.PutOptions{Size: 0}); err != nil {
			checks["storage"] = "not writable"
			ok = false
		} else {
			_ = d.Store.Delete(ctx, key)
			checks["storage"] = "ok"
		}
	}
	return checks, ok
}

// NewHTTPServer returns an http.Server for h with the project's timeouts.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// accessLog writes one line per request: method, path (no query), status,
// bytes, duration, the client's address (X-Forwarded-For only from a
// trusted proxy) and the user (the name logged in, or tried). Health
// checks and refused webhook requests are logged at debug level only.
func accessLog(log *slog.Logger, trusted []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		ri := &reqInfo{client: clientAddr(r, trusted)}
		next.ServeHTTP(rec, r.WithContext(withReqInfo(r.Context(), ri)))
		level := slog.LevelInfo
		switch {
		case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
			level = slog.LevelDebug
		case r.URL.Path == webhook.Path && rec.status >= 400 && rec.status < 500:
			level = slog.LevelDebug // the receiver logs its rejections, sampled
		}
		log.Log(r.Context(), level, "http", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"bytes", rec.bytes, "duration", time.Since(start).Round(time.Microsecond), "client", ri.client.String(), "user", ri.user)
	})
}

// recoverer turns a panic into a 500 and a log line.
func recoverer(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.ErrorContext(r.Context(), "panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeJSON(w, http.StatusInternalServerError, map[string]string{"status": "error", "reason": "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
