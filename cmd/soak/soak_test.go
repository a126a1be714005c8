package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSoakShort is the short soak that `make test` runs: 60 jobs through
// two worker processes, one SIGKILL mid-run and one Redis restart, every
// fault on. The killed worker's tasks come back only through asynq's lease
// recovery (the replacement's recoverer first runs a minute after it
// starts), so the test takes about 65-75 s; it is skipped with -short.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the short soak takes about a minute; skipped with -short")
	}
	t.Parallel()
	cfg := defaultConfig()
	cfg.Jobs = 60
	cfg.Workers = 2
	cfg.KillEvery = 2 * time.Second // one kill, 2 s into the run: work is in flight
	cfg.MaxKills = 1
	cfg.RedisRestarts = 1
	cfg.DrainTimeout = 3 * time.Minute
	cfg.Seed = 20261127
	cfg.WorkDir = t.TempDir()
	cfg.Out = filepath.Join(cfg.WorkDir, "soak.json")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var progress lineLogger
	progress.t = t
	start := time.Now()
	rep, err := Run(ctx, cfg, &progress)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text bytes.Buffer
	rep.writeText(&text)
	t.Logf("soak took %s\n%s", time.Since(start).Round(time.Second), text.String())
	if !rep.Pass {
		t.Fatalf("verdict %s: %s", rep.Verdict, strings.Join(rep.Failures, "; "))
	}

	// The run did what it claims.
	if rep.Jobs.Submitted != cfg.Jobs || rep.Jobs.Lost != 0 {
		t.Errorf("submitted %d, lost %d; want %d, 0", rep.Jobs.Submitted, rep.Jobs.Lost, cfg.Jobs)
	}
	if rep.Chaos.Kills != 1 {
		t.Errorf("kills = %d, want 1", rep.Chaos.Kills)
	}
	if len(rep.Chaos.RedisRestarts) != 1 {
		t.Errorf("Redis restarts = %d, want 1", len(rep.Chaos.RedisRestarts))
	}
	stored := rep.Jobs.ByState["stored"]
	if rep.Objects.Verified != stored || rep.Objects.OnDisk != stored || stored == 0 {
		t.Errorf("stored %d, verified %d, on disk %d: want all equal and non-zero", stored, rep.Objects.Verified, rep.Objects.OnDisk)
	}
	if rep.Creates.PerJobMax != 1 || rep.Creates.JobsWithOne != cfg.Jobs {
		t.Errorf("creates: per job max %d, jobs created once %d; want 1, %d", rep.Creates.PerJobMax, rep.Creates.JobsWithOne, cfg.Jobs)
	}
	faults := 0
	for _, n := range rep.Faults.API {
		faults += n
	}
	if faults == 0 {
		t.Error("no API fault was injected")
	}

	// The JSON report round-trips.
	if err := rep.writeJSON(cfg.Out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	if back.Verdict != "PASS" || back.Jobs.Submitted != cfg.Jobs {
		t.Errorf("JSON report: verdict %q, submitted %d", back.Verdict, back.Jobs.Submitted)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	cfg, err := parseFlags([]string{"-jobs", "100000", "-workers", "4", "-kill-every", "3s", "-redis-restarts", "0", "-out", "x.json"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Jobs != 100000 || cfg.Workers != 4 || cfg.KillEvery != 3*time.Second || cfg.RedisRestarts != 0 || cfg.Out != "x.json" {
		t.Errorf("parsed %+v", cfg)
	}
	def, err := parseFlags(nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if def.Jobs != 2000 || def.Workers != 3 || def.RedisRestarts != 2 || def.DrainTimeout != 10*time.Minute || !strings.HasPrefix(def.Out, "bench/results/soak-") {
		t.Errorf("defaults %+v", def)
	}
	// -tenants drains more slowly: its drain timeout is longer, unless given.
	if ten, err := parseFlags([]string{"-tenants"}, &stderr); err != nil || ten.DrainTimeout != 20*time.Minute {
		t.Errorf("-tenants: drain timeout %v, %v; want 20m", ten.DrainTimeout, err)
	}
	if ten, err := parseFlags([]string{"-drain-timeout", "5m", "-tenants"}, &stderr); err != nil || ten.DrainTimeout != 5*time.Minute {
		t.Errorf("-drain-timeout 5m -tenants: drain timeout %v, %v; want 5m", ten.DrainTimeout, err)
	}
	for _, args := range [][]string{{"-jobs", "0"}, {"-jobs", "100001"}, {"-workers", "1"}, {"-error-rate", "0.9"}, {"extra"}} {
		if _, err := parseFlags(args, &stderr); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

// lineLogger sends the harness's progress lines to t.Log.
type lineLogger struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
}
