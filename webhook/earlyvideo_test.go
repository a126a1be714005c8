package webhook_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// With webhook endpoint ids the delivery's URL names no job: a delivery
// for a video no job has claimed yet is kept under the video id for the
// create step, and once a job owns the video the delivery goes to it.
func TestEarlyDeliveryByVideo(t *testing.T) {
	t.Parallel()
	f := setup(t, secret)
	f.makeJob("job-ep", "")
	ctx := context.Background()
	early := delivery{query: "?x=1", body: payload("G-unclaimed", "video.completed", "video.completed")}
	if code, msg := f.send(early); code != http.StatusAccepted || !strings.HasPrefix(msg, "early") {
		t.Fatalf("delivery for an unclaimed video: %d %s, want 202 early", code, msg)
	}
	if code, msg := f.send(early); code != http.StatusAccepted {
		t.Errorf("the same again: %d %s, want 202", code, msg)
	}
	progress := delivery{query: "?x=1", key: "video.progress:50", body: payload("G-unclaimed-2", "video.progress", "video.progress:50")}
	if code, _ := f.send(progress); code != http.StatusAccepted {
		t.Errorf("progress for an unclaimed video: %d, want 202", code)
	}
	if d, err := f.jobs.TakeEarlyVideo(ctx, "G-unclaimed-2"); err != nil || d != nil {
		t.Errorf("a progress tick was kept: %+v %v", d, err)
	}
	d, err := f.jobs.TakeEarlyVideo(ctx, "G-unclaimed")
	if err != nil || d == nil || d.EventType != "video.completed" || d.Key != "video.completed" || d.Attempt != 1 {
		t.Fatalf("kept delivery %+v, %v", d, err)
	}
	if d, _ := f.jobs.TakeEarlyVideo(ctx, "G-unclaimed"); d != nil {
		t.Errorf("taken twice: %+v", d)
	}
	// Claimed: the delivery is the owner's, checked as usual.
	f.makeJob("job-ep2", "G-claimed")
	checks := f.checks()
	if code, msg := f.send(delivery{query: "?x=1", body: payload("G-claimed", "video.completed", "video.completed")}); code != http.StatusOK || !strings.Contains(msg, "accepted") {
		t.Errorf("delivery for a claimed video: %d %s, want 200 accepted", code, msg)
	}
	if n := f.checks(); n != checks+1 {
		t.Errorf("%d status checks queued, want 1", n-checks)
	}
}
