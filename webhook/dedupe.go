package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// CheckInterval is the shortest time between two status checks that
// webhooks trigger for one job, whatever arrives: deliveries inside one
// interval share one check, and a delivery that arrives after that
// interval's check has run gets one more at the start of the next
// interval.
const CheckInterval = 5 * time.Second

// seenKeysMargin is added to twice the signature tolerance to give how long
// a job remembers the keys of its deliveries after its latest one: it
// covers the API's retry schedule (about 1, 5 and 15 minutes), so a retry
// of a delivery whose 2xx answer was lost still counts as a duplicate.
const seenKeysMargin = time.Hour

// payloadDelivery is the signed delivery summary in a payload.
type payloadDelivery struct {
	Key     string `json:"key"`
	Attempt int    `json:"attempt"`
}

// signedDelivery returns the key that deduplicates a verified delivery and
// its attempt number, from the signed body only: the payload's
// delivery.key, else its id, else a digest of the body (the oldest
// payloads carry neither). The headers (x-…-delivery-key, event-id) are
// not covered by the signature: a captured delivery re-sent with new
// header values must still be the same delivery. The attempt falls back
// to the header's, which is only recorded, never decided on.
func signedDelivery(ev Event, body []byte, headerAttempt int) (key string, attempt int) {
	var d payloadDelivery
	if len(ev.Delivery) > 0 {
		_ = json.Unmarshal(ev.Delivery, &d) // a malformed summary: fall back to the id
	}
	attempt = d.Attempt
	if attempt <= 0 {
		attempt = headerAttempt
	}
	switch {
	case d.Key != "":
		key = d.Key
	case ev.ID != "":
		key = ev.ID
	default:
		sum := sha256.Sum256(body)
		key = "sha256:" + hex.EncodeToString(sum[:16])
	}
	return safeKey.ReplaceAllString(key, "_"), attempt
}

// seenKeysTTL is how long a job keeps its applied delivery keys after its
// latest delivery: a delivery verifies only while its timestamp is within
// the tolerance of now (in either direction), plus seenKeysMargin.
func (h *Handler) seenKeysTTL() time.Duration {
	return 2*h.verifier.tolerance + seenKeysMargin
}

// checkKey names the webhook-triggered status check of a job in the
// CheckInterval-long time bucket b (tasks.CheckTaskID).
func checkKey(b int64) string { return "webhook:" + strconv.FormatInt(b, 10) }

// CheckTaskID is the task id of the status check that webhooks trigger
// for jobID at t (one per CheckInterval).
func CheckTaskID(jobID string, t time.Time) string {
	return tasks.CheckTaskID(jobID, checkKey(t.UnixNano()/int64(CheckInterval)))
}

// enqueueCheck makes sure a status check of jobID runs soon, with at most
// one check per job and CheckInterval. The check's task id names the
// current interval and the completed task is retained for an interval, so
// asynq's task id uniqueness refuses every further check in it at no extra
// Redis command; when the interval's check exists already (it may have run
// before this delivery), one check is scheduled at the start of the next
// interval instead, so that no delivery goes unchecked for longer than an
// interval.
func (h *Handler) enqueueCheck(ctx context.Context, rec *jobs.Record, reason string) error {
	now := h.now()
	b := now.UnixNano() / int64(CheckInterval)
	for i, at := range []time.Time{now, time.Unix(0, (b+1)*int64(CheckInterval))} {
		opts := []asynq.Option{asynq.Retention(CheckInterval)}
		if i > 0 {
			opts = append(opts, asynq.ProcessAt(at))
		}
		check, err := tasks.StatusCheck(rec, checkKey(b+int64(i)), reason, opts...)
		if err != nil || check == nil {
			return err // nil check: nothing to check (not generating)
		}
		if _, err = h.enqueue.EnqueueContext(ctx, check.Task); !errors.Is(err, asynq.ErrTaskIDConflict) {
			return err
		}
	}
	return nil
}
