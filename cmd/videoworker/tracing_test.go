package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/internal/tracing/otlptest"
)

// TestEnqueueExportsTraces runs the enqueue command with an OTLP/HTTP
// endpoint set: each job's submit span reaches the receiver before the
// command exits (the flush at shutdown), named by OTEL_SERVICE_NAME and
// sent with OTEL_EXPORTER_OTLP_HEADERS, whose token never appears in the
// log.
func TestEnqueueExportsTraces(t *testing.T) {
	recv := otlptest.Start(t)
	rs := redistest.Start(t, redistest.Options{})
	const token = "otlp-token-5c1d9e"
	for k, v := range map[string]string{
		"REDIS_URL":                   rs.URL(rs.NewDB(t)),
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.BaseURL,
		"OTEL_EXPORTER_OTLP_HEADERS":  "authorization=Bearer%20" + token,
		"OTEL_SERVICE_NAME":           "vw-enqueue-test",
		"LOG_FORMAT":                  "json",
		"LOG_LEVEL":                   "debug",
	} {
		t.Setenv(k, v)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"enqueue", "-prompt", "a traced lighthouse", "-count", "3", "-job-id", "otel"}, &stdout, &stderr); err != nil {
		t.Fatalf("enqueue: %v\n%s", err, stderr.String())
	}
	jobs := map[string]bool{}
	for _, s := range recv.Spans() {
		if s.Name != "video.submit" {
			continue
		}
		jobs[s.Attrs["videoworker.job_id"]] = true
		if s.Service != "vw-enqueue-test" {
			t.Errorf("span's service.name %q", s.Service)
		}
	}
	for _, id := range []string{"otel-1", "otel-2", "otel-3"} {
		if !jobs[id] {
			t.Errorf("no submit span of %s received (got %v)", id, jobs)
		}
	}
	for _, h := range recv.Headers() {
		if got := h.Get("Authorization"); got != "Bearer "+token {
			t.Errorf("export sent Authorization %q", got)
		}
	}
	if strings.Contains(stderr.String(), token) || strings.Contains(stdout.String(), token) {
		t.Errorf("the OTLP header's token was logged:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "tracing on") {
		t.Errorf("no log line says tracing is on:\n%s", stderr.String())
	}
}

// TestTracingConfig: tracing is off without an endpoint (and with
// OTEL_SDK_DISABLED); with one, the protocol must be OTLP/HTTP, and a
// malformed header is named without its value.
func TestTracingConfig(t *testing.T) {
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.tracingOn() {
		t.Error("tracing on with no endpoint set")
	}
	tp, stop, err := setupTracing(context.Background(), cfg, nil)
	if tp != nil || err != nil {
		t.Errorf("setupTracing off: %v, %v", tp, err)
	}
	stop()

	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if cfg, err := loadConfig(); err != nil || cfg.tracingOn() {
		t.Errorf("OTEL_SDK_DISABLED=true: on %v, %v", cfg.tracingOn(), err)
	}
	t.Setenv("OTEL_SDK_DISABLED", "false")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "secret-value-without-key")
	t.Setenv("OTEL_TRACES_SAMPLER", "sometimes")
	_, err = loadConfig()
	if err == nil {
		t.Fatal("grpc protocol, a bad header and an unknown sampler accepted")
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_TRACES_SAMPLER"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	if strings.Contains(err.Error(), "secret-value") {
		t.Errorf("error quotes a header: %v", err)
	}
}

// TestTracingExportErrorHidesURLQuery: an export that fails is logged
// without the endpoint's query, which may carry a token (as the "tracing
// on" line leaves it out).
func TestTracingExportErrorHidesURLQuery(t *testing.T) {
	const token = "otlp-query-token-7f3a2b"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", srv.URL+"/v1/traces?api-key="+token)
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tp, stop, err := setupTracing(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	_, sp := tp.Tracer("test").Start(context.Background(), "span")
	sp.End()
	stop()
	if !strings.Contains(logs.String(), "401") {
		t.Fatalf("the failed export was not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the endpoint's query token was logged:\n%s", logs.String())
	}
}
