package jobs

import (
	"context"
	"fmt"
	"time"
)

// AddWebhookOutcomes adds counts (outcome → number) to the fleet-wide
// webhook counters (WebhookStats) in one round trip and, when last is set,
// records it as the latest rejection, at lastAt. A receiver counts
// rejections in memory and adds them with this now and then, so that a
// flood of forged requests costs Redis a few commands per interval
// instead of two per request.
func (s *Store) AddWebhookOutcomes(ctx context.Context, counts map[string]int64, last string, lastAt time.Time) error {
	pipe := s.rdb.Pipeline()
	for outcome, n := range counts {
		if n != 0 {
			pipe.HIncrBy(ctx, s.webhookStatsKey(), outcome, n)
		}
	}
	if last != "" {
		pipe.HSet(ctx, s.webhookStatsKey(), "last_rejection_at", encodeValue(lastAt), "last_rejection", last)
	}
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("webhook counters: %w", ClassifyRedis(err))
	}
	return nil
}
