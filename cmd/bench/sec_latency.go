package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/wake"
	"github.com/videoworker/videoworker/webhook"
	"github.com/videoworker/videoworker/worker"
)

const webhookSecret = "whsec_bench_0123456789abcdef"

// economyEndpoints are the API endpoints counted per job.
var economyEndpoints = []string{standin.EndpointCreate, standin.EndpointGet, standin.EndpointContent, standin.EndpointList}

func defineLatency(r *recorder, sz sizes) {
	s := fmt.Sprintf("Latency (64 KiB video; the API completes each of %d jobs at a random moment within %d s; poll_after_seconds %d)",
		sz.latencyJobs, int(sz.latencySpread.Seconds()), sz.latencyPollAfter)
	p := float64(sz.latencyPollAfter)
	r.define(figureDef{Key: "latency.wh_p50", Section: s, Label: "completion → stored, webhooks, p50", Unit: "ms", Digits: 0})
	r.define(figureDef{Key: "latency.wh_p99", Section: s, Label: "completion → stored, webhooks, p99", Unit: "ms", Digits: 0,
		Target: "≤ 250 ms", Pass: atMost(250)})
	r.define(figureDef{Key: "latency.poll_p50", Section: s, Label: "completion → stored, polling alone, p50", Unit: "s", Digits: 2})
	r.define(figureDef{Key: "latency.poll_p99", Section: s, Label: "completion → stored, polling alone, p99", Unit: "s", Digits: 2,
		Target: fmt.Sprintf("≤ %.0f s (interval + 1 s)", p+1), Pass: atMost(p + 1)})
	r.define(figureDef{Key: "latency.instant_wh_p50", Section: s, Label: "submit → stored, instant job, webhooks, p50", Unit: "s", Digits: 2})
	r.define(figureDef{Key: "latency.instant_wh_max", Section: s, Label: "submit → stored, instant job, webhooks, max", Unit: "s", Digits: 2})
	r.define(figureDef{Key: "latency.instant_poll_p50", Section: s, Label: "submit → stored, instant job, polling, p50", Unit: "s", Digits: 2})
	r.define(figureDef{Key: "latency.instant_poll_max", Section: s, Label: "submit → stored, instant job, polling, max", Unit: "s", Digits: 2})
	e := "API economy (API calls per job, in the latency scenario)"
	for _, mode := range []string{"webhooks", "polling"} {
		for _, ep := range economyEndpoints {
			r.define(figureDef{Key: "economy." + mode + "." + ep, Section: e, Label: ep + ", " + mode, Unit: "calls/job", Digits: 2})
		}
		r.define(figureDef{Key: "economy." + mode + ".total", Section: e, Label: "all endpoints, " + mode, Unit: "calls/job", Digits: 2})
	}
	r.define(figureDef{Key: "economy.webhooks.deliveries", Section: e, Label: "webhook deliveries received, webhooks", Unit: "per job", Digits: 2})
}

func runLatency(ctx context.Context, b *bench) error {
	for _, wh := range []bool{true, false} {
		if err := runLatencyMode(ctx, b, wh); err != nil {
			return err
		}
	}
	return nil
}

