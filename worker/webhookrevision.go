package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// inlineRefusedFor is how long the process sends no inline webhook after
// the API refused one: every create would otherwise cost two calls. After
// it, the next create tries the inline subscription again (the API may
// take it again), and is sent again without it if refused.
const inlineRefusedFor = 10 * time.Minute

// inlineRefusedWarned makes the warning once per process.
var inlineRefusedWarned atomic.Bool

// webhookRefused handles the API refusing a create's inline webhook (400
// validation_error on the webhook field; the newest API takes only
// workspace endpoint ids): it warns once per process, counts it, and stops
// sending the inline webhook for inlineRefusedFor (Worker.inlineRefusedUntil,
// the Unix time in ns until which creates carry none).
func (w *Worker) webhookRefused(ctx context.Context, cause error) {
	w.met.WebhookRefused()
	w.inlineRefusedUntil.Store(w.now().Add(inlineRefusedFor).UnixNano())
	if inlineRefusedWarned.CompareAndSwap(false, true) {
		w.log.WarnContext(ctx, "the API refused the inline webhook subscription: creating without it, jobs finish by polling; set WEBHOOK_ENDPOINT_ID to a workspace webhook endpoint to get webhooks back",
			"err", cause.Error())
	}
}

// checkEarlyVideo is checkEarly for webhook endpoint ids, whose deliveries
// name no job: a delivery for the video that arrived before its id was
// saved was kept under the video id (jobs.Store.RecordEarlyVideo), and
// saved is the record after the transition that claimed the video. One
// command, only when endpoint ids are on.
func (w *Worker) checkEarlyVideo(ctx context.Context, saved *jobs.Record) error {
	if w.cfg.Webhook == nil || w.cfg.Webhook.EndpointID == "" {
		return nil
	}
	d, err := w.jobs.TakeEarlyVideo(ctx, saved.VideoID)
	if err != nil || d == nil {
		return err
	}
	key := d.Key
	if key == "" {
		key = "early"
	}
	check, err := tasks.StatusCheck(saved, key, "webhook "+d.EventType+" (arrived before the video id was saved)")
	if err != nil {
		return err
	}
	if err := w.enqueue(ctx, check); err != nil {
		return err
	}
	w.log.InfoContext(ctx, "early webhook: status check now", "job_id", saved.ID, "video_id", saved.VideoID, "event", d.EventType, "delivery_key", key)
	return nil
}
