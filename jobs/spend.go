package jobs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// spendTTL is how long a day's spend hash is kept.
const spendTTL = 400 * 24 * time.Hour

// SpendKey is the hash of the fleet's spend on the UTC day of t: one field
// per model, integer micro-dollars, added to by the transition that
// records a generation's settled cost (Completed, Failed) in the same
// script, so it costs no extra round trip.
func (s *Store) SpendKey(t time.Time) string {
	return s.prefix + "spend:" + t.UTC().Format("2006-01-02")
}

// addSpend is the spend counter's update on a Redis Cluster, where the
// day's hash lives in another slot than the job.
func (s *Store) addSpend(ctx context.Context, key, model, tenant string, micros int64) error {
	n, err := s.rdb.HIncrBy(ctx, key, model, micros).Result()
	if err == nil && n == micros {
		err = s.rdb.Expire(ctx, key, spendTTL).Err()
	}
	if err == nil && tenant != "" {
		err = s.rdb.HIncrBy(ctx, key, tenantSpendField+tenant, micros).Err()
	}
	if err != nil {
		return fmt.Errorf("spend counter: %w", ClassifyRedis(err))
	}
	return nil
}

// tenantSpendField prefixes a tenant's field in a day's spend hash (model
// names have no colon).
const tenantSpendField = "t:"

// Spend is the fleet's settled spend in micro-dollars by model, today and
// in the month to date (UTC), as the dashboard shows it, and by tenant
// (TenantToday, TenantMonth: the tenants other than DefaultTenant, whose
// spend is the rest of the total).
type Spend struct {
	Today, Month             map[string]int64
	TenantToday, TenantMonth map[string]int64
}

// Total sums a spend map.
func Total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// SpendSummary reads today's and this month's spend: one pipelined HGETALL
// per day of the month so far.
func (s *Store) SpendSummary(ctx context.Context, now time.Time) (Spend, error) {
	now = now.UTC()
	first := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	var cmds []*redis.MapStringStringCmd
	pipe := s.rdb.Pipeline()
	for d := first; !d.After(now); d = d.AddDate(0, 0, 1) {
		cmds = append(cmds, pipe.HGetAll(ctx, s.SpendKey(d)))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return Spend{}, fmt.Errorf("spend summary: %w", ClassifyRedis(err))
	}
	out := Spend{Today: map[string]int64{}, Month: map[string]int64{}, TenantToday: map[string]int64{}, TenantMonth: map[string]int64{}}
	for i, c := range cmds {
		for field, v := range c.Val() {
			var n int64
			if _, err := fmt.Sscan(v, &n); err != nil {
				continue
			}
			today, month := out.Today, out.Month
			if t, ok := strings.CutPrefix(field, tenantSpendField); ok {
				field, today, month = t, out.TenantToday, out.TenantMonth
			}
			month[field] += n
			if i == len(cmds)-1 {
				today[field] += n
			}
		}
	}
	return out, nil
}
