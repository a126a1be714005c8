// Package metrics holds the project's Prometheus metrics: API calls by
// endpoint and status, jobs by terminal state, time from submit to stored
// and from completion to stored, webhook deliveries by outcome, bytes
// stored, and the asynq queue metrics (sizes and latency per queue).
//
// Every method is safe on a nil *Metrics, so components take an optional
// *Metrics and need no "if enabled" branches.
package metrics

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one registry and the project's collectors.
type Metrics struct {
	reg                *prometheus.Registry
	apiCalls           *prometheus.CounterVec
	apiLatency         *prometheus.HistogramVec
	jobsFinished       *prometheus.CounterVec
	submitToStored     prometheus.Histogram
	completionToStored prometheus.Histogram
	webhooks           *prometheus.CounterVec
	bytesStored        prometheus.Counter
	polls              prometheus.Counter
	pollLateness       prometheus.Histogram
	jobsForgotten      *prometheus.CounterVec
	webhookRefused     prometheus.Counter
	callbacks          *prometheus.CounterVec
	spend              *prometheus.CounterVec
}

// latencyBuckets spans 10 ms to about 1.5 hours.
var latencyBuckets = prometheus.ExponentialBuckets(0.01, 2.5, 14)

// PollLatenessBuckets are the buckets of videoworker_poll_lateness_seconds:
// fine around the 1 s that asynq's whole-second schedule and its delayed
// task check impose, coarse beyond.
var PollLatenessBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 120, 300}

// New returns a registry with the project's metrics and the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apiCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "videoworker_api_calls_total", Help: "Calls to the AI Stats API by endpoint and HTTP status (\"error\" when no answer came).",
		}, []string{"endpoint", "status"}),
		apiLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "videoworker_api_call_duration_seconds", Help: "Time to the response headers of AI Stats API calls, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, []string{"endpoint"}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "videoworker_jobs_finished_total", Help: "Jobs that reached a terminal state, by state.",
		}, []string{"state"}),
		submitToStored: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "videoworker_submit_to_stored_seconds", Help: "Time from submission to the video stored.", Buckets: latencyBuckets,
		}),
		completionToStored: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "videoworker_completion_to_stored_seconds", Help: "Time from the worker learning the API completed the job to the video stored.", Buckets: latencyBuckets,
		}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "videoworker_webhook_deliveries_total", Help: "Webhook deliveries received, by outcome (accepted, duplicate, bad_signature, …).",
		}, []string{"outcome"}),
		bytesStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "videoworker_bytes_stored_total", Help: "Bytes of video written to storage.",
		}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "videoworker_status_checks_total", Help: "Status checks (polls and webhook-triggered checks) made.",
		}),
		spend: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "videoworker_spend_usd_total", Help: "Settled cost of generations (USD) this process saw end, by model and tenant.",
		}, []string{"model", "tenant"}),
		pollLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "videoworker_poll_lateness_seconds", Help: "How long after its scheduled time a delayed poll started (0 when it started early).",
			Buckets: PollLatenessBuckets,
		}),
		jobsForgotten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "videoworker_jobs_forgotten_total", Help: "Finished jobs removed from Redis after their retention by this process's sweeps, by whether their archive was written (archived=\"true\") or archiving is off.",
		}, []string{"archived"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "videoworker_callback_attempts_total", Help: "Completion callback delivery attempts, by the delivery's status after them (delivered, retrying, failed).",
		}, []string{"status"}),
	}
	m.reg.MustRegister(m.jobsForgotten)
	m.webhookRefused = newWebhookRefused()
	m.reg.MustRegister(m.webhookRefused)
	m.reg.MustRegister(m.apiCalls, m.apiLatency, m.jobsFinished, m.submitToStored, m.completionToStored, m.webhooks, m.bytesStored, m.polls, m.pollLateness, m.callbacks, m.spend,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, for extra collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// AddQueues registers the asynq queue metrics (sizes, latency, memory,
// processed and failed counts per queue) read through insp at scrape time.
func (m *Metrics) AddQueues(insp *asynq.Inspector) {
	if m == nil {
		return
	}
	m.reg.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// JobsForgotten records finished jobs removed from Redis after their
// retention, archived ones and ones forgotten without an archive.
func (m *Metrics) JobsForgotten(archived, unarchived int) {
	if m == nil {
		return
	}
	m.jobsForgotten.WithLabelValues("true").Add(float64(archived))
	m.jobsForgotten.WithLabelValues("false").Add(float64(unarchived))
}

// JobFinished records a job reaching a terminal state.
func (m *Metrics) JobFinished(state string) {
	if m == nil {
		return
	}
	m.jobsFinished.WithLabelValues(state).Inc()
}

// Stored records a stored video: its bytes, and the times from submission
// and from completion (zero times are skipped).
func (m *Metrics) Stored(bytes int64, submitted, completed, stored time.Time) {
	if m == nil {
		return
	}
	m.bytesStored.Add(float64(bytes))
	if !submitted.IsZero() {
		m.submitToStored.Observe(stored.Sub(submitted).Seconds())
	}
	if !completed.IsZero() {
		m.completionToStored.Observe(stored.Sub(completed).Seconds())
	}
}

// Spend adds the settled cost of a generation (micro-dollars) to the
// spend of its model and tenant ("" is "default"). Zero adds nothing.
func (m *Metrics) Spend(model, tenant string, micros int64) {
	if m == nil || micros == 0 || model == "" {
		return
	}
	if tenant == "" {
		tenant = "default"
	}
	m.spend.WithLabelValues(model, tenant).Add(float64(micros) / 1e6)
}

// Webhook records a webhook delivery's outcome.
func (m *Metrics) Webhook(outcome string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(outcome).Inc()
}

// CallbackAttempt records one completion callback attempt by the
// delivery's status after it.
func (m *Metrics) CallbackAttempt(status string) {
	if m == nil {
		return
	}
	m.callbacks.WithLabelValues(status).Inc()
}

// StatusCheck records one status check.
func (m *Metrics) StatusCheck() {
	if m == nil {
		return
	}
	m.polls.Inc()
}

// PollLateness records how late a delayed poll started: d is the time it
// started minus the time it was scheduled for. asynq keeps whole-second
// schedules, so a poll can start up to a second early; early counts as 0.
func (m *Metrics) PollLateness(d time.Duration) {
	if m == nil {
		return
	}
	m.pollLateness.Observe(max(d, 0).Seconds())
}

// Transport wraps rt (http.DefaultTransport when nil) so that every API
// call is counted by endpoint and status. Endpoints are path templates
// (ids removed), so the label set stays small.
func (m *Metrics) Transport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if m == nil {
		return rt
	}
	return roundTripper{m: m, next: rt}
}

type roundTripper struct {
	m    *Metrics
	next http.RoundTripper
}

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	ep := Endpoint(r.Method, r.URL.Path)
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	t.m.apiLatency.WithLabelValues(ep).Observe(time.Since(start).Seconds())
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	t.m.apiCalls.WithLabelValues(ep, status).Inc()
	return resp, err
}

