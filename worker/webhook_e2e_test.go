package worker_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
	"github.com/videoworker/videoworker/worker"
)

const hookSecret = "whsec_e2e_secret_0123456789"

// withWebhooks starts the stand-in's delivery loop and a receiver, and
// returns a worker configuration that subscribes it.
func (e *env) withWebhooks(t *testing.T, cfg worker.Config) worker.Config {
	t.Helper()
	v, err := webhook.NewVerifier([]string{hookSecret}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.receiver = webhook.NewHandler(v, e.jobs, asynq.NewClientFromRedisClient(e.rdb), e.log)
	recv := httptest.NewServer(e.receiver)
	t.Cleanup(recv.Close)
	e.api.Start()
	t.Cleanup(e.api.Close)
	cfg.Webhook = &apiclient.WebhookSubscription{URL: recv.URL + webhook.Path, Secret: hookSecret,
		Events: []string{"video.completed", "video.failed", "video.cancelled", "video.expired"}}
	return cfg
}

// latencies returns, per job, the time from the API completing the job to
// the worker starting its download, and how many downloads a webhook
// check started.
func (e *env) latencies(t *testing.T, recs []*jobs.Record) ([]time.Duration, int) {
	t.Helper()
	var out []time.Duration
	byWebhook := 0
	for _, r := range recs {
		info, ok := e.api.Job(r.VideoID)
		if !ok || info.CompletedAt.IsZero() || r.DownloadStartedAt.IsZero() {
			t.Fatalf("job %s: no completion or download time (%+v)", r.ID, info)
		}
		out = append(out, r.DownloadStartedAt.Sub(info.CompletedAt))
		hist, _ := e.jobs.Events(context.Background(), r.ID, 0)
		completed := 0
		for _, ev := range hist {
			if ev.Event == "completed" {
				completed++
				if strings.Contains(ev.Detail, "webhook") {
					byWebhook++
				}
			}
		}
		if completed != 1 {
			t.Errorf("job %s: %d completion transitions, want 1", r.ID, completed)
		}
		if r.DownloadAttempts != 1 {
			t.Errorf("job %s: %d downloads, want 1", r.ID, r.DownloadAttempts)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, byWebhook
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// TestWebhooksStartDownloadsAtOnce runs 200 jobs with webhooks and 200
// with polling alone, and reports completion-to-download-start latency.
// Webhooks must start (nearly) every download, never a second chain or a
// second download.
func TestWebhooksStartDownloadsAtOnce(t *testing.T) {
	t.Parallel()
	const n = 200
	run := func(hooks bool) ([]time.Duration, int) {
		cfg := fastStandin()
		cfg.QueuedFor, cfg.ProcessingFor = 100*time.Millisecond, 1500*time.Millisecond
		e := setup(t, cfg)
		wc := fastConfig()
		wc.Concurrency = 20
		wc.PollInterval, wc.MaxPollInterval = 4*time.Second, 4*time.Second
		wc.DelayedTaskCheckInterval = 100 * time.Millisecond
		if hooks {
			wc = e.withWebhooks(t, wc)
		}
		e.startWorker(wc, nil)
		ids := e.submit(n, "google/veo-3.1-lite")
		recs := e.waitTerminal(ids, 120*time.Second)
		e.checkStored(recs)
		// Each job's chain ends by itself: its last scheduled link fires,
		// sees the job stored and schedules nothing.
		insp := asynq.NewInspectorFromRedisClient(e.rdb)
		deadline := time.Now().Add(20 * time.Second)
		for {
			left := 0
			for _, id := range ids {
				left += len(liveTasks(t, insp, tasks.QueuePoll, string(id))) + len(liveTasks(t, insp, tasks.QueueDownload, string(id)))
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d poll or download tasks still alive 20 s after every job was stored", left)
			}
			time.Sleep(200 * time.Millisecond)
		}
		var hookLag, afterHook []time.Duration
		for _, r := range recs {
			if info, ok := e.api.Job(r.VideoID); ok && !r.LastWebhookAt.IsZero() {
				hookLag = append(hookLag, r.LastWebhookAt.Sub(info.CompletedAt))
				afterHook = append(afterHook, r.DownloadStartedAt.Sub(r.LastWebhookAt))
			}
		}
		sort.Slice(hookLag, func(i, j int) bool { return hookLag[i] < hookLag[j] })
		sort.Slice(afterHook, func(i, j int) bool { return afterHook[i] < afterHook[j] })
		if len(hookLag) > 0 {
			t.Logf("webhook arrival after completion p50 %s p99 %s; download start after arrival p50 %s p99 %s",
				pct(hookLag, 0.5), pct(hookLag, 0.99), pct(afterHook, 0.5), pct(afterHook, 0.99))
		}
		return e.latencies(t, recs)
	}
	hooked, byHook := run(true)
	polled, byHookPolled := run(false)
	t.Logf("completion → download start over %d jobs: webhooks p50 %s p99 %s (%d started by a webhook); polling alone (4 s interval) p50 %s p99 %s",
		n, pct(hooked, 0.5), pct(hooked, 0.99), byHook, pct(polled, 0.5), pct(polled, 0.99))
	if byHook < n*95/100 {
		t.Errorf("webhooks started %d of %d downloads; want nearly all", byHook, n)
	}
	if byHookPolled != 0 {
		t.Errorf("%d downloads credited to webhooks with webhooks off", byHookPolled)
	}
}

// TestWebhookFaultsChangeNothing: deliveries signed with a wrong secret,
// dropped, duplicated and out of order; every job still ends stored once,
// and the receiver counted the rejections.
func TestWebhookFaultsChangeNothing(t *testing.T) {
	t.Parallel()
	cfg := fastStandin()
	cfg.ProcessingFor = 400 * time.Millisecond
	cfg.WebhookTimeScale = 0.001
	e := setup(t, cfg)
	wc := e.withWebhooks(t, fastConfig())
	wc.Webhook.Events = append(wc.Webhook.Events, "video.progress")
	e.api.SetWebhookFaults(standin.WebhookFaults{WrongSecretRate: 0.2, DropRate: 0.15, DuplicateRate: 0.3, OutOfOrderRate: 0.3})
	e.startWorker(wc, nil)
	ids := e.submit(60, "google/veo-3.1-lite")
	recs := e.waitTerminal(ids, 60*time.Second)
	e.checkStored(recs)
	for _, r := range recs {
		if r.DownloadAttempts != 1 {
			t.Errorf("job %s downloaded %d times", r.ID, r.DownloadAttempts)
		}
	}
	if err := e.receiver.Flush(context.Background()); err != nil { // the rejections counted in memory
		t.Fatal(err)
	}
	stats, err := e.jobs.WebhookStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hs := e.api.Stats().Webhooks
	t.Logf("stand-in: %d attempts, %d delivered, %d failed, %d dropped, %d duplicated; receiver: %v", hs.Attempts, hs.Delivered, hs.Failed, hs.Dropped, hs.Duplicated, stats)
	for _, k := range []string{webhook.OutcomeAccepted, webhook.OutcomeBadSignature, webhook.OutcomeDuplicate} {
		if stats[k] == "" || stats[k] == "0" {
			t.Errorf("receiver counted no %q deliveries: %v", k, stats)
		}
	}
}

// holdCreate returns each create call's answer only after hold, so that
// the API's webhook reaches the receiver before the worker saves the video
// id.
type holdCreate struct {
	worker.VideoAPI
	hold func(ctx context.Context, v *apiclient.Video)
}

func (h holdCreate) Create(ctx context.Context, req apiclient.CreateRequest, opts apiclient.CreateOptions) (*apiclient.Video, error) {
	v, err := h.VideoAPI.Create(ctx, req, opts)
	if err == nil {
		h.hold(ctx, v)
	}
	return v, err
}

// TestEarlyWebhookChecksAtOnce: the API finishes each job at once and its
// video.completed delivery is answered before the worker has saved the
// video id (the create call's answer is held until then). With
// poll_after_seconds 60 the first scheduled poll is a minute away, so the
// jobs end stored well within the test's 20 s only if the early delivery
// led to a status check when the id was saved. That check is the only
// status call made, the job's own chain is untouched (link #1 still
// scheduled a minute out), and the webhook alone moved nothing.
func TestEarlyWebhookChecksAtOnce(t *testing.T) {
	t.Parallel()
	const n = 5
	cfg := fastStandin()
	cfg.QueuedFor, cfg.ProcessingFor, cfg.PollAfterSeconds = 0, 0, 60
	e := setup(t, cfg)
	wc := fastConfig()
	wc.PollInterval, wc.MaxPollInterval = time.Minute, 2*time.Minute
	wc = e.withWebhooks(t, wc)

	var created atomic.Int64
	api := holdCreate{VideoAPI: e.client, hold: func(ctx context.Context, v *apiclient.Video) {
		// Creates of one model are serialised, and each job raises one
		// video.completed: the k-th answered delivery is this job's.
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
	start := time.Now()
	ids := e.submit(n, "google/veo-3.1-lite")
	recs := e.waitTerminal(ids, 20*time.Second)
	t.Logf("%d instant jobs with early webhooks stored in %s (first scheduled poll: 60 s)", n, time.Since(start).Round(time.Millisecond))
	e.checkStored(recs)

	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	for _, r := range recs {
		if r.EarlyWebhookAt.IsZero() || r.EarlyWebhookVideo != r.VideoID || r.EarlyWebhookEvent != "video.completed" {
			t.Errorf("job %s: no early delivery recorded (%v %q %q); the test did not hold the create", r.ID, r.EarlyWebhookAt, r.EarlyWebhookEvent, r.EarlyWebhookVideo)
		}
		if r.PollSeq != 1 || r.WebhookDeliveries != 1 || r.DownloadAttempts != 1 {
			t.Errorf("job %s: poll_seq %d, deliveries %d, downloads %d; want 1, 1, 1", r.ID, r.PollSeq, r.WebhookDeliveries, r.DownloadAttempts)
		}
		hist, _ := e.jobs.Events(context.Background(), r.ID, 0)
		var seq []string
		for _, ev := range hist {
			seq = append(seq, ev.Event)
			if ev.Event == "completed" && !strings.Contains(ev.Detail, "out-of-chain check") {
				t.Errorf("job %s: completion %q was not seen by the out-of-chain check", r.ID, ev.Detail)
			}
		}
		// The webhook was recorded while the job was still submitting, and
		// the job moved only after the id was saved and the check ran.
		if i, j := slices.Index(seq, "webhook_early"), slices.Index(seq, "created"); i < 0 || j < i || slices.Index(seq, "completed") < j {
			t.Errorf("job %s: history %v, want webhook_early, created, completed in that order", r.ID, seq)
		}
		// The chain is untouched: link #1 is still scheduled a minute out.
		ti, err := insp.GetTaskInfo(tasks.QueuePoll, tasks.PollTaskID(r.ID, 1))
		if err != nil || ti.State != asynq.TaskStateScheduled || time.Until(ti.NextProcessAt) < 30*time.Second {
			t.Errorf("job %s: first chain link %+v, %v; want it scheduled about 60 s out", r.ID, ti, err)
		}
	}
	st := e.api.Stats()
	if got := st.Calls[standin.EndpointGet]; got != n {
		t.Errorf("%d status calls for %d jobs; want exactly one (the early delivery's check) each", got, n)
	}
}
