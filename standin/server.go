package standin

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Endpoint names used by [Faults.Endpoints], [Stats.Calls] and logs.
const (
	EndpointCreate      = "create"
	EndpointList        = "list"
	EndpointModels      = "models"
	EndpointGet         = "get"
	EndpointContent     = "content"
	EndpointDownloadURL = "download_url"
	EndpointDelete      = "delete"
	EndpointCancel      = "cancel"
)

// Fault kinds counted in [Stats.Faults].
const (
	FaultServerError = "5xx"
	FaultRateLimit   = "429"
	FaultDrop        = "drop"
	FaultTruncate    = "truncate"
)

const (
	defaultContentSize = 64 << 10
	defaultRetryAfter  = time.Second
	maxBodyBytes       = 16 << 20 // reference section 9
)

// Errors returned by the control methods.
var (
	// ErrNotFound means no job has the given id.
	ErrNotFound = errors.New("standin: video not found")
	// ErrTerminal means the job already reached a terminal status (or was
	// deleted) and cannot be forced to another one.
	ErrTerminal = errors.New("standin: video already terminal")
	// ErrBadIndex means the output index is outside 0..sample_count-1.
	ErrBadIndex = errors.New("standin: output index out of range")
)

// Config configures a [Server]. The zero value is usable: any non-empty
// bearer, jobs that complete at once, 64 KiB outputs, no faults, real time.
type Config struct {
	// PricePerSecond overrides the list price (USD per second of video,
	// per sample) of the models it names; a job's billing estimate and
	// settled cost follow it.
	PricePerSecond map[string]float64
	// ModelPricing replaces the pricing object that GET /v1/videos/models
	// gives for the models it names by this raw JSON (the reference does
	// not document its shape: a client can be tested against others). It
	// does not change what a job is billed.
	ModelPricing map[string]string
	// APIKey is the bearer token required on every call except signed
	// content links. Empty means any non-empty bearer is accepted.
	APIKey string
	// QueuedFor is how long a new job reports "queued".
	QueuedFor time.Duration
	// ProcessingFor is how long a job then reports "processing" before it
	// reaches its terminal status.
	ProcessingFor time.Duration
	// PollAfterSeconds is the poll_after_seconds value in video objects
	// (the real gateway sends 20). 0 omits the field.
	PollAfterSeconds int
	// ContentSize is the size in bytes of each output; 0 (or less) means
	// 64 KiB. Hashing an output costs about as much as serving it; the
	// server hashes output 0 once per completed job for asset.sha256.
	ContentSize int64
	// FailRate is the fraction of jobs whose terminal status is "failed"
	// (error message set, billing void). Clamped to 0..1.
	FailRate float64
	// ExpireRate is the fraction of jobs whose terminal status is "expired".
	// Clamped so that FailRate+ExpireRate <= 1.
	ExpireRate float64
	// Seed makes outputs and outcome draws deterministic: both derive from
	// Seed and the video id. It also seeds the fault draws.
	Seed int64
	// Faults is the initial fault injection; see [Server.SetFaults].
	Faults Faults
	// Now is the clock; nil means time.Now. Job schedules, signed-link
	// expiry and webhook timestamps and retry times use it. Injected
	// latency and webhook timeouts use real time.
	Now func() time.Time

	// HeaderPrefix prefixes the webhook headers: [HeaderPrefixAIStats]
	// ("x-ai-stats-", the default) or [HeaderPrefixPhaseo] ("x-phaseo-"),
	// which also makes the User-Agent Phaseo-Async-Webhook/1.0 instead of
	// AI-Stats-Async-Webhook/1.0.
	HeaderPrefix string
	// WebhookTimeScale multiplies the webhook retry delays (1, 5 and 15
	// minutes) and the 30 s delivery timeout, which stays at least 1 s;
	// tests use e.g. 0.001. 0 or less means 1.
	WebhookTimeScale float64
	// WebhookFaults is the initial webhook fault injection; see
	// [Server.SetWebhookFaults].
	WebhookFaults WebhookFaults
	// WebhookRevision is the create's webhook contract:
	// [WebhookRevisionInline] ("" or "inline": {url, events, secret}) or
	// [WebhookRevisionEndpoint] ("endpoint": the newest source's
	// {endpoint_id, events}, refusing an inline url or secret with a 400
	// validation_error on the webhook field).
	WebhookRevision string
	// WebhookEndpoints are the workspace's webhook endpoints by id, for
	// the endpoint revision: deliveries go to the endpoint's URL, signed
	// with its secret.
	WebhookEndpoints map[string]WebhookEndpoint
	// WebhookTransport sends the webhook requests, e.g. the client
	// transport of an httptest TLS server; nil means the server's own.
	// Redirects are never followed either way.
	WebhookTransport http.RoundTripper
}