var (
	reContent  = regexp.MustCompile(`/videos/[^/]+/content$`)
	reDownload = regexp.MustCompile(`/videos/[^/]+/download_url$`)
	reCancel   = regexp.MustCompile(`/videos/[^/]+/cancel$`)
	reModels   = regexp.MustCompile(`/videos/models$`)
	reVideo    = regexp.MustCompile(`/videos/[^/]+$`)
	reList     = regexp.MustCompile(`/videos$`)
)

// Endpoint names an API call: create, get, list, content, download_url,
// cancel, delete, models, or other.
func Endpoint(method, path string) string {
	switch {
	case reContent.MatchString(path):
		return "content"
	case reDownload.MatchString(path):
		return "download_url"
	case reCancel.MatchString(path):
		return "cancel"
	case reModels.MatchString(path):
		return "models"
	case reList.MatchString(path) && method == http.MethodPost:
		return "create"
	case reList.MatchString(path):
		return "list"
	case reVideo.MatchString(path) && method == http.MethodDelete:
		return "delete"
	case reVideo.MatchString(path):
		return "get"
	}
	return "other"
}

// TenantJobs is one tenant's jobs in the tenancy (jobs.Tenancy), for
// AddTenants: Waiting in tenant_wait, Admitted from admission to the end
// of generating.
type TenantJobs struct {
	Tenant            string
	Waiting, Admitted int64
}

// AddTenants registers videoworker_tenant_jobs{tenant,state}, read at
// scrape time by read (two Redis commands per tenant, pipelined): state
// is tenant_wait (waiting for admission) or admitted (queued after
// admission, budget_wait, submitting or generating). One series per
// tenant and state: the tenants are the operator's, so their number is
// what bounds the cardinality.
func (m *Metrics) AddTenants(read func(context.Context) ([]TenantJobs, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&tenantCollector{read: read,
		desc: prometheus.NewDesc("videoworker_tenant_jobs", "Jobs of each tenant in the tenancy, by state: tenant_wait (waiting for admission) or admitted (admitted, not yet past generating).",
			[]string{"tenant", "state"}, nil)})
}

type tenantCollector struct {
	read func(context.Context) ([]TenantJobs, error)
	desc *prometheus.Desc
}

func (c *tenantCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *tenantCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	figs, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, f := range figs {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(f.Waiting), f.Tenant, "tenant_wait")
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(f.Admitted), f.Tenant, "admitted")
	}
}
