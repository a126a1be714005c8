package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// runInBackground runs the program with args until the test ends or stop
// is called; stop returns its error.
func runInBackground(t *testing.T, args []string, stdout, stderr io.Writer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, args, stdout, stderr) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case err = <-errc:
			case <-time.After(20 * time.Second):
				t.Fatalf("%v did not stop within 20 s of its context ending", args)
			}
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// TestStandinCommandDeliversWebhooks: `videoworker standin` delivers the
// webhooks jobs subscribe (it used to deliver none) and stops cleanly.
func TestStandinCommandDeliversWebhooks(t *testing.T) {
	got := make(chan string, 16)
	var wrong atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Ai-Stats-Signature") == "" {
			wrong.Add(1)
		}
		got <- r.Header.Get("X-Ai-Stats-Event-Type")
	}))
	defer recv.Close()

	addr := freeAddr(t)
	var out syncBuffer
	stop := runInBackground(t, []string{"standin", "-addr", addr, "-api-key", "k", "-queued-for", "0",
		"-processing-for", "50ms", "-webhook-time-scale", "0.001"}, &out, &out)
	waitListening(t, addr)
	api, err := apiclient.New(apiclient.Config{BaseURL: "http://" + addr + "/v1", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	_, err = api.Create(t.Context(), apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "a lighthouse",
		Webhook: &apiclient.WebhookSubscription{URL: recv.URL + "/hook", Secret: "whsec_0123456789abcdef0123", Events: []string{"video.completed"}}},
		apiclient.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev != "video.completed" {
			t.Errorf("delivered event %q, want video.completed", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no webhook delivered within 10 s\n%s", out.String())
	}
	if wrong.Load() > 0 {
		t.Error("a delivery carried no signature header")
	}
	api.CloseIdleConnections()
	start := time.Now()
	if err := stop(); err != nil {
		t.Errorf("standin stopped with %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("standin took %v to stop", d)
	}
}

// TestStandinHelpListsWebhookFlags: -h succeeds (it exited 2 with "flag:
// help requested") and lists the webhook fault knobs.
func TestStandinHelpListsWebhookFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"standin", "-h"}, &out, &errOut); err != nil {
		t.Fatalf("standin -h: %v", err)
	}
	for _, want := range []string{"usage: videoworker standin", "-webhook-duplicate-rate", "-webhook-wrong-secret-rate", "-webhook-drop-rate"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("standin -h does not show %q:\n%s", want, out.String())
		}
	}
}

// TestHelpSucceeds: every command's -h prints its usage on stdout and
// succeeds; an unknown flag is still a usage error.
func TestHelpSucceeds(t *testing.T) {
	for _, cmd := range []string{"worker", "enqueue", "status", "serve", "standin", "demo", "healthcheck"} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), []string{cmd, "-h"}, &out, &errOut); err != nil {
			t.Errorf("%s -h: %v", cmd, err)
		}
		if !strings.Contains(out.String(), "usage: videoworker "+cmd) {
			t.Errorf("%s -h printed %q", cmd, out.String())
		}
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"worker", "-nope"}, &out, &errOut)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(errOut.String(), "usage: videoworker worker") {
		t.Errorf("worker -nope: %v, stderr %q", err, errOut.String())
	}
}

