package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWebhookSecretNotInJobOrLogs: the API refuses a create with an error
// body quoting the request, webhook secret included. The job fails, and the
// secret is in none of its error, its history, the archived task's message
// or the logs.
func TestWebhookSecretNotInJobOrLogs(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	const hookSecret = "whsec_EchoedBack_0123456789abcdef"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		quoted, _ := json.Marshal("invalid request: " + string(body))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"validation_error","status_code":400,"reason":"invalid_field","description":`+string(quoted)+`,"details":[{"request":`+string(body)+`}]}`)
	}))
	t.Cleanup(echo.Close)
	client, err := apiclient.New(apiclient.Config{BaseURL: echo.URL + "/v1", APIKey: testKey, Secrets: []string{hookSecret}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	e.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := fastConfig()
	cfg.Webhook = &apiclient.WebhookSubscription{URL: "https://hooks.example.com/webhooks/aistats", Secret: hookSecret}
	e.startWorker(cfg, client)
	ids := e.submit(1, "google/veo-3.1-lite")
	r := e.waitTerminal(ids, 30*time.Second)[0]
	if r.State != jobs.StateFailed || !strings.Contains(r.Error, "[redacted]") {
		t.Fatalf("job: state %s, error %q; want failed with the echoed request, secret masked", r.State, r.Error)
	}
	hist, err := e.jobs.Events(context.Background(), r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	histJSON, _ := json.Marshal(hist)
	recJSON, _ := json.Marshal(r)
	// The archived task's message, readable by viewers in asynqmon.
	var lastErr string
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ti, err := insp.GetTaskInfo(tasks.QueueCreate, tasks.CreateTaskID(r.ID)); err == nil && ti.State == asynq.TaskStateArchived {
			lastErr = ti.LastErr
			break
		}
	}
	if lastErr == "" {
		t.Error("the create task was not archived with a message")
	}
	for what, text := range map[string]string{"record": string(recJSON), "history": string(histJSON), "archived task": lastErr, "logs": logs.String()} {
		if strings.Contains(text, "EchoedBack") {
			t.Errorf("the webhook secret is in the job's %s: %s", what, text)
		}
	}
}