// The webhook revisions of Config.WebhookRevision.
const (
	WebhookRevisionInline   = "inline"
	WebhookRevisionEndpoint = "endpoint"
)

// WebhookEndpoint is a workspace-managed webhook endpoint (the API's Beta
// Webhook Endpoints): where its deliveries go and the secret signing them.
type WebhookEndpoint struct {
	URL    string
	Secret string
}

// Faults injects failures. Each rate is a probability per request in 0..1,
// drawn from a PRNG seeded by [Config.Seed]. At most one of 5xx, 429 and drop
// (tried in that order) applies to a request; truncate applies only to a
// successful content response that is not dropped.
type Faults struct {
	// ServerErrorRate answers 500, 502 or 503 with the documented JSON error
	// body before doing anything: no job is created.
	ServerErrorRate float64
	// RateLimitRate answers 429 key_limit_exceeded with a Retry-After header
	// before doing anything.
	RateLimitRate float64
	// RetryAfter is the Retry-After value, rounded up to whole seconds, at
	// least 1; 0 means 1s.
	RetryAfter time.Duration
	// Latency is added before handling each request. A request whose
	// context ends meanwhile gets no answer.
	Latency time.Duration
	// DropRate handles the request fully (a create does create the job),
	// then closes the connection without writing any response.
	DropRate float64
	// TruncateRate (content only) sends the full Content-Length header but
	// only the first half of the body, then closes the connection.
	TruncateRate float64
	// Endpoints limits all of the above to these endpoints (the Endpoint*
	// constants: "create", "get", "list", "content", "download_url",
	// "delete", "models", "cancel"). Empty means all endpoints. Unknown
	// names match nothing.
	Endpoints []string
}

// Stats is a snapshot of the server's counters. Maps are never nil.
type Stats struct {
	// CreateCalls counts POST /v1/videos requests received, including
	// faulted, invalid and unauthorised ones.
	CreateCalls int
	// JobsCreated counts jobs actually created.
	JobsCreated int
	// JobsByIdempotencyKey counts created jobs per Idempotency-Key header
	// value ("" for none). The header is recorded, not honoured.
	JobsByIdempotencyKey map[string]int
	// JobsByPrompt counts created jobs per prompt.
	JobsByPrompt map[string]int
	// Calls counts requests per endpoint name (the Endpoint* constants).
	// Requests for unknown routes or with a wrong method are not counted.
	Calls map[string]int
	// Faults counts injected faults by kind (the Fault* constants).
	Faults map[string]int
	// BytesServed counts content bytes written to clients (partial bodies
	// of truncated responses included, dropped responses excluded).
	BytesServed int64
	// Webhooks counts webhook events and delivery attempts.
	Webhooks WebhookStats
}

func (st Stats) clone() Stats {
	st.Webhooks = st.Webhooks.clone()
	st.JobsByIdempotencyKey = maps.Clone(st.JobsByIdempotencyKey)
	st.JobsByPrompt = maps.Clone(st.JobsByPrompt)
	st.Calls = maps.Clone(st.Calls)
	st.Faults = maps.Clone(st.Faults)
	return st
}

