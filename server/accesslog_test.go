package server_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/webhook"
)

// Refused webhook requests are left to the receiver's sampled log: a flood
// of forged deliveries writes no access-log line each at info level.
func TestForgedWebhooksStayOutOfTheAccessLog(t *testing.T) {
	t.Parallel()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	v, err := webhook.NewVerifier([]string{"whsec_0123456789abcdef"}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	recv := webhook.NewHandler(v, jobs.NewStore(rdb, ""), asynq.NewClientFromRedisClient(rdb), log)
	srv := httptest.NewServer(server.New(server.Deps{Redis: rdb, Webhooks: recv, Logger: log}))
	t.Cleanup(srv.Close)
	for range 50 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+webhook.Path, strings.NewReader(`{"data":{"id":"G-1"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-ai-stats-timestamp", "1")
		req.Header.Set("x-ai-stats-signature", strings.Repeat("ab", 32))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("forged delivery: %d", resp.StatusCode)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("%d log lines for 50 forged deliveries, want 1:\n%s", n, buf.String())
	}
}
