package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
)

// Budgets: fleet-wide spend limits over UTC days and months, for all
// models or one. A job's estimated cost is reserved against every budget
// that applies before its paid create, in one Lua script over the
// budgets' keys (all under the hash tag {budget}, so a Cluster keeps them
// in one slot); the reservation is replaced by the API's estimate after
// the create, and by the settled cost when the generation ends (released
// when it fails or is voided). Each reservation is a per-job entry with an
// expiry: a worker killed while holding one leaks it only until then.

// Window is a budget's period.
type Window string

// The windows: UTC calendar days and months.
const (
	WindowDay   Window = "day"
	WindowMonth Window = "month"
)

// Budget is one limit: at most Limit micro-dollars per Window, for Model
// ("" is every model) or for Tenant's jobs ("" is every tenant's).
type Budget struct {
	Window Window
	Model  string
	Tenant string
	Limit  int64 // micro-dollars
}

func (b Budget) String() string {
	s := string(b.Window) + "=" + apiclient.FormatMicros(b.Limit)
	if b.Model != "" {
		s = "model:" + b.Model + "/" + s
	}
	if b.Tenant != "" {
		s = "tenant:" + b.Tenant + "/" + s
	}
	return s
}

// applies reports whether b limits a job of model and tenant.
func (b Budget) applies(model, tenant string) bool {
	return (b.Model == "" || b.Model == model) && (b.Tenant == "" || b.Tenant == cmp.Or(tenant, DefaultTenant))
}

// ParseBudgets reads BUDGETS: comma-separated "day=200", "month=4000",
// "model:<model>/day=50", "tenant:<tenant>/day=20" (USD). It returns
// every problem, not the first.
func ParseBudgets(s string) ([]Budget, []error) {
	var out []Budget
	var errs []error
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		scope, amount, ok := strings.Cut(item, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("budget %q: want <window>=<usd>, e.g. day=200", item))
			continue
		}
		b := Budget{}
		win := scope
		switch {
		case strings.HasPrefix(scope, "model:"):
			i := strings.LastIndex(scope, "/")
			if i <= len("model:") {
				errs = append(errs, fmt.Errorf("budget %q: want model:<model>/<window>=<usd>", item))
				continue
			}
			b.Model, win = scope[len("model:"):i], scope[i+1:]
		case strings.HasPrefix(scope, "tenant:"):
			i := strings.LastIndex(scope, "/")
			if i <= len("tenant:") {
				errs = append(errs, fmt.Errorf("budget %q: want tenant:<tenant>/<window>=<usd>", item))
				continue
			}
			b.Tenant, win = scope[len("tenant:"):i], scope[i+1:]
			if err := ValidateTenant(b.Tenant); err != nil {
				errs = append(errs, fmt.Errorf("budget %q: %w", item, err))
				continue
			}
		}
		switch Window(win) {
		case WindowDay, WindowMonth:
			b.Window = Window(win)
		default:
			errs = append(errs, fmt.Errorf("budget %q: unknown window %q (day or month)", item, win))
			continue
		}
		m, err := apiclient.ParseMicros(strings.TrimSpace(amount))
		if err != nil || m <= 0 {
			errs = append(errs, fmt.Errorf("budget %q: the amount must be a positive number of dollars", item))
			continue
		}
		b.Limit = m
		if slices.ContainsFunc(out, func(o Budget) bool { return o.Window == b.Window && o.Model == b.Model && o.Tenant == b.Tenant }) {
			errs = append(errs, fmt.Errorf("budget %q: given twice", item))
			continue
		}
		out = append(out, b)
	}
	return out, errs
}

// Price is an operator's price of a model: micro-dollars per second of
// video (PerSecond) or per video (PerVideo), per sample.
type Price struct {
	PerSecond, PerVideo int64
}

