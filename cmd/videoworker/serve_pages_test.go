package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/webhook"
)

// TestServePagesShowNoSecret runs `videoworker serve` with every secret
// the configuration can hold, then renders the dashboard, a job's page,
// the asynq UI and its API answers, /metrics and /readyz for a viewer and
// an operator, and looks for the secrets in every answer and in the logs.
func TestServePagesShowNoSecret(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	secrets := map[string]string{
		"AISTATS_API_KEY":       "sk-serve-secret-api-key-1234",
		"WEBHOOK_SECRETS":       "whsec_serve_secret_0123456789,whsec_old_secret_9876543210",
		"API_TOKENS":            "tok_serve_secret_abcdef0123",
		"OPERATORS":             "olga:olga-secret-pass:operator,vic:vic-secret-pass:viewer",
		"S3_SECRET_ACCESS_KEY":  "s3-secret-key-abcdef012345",
		"AWS_SECRET_ACCESS_KEY": "aws-secret-key-abcdef012345",
		"AWS_SESSION_TOKEN":     "aws-session-token-abcdef012345",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("REDIS_URL", rs.URL(rs.NewDB(t)))
	t.Setenv("STORAGE_URL", "file://"+t.TempDir())
	t.Setenv("WEBHOOK_PUBLIC_URL", "https://hooks.example"+webhook.Path)
	t.Setenv("LOG_FORMAT", "json")
	t.Setenv("LOG_LEVEL", "debug")

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-addr", addr}, &out, &logs) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	waitListening(t, addr)
	base := "http://" + addr

	call := func(method, path, body string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := call("POST", "/v1/jobs", `{"job_id":"secret-test","model":"google/veo-3.1-lite","prompt":"a lighthouse"}`,
		"Authorization", "Bearer tok_serve_secret_abcdef0123", "Content-Type", "application/json")
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	// A delivery with a wrong signature: a rejection the dashboard shows.
	call("POST", webhook.Path+"?job_id=secret-test", `{"type":"video.completed","data":{"id":"vid"}}`, "Content-Type", "application/json",
		"x-ai-stats-timestamp", fmt.Sprint(time.Now().Unix()), "x-ai-stats-signature", "sha256="+strings.Repeat("cd", 32))

	// The receiver writes its rejection counts to Redis in the background:
	// wait (bounded) for the dashboard to show this one.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, page := call("GET", "/", "", "Authorization", "Bearer tok_serve_secret_abcdef0123")
		if strings.Contains(page, "bad_signature: webhook signature does not verify") || time.Now().After(deadline) {
			break
		}
	}

	var answers bytes.Buffer
	for _, login := range [][2]string{{"olga", "olga-secret-pass"}, {"vic", "vic-secret-pass"}} {
		for _, path := range []string{"/", "/jobs/secret-test", "/jobs/missing", "/monitoring/", "/monitoring/api/queues",
			"/monitoring/api/queues/video_create/pending_tasks", "/monitoring/api/servers", "/monitoring/api/redis_info", "/metrics", "/readyz", "/v1/jobs/secret-test"} {
			req, _ := http.NewRequest("GET", base+path, nil)
			req.SetBasicAuth(login[0], login[1])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 || (resp.StatusCode >= 400 && path != "/jobs/missing") {
				t.Errorf("%s as %s: %d", path, login[0], resp.StatusCode)
			}
			fmt.Fprintf(&answers, "== %s %s\n%s\n", login[0], path, b)
		}
	}
	if !strings.Contains(answers.String(), `data-job-id="secret-test" data-state="queued"`) {
		t.Error("the dashboard does not show the submitted job")
	}
	if !strings.Contains(answers.String(), "bad_signature: webhook signature does not verify") {
		t.Error("the dashboard does not show the rejected delivery")
	}
	for name, v := range secrets {
		for _, s := range strings.Split(v, ",") {
			if name == "OPERATORS" {
				s = strings.Split(s, ":")[1]
			}
			for where, text := range map[string]string{"a page or API answer": answers.String(), "stdout": out.String(), "the logs": logs.String()} {
				if strings.Contains(text, s) {
					t.Errorf("%s shows %s (%q)", where, name, s)
				}
			}
		}
	}
}
