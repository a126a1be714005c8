package worker_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/worker"
)

// TestMetricsScrape runs jobs with metrics on and scrapes /metrics.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	m := metrics.New()
	m.AddQueues(asynq.NewInspectorFromRedisClient(e.rdb))
	client, err := apiclient.New(apiclient.Config{BaseURL: e.apiURL, APIKey: testKey, HTTPClient: &http.Client{Transport: m.Transport(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(fastConfig(), worker.Deps{Redis: e.rdb, API: client, Store: e.store, Jobs: e.jobs, Logger: e.log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := contextWithCancel(t)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	ids := e.submit(4, "google/veo-3.1-lite")
	e.checkStored(e.waitTerminal(ids, 30*time.Second))
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	value := func(series string) float64 {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`)
		mm := re.FindStringSubmatch(text)
		if mm == nil {
			t.Errorf("series %s missing from /metrics", series)
			return -1
		}
		v, _ := strconv.ParseFloat(mm[1], 64)
		return v
	}
	if v := value(`videoworker_jobs_finished_total{state="stored"}`); v != 4 {
		t.Errorf("stored jobs = %v, want 4", v)
	}
	if v := value(`videoworker_api_calls_total{endpoint="create",status="202"}`); v != 4 {
		t.Errorf("creates = %v, want 4", v)
	}
	if v := value(`videoworker_api_calls_total{endpoint="content",status="200"}`); v != 4 {
		t.Errorf("content downloads = %v, want 4", v)
	}
	if v := value(`videoworker_bytes_stored_total`); v != 4*32<<10 {
		t.Errorf("bytes stored = %v, want %d", v, 4*32<<10)
	}
	if v := value(`videoworker_submit_to_stored_seconds_count`); v != 4 {
		t.Errorf("submit→stored observations = %v, want 4", v)
	}
	if v := value(`videoworker_completion_to_stored_seconds_count`); v != 4 {
		t.Errorf("completion→stored observations = %v, want 4", v)
	}
	if v := value(`videoworker_submit_to_stored_seconds_sum`); v <= 0 || v > 4*30 {
		t.Errorf("submit→stored sum = %vs, not plausible", v)
	}
	// The stand-in's list price: $0.05/s × 8 s = $0.40 a job.
	if v := value(`videoworker_spend_usd_total{model="google/veo-3.1-lite",tenant="default"}`); v < 1.5999 || v > 1.6001 {
		t.Errorf("spend = %v, want 1.6", v)
	}
	if v := value(`videoworker_status_checks_total`); v < 4 {
		t.Errorf("status checks = %v, want at least 4", v)
	}
	// Every job's first poll is scheduled (PollInterval later), so each
	// records its lateness; with DelayedTaskCheckInterval 50 ms and asynq's
	// whole-second schedule none starts more than about 1 s late.
	if v := value(`videoworker_poll_lateness_seconds_count`); v < 4 {
		t.Errorf("poll lateness observations = %v, want at least 4", v)
	}
	if v := value(`videoworker_poll_lateness_seconds_bucket{le="2"}`); v != value(`videoworker_poll_lateness_seconds_count`) {
		t.Errorf("%v polls started within 2 s of their time, want all", v)
	}
	if v := value(`asynq_tasks_processed_total{queue="video_create"}`); v < 4 {
		t.Errorf("asynq processed in video_create = %v, want ≥ 4", v)
	}
	if v := value(`asynq_queue_size{queue="video_download"}`); v != 0 {
		t.Errorf("download queue size = %v after all stored, want 0", v)
	}
}
