package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
)

// checksQueued counts the status checks queued for now or later.
func (f *fixture) checksQueued() int {
	f.t.Helper()
	info, err := f.insp.GetQueueInfo(tasks.QueuePoll)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return 0
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return info.Pending + info.Scheduled
}

// A captured delivery re-sent with new values in the headers that the
// signature does not cover (delivery key, event id, attempt) is the same
// delivery: one accepted, the rest duplicates, one status check, and the
// job's set of seen keys does not grow and expires.
func TestReplayWithNewHeadersIsADuplicate(t *testing.T) {
	t.Parallel()
	noDelivery, _ := json.Marshal(map[string]any{"id": "evt_video_G-video1_video_failed", "type": "video.failed",
		"data": map[string]any{"id": "G-video1", "status": "failed"}})
	oldest, _ := json.Marshal(map[string]any{"type": "video.expired", "created_at": 1, "data": map[string]any{"id": "G-video1", "status": "expired"}})
	for _, tc := range []struct {
		name, key string
		body      []byte
	}{
		{"delivery key", "video.completed", payload("G-video1", "video.completed", "video.completed")},
		{"event id only", "evt_video_G-video1_video_failed", noDelivery},
		{"neither", "", oldest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, secret)
			ts := time.Now().Unix()
			const n = 60
			accepted, dups := 0, 0
			for i := range n {
				code, msg := f.send(delivery{ts: ts, body: tc.body, key: fmt.Sprintf("forged-%d", i), header: map[string]string{
					"x-ai-stats-event-id": fmt.Sprintf("evt-%d", i), "x-ai-stats-attempt": fmt.Sprint(i + 1)}})
				switch {
				case code == http.StatusOK && strings.HasPrefix(msg, "accepted"):
					accepted++
				case code == http.StatusOK && strings.HasPrefix(msg, "duplicate"):
					dups++
				default:
					t.Fatalf("replay %d: %d %s", i, code, msg)
				}
			}
			r, _ := f.snapshot(f.jobID)
			if accepted != 1 || dups != n-1 || r.WebhookDeliveries != 1 || r.WebhookDuplicates != n-1 {
				t.Errorf("accepted %d, duplicates %d (record %d, %d); want 1 and %d", accepted, dups, r.WebhookDeliveries, r.WebhookDuplicates, n-1)
			}
			if r.LastWebhookAttempt != 1 {
				t.Errorf("recorded attempt %d, want the first delivery's", r.LastWebhookAttempt)
			}
			if c := f.checksQueued(); c != 1 {
				t.Errorf("%d status checks queued, want 1", c)
			}
			setKey := f.jobs.Prefix() + "job:{" + f.jobID + "}:webhooks"
			keys, err := f.rdb.SMembers(context.Background(), setKey).Result()
			if err != nil || len(keys) != 1 || (tc.key != "" && keys[0] != tc.key) {
				t.Errorf("seen keys %q (%v), want just %q", keys, err, tc.key)
			}
			// Kept for twice the tolerance (1m here) plus an hour: past
			// every retry of the API and every replay window.
			if ttl := f.rdb.PTTL(context.Background(), setKey).Val(); ttl <= time.Hour || ttl > time.Hour+2*time.Minute {
				t.Errorf("seen keys expire in %v, want about 1h2m", ttl)
			}
		})
	}
}

// Distinct genuine deliveries for one job trigger at most one status check
// per interval: the first at once, one more at the start of the next
// interval for those that arrive after it, none beyond.
func TestWebhookChecksAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	start := f.clock.Now()
	for i := range 20 {
		key := fmt.Sprintf("video.status_changed:%d", i)
		if code, msg := f.send(delivery{key: key, body: payload(f.video, "video.status_changed", key)}); code != http.StatusOK || !strings.HasPrefix(msg, "accepted") {
			t.Fatalf("delivery %d: %d %s", i, code, msg)
		}
		f.clock.Advance(webhook.CheckInterval / 40)
	}
	if c := f.checksQueued(); c != 2 {
		t.Errorf("%d checks after 20 deliveries in one interval, want 2 (now and at the next interval)", c)
	}
	now, err := f.insp.GetTaskInfo(tasks.QueuePoll, webhook.CheckTaskID(f.jobID, start))
	if err != nil || now.Retention != webhook.CheckInterval {
		t.Fatalf("the interval's check: %+v %v; want it retained for an interval", now, err)
	}
	next := start.Add(webhook.CheckInterval)
	later, err := f.insp.GetTaskInfo(tasks.QueuePoll, webhook.CheckTaskID(f.jobID, next))
	if err != nil || !later.NextProcessAt.Equal(next) {
		t.Fatalf("the next interval's check: %+v %v; want it due at %v", later, err, next)
	}
	if r, _ := f.snapshot(f.jobID); r.WebhookDeliveries != 20 {
		t.Errorf("%d deliveries recorded, want 20", r.WebhookDeliveries)
	}
	// Two intervals on: a new delivery checks at once again.
	f.clock.Set(start.Add(2 * webhook.CheckInterval))
	key := "video.completed"
	if code, msg := f.send(delivery{key: key}); code != http.StatusOK {
		t.Fatalf("later delivery: %d %s", code, msg)
	}
	if c := f.checksQueued(); c != 3 {
		t.Errorf("%d checks after a delivery two intervals later, want 3", c)
	}
}