// TestConfigTypeErrorsAllAtOnce: values that do not parse are each named in
// plain words, with the validation problems, in one error (envconfig
// stopped at the first with its own wording).
func TestConfigTypeErrorsAllAtOnce(t *testing.T) {
	for k, v := range map[string]string{
		"WORKER_CONCURRENCY": "abc", "POLL_INTERVAL": "5", "S3_PATH_STYLE": "yes", "LOG_FORMAT": "xml",
		"WEBHOOK_TOLERANCE": "soon", "SHUTDOWN_TIMEOUT": "-1s",
	} {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"serve"}, &out, &errOut)
	if err == nil {
		t.Fatal("serve accepted a bad configuration")
	}
	msg := err.Error()
	for _, want := range []string{
		`WORKER_CONCURRENCY: want a whole number, got "abc"`,
		`POLL_INTERVAL: want a duration such as 500ms, 30s, 5m or 1h30m, got "5"`,
		`S3_PATH_STYLE: want true or false, got "yes"`,
		`WEBHOOK_TOLERANCE: want a duration`,
		"LOG_FORMAT: want auto, text or json",
		"SHUTDOWN_TIMEOUT: must be positive",
		"configuration has 6 problems:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	for _, bad := range []string{"envconfig", "strconv", "converting"} {
		if strings.Contains(msg, bad) {
			t.Errorf("error shows %q:\n%s", bad, msg)
		}
	}
	// A field that does not parse keeps its default, so validation does
	// not name it a second time.
	if strings.Count(msg, "WORKER_CONCURRENCY") != 1 {
		t.Errorf("WORKER_CONCURRENCY named more than once:\n%s", msg)
	}
}

// TestLogsReadable: durations read "30s" in JSON (not nanoseconds) and maps
// read k=v sorted (not Go's map[…]).
func TestLogsReadable(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		log := newLogger(&b, format, "info")
		log.Info("x", "grace", 30*time.Second, "queues", map[string]int{"video_poll": 5, "video_create": 4}, slog.Group("g", "d", time.Minute))
		s := b.String()
		for _, want := range []string{"30s", "video_create=4, video_poll=5", "1m0s"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s log lacks %q: %s", format, want, s)
			}
		}
		if strings.Contains(s, "30000000000") || strings.Contains(s, "map[") {
			t.Errorf("%s log is not readable: %s", format, s)
		}
	}
	if budgetText("") != "unlimited" || budgetText("10/m") != "10/m" {
		t.Error("budgetText")
	}
}

// TestCheckAPI: the start-up check tells an API that answers and takes the
// key from a refused key and from an API that does not answer.
func TestCheckAPI(t *testing.T) {
	srv := standin.New(standin.Config{APIKey: "right"}, slog.New(slog.DiscardHandler))
	hs := httptest.NewServer(srv)
	defer hs.Close()
	if err := checkAPI(t.Context(), hs.URL+"/v1", "right"); err != nil {
		t.Errorf("good key: %v", err)
	}
	err := checkAPI(t.Context(), hs.URL+"/v1", "wrong-key-value")
	if err == nil || !strings.Contains(err.Error(), "refuses the key") || strings.Contains(err.Error(), "wrong-key-value") {
		t.Errorf("wrong key: %v", err)
	}
	err = checkAPI(t.Context(), "http://"+freeAddr(t)+"/v1", "right")
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("unreachable: %v", err)
	}
}

// TestHealthcheck: 2xx succeeds, anything else or no answer fails.
func TestHealthcheck(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer hs.Close()
	var out bytes.Buffer
	if err := run(t.Context(), []string{"healthcheck", "-bearer", "tok", hs.URL + "/healthz"}, &out, &out); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := run(t.Context(), []string{"healthcheck", hs.URL + "/other"}, &out, &out); err == nil {
		t.Error("a 503 passed")
	}
	if err := run(t.Context(), []string{"healthcheck", "http://" + freeAddr(t) + "/healthz"}, &out, &out); err == nil {
		t.Error("no answer passed")
	}
}

// TestServeHTTPClosesUnusedConnections: a connection opened but never used
// (a client dialing ahead of need) does not hold up the shutdown; it kept
// http.Server.Shutdown waiting 5 s and made the demo log "dashboard stopped:
// context deadline exceeded".
func TestServeHTTPClosesUnusedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- serveHTTP(ctx, ln, &http.Server{Handler: http.NotFoundHandler()})
	}()
	// One used connection left idle, one never used.
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The server has seen the unused connection once a request on another
	// fresh connection was answered after it.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	_, _ = io.ReadAll(c2)
	c2.Close()

	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("serveHTTP: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveHTTP did not return")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("shutdown took %v with an unused connection open", d)
	}
	// The unused connection was closed.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("unused connection: read %v, want EOF", err)
	}
}

