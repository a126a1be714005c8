package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// tracingOn reports whether the configuration exports traces: an OTLP
// endpoint is set and OTEL_SDK_DISABLED is not.
func (c Config) tracingOn() bool {
	return !c.OTelSDKDisabled && (strings.TrimSpace(c.OTLPEndpoint) != "" || strings.TrimSpace(c.OTLPTracesEndpoint) != "")
}

// tracesURL is where spans are sent: the traces endpoint as given, or the
// base endpoint's /v1/traces (the exporter's own rule).
func (c Config) tracesURL() string {
	if u := strings.TrimSpace(c.OTLPTracesEndpoint); u != "" {
		return u
	}
	return strings.TrimRight(strings.TrimSpace(c.OTLPEndpoint), "/") + "/v1/traces"
}

// validateTracing checks the OTEL_* variables, only when tracing is on.
// No message quotes a header: they may carry tokens.
func (c Config) validateTracing(add func(format string, a ...any)) {
	if !c.tracingOn() {
		return
	}
	for _, e := range [][2]string{{"OTEL_EXPORTER_OTLP_ENDPOINT", c.OTLPEndpoint}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", c.OTLPTracesEndpoint}} {
		if strings.TrimSpace(e[1]) == "" {
			continue
		}
		if u, err := url.Parse(strings.TrimSpace(e[1])); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("%s: want an absolute http(s) URL (OTLP/HTTP; gRPC is not supported)", e[0])
		} else if u.User != nil {
			add("%s: put credentials in OTEL_EXPORTER_OTLP_HEADERS, not in the URL", e[0])
		}
	}
	for _, p := range [][2]string{{"OTEL_EXPORTER_OTLP_PROTOCOL", c.OTLPProtocol}, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", c.OTLPTracesProtocol}} {
		if v := strings.TrimSpace(p[1]); v != "" && v != "http/protobuf" {
			add("%s: only http/protobuf is supported, got %q", p[0], clip(v, 20))
		}
	}
	for _, h := range [][2]string{{"OTEL_EXPORTER_OTLP_HEADERS", c.OTLPHeaders}, {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", c.OTLPTracesHeaders}} {
		for i, kv := range strings.Split(h[1], ",") {
			if strings.TrimSpace(kv) == "" {
				continue
			}
			if k, _, ok := strings.Cut(kv, "="); !ok || strings.TrimSpace(k) == "" {
				add("%s: entry %d is not key=value", h[0], i+1) // never the value: it may be a token
			}
		}
	}
	switch c.OTelSampler {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
	case "traceidratio", "parentbased_traceidratio":
		if c.OTelSamplerArg != "" {
			if r, err := strconv.ParseFloat(strings.TrimSpace(c.OTelSamplerArg), 64); err != nil || r < 0 || r > 1 {
				add("OTEL_TRACES_SAMPLER_ARG: want a ratio between 0 and 1")
			}
		}
	default:
		add("OTEL_TRACES_SAMPLER: want always_on, always_off, traceidratio or their parentbased_ forms, got %q", clip(c.OTelSampler, 30))
	}
}

// tracingShutdownTimeout bounds the flush of the spans still buffered when
// the program stops.
const tracingShutdownTimeout = 5 * time.Second

// setupTracing returns the tracer provider of the configuration and the
// function that flushes and stops it (bounded by tracingShutdownTimeout),
// or a nil provider and a no-op when tracing is off. Spans are batched
// and sent over OTLP/HTTP; the SDK reads the sampler and the batch
// settings (OTEL_BSP_*) from the environment.
func setupTracing(ctx context.Context, cfg Config, log *slog.Logger) (trace.TracerProvider, func(), error) {
	if !cfg.tracingOn() {
		return nil, func() {}, nil
	}
	// Export errors go to the program's log; the exporter's errors name
	// the URL and the HTTP status, never the request's headers.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: export failed", "err", err.Error())
	}))
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", cfg.OTelServiceName)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("tracing on: exporting spans over OTLP/HTTP", "traces_url", urlForLog(cfg.tracesURL()), "service_name", cfg.OTelServiceName,
		"sampler", cmpOr(cfg.OTelSampler, "parentbased_always_on"))
	return tp, func() {
		sctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("tracing: spans not flushed at exit", "err", err.Error())
		}
	}, nil
}

// urlForLog is u without credentials or a query (which might carry a
// token).
func urlForLog(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable)"
	}
	p.RawQuery, p.User = "", nil
	return p.String()
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