// JobInfo describes a job for tests; see [Server.Job].
type JobInfo struct {
	ID             string
	Model          string
	Prompt         string
	IdempotencyKey string // the Idempotency-Key header of the create, "" if none
	Status         string // status now, as GET /v1/videos/{id} would report it
	CreatedAt      time.Time
	CompletedAt    time.Time // when the job reached its terminal status; zero while it has not
	Outputs        int       // sample_count
	Deleted        bool      // DELETE succeeded; the API now answers 404 video_deleted
}

// Server is the stand-in API. Create it with [New]; it is safe for
// concurrent use. It starts goroutines only in [Server.Start] (webhook
// delivery); [Server.Close] stops them.
type Server struct {
	cfg         Config
	log         *slog.Logger
	now         func() time.Time
	signKey     []byte // HMAC key for signed links, random per server
	workspaceID string
	// endpoints are Config.WebhookEndpoints in the endpoint webhook
	// revision (never nil then), nil in the inline one.
	endpoints map[string]WebhookEndpoint

	faultMu     sync.Mutex
	faults      Faults
	faultScope  map[string]bool // nil: every endpoint
	faultRNG    *rand.Rand
	faultsEmpty bool // fast path: nothing to inject
	whFaults    WebhookFaults

	hookClient   *http.Client
	ownTransport *http.Transport // nil when Config.WebhookTransport is set
	hookTimeout  time.Duration
	userAgent    string
	wake         chan struct{} // wakes the delivery loop; capacity 1
	runMu        sync.Mutex
	run          *runner // nil unless started

	mu        sync.Mutex
	jobs      []*job // creation order
	byID      map[string]*job
	held      bool
	holdSince time.Time
	stats     Stats
	hooks     hookSched
}

// New returns a server for cfg. logger receives debug records of created
// jobs and injected faults; nil discards them.
func New(cfg Config, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ContentSize <= 0 {
		cfg.ContentSize = defaultContentSize
	}
	cfg.QueuedFor = max(cfg.QueuedFor, 0)
	cfg.ProcessingFor = max(cfg.ProcessingFor, 0)
	cfg.PollAfterSeconds = max(cfg.PollAfterSeconds, 0)
	cfg.FailRate = clamp01(cfg.FailRate)
	cfg.ExpireRate = min(clamp01(cfg.ExpireRate), 1-cfg.FailRate)
	if cfg.HeaderPrefix == "" {
		cfg.HeaderPrefix = HeaderPrefixAIStats
	}
	if !(cfg.WebhookTimeScale > 0) || math.IsInf(cfg.WebhookTimeScale, 0) {
		cfg.WebhookTimeScale = 1
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	key := make([]byte, 32)
	_, _ = crand.Read(key) // never fails (crypto/rand documents it)
	s := &Server{
		cfg:         cfg,
		log:         logger,
		now:         now,
		signKey:     key,
		workspaceID: "ws_standin",
		endpoints:   webhookEndpoints(cfg),
		faultRNG:    rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5eed_fa17)),
		byID:        make(map[string]*job),
		stats: Stats{
			JobsByIdempotencyKey: map[string]int{},
			JobsByPrompt:         map[string]int{},
			Calls:                map[string]int{},
			Faults:               map[string]int{},
			Webhooks:             WebhookStats{Events: map[string]int{}, DeliveredEvents: map[string]int{}},
		},
		userAgent: "AI-Stats-Async-Webhook/1.0",
		wake:      make(chan struct{}, 1),
	}
	if strings.EqualFold(cfg.HeaderPrefix, HeaderPrefixPhaseo) {
		s.userAgent = "Phaseo-Async-Webhook/1.0"
	}
	s.hookTimeout = max(time.Duration(float64(webhookTimeout)*cfg.WebhookTimeScale), webhookMinTimeout)
	s.hookClient, s.ownTransport = newHookClient(cfg.WebhookTransport)
	s.SetFaults(cfg.Faults)
	s.SetWebhookFaults(cfg.WebhookFaults)
	return s
}