// ParsePrices reads MODEL_PRICES: comma-separated "<model>=<usd>/s" (per
// second of video) or "<model>=<usd>" (per video). It returns every
// problem.
func ParsePrices(s string) (map[string]Price, []error) {
	out := map[string]Price{}
	var errs []error
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		model, amount, ok := strings.Cut(item, "=")
		if !ok || model == "" {
			errs = append(errs, fmt.Errorf("price %q: want <model>=<usd>/s or <model>=<usd>", item))
			continue
		}
		perSecond := strings.HasSuffix(amount, "/s")
		m, err := apiclient.ParseMicros(strings.TrimSuffix(amount, "/s"))
		if err != nil || m < 0 {
			errs = append(errs, fmt.Errorf("price %q: the amount must be a number of dollars, optionally followed by /s", item))
			continue
		}
		if _, dup := out[model]; dup {
			errs = append(errs, fmt.Errorf("price %q: model given twice", item))
			continue
		}
		if perSecond {
			out[model] = Price{PerSecond: m}
		} else {
			out[model] = Price{PerVideo: m}
		}
	}
	return out, errs
}

// DefaultDurationSeconds is the duration a request without one is priced
// at (the API's usual default).
const DefaultDurationSeconds = 8

// Estimate prices a request from the table: price × duration × samples.
// ok is false for a model without a price.
func Estimate(prices map[string]Price, req apiclient.CreateRequest) (int64, bool) {
	p, ok := prices[req.Model]
	if !ok {
		return 0, false
	}
	secs := int64(cmpOr(req.Duration, DefaultDurationSeconds))
	samples := int64(cmpOr(req.SampleCount, 1))
	return (p.PerSecond*secs + p.PerVideo) * samples, true
}

