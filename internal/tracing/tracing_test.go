package tracing_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/videoworker/videoworker/internal/tracing"
)

func TestTraceparentRoundTrip(t *testing.T) {
	t.Parallel()
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	sc, ok := tracing.Parse(tp)
	if !ok || !sc.IsSampled() || !sc.IsRemote() {
		t.Fatalf("Parse(%q) = %v, %v", tp, sc, ok)
	}
	if got := tracing.Format(sc); got != tp {
		t.Errorf("Format = %q, want %q", got, tp)
	}
	for _, bad := range []string{"", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
		"00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0"} {
		if _, ok := tracing.Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if tracing.Format(trace.SpanContext{}) != "" {
		t.Error("Format of an invalid context is not empty")
	}
}

// TestOffAllocatesNothing: with tracing off (a nil Tracer, a context with
// no span) everything the job's hot path calls allocates nothing.
func TestOffAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	var tr *tracing.Tracer
	err := errors.New("x")
	n := testing.AllocsPerRun(100, func() {
		c, sp := tr.StartJob(ctx, "job-1")
		sp.Str(tracing.AttrModel, "m")
		_ = sp.Traceparent()
		sp.End(err)
		c, sp = tr.StartTask(c, "video.poll", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "job-1")
		sp.Int(tracing.AttrRetry, 1)
		c2, child := tracing.Child(c, "api.get", trace.SpanKindClient)
		if child.Recording() {
			t.Fatal("a child of nothing records")
		}
		child.Str(tracing.AttrVideoID, "v")
		child.End(err)
		tracing.Current(c2).Str(tracing.AttrModel, "m")
		tracing.Current(c2).Bool(tracing.AttrCreated, false)
		sp.End(nil)
	})
	if n != 0 {
		t.Errorf("tracing off: %.1f allocations, want 0", n)
	}
	if tr.On() {
		t.Error("a nil Tracer is on")
	}
	if tracing.New(nil) != nil {
		t.Error("New(nil) is not off")
	}
}