// TestStatusListsEveryOutput: a job with two outputs shows both files with
// their sizes and hashes (it showed the total size beside the first file
// only).
func TestStatusListsEveryOutput(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	t.Setenv("REDIS_URL", rs.URL(rs.NewDB(t)))
	t.Setenv("STORAGE_URL", "file://"+dir)
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
	js := jobs.NewStore(rdb, cfg.KeyPrefix)
	rec := &jobs.Record{ID: "two-outputs", Request: apiclient.CreateRequest{Model: "m", Prompt: "p", SampleCount: 2}}
	if _, _, err := js.Create(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	var infos []storage.ObjectInfo
	for i, body := range []string{"first output", "the second output"} {
		key, err := storage.RenderKey(cfg.KeyTemplate, storage.KeyVars{JobID: rec.ID, VideoID: "vid_2", Index: i, Date: rec.SubmittedAt})
		if err != nil {
			t.Fatal(err)
		}
		info, err := store.Put(t.Context(), key, strings.NewReader(body), storage.PutOptions{Size: int64(len(body))})
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	if _, err := js.Apply(t.Context(), rec.ID, jobs.Change{To: jobs.StateStored, Set: map[string]any{
		jobs.FieldVideoID: "vid_2", jobs.FieldOutputs: 2, jobs.FieldStorageKey: infos[0].Key, jobs.FieldLocation: infos[0].Location,
		jobs.FieldBytes: infos[0].Size + infos[1].Size, jobs.FieldSHA256: infos[0].SHA256,
	}}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"status", rec.ID}, &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{
		"stored 2 outputs, 29 bytes in all:",
		fmt.Sprintf("0: %s (12 bytes, sha256 %s)", infos[0].Location, infos[0].SHA256),
		fmt.Sprintf("1: %s (17 bytes, sha256 %s)", infos[1].Location, infos[1].SHA256),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(t.Context(), []string{"status", "-json", rec.ID}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Files []outputFile `json:"files"`
	}
	if err := json.Unmarshal(out.Bytes(), &line); err != nil || len(line.Files) != 2 || line.Files[1].Location != infos[1].Location {
		t.Errorf("status -json files = %+v (%v)", line.Files, err)
	}
}

// TestWorkerWarnsWhenAPIUnreachable: a worker whose API does not answer
// says so at start, with the readable log values, and keeps running (it
// was found only when jobs failed).
func TestWorkerWarnsWhenAPIUnreachable(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	t.Setenv("REDIS_URL", rs.URL(rs.NewDB(t)))
	t.Setenv("STORAGE_URL", "file://"+t.TempDir())
	t.Setenv("AISTATS_BASE_URL", "http://"+freeAddr(t)+"/v1")
	t.Setenv("AISTATS_API_KEY", "sk-never-logged-0123")
	t.Setenv("LOG_FORMAT", "json")
	var logs syncBuffer
	stop := runInBackground(t, []string{"worker"}, io.Discard, &logs)
	// The API check runs beside the start: wait for its warning and for
	// the line that names the queues, whichever comes last.
	deadline := time.Now().Add(20 * time.Second)
	for s := logs.String(); !strings.Contains(s, "API check failed") || !strings.Contains(s, `"queues":`); s = logs.String() {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the API, or no queues line, within 20 s:\n%s", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Errorf("worker: %v", err)
	}
	s := logs.String()
	for _, want := range []string{`"level":"WARN","msg":"API check failed`, "does not answer", `"create":"unlimited"`, `"read":"unlimited"`, `"queues":"video_create=`} {
		if !strings.Contains(s, want) {
			t.Errorf("logs lack %s:\n%s", want, s)
		}
	}
	if strings.Contains(s, "sk-never-logged-0123") {
		t.Error("the API key is in the logs")
	}
}
