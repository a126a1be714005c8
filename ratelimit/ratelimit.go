// Package ratelimit paces AI Stats API calls across a whole fleet of
// workers, in Redis: one GCRA budget per call class (creates apart from
// reads), and a shared pause that one 429 answer sets for the class, so
// that every worker backs off, not just the goroutine that got the 429.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

// Limit is a budget: Rate calls per Period, with bursts up to Burst. A
// zero Rate means unlimited.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// String renders the limit as ParseLimit reads it.
func (l Limit) String() string {
	if l.Rate == 0 {
		return "unlimited"
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[l.Period]
	return fmt.Sprintf("%d/%s+%d", l.Rate, unit, l.Burst)
}

// ParseLimit reads "N/s", "N/m" or "N/h", optionally "+B" for the burst
// (default N, at least 1); "" or "0" is unlimited.
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Limit{}, nil
	}
	rate, rest, ok := strings.Cut(s, "/")
	if !ok {
		return Limit{}, fmt.Errorf("rate %q: want N/s, N/m or N/h, optionally +burst", s)
	}
	unit, burst, hasBurst := strings.Cut(rest, "+")
	n, err := strconv.Atoi(rate)
	if err != nil || n < 0 {
		return Limit{}, fmt.Errorf("rate %q: %q is not a count", s, rate)
	}
	var l Limit
	switch unit {
	case "s":
		l.Period = time.Second
	case "m":
		l.Period = time.Minute
	case "h":
		l.Period = time.Hour
	default:
		return Limit{}, fmt.Errorf("rate %q: unit must be s, m or h", s)
	}
	l.Rate, l.Burst = n, max(n, 1)
	if hasBurst {
		b, err := strconv.Atoi(burst)
		if err != nil || b < 1 {
			return Limit{}, fmt.Errorf("rate %q: burst must be a positive count", s)
		}
		l.Burst = b
	}
	if n == 0 {
		return Limit{}, nil
	}
	return l, nil
}

// Limiter is a fleet-wide apiclient.Limiter backed by Redis. It is safe
// for concurrent use.
type Limiter struct {
	rdb    redis.UniversalClient
	rl     *redis_rate.Limiter
	prefix string
	limits map[string]Limit
}

var _ apiclient.Limiter = (*Limiter)(nil)

// New returns a limiter with a budget per class (apiclient.ClassCreate,
// apiclient.ClassRead); classes without one are unlimited but still obey
// pauses. Keys live under prefix.
func New(rdb redis.UniversalClient, prefix string, limits map[string]Limit) *Limiter {
	return &Limiter{rdb: rdb, rl: redis_rate.NewLimiter(rdb), prefix: prefix, limits: limits}
}

func (l *Limiter) pauseKey(class string) string { return l.prefix + "api_pause:" + class }

// Reserve takes a slot for one call of class, or says how long to wait:
// the rest of a pause, else the budget's wait.
func (l *Limiter) Reserve(ctx context.Context, class string) (time.Duration, error) {
	ttl, err := l.rdb.PTTL(ctx, l.pauseKey(class)).Result()
	if err != nil {
		return 0, fmt.Errorf("read pause: %w", jobs.ClassifyRedis(err))
	}
	if ttl > 0 {
		return ttl, nil
	}
	lim, ok := l.limits[class]
	if !ok || lim.Rate == 0 {
		return 0, nil
	}
	res, err := l.rl.Allow(ctx, l.prefix+"api_rate:"+class, redis_rate.Limit{Rate: lim.Rate, Burst: lim.Burst, Period: lim.Period})
	if err != nil {
		return 0, fmt.Errorf("take budget: %w", jobs.ClassifyRedis(err))
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	if res.RetryAfter <= 0 {
		return time.Millisecond, nil
	}
	return res.RetryAfter, nil
}

var pauseScript = redis.NewScript(`
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
`)

// Pause stops calls of class for d fleet-wide; a longer pause already set
// is kept.
func (l *Limiter) Pause(ctx context.Context, class string, d time.Duration) error {
	if d <= 0 {
		return errors.New("pause: non-positive duration")
	}
	return jobs.ClassifyRedis(pauseScript.Run(ctx, l.rdb, []string{l.pauseKey(class)}, d.Milliseconds()).Err())
}
