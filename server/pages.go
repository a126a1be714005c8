package server

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
)

// The dashboard reads at most this many of the newest job records per
// refresh for its per-state counts, failure list and totals, and at most
// inFlightCap records of the set of unfinished jobs for the in-flight
// panel. Counting every job would read every record on every refresh.
const (
	dashboardWindow = 2000
	inFlightCap     = 2000
	readParallel    = 16
	recentRows      = 50
	failedRows      = 25
	slowRows        = 10
	// refreshSeconds is how often the dashboard reloads itself.
	refreshSeconds = 5
)

// pageCSP allows the pages nothing but their own stylesheet and forms
// posting to themselves: no scripts at all.
const pageCSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

//go:embed templates/*.html assets/pages.css
var pageFiles embed.FS

var pageTemplates = map[string]*template.Template{
	"dashboard": parsePage("dashboard.html"),
	"job":       parsePage("job.html"),
	"error":     parsePage("error.html"),
}

func parsePage(name string) *template.Template {
	return template.Must(template.New("layout.html").Funcs(pageFuncs).ParseFS(pageFiles, "templates/layout.html", "templates/"+name))
}

// pages serves the operator pages: the dashboard at /, a job's page at
// /jobs/{id} and the operators' cancel and retry forms.
type pages struct {
	producer   *tasks.Client
	jobs       *jobs.Store
	store      storage.Store
	monitoring bool
	log        *slog.Logger
	snaps      snapshotCache
	hooks      hookHistory
	budgets    *jobs.Budgeter
	tenancy    *jobs.Tenancy
}

func (p *pages) routes(mux *http.ServeMux, a *Auth, csrf func(http.Handler) http.Handler) {
	view := func(h http.HandlerFunc) http.Handler { return pageHeaders(a.require(RoleViewer, h)) }
	act := func(h http.HandlerFunc) http.Handler { return pageHeaders(csrf(a.require(RoleOperator, h))) }
	mux.Handle("GET /{$}", view(p.dashboard))
	mux.Handle("GET /jobs/{id}", view(p.job))
	mux.Handle("POST /jobs/{id}/cancel", act(p.cancel))
	mux.Handle("POST /jobs/{id}/retry", act(p.retry))
	css, _ := pageFiles.ReadFile("assets/pages.css")
	mux.Handle("GET /assets/pages.css", pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(css)
	})))
}

// pageHeaders sets the security headers of every page.
func pageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// csrfRefused answers a cross-origin write that http.CrossOriginProtection
// refused.
func csrfRefused(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusForbidden, "cross_origin", "cross-origin request refused", nil)
}

// common is what every page shows in its frame.
type common struct {
	Title      string
	User       string
	Role       string
	CanAct     bool
	Monitoring bool
	Now        time.Time
	// Refresh makes the page reload itself every refreshSeconds.
	Refresh bool
}

func (p *pages) common(r *http.Request, title string) common {
	role := roleOf(r.Context())
	return common{Title: title, User: userOf(r.Context()), Role: role.String(), CanAct: role >= RoleOperator,
		Monitoring: p.monitoring, Now: time.Now().UTC()}
}

