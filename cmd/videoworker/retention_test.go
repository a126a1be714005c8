package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
)

// TestStatusOfForgottenJob: status of a job forgotten after its retention
// says so and where its archive is (not "not found"); a job that never
// was is still not found.
func TestStatusOfForgottenJob(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	t.Setenv("REDIS_URL", rs.URL(rs.NewDB(t)))
	t.Setenv("STORAGE_URL", "file://"+t.TempDir())
	t.Setenv("JOB_RETENTION", "1h")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := openRedis(t.Context(), cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	store, err := openStore(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	js := cfg.jobStore(rdb)
	rec := &jobs.Record{ID: "gone-2"}
	rec.Request.Model, rec.Request.Prompt = "m", "p"
	if _, _, err := js.Create(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Do(t.Context(), rec.ID, jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "create"}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Hour)
	docs, err := js.ReadArchive(t.Context(), []string{rec.ID}, later)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(docs[0])
	info, err := store.Put(t.Context(), jobs.ArchiveKey(rec.ID), bytes.NewReader(b), storage.PutOptions{Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := js.Forget(t.Context(), later, []jobs.Forgotten{{ID: rec.ID, Archived: true}}); err != nil || n != 1 {
		t.Fatalf("Forget = %d, %v", n, err)
	}

	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"status", rec.ID}, &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "forgotten") || !strings.Contains(out.String(), info.Location) {
		t.Errorf("status of a forgotten job = %q; want it forgotten, with %s", out.String(), info.Location)
	}
	out.Reset()
	if err := run(t.Context(), []string{"status", "-json", rec.ID}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Forgotten bool   `json:"forgotten"`
		Archive   string `json:"archive"`
	}
	if err := json.Unmarshal(out.Bytes(), &line); err != nil || !line.Forgotten || line.Archive != info.Location {
		t.Errorf("status -json = %s (%v)", out.String(), err)
	}
	if err := run(t.Context(), []string{"status", "never-was"}, &out, &errOut); err == nil {
		t.Error("status of an unknown job succeeded")
	}
}

// TestParseRetention: off, days, durations; nonsense is refused.
func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"off": 0, "0": 0, "7d": 7 * 24 * time.Hour, "72h": 72 * time.Hour, "1s": time.Second} {
		if got, err := parseRetention(in); err != nil || got != want {
			t.Errorf("parseRetention(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1h", "10ms", "xd", "0d", "forever"} {
		if _, err := parseRetention(in); err == nil {
			t.Errorf("parseRetention(%q) accepted", in)
		}
	}
}
