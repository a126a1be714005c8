package server

import (
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
)

// MonitoringPath is where the asynq web UI (asynqmon) is mounted.
const MonitoringPath = "/monitoring"

// monitoringCSP lets asynqmon's single-page app run: its inline bootstrap
// scripts, its inline styles, XHR to its own API, and the web fonts its page
// links from Google (offline the UI falls back to local fonts).
const monitoringCSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; " +
	"style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src 'self' data: https://fonts.gstatic.com; " +
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

// sharedRedis hands asynqmon (and the asynq Inspector it builds) the
// server's own Redis client instead of a connection option from which it
// would open a pool of its own. asynqmon's Close would close that client:
// it is never called; the client stays the caller's of New.
type sharedRedis struct{ rdb redis.UniversalClient }

// MakeRedisClient implements asynq.RedisConnOpt.
func (s sharedRedis) MakeRedisClient() any { return s.rdb }

// monitoring serves asynqmon at MonitoringPath: a read-only instance to
// viewers (the UI hides its buttons and its API refuses every method but
// GET) and a full one to operators. Auth has already refused viewers'
// writes with 403 before either instance sees them.
type monitoring struct {
	readOnly, full http.Handler
}

func newMonitoring(rdb redis.UniversalClient) *monitoring {
	ui := func(readOnly bool) http.Handler {
		return asynqmon.New(asynqmon.Options{RootPath: MonitoringPath, RedisConnOpt: sharedRedis{rdb}, ReadOnly: readOnly})
	}
	return &monitoring{readOnly: ui(true), full: ui(false)}
}

func (m *monitoring) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", monitoringCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	// asynqmon sniffs the type of its static files (an SVG comes out as
	// text/xml); name it from the extension first. asynqmon adds its own
	// value after ours, and the first one counts. Its API answers are left
	// alone: sniffed as text/plain, which nothing executes.
	if ext := path.Ext(r.URL.Path); ext != "" && !strings.HasPrefix(r.URL.Path, MonitoringPath+"/api/") {
		if t := mime.TypeByExtension(ext); t != "" {
			h.Set("Content-Type", t)
		}
	}
	if roleOf(r.Context()) >= RoleOperator {
		m.full.ServeHTTP(w, r)
		return
	}
	m.readOnly.ServeHTTP(w, r)
}
