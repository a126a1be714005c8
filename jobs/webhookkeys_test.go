package jobs_test

import (
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
)

// A job's applied webhook keys expire KeepKeysFor after its latest
// delivery, duplicates included; without it they stay.
func TestWebhookKeysExpire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "keep", "m")
	b.create(t, "exp", "m")
	d := jobs.WebhookDelivery{Key: "video.completed", EventType: "video.completed", Attempt: 1}
	if _, err := b.store.RecordWebhook(b.ctx, "keep", d); err != nil {
		t.Fatal(err)
	}
	if ttl := b.rdb.PTTL(b.ctx, "videoworker:job:{keep}:webhooks").Val(); ttl != -1 {
		t.Errorf("keys without KeepKeysFor expire in %v, want never", ttl)
	}
	d.KeepKeysFor = 10 * time.Minute
	if _, err := b.store.RecordWebhook(b.ctx, "exp", d); err != nil {
		t.Fatal(err)
	}
	if ttl := b.rdb.PTTL(b.ctx, "videoworker:job:{exp}:webhooks").Val(); ttl <= 9*time.Minute || ttl > 10*time.Minute {
		t.Errorf("keys expire in %v, want 10m", ttl)
	}
	b.rdb.Persist(b.ctx, "videoworker:job:{exp}:webhooks")
	if first, err := b.store.RecordWebhook(b.ctx, "exp", d); err != nil || first {
		t.Fatalf("the same delivery again: %v %v, want a duplicate", first, err)
	}
	if ttl := b.rdb.PTTL(b.ctx, "videoworker:job:{exp}:webhooks").Val(); ttl <= 9*time.Minute || ttl > 10*time.Minute {
		t.Errorf("keys expire in %v after a duplicate, want 10m", ttl)
	}
}
