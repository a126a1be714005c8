package wake

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// AnnouncePending publishes one wake-up saying that tasks became pending
// in queue (one PUBLISH, whatever their number): a batch enqueue announces
// once. A nil *Publisher announces nothing.
func (p *Publisher) AnnouncePending(ctx context.Context, queue string) error {
	if p == nil {
		return nil
	}
	if err := p.rdb.Publish(ctx, Channel, pendingMessage(queue)).Err(); err != nil {
		return fmt.Errorf("wake: publish: %w", err)
	}
	return nil
}

// AnnouncePendingIn adds AnnouncePending's PUBLISH to pipe, for a caller
// that sends other commands in the same round trip (nothing when p is
// nil).
func (p *Publisher) AnnouncePendingIn(ctx context.Context, pipe redis.Pipeliner, queue string) {
	if p == nil {
		return
	}
	pipe.Publish(ctx, Channel, pendingMessage(queue))
}
