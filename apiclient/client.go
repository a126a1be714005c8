package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/internal/tracing"
)

// DefaultBaseURL is the public API's base URL.
const DefaultBaseURL = "https://api.phaseo.app/v1"

// Config configures a Client. Only APIKey is required.
type Config struct {
	// BaseURL is the API root including /v1; DefaultBaseURL when empty.
	BaseURL string
	// APIKey is sent as a bearer token. It never appears in errors or logs.
	APIKey string
	// AllowInsecureHTTP lets BaseURL be plain http to a host that is not a
	// loopback one, for a trusted network: the API key then crosses it in
	// clear. Without it New refuses such a URL (see PlainHTTPToRemote).
	AllowInsecureHTTP bool
	// Secrets are other secrets the API may see and quote back, such as
	// the webhook signing secrets sent with each create: like the API key,
	// each is replaced by "[redacted]" in everything the client builds from
	// the API's answers (error bodies, a failed video's error), so an
	// answer that echoes the request cannot carry one into a job's error,
	// its history or the logs.
	Secrets []string
	// Timeout bounds each call; for Content it bounds the wait for the
	// response headers. Default 30 s.
	Timeout time.Duration
	// ContentIdleTimeout aborts a content stream that delivers no byte for
	// this long. Default 60 s.
	ContentIdleTimeout time.Duration
	// ReadRetries is how many times an idempotent read (get, list,
	// download_url, content headers) is retried on a retryable failure
	// before the error is returned. Default 2; negative disables.
	ReadRetries int
	// MaxRetryWait is the longest Retry-After the client waits out itself;
	// a longer one is returned to the caller to schedule. Default 2 s.
	MaxRetryWait time.Duration
	// HTTPClient is the transport; a client with sane pooling when nil.
	// Its Timeout should be zero: the per-call timeouts above apply.
	HTTPClient *http.Client
	// UserAgent is sent with every call.
	UserAgent string
	// Logger receives debug lines about retries; discarded when nil.
	Logger *slog.Logger
	// Limiter, when set, paces every HTTP attempt fleet-wide and is told
	// of every 429, so that one rate-limit answer pauses that class of call
	// for every worker.
	Limiter Limiter
	// MaxLimiterWait is the longest the client waits for the Limiter before
	// it gives up with a 429-like *APIError (Code "fleet_rate_limited")
	// carrying the wait as RetryAfter. Default 1 s.
	MaxLimiterWait time.Duration
}

// Call classes for a Limiter: creates are budgeted apart from reads.
const (
	ClassCreate = "create"
	ClassRead   = "read"
)

// Limiter paces API calls, typically across a fleet of processes.
type Limiter interface {
	// Reserve takes a slot for one call of class. It returns 0 when the
	// call may go now, or how long until one may (nothing is taken then).
	Reserve(ctx context.Context, class string) (time.Duration, error)
	// Pause stops calls of class for d, for everyone sharing the limiter.
	Pause(ctx context.Context, class string, d time.Duration) error
}

// String keeps the API key out of formatted output.
func (c Config) String() string {
	return fmt.Sprintf("{BaseURL:%s APIKey:[redacted] Timeout:%s}", c.BaseURL, c.Timeout)
}

// GoString keeps the API key out of %#v output.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the API key out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", c.BaseURL), slog.Bool("api_key_set", c.APIKey != ""), slog.Duration("timeout", c.Timeout))
}

// Client calls the AI Stats video API. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	key     string
	secrets []string // masked in text from the API: the key and Config.Secrets, longest first
	hc      *http.Client
	cfg     Config
	log     *slog.Logger
	headers http.Header
}

// Timeout is the bound of each call (Config.Timeout, after defaults): a
// call that returns no answer within it has ended. A caller that must
// know how long a call may have been in flight, such as the worker when
// it reconciles a create cut short, reads it here, so there is one
// source of truth.
func (c *Client) Timeout() time.Duration { return c.cfg.Timeout }