// webhookEndpoints returns the endpoints of the endpoint revision (a
// non-nil map), or nil for the inline revision.
func webhookEndpoints(cfg Config) map[string]WebhookEndpoint {
	if cfg.WebhookRevision != WebhookRevisionEndpoint {
		return nil
	}
	eps := maps.Clone(cfg.WebhookEndpoints)
	if eps == nil {
		eps = map[string]WebhookEndpoint{}
	}
	return eps
}

func clamp01(f float64) float64 {
	if !(f > 0) { // also NaN
		return 0
	}
	return min(f, 1)
}

// SetFaults replaces the fault injection; safe to call while serving.
// Requests already past their fault draw are not affected.
func (s *Server) SetFaults(f Faults) {
	f.ServerErrorRate = clamp01(f.ServerErrorRate)
	f.RateLimitRate = clamp01(f.RateLimitRate)
	f.DropRate = clamp01(f.DropRate)
	f.TruncateRate = clamp01(f.TruncateRate)
	if f.RetryAfter <= 0 {
		f.RetryAfter = defaultRetryAfter
	}
	f.Latency = max(f.Latency, 0)
	var scope map[string]bool
	if len(f.Endpoints) > 0 {
		scope = make(map[string]bool, len(f.Endpoints))
		for _, e := range f.Endpoints {
			scope[e] = true
		}
		f.Endpoints = append([]string(nil), f.Endpoints...)
	}
	empty := f.ServerErrorRate == 0 && f.RateLimitRate == 0 && f.DropRate == 0 &&
		f.TruncateRate == 0 && f.Latency == 0
	s.faultMu.Lock()
	s.faults, s.faultScope, s.faultsEmpty = f, scope, empty
	s.faultMu.Unlock()
}

// SetWebhookFaults replaces the webhook fault injection; safe to call while
// delivering. Attempts already past their draw are not affected.
func (s *Server) SetWebhookFaults(f WebhookFaults) {
	f = f.normalize()
	s.faultMu.Lock()
	s.whFaults = f
	s.faultMu.Unlock()
}

// Stats returns a deep copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.clone()
}

// Complete forces job id to "completed" now, whatever its schedule and any
// hold; a started server sends its webhook events at once. It returns nil
// if the job is already completed, an error wrapping [ErrNotFound] for an
// unknown id, and one wrapping [ErrTerminal] for a job that is failed,
// expired or deleted.
func (s *Server) Complete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.byID[id]
	if j == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if j.deleted {
		return fmt.Errorf("%w: %s was deleted", ErrTerminal, id)
	}
	now := s.now()
	st, _ := s.statusLocked(j, now)
	switch {
	case st == statusCompleted:
		return nil
	case st.terminal():
		return fmt.Errorf("%w: %s is %s", ErrTerminal, id, st)
	}
	if now.Before(j.startAt) {
		j.startAt = now
	}
	j.endAt, j.outcome, j.forced = now, statusCompleted, true
	if j.hook != nil {
		s.rearmLocked(j.hook, now)
		s.wakeLoop()
	}
	return nil
}