func cmpOr(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// Budgeter applies budgets in Redis. A nil *Budgeter is "budgets off":
// callers check for nil and make no call.
type Budgeter struct {
	rdb     redis.UniversalClient
	prefix  string
	budgets []Budget
	prices  map[string]Price
	// apiPrices are the prices GET /videos/models gives (SetAPIPrices),
	// for the models prices does not name.
	apiPrices atomic.Pointer[map[string]Price]
	// ttl is how long a reservation lives without being settled.
	ttl time.Duration
	now func() time.Time
}

// BudgetConfig configures a Budgeter.
type BudgetConfig struct {
	Budgets []Budget
	Prices  map[string]Price
	// ReservationTTL is how long a reservation holds budget when its job
	// never settles it (a worker died, the job timed out while the API
	// worked on it). Default 24h.
	ReservationTTL time.Duration
}

// NewBudgeter returns a Budgeter, or nil when cfg has no budgets.
func NewBudgeter(rdb redis.UniversalClient, prefix string, cfg BudgetConfig) *Budgeter {
	if len(cfg.Budgets) == 0 {
		return nil
	}
	ttl := cfg.ReservationTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return &Budgeter{rdb: rdb, prefix: prefix, budgets: cfg.Budgets, prices: cfg.Prices, ttl: ttl, now: time.Now}
}

// Applies reports whether some budget limits a job of model and tenant
// ("" is DefaultTenant).
func (b *Budgeter) Applies(model, tenant string) bool {
	return slices.ContainsFunc(b.budgets, func(bg Budget) bool { return bg.applies(model, tenant) })
}

// Price prices a request: with the operator's price (MODEL_PRICES) of its
// model, else the API's (SetAPIPrices); ok false: the model has neither.
func (b *Budgeter) Price(req apiclient.CreateRequest) (int64, bool) {
	if est, ok := Estimate(b.prices, req); ok {
		return est, true
	}
	if api := b.apiPrices.Load(); api != nil {
		return Estimate(*api, req)
	}
	return 0, false
}

// SetAPIPrices replaces the prices read from the API's model catalogue
// (APIPrices); MODEL_PRICES still comes first. Safe for concurrent use
// with Price.
func (b *Budgeter) SetAPIPrices(prices map[string]Price) { b.apiPrices.Store(&prices) }

// OperatorPrices is the number of models MODEL_PRICES prices.
func (b *Budgeter) OperatorPrices() int { return len(b.prices) }

// ExceededError says that a job's estimate does not fit a budget now.
type ExceededError struct {
	Budget Budget
	// Used is what the window has spent and reserved; Estimate the job's.
	Used, Estimate int64
	// NextWindow is when the budget's window ends.
	NextWindow time.Time
}

func (e *ExceededError) Error() string {
	return fmt.Sprintf("budget %s: %s used, this job's estimate %s does not fit", e.Budget, apiclient.FormatMicros(e.Used), apiclient.FormatMicros(e.Estimate))
}

// windowOf is the id and end of the window of w holding t.
func windowOf(w Window, t time.Time) (string, time.Time) {
	t = t.UTC()
	if w == WindowMonth {
		start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start.Format("2006-01"), start.AddDate(0, 1, 0)
	}
	start := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return start.Format("2006-01-02"), start.AddDate(0, 0, 1)
}

func (b *Budgeter) key(bg Budget, t time.Time) (string, time.Time) {
	id, end := windowOf(bg.Window, t)
	scope := "all"
	if bg.Model != "" {
		scope = "model:" + bg.Model
	}
	if bg.Tenant != "" {
		scope = "tenant:" + bg.Tenant
	}
	return b.prefix + "{budget}:" + string(bg.Window) + ":" + id + ":" + scope, end
}

func (b *Budgeter) jobKey(jobID string) string { return b.prefix + "{budget}:job:" + jobID }

// budgetLib: each budget is a hash (spent, reserved, and "a:<job>" the
// job's reservation) and a sorted set of its reservations by expiry.
// expire(h, z, now) drops reservations past their expiry.
const budgetLib = `
local function expire(h, z, now)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 100)
  for _, j in ipairs(gone) do
    local a = tonumber(redis.call('HGET', h, 'a:' .. j) or '0')
    redis.call('HINCRBY', h, 'reserved', -a)
    redis.call('HDEL', h, 'a:' .. j)
    redis.call('ZREM', z, j)
  end
end
`

// reserveScript reserves ARGV[1] micro-dollars for job ARGV[2] against
// every budget, or none. KEYS: the job's entry, then per budget its hash
// and set. ARGV: amount, job, now ms, reservation expiry ms, key TTL ms,
// then per budget its limit. Returns {0} or {1, index, used} (refused).
var reserveScript = redis.NewScript(budgetLib + `
local amount, job, now = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = (#KEYS - 1) / 2
for i = 1, n do
  local h, z = KEYS[2*i], KEYS[2*i+1]
  expire(h, z, now)
  local mine = tonumber(redis.call('HGET', h, 'a:' .. job) or '0')
  local used = tonumber(redis.call('HGET', h, 'spent') or '0') + tonumber(redis.call('HGET', h, 'reserved') or '0') - mine
  if used + amount > tonumber(ARGV[5+i]) then return {1, i, used} end
end
local names = {}
for i = 1, n do
  local h, z = KEYS[2*i], KEYS[2*i+1]
  local mine = tonumber(redis.call('HGET', h, 'a:' .. job) or '0')
  redis.call('HINCRBY', h, 'reserved', amount - mine)
  redis.call('HSET', h, 'a:' .. job, amount)
  redis.call('ZADD', z, ARGV[4], job)
  redis.call('PEXPIRE', h, ARGV[5]); redis.call('PEXPIRE', z, ARGV[5])
  names[#names+1] = h; names[#names+1] = z
end
redis.call('SET', KEYS[1], table.concat(names, '\n'), 'PX', ARGV[5])
return {0}
`)

// settleScript replaces job ARGV[1]'s reservation: mode "adjust" sets it
// to ARGV[2]; "settle" moves ARGV[2] to spent and drops it (0 releases).
// KEYS: the job's entry, then the budgets' hashes and sets it names (the
// caller reads them from the entry; all share the {budget} slot).
var settleScript = redis.NewScript(budgetLib + `
local job, amount, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for i = 2, #KEYS, 2 do
  local h, z = KEYS[i], KEYS[i+1]
  local mine = redis.call('HGET', h, 'a:' .. job)
  if mine then
    mine = tonumber(mine)
    if mode == 'adjust' then
      redis.call('HINCRBY', h, 'reserved', amount - mine)
      redis.call('HSET', h, 'a:' .. job, amount)
    else
      redis.call('HINCRBY', h, 'reserved', -mine)
      redis.call('HINCRBY', h, 'spent', amount)
      redis.call('HDEL', h, 'a:' .. job)
      redis.call('ZREM', z, job)
    end
  end
end
if mode ~= 'adjust' then redis.call('DEL', KEYS[1]) end
return 0
`)

// Reserve reserves estimate micro-dollars for the job against every budget
// that applies to a job of model and tenant ("" is DefaultTenant),
// atomically: all or none. A budget it does not fit gives an
// *ExceededError (nothing reserved). Reserving again for the same job
// replaces its reservation.
func (b *Budgeter) Reserve(ctx context.Context, jobID, model, tenant string, estimate int64) error {
	now := b.now()
	keys := []string{b.jobKey(jobID)}
	args := []any{estimate, jobID, now.UnixMilli(), now.Add(b.ttl).UnixMilli(), 0}
	var applied []Budget
	var keyTTL time.Duration
	for _, bg := range b.budgets {
		if !bg.applies(model, tenant) {
			continue
		}
		k, end := b.key(bg, now)
		keys = append(keys, k, k+":res")
		args = append(args, bg.Limit)
		applied = append(applied, bg)
		keyTTL = max(keyTTL, end.Sub(now)+b.ttl)
	}
	if len(applied) == 0 {
		return nil
	}
	args[4] = keyTTL.Milliseconds()
	res, err := reserveScript.Run(ctx, b.rdb, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("budget reserve %s: %w", jobID, ClassifyRedis(err))
	}
	if res[0] == 0 {
		return nil
	}
	bg := applied[res[1]-1]
	_, end := windowOf(bg.Window, now)
	return &ExceededError{Budget: bg, Used: res[2], Estimate: estimate, NextWindow: end}
}

// Adjust replaces the job's reservation by amount (the API's estimate
// after the create). It may take a budget past its limit: the job is
// already paid for.
func (b *Budgeter) Adjust(ctx context.Context, jobID string, amount int64) error {
	return b.settle(ctx, jobID, amount, "adjust")
}

// Settle ends the job's reservation: amount (the settled cost; 0 when the
// generation failed or was voided) becomes spent in every window the job
// reserved in. A job without a reservation is a no-op.
func (b *Budgeter) Settle(ctx context.Context, jobID string, amount int64) error {
	return b.settle(ctx, jobID, amount, "settle")
}

func (b *Budgeter) settle(ctx context.Context, jobID string, amount int64, mode string) error {
	names, err := b.rdb.Get(ctx, b.jobKey(jobID)).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("budget %s %s: %w", mode, jobID, ClassifyRedis(err))
	}
	keys := append([]string{b.jobKey(jobID)}, strings.Split(names, "\n")...)
	if len(keys)%2 == 0 {
		return fmt.Errorf("budget %s %s: corrupt reservation entry", mode, jobID)
	}
	if err := settleScript.Run(ctx, b.rdb, keys, jobID, amount, mode).Err(); err != nil {
		return fmt.Errorf("budget %s %s: %w", mode, jobID, ClassifyRedis(err))
	}
	return nil
}

// BudgetUse is one budget's current window: spent (settled) and reserved
// micro-dollars.
type BudgetUse struct {
	Budget          Budget
	Spent, Reserved int64
}

// Use reads every budget's current window, for the dashboard.
func (b *Budgeter) Use(ctx context.Context) ([]BudgetUse, error) {
	now := b.now()
	out := make([]BudgetUse, 0, len(b.budgets))
	for _, bg := range b.budgets {
		k, _ := b.key(bg, now)
		v, err := b.rdb.HMGet(ctx, k, "spent", "reserved").Result()
		if err != nil {
			return nil, fmt.Errorf("budget use: %w", ClassifyRedis(err))
		}
		u := BudgetUse{Budget: bg}
		u.Spent, u.Reserved = atoi64(v[0]), atoi64(v[1])
		out = append(out, u)
	}
	return out, nil
}

func atoi64(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// WaitFor is how long a job refused by e waits before it tries again: a
// short interval (a reservation may be released sooner), never past the
// window's end.
func (e *ExceededError) WaitFor(now time.Time, short time.Duration) time.Duration {
	d := e.NextWindow.Sub(now)
	if d > short {
		return short
	}
	return max(d, 0) + time.Second
}