// CloseIdleConnections closes the pooled connections that carry no
// request, among them any the transport dialed for a request that another
// connection served first. Call it when done with the client, so that a
// server shutting down gracefully does not wait on them.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// New returns a Client for cfg. It fails when BaseURL is not an absolute
// http(s) URL or APIKey is empty.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("apiclient: base URL %q must be an absolute http(s) URL", cfg.BaseURL)
	}
	if u.User != nil {
		return nil, errors.New("apiclient: base URL must not carry credentials")
	}
	if strings.TrimSpace(cfg.APIKey) == "" {
		return nil, errors.New("apiclient: API key is empty")
	}
	if PlainHTTPToRemote(u) && !cfg.AllowInsecureHTTP {
		return nil, fmt.Errorf("apiclient: base URL %q is plain http to a host that is not loopback: the API key would travel in clear; use https (or set AllowInsecureHTTP for a trusted network)", cfg.BaseURL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.ContentIdleTimeout <= 0 {
		cfg.ContentIdleTimeout = 60 * time.Second
	}
	if cfg.ReadRetries == 0 {
		cfg.ReadRetries = 2
	} else if cfg.ReadRetries < 0 {
		cfg.ReadRetries = 0
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = 2 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "videoworker/1"
	}
	if cfg.MaxLimiterWait <= 0 {
		cfg.MaxLimiterWait = time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 256
		tr.MaxIdleConnsPerHost = 128
		tr.ResponseHeaderTimeout = 0 // per-call contexts bound it
		hc = &http.Client{Transport: tr}
	}
	// Never follow redirects: the API does not redirect, and a redirect
	// could replay a create or send the bearer elsewhere.
	hcCopy := *hc
	hcCopy.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+cfg.APIKey)
	h.Set("User-Agent", cfg.UserAgent)
	h.Set("Accept", "application/json")
	return &Client{base: u, key: cfg.APIKey, secrets: maskList(cfg.APIKey, cfg.Secrets), hc: &hcCopy, cfg: cfg, log: log, headers: h}, nil
}

