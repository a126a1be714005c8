package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/wake"
	"github.com/videoworker/videoworker/webhook"
	"github.com/videoworker/videoworker/worker"
)

const testEndpoint = "we_e2e"

// setupRevision is setup with the stand-in in the given webhook revision
// and a receiver started before it (an endpoint's URL is the stand-in's
// configuration). The returned config subscribes webhooks as that
// revision wants: the endpoint id, or the inline URL and secret.
func setupRevision(t *testing.T, scfg standin.Config, rev string) (*env, worker.Config) {
	t.Helper()
	var recv atomic.Pointer[webhook.Handler]
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { recv.Load().ServeHTTP(w, r) }))
	t.Cleanup(ts.Close)
	scfg.WebhookRevision = rev
	scfg.WebhookEndpoints = map[string]standin.WebhookEndpoint{testEndpoint: {URL: ts.URL + webhook.Path, Secret: hookSecret}}
	e := setup(t, scfg)
	v, err := webhook.NewVerifier([]string{hookSecret}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.receiver = webhook.NewHandler(v, e.jobs, wake.NewEnqueuer(e.rdb, true), e.log)
	recv.Store(e.receiver)
	e.api.Start()
	t.Cleanup(e.api.Close)
	wc := fastConfig()
	events := []string{"video.completed", "video.failed", "video.cancelled", "video.expired"}
	wc.Webhook = &apiclient.WebhookSubscription{URL: ts.URL + webhook.Path, Secret: hookSecret, Events: events}
	if rev == standin.WebhookRevisionEndpoint {
		wc.Webhook = &apiclient.WebhookSubscription{EndpointID: testEndpoint, Events: events}
	}
	return e, wc
}

// Both webhook revisions end to end: every job stored once, nearly every
// download started by a delivery (polling is slow here), found by the job
// id in the URL (inline) or by the video id (endpoint).
func TestWebhookRevisionsEndToEnd(t *testing.T) {
	t.Parallel()
	for _, rev := range []string{standin.WebhookRevisionInline, standin.WebhookRevisionEndpoint} {
		t.Run(rev, func(t *testing.T) {
			t.Parallel()
			const n = 30
			cfg := fastStandin()
			cfg.QueuedFor, cfg.ProcessingFor = 100*time.Millisecond, 800*time.Millisecond
			e, wc := setupRevision(t, cfg, rev)
			wc.PollInterval, wc.MaxPollInterval = 4*time.Second, 4*time.Second
			e.startWorker(wc, nil)
			ids := e.submit(n, "google/veo-3.1-lite")
			recs := e.waitTerminal(ids, 60*time.Second)
			e.checkStored(recs)
			_, byHook := e.latencies(t, recs)
			if byHook < n*9/10 {
				t.Errorf("%s: webhooks started %d of %d downloads; want nearly all", rev, byHook, n)
			}
			for _, r := range recs {
				if r.WebhookDeliveries < 1 {
					t.Errorf("%s: job %s recorded no delivery", rev, r.ID)
				}
			}
			if got := e.api.Stats().JobsCreated; got != n {
				t.Errorf("%s: %d videos created for %d jobs", rev, got, n)
			}
		})
	}
}

// The API's newest revision refuses the inline webhook (400 on the
// webhook field): the create is sent again at once without it, the
// refusal is counted, and the jobs finish by polling. Nothing fails and
// no video is created twice.
func TestInlineWebhookRefusedFallsBackToPolling(t *testing.T) {
	t.Parallel()
	const n = 8
	e, wc := setupRevision(t, fastStandin(), standin.WebhookRevisionEndpoint)
	wc.Webhook = &apiclient.WebhookSubscription{URL: wc.Webhook.URL + "x", Secret: hookSecret, Events: wc.Webhook.Events} // inline
	m := metrics.New()
	w, err := worker.New(wc, worker.Deps{Redis: e.rdb, API: e.client, Store: e.store, Jobs: e.jobs, Logger: e.log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	ids := e.submit(n, "google/veo-3.1-lite")
	recs := e.waitTerminal(ids, 60*time.Second)
	e.checkStored(recs)
	st := e.api.Stats()
	if st.JobsCreated != n {
		t.Errorf("%d videos created for %d jobs", st.JobsCreated, n)
	}
	// One refused create, then the inline webhook is left out for a while.
	if got := st.Calls[standin.EndpointCreate]; got != n+1 {
		t.Errorf("%d create calls for %d jobs, want %d (one refused)", got, n, n+1)
	}
	if got := refusedCount(t, m); got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
	for _, r := range recs {
		if r.WebhookDeliveries != 0 {
			t.Errorf("job %s got webhooks", r.ID)
		}
	}
}

// With endpoint ids the delivery names no job: one that arrives before the
// create's answer is saved is kept under the video id and checked when
// the id is saved. poll_after_seconds 60 puts the first poll a minute
// out, so the jobs end within the test only by that check.
func TestEarlyWebhookByVideoChecksAtOnce(t *testing.T) {
	t.Parallel()
	const n = 4
	cfg := fastStandin()
	cfg.QueuedFor, cfg.ProcessingFor, cfg.PollAfterSeconds = 0, 0, 60
	e, wc := setupRevision(t, cfg, standin.WebhookRevisionEndpoint)
	wc.PollInterval, wc.MaxPollInterval = time.Minute, 2*time.Minute
	var created atomic.Int64
	api := holdCreate{VideoAPI: e.client, hold: func(ctx context.Context, v *apiclient.Video) {
		k := int(created.Add(1))
		deadline := time.Now().Add(10 * time.Second)
		for e.api.Stats().Webhooks.DeliveredEvents["video.completed"] < k {
			if time.Now().After(deadline) {
				t.Errorf("video %s: its webhook was not delivered within 10 s", v.ID)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}}
	e.startWorker(wc, api)
	ids := e.submit(n, "google/veo-3.1-lite")
	recs := e.waitTerminal(ids, 20*time.Second)
	e.checkStored(recs)
	if got := e.api.Stats().Calls[standin.EndpointGet]; got != n {
		t.Errorf("%d status calls for %d jobs; want one (the early delivery's check) each", got, n)
	}
}

// refusedCount reads videoworker_webhook_subscriptions_refused_total.
func refusedCount(t *testing.T, m *metrics.Metrics) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "videoworker_webhook_subscriptions_refused_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("metric videoworker_webhook_subscriptions_refused_total not registered")
	return 0
}
