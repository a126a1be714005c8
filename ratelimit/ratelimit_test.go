package ratelimit_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/ratelimit"
)

var redisSrv *redistest.Server

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ratelimit tests need a real Redis:", err)
		os.Exit(1)
	}
	redisSrv = srv
	code := m.Run()
	stop()
	os.Exit(code)
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]ratelimit.Limit{
		"":         {},
		"0":        {},
		"10/s":     {Rate: 10, Period: time.Second, Burst: 10},
		"600/m+20": {Rate: 600, Period: time.Minute, Burst: 20},
		"5/h":      {Rate: 5, Period: time.Hour, Burst: 5},
	} {
		got, err := ratelimit.ParseLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"10", "10/d", "x/s", "-1/s", "10/s+0", "10/s+x"} {
		if _, err := ratelimit.ParseLimit(bad); err == nil {
			t.Errorf("ParseLimit(%q) accepted", bad)
		}
	}
}

func TestBudgetAndPause(t *testing.T) {
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	ctx := context.Background()
	a := ratelimit.New(rdb, "t:", map[string]ratelimit.Limit{"create": {Rate: 2, Period: time.Second, Burst: 2}})
	b := ratelimit.New(rdb, "t:", map[string]ratelimit.Limit{"create": {Rate: 2, Period: time.Second, Burst: 2}})
	for i, l := range []*ratelimit.Limiter{a, b} {
		if d, err := l.Reserve(ctx, "create"); err != nil || d != 0 {
			t.Fatalf("call %d within the burst: wait %v, %v", i, d, err)
		}
	}
	if d, err := a.Reserve(ctx, "create"); err != nil || d <= 0 || d > time.Second {
		t.Errorf("third call in a 2/s budget shared by two limiters: wait %v, %v; want (0, 1s]", d, err)
	}
	if d, _ := a.Reserve(ctx, "read"); d != 0 {
		t.Errorf("an unbudgeted class waited %v", d)
	}
	if err := b.Pause(ctx, "read", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := b.Pause(ctx, "read", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d, _ := a.Reserve(ctx, "read"); d < time.Second {
		t.Errorf("after a 1.5 s pause set elsewhere (and a shorter one after it), the wait is %v", d)
	}
}