// PlainHTTPToRemote reports whether u is plain http to a host other than
// a loopback one ("localhost", "*.localhost", 127.0.0.0/8, ::1): the bearer
// key would cross a network unencrypted.
func PlainHTTPToRemote(u *url.URL) bool {
	if u.Scheme != "http" {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// String describes the client without its key.
func (c *Client) String() string { return "apiclient.Client{" + c.base.String() + "}" }

// GoString keeps the key out of %#v output.
func (c *Client) GoString() string { return c.String() }

// LogValue keeps the key out of logs.
func (c *Client) LogValue() slog.Value { return slog.StringValue(c.String()) }

// checkID refuses ids that would address another resource.
func checkID(op, id string) error {
	if id == "" || id == "." || id == ".." {
		return &APIError{Op: op, StatusCode: http.StatusBadRequest, Code: "validation_error", Description: fmt.Sprintf("invalid video id %q (checked before sending)", id)}
	}
	return nil
}

// BaseURL returns the API root the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// CreateOptions are per-call options of Create.
type CreateOptions struct {
	// IdempotencyKey is sent as the Idempotency-Key header. The API does
	// not document idempotency, so the key is a courtesy; the caller must
	// still never resubmit a create whose outcome is in doubt.
	IdempotencyKey string
}

// Create submits a job (POST /videos). It is never retried here: a failed
// create whose InDoubt(err) is true may have started a paid job.
func (c *Client) Create(ctx context.Context, req CreateRequest, opts CreateOptions) (_ *Video, err error) {
	ctx, sp := tracing.Child(ctx, "api.create", trace.SpanKindClient)
	defer func() { endSpan(sp, err) }()
	const op = "create video"
	if req.Model == "" || req.Prompt == "" {
		return nil, &APIError{Op: op, StatusCode: http.StatusBadRequest, Code: "validation_error", Description: "model and prompt are required (checked before sending)"}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", op, err)
	}
	var v Video
	h := http.Header{}
	if opts.IdempotencyKey != "" {
		h.Set("Idempotency-Key", opts.IdempotencyKey)
	}
	if err := c.call(ctx, op, http.MethodPost, "/videos", nil, body, h, false, &v); err != nil {
		return nil, err
	}
	if v.ID == "" {
		return nil, &TransportError{Op: op, Sent: true, Err: errors.New("answer carries no video id")}
	}
	c.maskVideo(&v)
	return &v, nil
}

// Get returns the job's current state (GET /videos/{id}).
func (c *Client) Get(ctx context.Context, id string) (_ *Video, err error) {
	ctx, sp := tracing.Child(ctx, "api.get", trace.SpanKindClient)
	defer func() { endSpan(sp, err) }()
	if err := checkID("get video", id); err != nil {
		return nil, err
	}
	var v Video
	if err := c.call(ctx, "get video "+id, http.MethodGet, "/videos/"+url.PathEscape(id), nil, nil, nil, true, &v); err != nil {
		return nil, err
	}
	c.maskVideo(&v)
	return &v, nil
}

// List returns one page of the caller's jobs, newest first unless
// p.Order is "asc" (GET /videos).
func (c *Client) List(ctx context.Context, p ListParams) (_ *VideoList, err error) {
	ctx, sp := tracing.Child(ctx, "api.list", trace.SpanKindClient)
	defer func() { endSpan(sp, err) }()
	q := url.Values{}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if len(p.Status) > 0 {
		s := make([]string, len(p.Status))
		for i, st := range p.Status {
			s[i] = string(st)
		}
		q.Set("status", strings.Join(s, ","))
	}
	if p.Order != "" {
		q.Set("order", p.Order)
	}
	if p.After != "" {
		q.Set("after", p.After)
	}
	var l VideoList
	var date string
	err = c.callRaw(ctx, "list videos", http.MethodGet, "/videos", q, nil, nil, true, func(resp *http.Response) error {
		date = resp.Header.Get("Date")
		return decodeJSON(resp.Body, &l)
	})
	if err != nil {
		return nil, err
	}
	if t, err := http.ParseTime(date); err == nil {
		l.ServerDate = t
	}
	for i := range l.Data {
		c.maskVideo(&l.Data[i])
	}
	return &l, nil
}

// DownloadURL mints a short-lived signed link (POST
// /videos/{id}/download_url).
func (c *Client) DownloadURL(ctx context.Context, id string, req DownloadURLRequest) (*DownloadLink, error) {
	if err := checkID("download_url", id); err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var l DownloadLink
	if err := c.call(ctx, "download_url "+id, http.MethodPost, "/videos/"+url.PathEscape(id)+"/download_url", nil, body, nil, true, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Delete tombstones a terminal job (DELETE /videos/{id}).
func (c *Client) Delete(ctx context.Context, id string) (*Deleted, error) {
	if err := checkID("delete video", id); err != nil {
		return nil, err
	}
	var d Deleted
	if err := c.call(ctx, "delete video "+id, http.MethodDelete, "/videos/"+url.PathEscape(id), nil, nil, nil, true, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Cancel asks the API to cancel a non-terminal job (POST
// /videos/{id}/cancel). The API currently answers 501 not_implemented_yet
// for every job; that comes back as a non-retryable *APIError.
func (c *Client) Cancel(ctx context.Context, id string) (_ *Video, err error) {
	ctx, sp := tracing.Child(ctx, "api.cancel", trace.SpanKindClient)
	defer func() { endSpan(sp, err) }()
	if err := checkID("cancel video", id); err != nil {
		return nil, err
	}
	var v Video
	if err := c.call(ctx, "cancel video "+id, http.MethodPost, "/videos/"+url.PathEscape(id)+"/cancel", nil, []byte("{}"), nil, false, &v); err != nil {
		return nil, err
	}
	c.maskVideo(&v)
	return &v, nil
}

// Content streams output index of a completed job (GET
// /videos/{id}/content). The body is not buffered: read it, then close it.
// The call's timeout bounds the wait for the headers; afterwards the stream
// lives as long as ctx, and aborts when no byte arrives for
// ContentIdleTimeout. A job that is not ready yet gives an *APIError whose
// NotReady is true.
func (c *Client) Content(ctx context.Context, id string, index int) (_ *Content, err error) {
	ctx, sp := tracing.Child(ctx, "api.content", trace.SpanKindClient)
	defer func() { endSpan(sp, err) }()
	if err := checkID("content", id); err != nil {
		return nil, err
	}
	op := "content " + id
	q := url.Values{}
	if index > 0 {
		q.Set("index", strconv.Itoa(index))
	}
	var out *Content
	err = c.retryReads(ctx, op, true, func() error {
		sctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(c.cfg.Timeout, cancel)
		resp, err := c.send(sctx, op, http.MethodGet, "/videos/"+url.PathEscape(id)+"/content", q, nil, nil, false)
		fired := !timer.Stop()
		if err != nil {
			cancel()
			if fired {
				return c.timeoutErr(op, err)
			}
			return err
		}
		if fired {
			resp.Body.Close()
			cancel()
			return &TransportError{Op: op, Sent: true, Timeout: true, Err: errors.New("timed out waiting for response headers")}
		}
		if resp.StatusCode/100 != 2 {
			defer cancel()
			// The header timer is stopped: bound reading the error body too.
			t := time.AfterFunc(c.cfg.Timeout, cancel)
			defer t.Stop()
			return c.errorFrom(op, resp)
		}
		out = &Content{
			Body:        newIdleReader(resp.Body, c.cfg.ContentIdleTimeout, cancel),
			ContentType: resp.Header.Get("Content-Type"),
			Length:      resp.ContentLength,
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// endSpan ends the span of an API call (tracing.Child: the zero Span when
// the caller is not traced), with the HTTP status of an error answer.
func endSpan(sp tracing.Span, err error) {
	if !sp.Recording() {
		return
	}
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode != 0 {
		sp.Int(tracing.AttrHTTPStatus, ae.StatusCode)
	}
	sp.End(err)
}

// call performs one JSON call and decodes a 2xx body into out.
func (c *Client) call(ctx context.Context, op, method, path string, q url.Values, body []byte, h http.Header, idempotent bool, out any) error {
	return c.callRaw(ctx, op, method, path, q, body, h, idempotent, func(resp *http.Response) error {
		return decodeJSON(resp.Body, out)
	})
}

// callRaw performs a call with a timeout, retrying idempotent ones.
func (c *Client) callRaw(ctx context.Context, op, method, path string, q url.Values, body []byte, h http.Header, idempotent bool, decode func(*http.Response) error) error {
	return c.retryReads(ctx, op, idempotent, func() error {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		resp, err := c.send(cctx, op, method, path, q, body, h, !idempotent)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return c.errorFrom(op, resp)
		}
		if err := decode(resp); err != nil {
			return &TransportError{Op: op, Sent: true, Timeout: cctx.Err() != nil, Err: fmt.Errorf("decode answer: %w", err)}
		}
		return nil
	})
}

// retryReads runs fn once, or for idempotent calls up to 1+ReadRetries
// times while it fails with a retryable error, with jittered exponential
// backoff. A NotReady answer, or a Retry-After longer than MaxRetryWait,
// is returned at once for the caller to schedule.
func (c *Client) retryReads(ctx context.Context, op string, idempotent bool, fn func() error) error {
	attempts := 1
	if idempotent {
		attempts += c.cfg.ReadRetries
	}
	var err error
	for i := 0; i < attempts; i++ {
		if err = fn(); err == nil || !IsRetryable(err) || i == attempts-1 {
			return err
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.NotReady() {
			return err
		}
		wait := backoff(i, 100*time.Millisecond, time.Second)
		if ra := RetryAfter(err); ra > 0 {
			if ra > c.cfg.MaxRetryWait {
				return err
			}
			wait = ra
		}
		c.log.DebugContext(ctx, "api call retry", "op", op, "attempt", i+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

// backoff is full-jitter exponential backoff: a random wait in
// [base*2^n/2, base*2^n], capped at max.
func backoff(n int, base, max time.Duration) time.Duration {
	d := base << min(n, 16)
	if d > max || d <= 0 {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// send builds and sends one request. noReplay stops net/http from
// resending the request on its own: Go treats a POST with an
// Idempotency-Key header as replayable, and the API does not honour the
// key, so a silent resend could start a second paid job.
func (c *Client) send(ctx context.Context, op, method, path string, q url.Values, body []byte, h http.Header, noReplay bool) (*http.Response, error) {
	class := ClassRead
	if method == http.MethodPost && path == "/videos" {
		class = ClassCreate
	}
	if err := c.pace(ctx, op, class); err != nil {
		return nil, err
	}
	u := *c.base
	u.Path = c.base.Path + path
	u.RawPath = ""
	if strings.Contains(path, "%") {
		// path is already escaped (url.PathEscape of an id): Path must
		// hold its decoded form, or the id is escaped twice.
		u.RawPath = c.base.EscapedPath() + path
		if p, err := url.PathUnescape(path); err == nil {
			u.Path = c.base.Path + p
		}
	}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var sent atomic.Bool
	trace := &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", op, err)
	}
	if noReplay {
		req.GetBody = nil
	}
	for k, v := range c.headers {
		req.Header[k] = v
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &TransportError{Op: op, Sent: sent.Load(), Timeout: isTimeout(ctx, err), Err: scrub(err)}
	}
	if resp.StatusCode == http.StatusTooManyRequests && c.cfg.Limiter != nil {
		d := max(parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), time.Second)
		if perr := c.cfg.Limiter.Pause(ctx, class, d); perr != nil {
			c.log.WarnContext(ctx, "rate limiter: pause", "class", class, "err", perr.Error())
		}
	}
	return resp, nil
}

// pace waits for the limiter's slot for one call of class, up to
// MaxLimiterWait.
func (c *Client) pace(ctx context.Context, op, class string) error {
	if c.cfg.Limiter == nil {
		return nil
	}
	deadline := time.Now().Add(c.cfg.MaxLimiterWait)
	for {
		d, err := c.cfg.Limiter.Reserve(ctx, class)
		if err != nil {
			return &TransportError{Op: op, Err: fmt.Errorf("rate limiter: %w", err)}
		}
		if d <= 0 {
			return nil
		}
		if time.Now().Add(d).After(deadline) {
			return &APIError{Op: op, StatusCode: http.StatusTooManyRequests, Code: "fleet_rate_limited",
				Description: "the fleet's " + class + " budget is spent or paused (not sent)", RetryAfter: d}
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return &TransportError{Op: op, Err: ctx.Err()}
		case <-t.C:
		}
	}
}

func (c *Client) timeoutErr(op string, err error) error {
	var te *TransportError
	if errors.As(err, &te) {
		te.Timeout = true
		return te
	}
	return &TransportError{Op: op, Sent: true, Timeout: true, Err: err}
}

// errorFrom reads a capped error body and builds the *APIError.
func (c *Client) errorFrom(op string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	return newAPIError(op, resp, body, c.secrets)
}

// maxJSONBody caps a decoded answer (a list page of 200 videos is far
// smaller).
const maxJSONBody = 32 << 20

func decodeJSON(r io.Reader, out any) error {
	dec := json.NewDecoder(io.LimitReader(r, maxJSONBody))
	if err := dec.Decode(out); err != nil {
		return err
	}
	return nil
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// scrub removes the URL (whose query may hold a signed token) from a
// *url.Error, keeping the operation and cause.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

// idleReader cancels the stream when no byte arrives for idle.
type idleReader struct {
	rc     io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	cancel context.CancelFunc
}

func newIdleReader(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *idleReader {
	return &idleReader{rc: rc, idle: idle, cancel: cancel, timer: time.AfterFunc(idle, cancel)}
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.timer.Reset(r.idle)
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read content: %w", scrub(err))
	}
	return n, err
}

func (r *idleReader) Close() error {
	r.timer.Stop()
	err := r.rc.Close()
	r.cancel()
	return err
}
