package tasks

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/jobs"
)

// Wait returns the job's record once it has ended (stored, failed,
// cancelled, expired or timed out), or ctx's error. It costs Redis next
// to nothing while it waits: it subscribes to the job's done channel
// (one connection, held until it returns), marks the job as waited on
// (one script), and is woken by the transition that ends the job, which
// publishes there only for jobs marked so; it also reads the record every
// ClientOptions.WaitPollInterval in case the message was lost (a Redis
// failover, a dropped connection). A missing job gives an error wrapping
// jobs.ErrNotFound.
func (c *Client) Wait(ctx context.Context, id JobID) (*jobs.Record, error) {
	sub := c.rdb.Subscribe(ctx, c.store.DoneChannel(string(id)))
	defer func() { _ = sub.Close() }()
	if _, err := sub.Receive(ctx); err != nil { // the subscription is in place
		return nil, fmt.Errorf("wait for job %s: %w", id, jobs.ClassifyRedis(err))
	}
	msgs := sub.Channel()
	st, err := c.store.MarkWaiter(ctx, string(id))
	if err != nil {
		return nil, err
	}
	t := time.NewTicker(c.waitPoll)
	defer t.Stop()
	for !st.Terminal() {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for job %s: %w", id, ctx.Err())
		case <-msgs:
		case <-t.C:
		}
		rec, err := c.store.Load(ctx, string(id))
		if err != nil {
			return nil, err
		}
		st = rec.State
	}
	return c.Status(ctx, id)
}

// VerifyCallback checks a completion callback that a receiver got: its
// x-videoworker-timestamp is within tolerance of now (≤ 0: not checked)
// and its x-videoworker-signature is the hex HMAC-SHA256 of timestamp +
// "." + body with one of secrets (the workers' CALLBACK_SECRETS; several
// while rotating). body is the raw request body, before any JSON
// decoding. It returns nil for a genuine delivery; the errors are
// callback.ErrNoSecret, ErrMissingHeader, ErrStale and ErrBadSignature.
// Deduplicate deliveries on the x-videoworker-event-id header: a retry
// repeats it.
func VerifyCallback(secrets []string, tolerance time.Duration, header http.Header, body []byte, now time.Time) error {
	return callback.Verify(secrets, tolerance, header, body, now)
}