// runLatencyMode measures, with or without webhooks: submit → stored of
// instant jobs submitted one by one to an idle worker, then completion →
// stored of jobs the stand-in completes at random moments.
func runLatencyMode(ctx context.Context, b *bench, webhooks bool) error {
	mode := "polling"
	if webhooks {
		mode = "webhooks"
	}
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	pollAfter := time.Duration(b.sz.latencyPollAfter) * time.Second
	api, err := startAPI(standin.Config{ContentSize: smallVideo, Seed: 4, PollAfterSeconds: b.sz.latencyPollAfter})
	if err != nil {
		return err
	}
	defer api.close()
	dir := b.tempDir("bench-latency-")
	store, err := storage.NewDisk(dir)
	if err != nil {
		return err
	}
	js := jobs.NewStore(re.rdb, "")
	cfg := benchWorkerConfigCreates(b.opts.concurrency, b.opts.createConcurrency)
	cfg.PollInterval = pollAfter
	if webhooks {
		v, err := webhook.NewVerifier([]string{webhookSecret}, 0, nil)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle(webhook.Path, webhook.NewHandler(v, js, wake.NewEnqueuer(re.rdb, true), nil))
		hs := httptest.NewServer(mux)
		defer hs.Close()
		cfg.Webhook = &apiclient.WebhookSubscription{URL: hs.URL + webhook.Path, Secret: webhookSecret}
		api.srv.Start()
	}
	w, err := startWorker(cfg, worker.Deps{Redis: re.rdb, API: api.client, Store: store, Jobs: js})
	if err != nil {
		return err
	}
	defer w.stop()
	producer := tasks.NewClient(re.rdb, tasks.ClientOptions{})

	// Instant jobs, a quarter second apart, on an idle worker.
	var instIDs []string
	for i := range b.sz.latencyInstant {
		id := fmt.Sprintf("instant-%03d", i)
		if _, err := producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: models[0], Prompt: "instant " + id}}); err != nil {
			return err
		}
		instIDs = append(instIDs, id)
		time.Sleep(250 * time.Millisecond)
	}
	if err := waitUntil(ctx, 2*time.Minute, 20*time.Millisecond, "instant jobs", func() (bool, error) {
		n, err := js.ActiveCount(ctx)
		return n == 0, err
	}); err != nil {
		return err
	}
	var inst []float64
	for _, id := range instIDs {
		rec, err := js.Get(ctx, id)
		if err != nil {
			return err
		}
		if rec.State != jobs.StateStored {
			return fmt.Errorf("instant job %s ended %s: %s", id, rec.State, rec.Error)
		}
		inst = append(inst, rec.StoredAt.Sub(rec.SubmittedAt).Seconds())
	}
	b.rec.add("latency.instant_"+map[bool]string{true: "wh", false: "poll"}[webhooks]+"_p50", percentile(inst, 0.5))
	b.rec.add("latency.instant_"+map[bool]string{true: "wh", false: "poll"}[webhooks]+"_max", slices.Max(inst))
	b.rec.addSamples("submit → stored, instant job, "+mode, inst)

	// Jobs held "processing", then completed one by one at random moments.
	api.srv.Hold(true)
	before := api.srv.Stats()
	n := b.sz.latencyJobs
	ids, _, err := submitAll(ctx, producer, "lat", n, 8, models)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, 2*time.Minute, 20*time.Millisecond, "creates", func() (bool, error) {
		left, err := queueBacklog(ctx, re.rdb, tasks.QueueCreate)
		return left == 0, err
	}); err != nil {
		return err
	}
	videos := make([]string, n)
	for i, id := range ids {
		rec, err := js.Get(ctx, id)
		if err != nil {
			return err
		}
		if rec.VideoID == "" {
			return fmt.Errorf("job %s has no video id after its create (%s %s)", id, rec.State, rec.Error)
		}
		videos[i] = rec.VideoID
	}
	rng := rand.New(rand.NewPCG(uint64(b.runIndex), 42))
	offsets := make([]time.Duration, n)
	order := make([]int, n)
	for i := range offsets {
		offsets[i] = time.Duration(rng.Int64N(int64(b.sz.latencySpread)))
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return int(offsets[a] - offsets[b]) })
	start := time.Now()
	for _, i := range order {
		if d := time.Until(start.Add(offsets[i])); d > 0 {
			time.Sleep(d)
		}
		if err := api.srv.Complete(videos[i]); err != nil {
			return err
		}
	}
	if err := waitUntil(ctx, b.sz.latencySpread+pollAfter+2*time.Minute, 20*time.Millisecond, "latency jobs stored", func() (bool, error) {
		left, err := js.ActiveCount(ctx)
		return left == 0, err
	}); err != nil {
		return err
	}
	lat := make([]float64, 0, n)
	for i, id := range ids {
		rec, err := js.Get(ctx, id)
		if err != nil {
			return err
		}
		info, ok := api.srv.Job(videos[i])
		if rec.State != jobs.StateStored || !ok || info.CompletedAt.IsZero() {
			return fmt.Errorf("job %s ended %s (%s)", id, rec.State, rec.Error)
		}
		lat = append(lat, rec.StoredAt.Sub(info.CompletedAt).Seconds())
	}
	after := api.srv.Stats()
	b.rec.addSamples("completion → stored, "+mode, lat)
	if webhooks {
		b.rec.add("latency.wh_p50", 1000*percentile(lat, 0.5))
		b.rec.add("latency.wh_p99", 1000*percentile(lat, 0.99))
		b.rec.add("economy.webhooks.deliveries", float64(after.Webhooks.Attempts-before.Webhooks.Attempts)/float64(n))
	} else {
		b.rec.add("latency.poll_p50", percentile(lat, 0.5))
		b.rec.add("latency.poll_p99", percentile(lat, 0.99))
	}
	total := 0
	for _, ep := range economyEndpoints {
		d := after.Calls[ep] - before.Calls[ep]
		total += d
		b.rec.add("economy."+mode+"."+ep, float64(d)/float64(n))
	}
	for ep, c := range after.Calls {
		if !slices.Contains(economyEndpoints, ep) {
			total += c - before.Calls[ep]
		}
	}
	b.rec.add("economy."+mode+".total", float64(total)/float64(n))
	b.logf("latency (%s): completion→stored p50 %.3fs p99 %.3fs; instant submit→stored p50 %.2fs", mode, percentile(lat, 0.5), percentile(lat, 0.99), percentile(inst, 0.5))
	return w.stop()
}
