package wake

import (
	"context"
	"fmt"
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