// Hold(true) stops jobs from reaching a terminal status: queued jobs still
// move to "processing" on schedule, but every job that was not terminal when
// the hold began (or that is created during it) then stays "processing",
// progress frozen. Hold(false) releases: each held job needs, counted from
// the release, the processing time it had left when the hold caught it, so
// nothing becomes terminal at the instant of release unless its processing
// time is zero. Jobs forced with [Server.Complete] ignore the hold. Calls
// that do not change the state are no-ops; release costs one pass over all
// jobs. Webhook events follow the same schedule: none for a held job until
// it moves again.
func (s *Server) Hold(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	switch {
	case hold && !s.held:
		s.held, s.holdSince = true, now
	case !hold && s.held:
		for _, j := range s.jobs {
			if j.hook != nil && j.hook.index < 0 {
				s.rearmLocked(j.hook, now) // frozen by the hold: look again
			}
			if j.forced || !j.endAt.After(s.holdSince) || j.startAt.After(now) {
				continue // not held: finished before, forced, or not yet started
			}
			j.endAt = now.Add(j.endAt.Sub(later(s.holdSince, j.startAt)))
		}
		s.held = false
		s.wakeLoop()
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// statusLocked derives a job's status and progress (0..100) at now.
func (s *Server) statusLocked(j *job, now time.Time) (status, int) {
	if now.Before(j.startAt) {
		return statusQueued, 0
	}
	heldNow := s.held && !j.forced && j.endAt.After(s.holdSince)
	if !heldNow && !now.Before(j.endAt) {
		if j.outcome == statusCompleted {
			return statusCompleted, 100
		}
		return j.outcome, 0
	}
	// Processing: progress is the share of ProcessingFor already spent,
	// frozen while held.
	ref := now
	if heldNow {
		ref = later(s.holdSince, j.startAt)
	}
	p := s.cfg.ProcessingFor
	if p <= 0 {
		return statusProcessing, 0
	}
	done := p - j.endAt.Sub(ref)
	return statusProcessing, int(min(max(done*100/p, 0), 99))
}

// ContentSHA256 returns the hex sha256 of output index of job id: the bytes
// GET /v1/videos/{id}/content?index=index serves once the job is completed.
// It works in any status (the bytes are fixed at creation) and errors with
// [ErrNotFound] or [ErrBadIndex].
func (s *Server) ContentSHA256(id string, index int) (string, error) {
	s.mu.Lock()
	j := s.byID[id]
	var outputs int
	var cached [32]byte
	var hasCached bool
	if j != nil {
		outputs, cached, hasCached = int(j.outputs), j.sha, j.hasSHA
	}
	s.mu.Unlock()
	switch {
	case j == nil:
		return "", fmt.Errorf("%w: %s", ErrNotFound, id)
	case index < 0 || index >= outputs:
		return "", fmt.Errorf("%w: %d (video %s has %d)", ErrBadIndex, index, id, outputs)
	case index == 0 && hasCached:
		return fmt.Sprintf("%x", cached), nil
	}
	return fmt.Sprintf("%x", contentSHA256(s.cfg.Seed, id, index, s.cfg.ContentSize)), nil
}

// Job reports job id as it stands now; false if no job has that id
// (deleted jobs are still reported, with Deleted set).
func (s *Server) Job(id string) (JobInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.byID[id]
	if j == nil {
		return JobInfo{}, false
	}
	st, _ := s.statusLocked(j, s.now())
	var completedAt time.Time
	if st.terminal() {
		completedAt = j.endAt
	}
	return JobInfo{
		ID:             j.id,
		Model:          j.model,
		Prompt:         j.prompt,
		IdempotencyKey: j.idemKey,
		Status:         st.String(),
		CreatedAt:      j.createdAt,
		CompletedAt:    completedAt,
		Outputs:        int(j.outputs),
		Deleted:        j.deleted,
	}, true
}

// call is one routed request.
type call struct {
	endpoint string
	id       string // video id from the path, if any
	base     string // scheme://host of the request, for absolute URLs
	truncate bool   // content: cut the body (fault)
	dropped  bool   // the response goes nowhere (fault)
	link     *linkToken
}

// ServeHTTP serves the API under /v1/videos. Order per request: route (404
// or 405 with an Allow header), count, injected latency, injected 5xx/429,
// authentication (signed content links need no bearer), the handler, then a
// dropped connection if drawn.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, allow := route(r.Method, r.URL.Path)
	switch {
	case c == nil:
		writeError(w, &apiError{status: http.StatusNotFound, code: "not_found", reason: "route_not_found",
			description: "no such route: " + r.URL.Path})
		return
	case c.endpoint == "":
		w.Header().Set("Allow", allow)
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed",
			reason: "method_not_allowed", description: r.Method + " is not allowed here; allowed: " + allow})
		return
	}
	s.mu.Lock()
	s.stats.Calls[c.endpoint]++
	if c.endpoint == EndpointCreate {
		s.stats.CreateCalls++
	}
	s.mu.Unlock()

	plan := s.planFaults(c.endpoint)
	if plan.latency > 0 {
		// net/http notices a client hang-up (and cancels the context)
		// only once the request body is consumed, so read it first.
		bufferBody(r)
		if !sleepCtx(r, plan.latency) {
			return
		}
	}
	if plan.answer(s, w, c) {
		return
	}
	c.base = baseURL(r)
	c.truncate = plan.truncate
	if plan.drop {
		c.dropped = true
		s.dispatch(newDiscardWriter(), r, c)
		s.countFault(FaultDrop, c)
		abortConnection(w)
		return
	}
	s.dispatch(w, r, c)
}