func (p *pages) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pageTemplates[name].Execute(&buf, data); err != nil {
		p.log.ErrorContext(r.Context(), "render page", "page", name, "err", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorPage struct {
	common
	Status  int
	Message string
}

func (p *pages) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	p.render(w, r, status, "error", errorPage{common: p.common(r, http.StatusText(status)), Status: status, Message: msg})
}

// ---- the dashboard ----

type stateCount struct {
	State    jobs.State
	Count    int
	Terminal bool
}

type outcomeCount struct {
	Name  string
	Count int64
}

type webhookPanel struct {
	Outcomes        []outcomeCount
	LastRejection   string
	LastRejectionAt time.Time
	// Over the window: jobs with at least one delivery, deliveries and
	// duplicates.
	Jobs, Deliveries, Duplicates int
}

// callbackPanel counts, over the window, the completion callbacks of
// ended jobs with a callback URL: still to deliver (first attempt due or
// retrying), delivered, and failed for good.
type callbackPanel struct {
	Pending, Retrying, Delivered, Failed int
}

type pollPanel struct {
	Total, Jobs, Max int
	MaxJob           string
	Mean             string
}

// snapshot is what the dashboard shows, read in one go.
type snapshot struct {
	Taken   time.Time
	Took    time.Duration
	Total   int64 // jobs ever submitted: in the index, and forgotten
	InRedis int64 // jobs in the index
	Active  int64 // unfinished jobs, fleet-wide
	// Retention, with retention on: what it removed and archived, and the
	// finished jobs waiting for theirs to pass.
	Retention    *jobs.RetentionStats
	Window       int // records read for the counts
	WindowCap    int
	Counts       []stateCount
	Stored       int
	Ended        int // terminal but not stored
	InFlight     []*jobs.Record
	InFlightRead int
	InFlightMore bool
	Failed       []*jobs.Record
	Recent       []*jobs.Record
	Webhooks     webhookPanel
	Callbacks    callbackPanel
	Polls        pollPanel
	StorageRoot  string
	Charts       chartPanel
	Spend        spendPanel
	// Tenants has a row per tenant: with tenancy on, or when a tenant
	// other than the default spent or shows in the window.
	Tenants []tenantRow
}

// tenantRow is one tenant's figures on the dashboard.
type tenantRow struct {
	Tenant string
	// Waiting and Admitted are read from the tenancy (-1: tenancy off);
	// Limit is its limit (0: none).
	Waiting, Admitted int64
	Limit             int
	// FinishedToday counts the jobs of the dashboard's window that ended
	// today (UTC).
	FinishedToday int
	Today, Month  string // spend, dollars
}

// tenantRows builds the tenants' table from the tenancy's figures (nil
// when off), the spend by tenant and the window's records.
func tenantRows(figs []jobs.TenantFigures, tenancyOn bool, sp jobs.Spend, window []*jobs.Record, now time.Time) []tenantRow {
	rows := map[string]*tenantRow{}
	row := func(t string) *tenantRow {
		r, ok := rows[t]
		if !ok {
			r = &tenantRow{Tenant: t, Waiting: -1, Admitted: -1}
			rows[t] = r
		}
		return r
	}
	for _, f := range figs {
		r := row(f.Tenant)
		r.Waiting, r.Admitted, r.Limit = f.Waiting, f.Admitted, f.Limit
	}
	day := now.UTC().Truncate(24 * time.Hour)
	others := false
	for _, rec := range window {
		if rec.Tenant != "" && rec.Tenant != jobs.DefaultTenant {
			others = true
		}
		if rec.State.Terminal() && !rec.FinishedAt.Before(day) {
			row(cmp.Or(rec.Tenant, jobs.DefaultTenant)).FinishedToday++
		}
	}
	if !tenancyOn && !others && len(sp.TenantMonth) == 0 {
		return nil // one tenant: the rest of the dashboard says it all
	}
	var rest, restToday int64 = jobs.Total(sp.Month), jobs.Total(sp.Today)
	for t, v := range sp.TenantMonth {
		rest -= v
		restToday -= sp.TenantToday[t]
		row(t)
	}
	out := make([]tenantRow, 0, len(rows)+1)
	row(jobs.DefaultTenant)
	for t, r := range rows {
		if t == jobs.DefaultTenant {
			r.Today, r.Month = apiclient.FormatMicros(restToday), apiclient.FormatMicros(rest)
		} else {
			r.Today, r.Month = apiclient.FormatMicros(sp.TenantToday[t]), apiclient.FormatMicros(sp.TenantMonth[t])
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out
}

// spendPanel is the fleet's settled spend today and this month (UTC).
type spendPanel struct {
	Today, Month string       // dollars
	ByModel      []modelSpend // this month, most first
	Budgets      []budgetRow  // when budgets are on
}

// budgetRow is one budget's current window.
type budgetRow struct {
	Budget, Spent, Reserved string
	Full                    bool
}

type modelSpend struct{ Model, Today, Month string }

func newSpendPanel(sp jobs.Spend) spendPanel {
	out := spendPanel{Today: apiclient.FormatMicros(jobs.Total(sp.Today)), Month: apiclient.FormatMicros(jobs.Total(sp.Month))}
	models := make([]string, 0, len(sp.Month))
	for m := range sp.Month {
		models = append(models, m)
	}
	sort.Slice(models, func(i, j int) bool { return sp.Month[models[i]] > sp.Month[models[j]] })
	for _, m := range models {
		out.ByModel = append(out.ByModel, modelSpend{Model: m, Today: apiclient.FormatMicros(sp.Today[m]), Month: apiclient.FormatMicros(sp.Month[m])})
	}
	return out
}

// chartPanel holds the dashboard's charts, drawn once per snapshot.
type chartPanel struct {
	Finished, Webhooks, Completion, Submit template.HTML
}

type dashboardData struct {
	common
	*snapshot
	Paused bool
}

func (p *pages) dashboard(w http.ResponseWriter, r *http.Request) {
	s, err := p.snaps.get(r.Context(), time.Now(), p.snapshot)
	if err != nil {
		p.log.WarnContext(r.Context(), "dashboard", "err", err.Error())
		p.fail(w, r, http.StatusServiceUnavailable, "Could not read the jobs from Redis; this page retries on reload.")
		return
	}
	d := dashboardData{common: p.common(r, "Jobs"), snapshot: s, Paused: r.URL.Query().Get("refresh") == "off"}
	d.Refresh = !d.Paused
	p.render(w, r, http.StatusOK, "dashboard", d)
}

func (p *pages) snapshot(ctx context.Context) (*snapshot, error) {
	start := time.Now()
	s := &snapshot{Taken: start.UTC(), WindowCap: dashboardWindow}
	var err error
	if s.Total, err = p.jobs.Count(ctx); err != nil {
		return nil, err
	}
	s.InRedis = s.Total
	if p.jobs.Retention() > 0 {
		st, err := p.jobs.RetentionStats(ctx)
		if err != nil {
			return nil, err
		}
		s.Retention = &st
		s.Total += st.Removed // counted, not read: they are gone from Redis
	}
	if s.Active, err = p.jobs.ActiveCount(ctx); err != nil {
		return nil, err
	}
	sp, err := p.jobs.SpendSummary(ctx, start)
	if err != nil {
		return nil, err
	}
	s.Spend = newSpendPanel(sp)
	if p.budgets != nil {
		use, err := p.budgets.Use(ctx)
		if err != nil {
			return nil, err
		}
		for _, u := range use {
			s.Spend.Budgets = append(s.Spend.Budgets, budgetRow{Budget: u.Budget.String(), Spent: apiclient.FormatMicros(u.Spent),
				Reserved: apiclient.FormatMicros(u.Reserved), Full: u.Spent+u.Reserved >= u.Budget.Limit})
		}
	}
	ids, _, err := p.jobs.Page(ctx, jobs.Cursor{}, dashboardWindow)
	if err != nil {
		return nil, err
	}
	window, err := p.read(ctx, ids)
	if err != nil {
		return nil, err
	}
	s.Window = len(window)

	// Unfinished jobs come from their own set, so that an old stuck job
	// shows even when thousands of newer ones push it out of the window.
	var active []string
	seen := map[string]bool{}
	errEnough := errors.New("enough")
	err = p.jobs.ScanActive(ctx, func(batch []string) error {
		for _, id := range batch {
			if !seen[id] { // SSCAN may return an id twice
				seen[id] = true
				active = append(active, id)
			}
		}
		if len(active) >= inFlightCap {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	if len(active) > inFlightCap {
		active = active[:inFlightCap]
	}
	s.InFlightMore = int64(len(active)) < s.Active
	inflight, err := p.read(ctx, active)
	if err != nil {
		return nil, err
	}
	inflight = slices.DeleteFunc(inflight, func(r *jobs.Record) bool { return r.State.Terminal() })
	s.InFlightRead = len(inflight)
	sort.Slice(inflight, func(i, j int) bool { return runningSince(inflight[i]).Before(runningSince(inflight[j])) })
	s.InFlight = inflight[:min(len(inflight), slowRows)]

	counts := map[jobs.State]int{}
	var failed []*jobs.Record
	for _, rec := range window {
		counts[rec.State]++
		switch {
		case rec.State == jobs.StateStored:
			s.Stored++
		case rec.State.Terminal():
			s.Ended++
			failed = append(failed, rec)
		}
		if rec.WebhookDeliveries > 0 {
			s.Webhooks.Jobs++
		}
		s.Webhooks.Deliveries += rec.WebhookDeliveries
		s.Webhooks.Duplicates += rec.WebhookDuplicates
		countCallback(&s.Callbacks, rec)
		if rec.Polls > 0 {
			s.Polls.Jobs++
			s.Polls.Total += rec.Polls
			if rec.Polls > s.Polls.Max {
				s.Polls.Max, s.Polls.MaxJob = rec.Polls, rec.ID
			}
		}
	}
	if s.Polls.Jobs > 0 {
		s.Polls.Mean = strconv.FormatFloat(float64(s.Polls.Total)/float64(s.Polls.Jobs), 'f', 1, 64)
	}
	for _, st := range jobs.AllStates {
		s.Counts = append(s.Counts, stateCount{State: st, Count: counts[st], Terminal: st.Terminal()})
	}
	var figs []jobs.TenantFigures
	if p.tenancy != nil {
		if figs, err = p.tenancy.Figures(ctx); err != nil {
			return nil, err
		}
	}
	s.Tenants = tenantRows(figs, p.tenancy != nil, sp, window, start)
	sort.SliceStable(failed, func(i, j int) bool { return failed[i].FinishedAt.After(failed[j].FinishedAt) })
	s.Failed = failed[:min(len(failed), failedRows)]
	s.Recent = window[:min(len(window), recentRows)]

	stats, err := p.jobs.WebhookStats(ctx)
	if err != nil {
		return nil, err
	}
	s.Webhooks.Outcomes, s.Webhooks.LastRejection, s.Webhooks.LastRejectionAt = webhookOutcomes(stats)
	p.charts(s, window)
	if p.store != nil {
		s.StorageRoot = strings.TrimSuffix(p.store.Location("x"), "x")
	}
	s.Took = time.Since(start)
	return s, nil
}

// charts draws the dashboard's charts from the records of the window and
// the webhook counters already read: they cost no Redis command.
func (p *pages) charts(s *snapshot, window []*jobs.Record) {
	p.hooks.observe(s.Taken, s.Webhooks.Outcomes)
	completion, submit := storedLatencies(window)
	s.Charts = chartPanel{
		Finished: finishedChart(window, int64(len(window)) < s.Total, s.Taken).render(),
		Webhooks: p.hooks.chart(s.Taken).render(),
		Completion: latencyChart("chart-completion", "API completion → stored", "No stored job among the newest records yet.",
			completion).render(),
		Submit: latencyChart("chart-submit", "Submission (or retry) → stored", "No stored job among the newest records yet.",
			submit).render(),
	}
}

// read loads the records of ids, readParallel at a time, in order; ids
// without a record are left out.
func (p *pages) read(ctx context.Context, ids []string) ([]*jobs.Record, error) {
	recs := make([]*jobs.Record, len(ids))
	errs := make([]error, len(ids))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(readParallel, len(ids)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				recs[i], errs[i] = p.jobs.Get(ctx, ids[i])
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := recs[:0]
	for i, rec := range recs {
		switch {
		case errors.Is(errs[i], jobs.ErrNotFound):
		case errs[i] != nil:
			return nil, errs[i]
		default:
			out = append(out, rec)
		}
	}
	return out, nil
}

// webhookOutcomes orders the fleet-wide webhook counters: the known
// outcomes first (zero when never seen), then any others.
func webhookOutcomes(stats map[string]string) ([]outcomeCount, string, time.Time) {
	known := []string{webhook.OutcomeAccepted, webhook.OutcomeDuplicate, webhook.OutcomeEarly, webhook.OutcomeBadSignature,
		webhook.OutcomeBadTimestamp, webhook.OutcomeBadRequest, webhook.OutcomeUnknownJob, webhook.OutcomeMismatch, webhook.OutcomeError}
	var out []outcomeCount
	seen := map[string]bool{"last_rejection": true, "last_rejection_at": true}
	for _, k := range known {
		n, _ := strconv.ParseInt(stats[k], 10, 64)
		out = append(out, outcomeCount{Name: k, Count: n})
		seen[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(stats)) {
		if !seen[k] {
			n, _ := strconv.ParseInt(stats[k], 10, 64)
			out = append(out, outcomeCount{Name: k, Count: n})
		}
	}
	var at time.Time
	if ms, err := strconv.ParseInt(stats["last_rejection_at"], 10, 64); err == nil {
		at = time.UnixMilli(ms).UTC()
	}
	return out, stats["last_rejection"], at
}

// runningSince is when the job's current run began: its submission, or its
// last retry.
func runningSince(r *jobs.Record) time.Time {
	if r.RetriedAt.After(r.SubmittedAt) {
		return r.RetriedAt
	}
	return r.SubmittedAt
}

// snapshotCache lets concurrent dashboard requests share one read of
// Redis: a request waits for the read in progress and takes its result
// when that read started after the request arrived (so it is never older
// than the request); otherwise it makes a new read. At most one read runs
// at a time, however many browsers refresh.
type snapshotCache struct {
	once    sync.Once
	sem     chan struct{}
	last    *snapshot
	started time.Time
}

func (c *snapshotCache) get(ctx context.Context, arrived time.Time, build func(context.Context) (*snapshot, error)) (*snapshot, error) {
	c.once.Do(func() { c.sem = make(chan struct{}, 1) })
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	if c.last != nil && !c.started.Before(arrived) {
		return c.last, nil
	}
	started := time.Now()
	s, err := build(ctx)
	if err != nil {
		return nil, err
	}
	c.last, c.started = s, started
	return s, nil
}

// ---- a job's page ----

type field struct {
	Name, Value string
	At          time.Time
}

type taskRef struct {
	Step, Queue, ID, Status string
	Current                 bool
}

type jobData struct {
	common
	Job     *jobs.Record
	Fields  []field
	Request string
	Labels  []string
	History []jobs.Event
	Tasks   []taskRef
	Result  string
	Error   bool
}

// results are the messages a redirect after an action may ask for.
var results = map[string]struct {
	msg string
	bad bool
}{
	"cancelled":       {"Cancelled. A worker asks the API to cancel the generation and records its answer.", false},
	"retried":         {"Retried: the job is back in its queue (no second generation of a video that was made).", false},
	"not_cancellable": {"Not cancelled: the job had already ended.", true},
	"not_retryable":   {"Not retried: only failed or timed-out jobs can be retried.", true},
	"unavailable":     {"The action could not be carried out (Redis unavailable or the job changed meanwhile); try again.", true},
}

func (p *pages) job(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, ok := p.load(w, r, id)
	if !ok {
		return
	}
	hist, err := p.producer.History(r.Context(), tasks.JobID(id))
	if err != nil {
		p.fail(w, r, http.StatusServiceUnavailable, "Could not read the job's history; this page retries on reload.")
		return
	}
	rec, hist, _ = withArchive(r.Context(), p.store, rec, hist)
	d := jobData{common: p.common(r, "Job "+id), Job: rec, Fields: recordFields(rec), Request: requestJSON(rec.Request),
		Labels: labels(rec.Labels), History: hist, Tasks: jobTasks(rec)}
	slices.Reverse(d.History) // newest first
	if res, ok := results[r.URL.Query().Get("result")]; ok {
		d.Result, d.Error = res.msg, res.bad
	}
	d.Refresh = !rec.State.Terminal() && d.Result == ""
	p.render(w, r, http.StatusOK, "job", d)
}

func (p *pages) load(w http.ResponseWriter, r *http.Request, id string) (*jobs.Record, bool) {
	if tasks.ValidateJobID(id) != nil {
		p.fail(w, r, http.StatusNotFound, "No such job.")
		return nil, false
	}
	rec, err := p.producer.Status(r.Context(), tasks.JobID(id))
	if errors.Is(err, jobs.ErrNotFound) {
		p.fail(w, r, http.StatusNotFound, "No such job.")
		return nil, false
	}
	if err != nil {
		p.fail(w, r, http.StatusServiceUnavailable, "Could not read the job; this page retries on reload.")
		return nil, false
	}
	return rec, true
}

func (p *pages) cancel(w http.ResponseWriter, r *http.Request) {
	p.act(w, r, "cancel", func(ctx context.Context, id tasks.JobID) (string, error) {
		_, err := p.producer.Cancel(ctx, id, "cancelled by "+userOf(ctx)+" on the dashboard")
		if errors.Is(err, tasks.ErrNotCancellable) {
			return "not_cancellable", nil
		}
		return "cancelled", err
	})
}

func (p *pages) retry(w http.ResponseWriter, r *http.Request) {
	p.act(w, r, "retry", func(ctx context.Context, id tasks.JobID) (string, error) {
		_, err := p.producer.Retry(ctx, id)
		if errors.Is(err, tasks.ErrNotRetryable) {
			return "not_retryable", nil
		}
		return "retried", err
	})
}

// act runs an operator's action on a job and redirects to the job's page
// with a result message (post/redirect/get: reloading repeats nothing).
func (p *pages) act(w http.ResponseWriter, r *http.Request, action string, do func(context.Context, tasks.JobID) (string, error)) {
	id := r.PathValue("id")
	if _, ok := p.load(w, r, id); !ok {
		return
	}
	result, err := do(r.Context(), tasks.JobID(id))
	if err != nil {
		p.log.WarnContext(r.Context(), "dashboard action failed", "action", action, "job_id", id, "user", userOf(r.Context()), "err", err.Error())
		result = "unavailable"
	} else {
		p.log.InfoContext(r.Context(), "dashboard action", "action", action, "job_id", id, "user", userOf(r.Context()), "result", result)
	}
	http.Redirect(w, r, "/jobs/"+url.PathEscape(id)+"?result="+result, http.StatusSeeOther)
}

// countCallback counts rec's callback delivery (if it has one) in c.
func countCallback(c *callbackPanel, rec *jobs.Record) {
	switch {
	case rec.CallbackURL == "" || !rec.State.Terminal():
	case rec.CallbackDue():
		c.Pending++
		if rec.CallbackEvent == rec.CallbackEventID() && rec.CallbackStatus == jobs.CallbackRetrying {
			c.Retrying++
		}
	case rec.CallbackStatus == jobs.CallbackDelivered:
		c.Delivered++
	default:
		c.Failed++
	}
}

// redactURL is u without user info, query or fragment (a callback URL
// may carry a token), for pages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unreadable)"
	}
	tail := ""
	if u.RawQuery != "" || u.Fragment != "" {
		tail = "?…"
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment, u.ForceQuery = nil, "", "", "", false
	return u.String() + tail
}

// recordFields lists the record's set fields by their JSON names, in
// record order; the request, labels, id and state are shown apart.
func recordFields(rec *jobs.Record) []field {
	var out []field
	v := reflect.ValueOf(*rec)
	t := v.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		fv := v.Field(i)
		if name == "" || name == "-" || fv.IsZero() {
			continue
		}
		switch name {
		case "id", "state", "request", "labels":
			continue
		case "callback_url":
			out = append(out, field{Name: name, Value: redactURL(rec.CallbackURL)})
			continue
		}
		switch x := fv.Interface().(type) {
		case time.Time:
			out = append(out, field{Name: name, At: x})
		default:
			out = append(out, field{Name: name, Value: fmt.Sprint(x)})
		}
	}
	return out
}

// requestJSON shows the generation request. A webhook subscription, which
// producers may not set but a record could carry, is shown without its
// secret and without any credentials or query in its URL.
func requestJSON(req apiclient.CreateRequest) string {
	if req.Webhook != nil {
		wh := *req.Webhook
		if wh.Secret != "" {
			wh.Secret = "(hidden)"
		}
		if u, err := url.Parse(wh.URL); err == nil {
			u.User, u.RawQuery, u.Fragment = nil, "", ""
			wh.URL = u.String()
		} else {
			wh.URL = "(unparseable)"
		}
		req.Webhook = &wh
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // the template escapes; keep the prompt readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(req); err != nil {
		return "(unreadable)"
	}
	return strings.TrimSpace(b.String())
}

func labels(m map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}

// jobTasks names the asynq tasks of a job's steps, with the ids the
// worker gives them: each is tasks.NextTask of the record in the state
// that waits on that step, so the ids are made by the one rule the worker,
// Retry and the stranded-job reconciler use.
func jobTasks(rec *jobs.Record) []taskRef {
	cur := currentStep(rec)
	var out []taskRef
	if r, ok := stepTask(rec, jobs.StateQueued); ok {
		out = append(out, r)
	}
	if rec.PollSeq > 0 {
		if r, ok := stepTask(rec, jobs.StateGenerating); ok {
			out = append(out, r)
		}
	}
	downloaded := rec.State == jobs.StateDownloading || rec.State == jobs.StateStored || rec.DownloadAttempts > 0 ||
		!rec.DownloadStartedAt.IsZero() || (!rec.CompletedAt.IsZero() && rec.FailedStep != "generation")
	if rec.VideoID != "" && downloaded {
		if r, ok := stepTask(rec, jobs.StateDownloading); ok {
			out = append(out, r)
		}
	}
	if rec.State == jobs.StateCancelled {
		if r, ok := stepTask(rec, jobs.StateCancelled); ok {
			out = append(out, r)
		}
	}
	if rec.CallbackURL != "" && rec.State.Terminal() {
		out = append(out, taskRef{Step: "callback", Queue: tasks.QueuePoll, ID: tasks.CallbackTaskID(rec.CallbackEventID())})
	}
	if rec.DeadTask != "" {
		if q, id, ok := strings.Cut(rec.DeadTask, "/"); ok {
			out = append(out, taskRef{Step: "dead letter", Queue: q, ID: id, Status: "archived"})
		}
	}
	for i := range out {
		if cur != nil && out[i].Queue == cur.Queue && out[i].ID == cur.ID {
			out[i].Current, out[i].Status = true, cur.Status
		}
	}
	return out
}

// stepNames are the job page's names of the task types.
var stepNames = map[string]string{tasks.TypeCreate: "create", tasks.TypePoll: "poll", tasks.TypeDownload: "download", tasks.TypeCancel: "cancel"}

// stepTask is the task rec would wait on in state st (tasks.NextTask of a
// copy of rec in that state, its cancel answer not yet recorded).
func stepTask(rec *jobs.Record, st jobs.State) (taskRef, bool) {
	r := *rec
	r.State, r.CancelOutcome = st, ""
	n, err := tasks.NextTask(&r, 0)
	if err != nil || n == nil {
		return taskRef{}, false
	}
	return taskRef{Step: stepNames[n.Type], Queue: n.Queue, ID: n.ID}, true
}

// currentStepStatus is where the task a job in a state waits on usually
// is (its asynqmon tab).
var currentStepStatus = map[jobs.State]string{
	jobs.StateQueued:      "pending",
	jobs.StateBudgetWait:  "retry",
	jobs.StateSubmitting:  "active",
	jobs.StateGenerating:  "scheduled",
	jobs.StateDownloading: "active",
}

// currentStep is the task a job waits on (tasks.NextTask), with the
// asynqmon tab where it usually is; for an ended job, its dead letter, or
// nil without one.
func currentStep(rec *jobs.Record) *taskRef {
	if status, ok := currentStepStatus[rec.State]; ok {
		if r, ok := stepTask(rec, rec.State); ok {
			if r.Step == "create" && rec.State == jobs.StateGenerating {
				status = "pending" // the chain has not started: its create task starts it
			}
			r.Status = status
			return &r
		}
		return nil
	}
	if rec.CallbackDue() && (rec.State != jobs.StateCancelled || rec.CancelOutcome != "") {
		status := "pending"
		if rec.CallbackStatus == jobs.CallbackRetrying && rec.CallbackEvent == rec.CallbackEventID() {
			status = "retry"
		}
		return &taskRef{Step: "callback", Queue: tasks.QueuePoll, ID: tasks.CallbackTaskID(rec.CallbackEventID()), Status: status}
	}
	if q, id, ok := strings.Cut(rec.DeadTask, "/"); ok {
		return &taskRef{Step: "dead letter", Queue: q, ID: id, Status: "archived"}
	}
	return nil
}

// ---- template helpers ----

// taskCell is a job's current task in a dashboard row.
type taskCell struct {
	Monitoring bool
	Step       *taskRef
}

var pageFuncs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago":   func(t time.Time) string { return humanDuration(time.Since(t)) },
	"since": func(r *jobs.Record) string { return humanDuration(time.Since(runningSince(r))) },
	"dur":   humanDuration,
	"ms": func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
	},
	"cell": func(monitoring bool, r *jobs.Record) taskCell {
		return taskCell{Monitoring: monitoring, Step: currentStep(r)}
	},
	"queueURL": func(queue, status string) string {
		u := MonitoringPath + "/queues/" + url.PathEscape(queue)
		if status != "" {
			u += "?status=" + url.QueryEscape(status)
		}
		return u
	},
	"taskURL": func(queue, id string) string {
		return MonitoringPath + "/queues/" + url.PathEscape(queue) + "/tasks/" + url.PathEscape(id)
	},
	"jobURL":      func(id string) string { return "/jobs/" + url.PathEscape(id) },
	"num":         func(n any) string { return groupDigits(fmt.Sprint(n)) },
	"clip":        clip,
	"terminal":    func(s jobs.State) bool { return s.Terminal() },
	"retryable":   func(s jobs.State) bool { return s == jobs.StateFailed || s == jobs.StateTimedOut },
	"refreshSecs": func() int { return refreshSeconds },
}

// humanDuration is a short, coarse duration: 42s, 3m12s, 2h05m, 3d4h.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func groupDigits(s string) string {
	if len(s) <= 3 || strings.ContainsAny(s, ".-") {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func clip(n int, s string) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