func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, c *call) {
	if c.endpoint == EndpointContent {
		c.link = s.verifyLink(r.URL.Query(), c.id)
	}
	if c.link == nil {
		if e := s.authenticate(r); e != nil {
			writeError(w, e)
			return
		}
	}
	switch c.endpoint {
	case EndpointCreate:
		s.handleCreate(w, r, c)
	case EndpointList:
		s.handleList(w, r, c)
	case EndpointModels:
		s.handleModels(w, r)
	case EndpointGet:
		s.handleGet(w, c)
	case EndpointContent:
		s.handleContent(w, r, c)
	case EndpointDownloadURL:
		s.handleDownloadURL(w, r, c)
	case EndpointDelete:
		s.handleDelete(w, c)
	case EndpointCancel:
		s.handleCancel(w, c)
	}
}

// route maps a method and path to an endpoint. It returns nil for an unknown
// path, and a call with an empty endpoint plus the Allow value for a known
// path with a wrong method.
func route(method, path string) (*call, string) {
	rest, ok := strings.CutPrefix(path, "/v1/videos")
	if !ok {
		return nil, ""
	}
	var id, sub string
	switch {
	case rest == "":
	case rest == "/models":
		sub = "models"
	case strings.HasPrefix(rest, "/"):
		id, sub, _ = strings.Cut(rest[1:], "/")
		if id == "" || strings.Contains(sub, "/") || (sub == "" && strings.HasSuffix(rest, "/")) {
			return nil, ""
		}
		sub = strings.TrimSuffix("{id}/"+sub, "/")
	default:
		return nil, ""
	}
	rt, ok := routes[sub]
	if !ok {
		return nil, ""
	}
	return &call{endpoint: rt.byMethod[method], id: id}, rt.allow
}

// routes maps the path shape after /v1/videos/ ("" for the collection,
// "{id}" for one video, "{id}/content", ...) to its endpoints by method.
var routes = map[string]struct {
	byMethod map[string]string
	allow    string
}{
	"":                  {map[string]string{http.MethodGet: EndpointList, http.MethodPost: EndpointCreate}, "GET, POST"},
	"models":            {map[string]string{http.MethodGet: EndpointModels}, "GET"},
	"{id}":              {map[string]string{http.MethodGet: EndpointGet, http.MethodDelete: EndpointDelete}, "DELETE, GET"},
	"{id}/content":      {map[string]string{http.MethodGet: EndpointContent}, "GET"},
	"{id}/download_url": {map[string]string{http.MethodPost: EndpointDownloadURL}, "POST"},
	"{id}/cancel":       {map[string]string{http.MethodPost: EndpointCancel}, "POST"},
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// authenticate checks the bearer token. The key is never echoed.
func (s *Server) authenticate(r *http.Request) *apiError {
	unauthorised := func(reason, desc string) *apiError {
		return &apiError{status: http.StatusUnauthorized, code: "unauthorised", reason: reason, description: desc}
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return unauthorised("missing_api_key", "Authorization header with a bearer API key is required")
	}
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return unauthorised("malformed_authorization_header", "Authorization header must be 'Bearer <key>'")
	}
	if s.cfg.APIKey != "" && !constantTimeEqual(token, s.cfg.APIKey) {
		return unauthorised("invalid_api_key", "API key is invalid")
	}
	return nil
}
