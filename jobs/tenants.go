package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tenants: every job belongs to a tenant (DefaultTenant unless the
// producer names one). With tenancy on (a *Tenancy; nil is off and costs
// nothing), a submitted job starts in tenant_wait, in its tenant's
// waiting list, instead of having its create task enqueued. Admission
// picks tenants round-robin (by virtual time) from the ring of tenants
// with waiting jobs, skips those at their limit (TENANT_LIMITS), and
// moves each picked job to queued in the same script; the caller then enqueues its create task.
// Only a few admitted jobs wait in the create queue at a time
// (TenancyConfig.AdmitAhead), so a tenant arriving behind another's
// backlog is served within a few creates.
//
// The keys share the hash tag {tenants}:
//
//	ring        sorted set of tenants with waiting jobs, by virtual time
//	vtime       the virtual time of the latest admission
//	wait:<t>    list of the tenant's waiting job ids, oldest first
//	busy:<t>    set of the tenant's admitted jobs not yet past generating
//	            (queued after admission, budget_wait, submitting,
//	            generating): what TENANT_LIMITS bounds
//	adm         sorted set of admitted jobs whose create has not started,
//	            by admission time (ms): what AdmitAhead bounds
//	seen        sorted set of the tenants seen, by when each last joined
//	            the ring or was found with admitted jobs by Sweep (ms):
//	            what metrics and the dashboard list. A tenant with no
//	            waiting or admitted job that has not been seen for
//	            tenantForget leaves it (Sweep). Older releases kept the
//	            set "known"; Sweep moves it here.

// DefaultTenant is the tenant of a job that names none.
const DefaultTenant = "default"

var tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ErrInvalidTenant marks a tenant name ValidateTenant refuses.
var ErrInvalidTenant = errors.New("invalid tenant")

// ValidateTenant checks a tenant name: 1-63 characters of a-z 0-9 . _ -,
// starting with a letter or digit.
func ValidateTenant(t string) error {
	if !tenantPattern.MatchString(t) {
		if len(t) > 40 {
			t = t[:40] + "…"
		}
		return fmt.Errorf("%w %q: want 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit", ErrInvalidTenant, t)
	}
	return nil
}

// TenantLimits is TENANT_LIMITS: how many jobs each tenant may have
// admitted and not yet past generating. 0 is no limit.
type TenantLimits struct {
	Default int
	Per     map[string]int
}

// Of is the limit of tenant t.
func (l TenantLimits) Of(t string) int { return tenantValue(l.Per, l.Default, t) }

// tenantValue is per's value for tenant t, def for a tenant not in it.
func tenantValue(per map[string]int, def int, t string) int {
	if n, ok := per[t]; ok {
		return n
	}
	return def
}

// appendTenantPairs appends per's tenant/value pairs to args, by tenant.
func appendTenantPairs(args []any, per map[string]int) []any {
	for _, t := range slices.Sorted(maps.Keys(per)) {
		args = append(args, t, per[t])
	}
	return args
}

// String renders the limits as TENANT_LIMITS would give them.
func (l TenantLimits) String() string {
	parts := []string{"default=" + strconv.Itoa(l.Default)}
	for _, t := range slices.Sorted(maps.Keys(l.Per)) {
		parts = append(parts, t+"="+strconv.Itoa(l.Per[t]))
	}
	return strings.Join(parts, ",")
}

// ParseTenantLimits reads TENANT_LIMITS: comma-separated "<tenant>=<n>",
// where the tenant "default" sets the limit of every tenant not named
// (itself included); 0 is no limit. It returns every problem.
func ParseTenantLimits(s string) (TenantLimits, []error) {
	def, per, errs := parseTenantNumbers(s, tenantNumbers{what: "limit", want: "<tenant>=<jobs>, e.g. default=5",
		rangeText: "the limit must be a whole number from 0 (none) to 1000000", min: 0, max: 1_000_000})
	return TenantLimits{Default: def, Per: per}, errs
}

// TenantWeights is TENANT_WEIGHTS: each tenant's share of the admissions
// while several tenants have jobs waiting (a tenant of weight 3 is
// admitted three jobs for every one of a tenant of weight 1). Default 1.
type TenantWeights struct {
	Default int
	Per     map[string]int
}

// Of is the weight of tenant t.
func (w TenantWeights) Of(t string) int { return tenantValue(w.Per, max(w.Default, 1), t) }

// ParseTenantWeights reads TENANT_WEIGHTS: comma-separated
// "<tenant>=<weight>", weights 1-1000, where the tenant "default" sets the
// weight of every tenant not named (1 if not given). It returns every
// problem.
func ParseTenantWeights(s string) (TenantWeights, []error) {
	def, per, errs := parseTenantNumbers(s, tenantNumbers{what: "weight", want: "<tenant>=<weight>, e.g. acme=3",
		rangeText: "the weight must be a whole number from 1 to 1000", min: 1, max: 1000})
	if _, ok := per[DefaultTenant]; !ok {
		def = 1
	}
	return TenantWeights{Default: def, Per: per}, errs
}

// tenantNumbers describes a "<tenant>=<n>" list for parseTenantNumbers.
type tenantNumbers struct {
	what, want, rangeText string
	min, max              int
}

// parseTenantNumbers reads a comma-separated "<tenant>=<n>" list: the
// value of "default" (0 when not given) and every tenant's, with every
// problem.
func parseTenantNumbers(s string, f tenantNumbers) (int, map[string]int, []error) {
	def, per := 0, map[string]int{}
	var errs []error
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		t, v, ok := strings.Cut(item, "=")
		t = strings.TrimSpace(t)
		if !ok {
			errs = append(errs, fmt.Errorf("tenant %s %q: want %s", f.what, item, f.want))
			continue
		}
		if err := ValidateTenant(t); err != nil {
			errs = append(errs, fmt.Errorf("tenant %s %q: %w", f.what, item, err))
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < f.min || n > f.max {
			errs = append(errs, fmt.Errorf("tenant %s %q: %s", f.what, item, f.rangeText))
			continue
		}
		if _, dup := per[t]; dup {
			errs = append(errs, fmt.Errorf("tenant %s %q: tenant given twice", f.what, item))
			continue
		}
		if t == DefaultTenant {
			def = n
		}
		per[t] = n
	}
	return def, per, errs
}

// TenancyConfig configures tenancy.
type TenancyConfig struct {
	// Limits are the tenants' limits (TENANT_LIMITS).
	Limits TenantLimits
	// AdmitAhead is how many admitted jobs may wait in the create queue
	// at once (their create not started). Default 2: enough to keep a
	// create worker busy, few enough that a tenant arriving behind
	// another's backlog waits for at most that many of its creates.
	AdmitAhead int
	// Weights are the tenants' shares of the admissions
	// (TENANT_WEIGHTS); the zero value weighs every tenant 1.
	Weights TenantWeights
	// AdmitTimeout is how long an admitted job counts against
	// AdmitAhead without its create starting (a lost trigger, a worker
	// killed while the create waited for its model's lock). Default
	// 10 s: twice the wait after which a live worker gives the place back
	// itself (worker: 5 s for the model's create lock), so that a killed
	// worker's admitted jobs do not hold admission up for much longer.
	AdmitTimeout time.Duration
}

// Tenancy admits jobs fairly across tenants. A nil *Tenancy is tenancy
// off: callers check for nil and make no call. It is safe for concurrent
// use.
type Tenancy struct {
	rdb     redis.UniversalClient
	store   *Store
	prefix  string // the store's
	cluster bool
	cfg     TenancyConfig
	// limitArgs are the admission script's limit and weight arguments.
	limitArgs []any
	now       func() time.Time
}

// NewTenancy returns the tenancy of the jobs of store.
func NewTenancy(store *Store, cfg TenancyConfig) *Tenancy {
	if cfg.AdmitAhead <= 0 {
		cfg.AdmitAhead = 2
	}
	if cfg.AdmitTimeout <= 0 {
		cfg.AdmitTimeout = 10 * time.Second
	}
	t := &Tenancy{rdb: store.rdb, store: store, prefix: store.prefix, cluster: store.cluster, cfg: cfg, now: store.now}
	t.limitArgs = appendTenantPairs([]any{cfg.Limits.Default, len(cfg.Limits.Per)}, cfg.Limits.Per)
	t.limitArgs = appendTenantPairs(append(t.limitArgs, max(cfg.Weights.Default, 1)), cfg.Weights.Per)
	return t
}

// Limits returns the configured limits.
func (t *Tenancy) Limits() TenantLimits { return t.cfg.Limits }

func (t *Tenancy) key(s string) string { return t.prefix + "{tenants}:" + s }

// Admission is a job admitted: it is queued now and its create task is
// to be enqueued (tasks.NextTask of Record()).
type Admission struct {
	ID string
	// Retries is the job's retry count (its create task's generation).
	Retries int
	Tenant  string
	// Trace is the job's trace context (the record's; "" untraced),
	// which its create task carries.
	Trace string
}

// Record is the admitted job's record as far as its next task depends
// on it.
func (a Admission) Record() *Record {
	return &Record{ID: a.ID, State: StateQueued, Retries: a.Retries, Tenant: a.Tenant, Trace: a.Trace}
}

// tenancyScript is every change of the tenancy structures, followed by
// an admission round. ARGV: op, job id, tenant, then the admission's:
// key prefix ("…{tenants}:"), now (ms), AdmitAhead, AdmitTimeout (ms),
// the job key prefix ("…job:{"; "" on a Cluster: the caller applies the
// transitions), the default limit, the number of tenant/limit pairs, the
// pairs, the default weight, then tenant/weight pairs. KEYS: the ring (it
// names the slot).
//
// The ring is a sorted set of the tenants with waiting jobs, each scored
// by its virtual time: how many of its jobs were admitted since it last
// joined, each counting 1/weight (TENANT_WEIGHTS), from the virtual time it
// joined at. Admission serves
// the lowest score (ties by name), so tenants with waiting jobs take
// turns: round-robin. A tenant joins (its list was empty) at the virtual
// time of the latest admission less the number of admitted jobs waiting
// in the create queue: those were admitted before it competed but start
// after it arrived, so it is owed as many turns. That is what lets a
// tenant arriving behind another's backlog start its creates at its fair
// share from its arrival, window included; a tenant gains at most
// AdmitAhead turns each time its list runs empty and fills again.
//
// ops: "enter" (the job joins its tenant's list, the tenant the ring if
// its list was empty), "start" (the job's create started: it leaves
// adm), "leave" (the job is past generating, or ended: it leaves busy
// and adm), "withdraw" (leave, and leave its tenant's list too), "admit"
// (nothing but the round).
//
// The round: while fewer than AdmitAhead admitted jobs wait, take the
// ring's lowest-scored tenant below its limit (none: the round ends); its
// oldest waiting job is admitted: tenant_wait -> queued in the record
// (with its history line), into busy and adm, and the tenant's score
// goes up by 1/weight (it leaves the ring when its list is empty). Ids whose
// record is not in tenant_wait any more (cancelled) are dropped. It
// returns the admitted ids with their retry counts, tenants and traces.
var tenancyScript = redis.NewScript(`
local op, id, tn = ARGV[1], ARGV[2], ARGV[3]
local P, now, ahead, stale, jp = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local deflim = tonumber(ARGV[9])
local lim, wt = {}, {}
local i = 11
for _ = 1, tonumber(ARGV[10]) do lim[ARGV[i]] = tonumber(ARGV[i+1]); i = i + 2 end
local defw = tonumber(ARGV[i]); i = i + 1
while i < #ARGV do wt[ARGV[i]] = tonumber(ARGV[i+1]); i = i + 2 end
local ring, adm = KEYS[1], P .. 'adm'
if op == 'enter' then
  if redis.call('RPUSH', P .. 'wait:' .. tn, id) == 1 then
    local v = tonumber(redis.call('GET', P .. 'vtime') or '0')
    redis.call('ZADD', ring, 'NX', v - redis.call('ZCARD', adm), tn)
    redis.call('ZADD', P .. 'seen', now, tn)
  end
elseif op == 'start' then
  redis.call('ZREM', adm, id)
elseif op == 'leave' or op == 'withdraw' then
  redis.call('ZREM', adm, id)
  redis.call('SREM', P .. 'busy:' .. tn, id)
  if op == 'withdraw' and redis.call('LREM', P .. 'wait:' .. tn, 0, id) > 0 and redis.call('LLEN', P .. 'wait:' .. tn) == 0 then
    redis.call('ZREM', ring, tn)
  end
end
redis.call('ZREMRANGEBYSCORE', adm, '-inf', now - stale)
local room = ahead - redis.call('ZCARD', adm)
local out = {}
while room > 0 do
  local t, score = nil, nil
  local ts = redis.call('ZRANGE', ring, 0, -1, 'WITHSCORES')
  for i = 1, #ts, 2 do
    local l = lim[ts[i]] or deflim
    if l <= 0 or redis.call('SCARD', P .. 'busy:' .. ts[i]) < l then t, score = ts[i], ts[i+1]; break end
  end
  if not t then break end
  local wk, busy = P .. 'wait:' .. t, P .. 'busy:' .. t
  local j = redis.call('LPOP', wk)
  local ok, retries, trace = j ~= false and j ~= nil, '0', ''
  if ok and jp ~= '' then
    local jk = jp .. j .. '}'
    local v = redis.call('HMGET', jk, 'state', 'retries', '` + FieldTrace + `')
    if v[1] ~= '` + string(StateTenantWait) + `' then
      ok = false
    else
      retries, trace = v[2] or '0', v[3] or ''
      redis.call('HSET', jk, 'state', '` + string(StateQueued) + `', 'updated_at', now)
      if redis.call('RPUSH', jk .. ':events', '{"t":' .. now .. ',"s":"` + string(StateQueued) + `","e":"` + string(TAdmitted) + `","d":"tenant ' .. t .. '"}') > ` + strconv.Itoa(historyLen) + ` then
        redis.call('LTRIM', jk .. ':events', -` + strconv.Itoa(historyLen) + `, -1)
      end
    end
  end
  if redis.call('LLEN', wk) == 0 then
    redis.call('ZREM', ring, t)
  elseif ok then
    redis.call('ZINCRBY', ring, 1 / (wt[t] or defw), t)
  end
  if ok then
    redis.call('SADD', busy, j)
    redis.call('ZADD', adm, now, j)
    redis.call('SET', P .. 'vtime', score)
    room = room - 1
    out[#out+1] = j; out[#out+1] = retries; out[#out+1] = t; out[#out+1] = trace
  end
end
return out
`)

// run runs the tenancy script with op and applies, on a Cluster, the
// admitted jobs' transitions.
func (t *Tenancy) run(ctx context.Context, op, id, tenant string) ([]Admission, error) {
	if tenant == "" {
		tenant = DefaultTenant
	}
	jp := t.prefix + "job:{"
	if t.cluster {
		jp = ""
	}
	args := make([]any, 0, 9+len(t.limitArgs))
	args = append(args, op, id, tenant, t.key(""), t.now().UnixMilli(), t.cfg.AdmitAhead, t.cfg.AdmitTimeout.Milliseconds(), jp)
	args = append(args, t.limitArgs...)
	res, err := tenancyScript.Run(ctx, t.rdb, []string{t.key("ring")}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("tenancy %s: %w", op, ClassifyRedis(err))
	}
	out := make([]Admission, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		n, _ := strconv.Atoi(res[i+1])
		out = append(out, Admission{ID: res[i], Retries: n, Tenant: res[i+2], Trace: res[i+3]})
	}
	if t.cluster {
		return t.applyAdmissions(ctx, out)
	}
	return out, nil
}

// applyAdmissions applies, on a Cluster, the transitions of the jobs the
// script admitted (it cannot reach their records): a job that left
// tenant_wait meanwhile (cancelled) gives its place back. A failure
// leaves a job admitted in the tenancy structures but in tenant_wait:
// the stranded-job reconciler (Repair) finishes its admission.
func (t *Tenancy) applyAdmissions(ctx context.Context, adm []Admission) ([]Admission, error) {
	out := adm[:0]
	var firstErr error
	for _, a := range adm {
		res, err := t.store.Do(ctx, a.ID, Admitted{Tenant: a.Tenant})
		switch {
		case err == nil && res.Applied:
			a.Retries, a.Trace = res.Record.Retries, res.Record.Trace
			out = append(out, a)
		case err == nil || errors.Is(err, ErrIllegalTransition) || errors.Is(err, ErrNotFound):
			if _, lerr := t.run(ctx, "leave", a.ID, a.Tenant); lerr != nil && firstErr == nil {
				firstErr = lerr
			}
		default:
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return out, firstErr
}

// Enter puts a job just created in tenant_wait into its tenant's waiting
// list, then runs an admission round; the admitted jobs' create tasks are
// the caller's to enqueue.
func (t *Tenancy) Enter(ctx context.Context, id, tenant string) ([]Admission, error) {
	return t.run(ctx, "enter", id, tenant)
}

// Admit runs an admission round.
func (t *Tenancy) Admit(ctx context.Context) ([]Admission, error) {
	return t.run(ctx, "admit", "", "")
}

// Started says that the job's create started (it is submitting, waits
// for a budget, or waits for its model's create lock): it no longer
// counts against AdmitAhead. It runs an admission round.
func (t *Tenancy) Started(ctx context.Context, id, tenant string) ([]Admission, error) {
	return t.run(ctx, "start", id, tenant)
}

// Left says that the job went past generating (downloading) or ended: it
// no longer counts against its tenant's limit. It runs an admission
// round.
func (t *Tenancy) Left(ctx context.Context, id, tenant string) ([]Admission, error) {
	return t.run(ctx, "leave", id, tenant)
}

// Withdraw is Left for a job that was in tenant_wait when it ended
// (cancelled): it also leaves its tenant's waiting list (it may have been
// admitted meanwhile: then Left's part applies). It runs an admission
// round.
func (t *Tenancy) Withdraw(ctx context.Context, id, tenant string) ([]Admission, error) {
	return t.run(ctx, "withdraw", id, tenant)
}

// WaitIndex is a snapshot of the tenants' waiting lists, read once per
// tenant as the stranded-job reconciler needs it (Repair), so that a
// sweep over many waiting jobs reads each list once rather than
// searching it once per job.
type WaitIndex struct {
	t     *Tenancy
	lists map[string]map[string]bool
}

// NewWaitIndex returns an empty snapshot.
func (t *Tenancy) NewWaitIndex() *WaitIndex {
	return &WaitIndex{t: t, lists: map[string]map[string]bool{}}
}

func (x *WaitIndex) waiting(ctx context.Context, tenant, id string) (bool, error) {
	l, ok := x.lists[tenant]
	if !ok {
		ids, err := x.t.rdb.LRange(ctx, x.t.key("wait:"+tenant), 0, -1).Result()
		if err != nil {
			return false, fmt.Errorf("tenancy repair: %w", ClassifyRedis(err))
		}
		l = make(map[string]bool, len(ids))
		for _, j := range ids {
			l[j] = true
		}
		x.lists[tenant] = l
	}
	return l[id], nil
}

// Repair puts right a job in tenant_wait that the stranded-job
// reconciler found untouched for a while: in its tenant's waiting list
// (as the snapshot saw it) it waits as it should; admitted in the tenancy
// structures but still in tenant_wait (a Cluster's admission cut short
// between its two steps) it is moved to queued and returned for its
// create task; in neither (a Submit cut short between the record and the
// list) it joins its tenant's list again. It reports whether it changed
// anything.
func (x *WaitIndex) Repair(ctx context.Context, rec *Record) ([]Admission, bool, error) {
	t := x.t
	tenant := cmp.Or(rec.Tenant, DefaultTenant)
	if rec.State != StateTenantWait {
		return nil, false, nil
	}
	if in, err := x.waiting(ctx, tenant, rec.ID); in || err != nil {
		return nil, false, err
	}
	// Read again: the job may have been admitted since the snapshot.
	pipe := t.rdb.Pipeline()
	st := pipe.HGet(ctx, t.store.jobKey(rec.ID), FieldState)
	pos := pipe.LPos(ctx, t.key("wait:"+tenant), rec.ID, redis.LPosArgs{})
	busy := pipe.SIsMember(ctx, t.key("busy:"+tenant), rec.ID)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, fmt.Errorf("tenancy repair %s: %w", rec.ID, ClassifyRedis(err))
	}
	if State(st.Val()) != StateTenantWait || pos.Err() == nil {
		return nil, false, nil
	}
	if busy.Val() {
		res, err := t.store.Do(ctx, rec.ID, Admitted{Tenant: tenant})
		if errors.Is(err, ErrIllegalTransition) {
			return nil, false, nil
		}
		if err != nil || !res.Applied {
			return nil, false, err
		}
		return []Admission{{ID: rec.ID, Retries: res.Record.Retries, Tenant: tenant, Trace: res.Record.Trace}}, true, nil
	}
	adm, err := t.Enter(ctx, rec.ID, tenant)
	return adm, true, err
}

// busyStates are the states in which an admitted job counts against its
// tenant's limit (tenant_wait: admitted on a Cluster, transition pending).
var busyStates = []State{StateTenantWait, StateQueued, StateBudgetWait, StateSubmitting, StateGenerating}

// Sweep drops from the tenancy structures the jobs a lost Left or
// Started call left there (a worker killed between a transition and its
// tenancy call): from each tenant's admitted set the jobs no longer in
// queued, budget_wait, submitting or generating (or gone), from the
// create-queue window the jobs no longer queued (one command per set for
// all its stale members). Then it runs an
// admission round (the safety net for lost admission triggers). It
// reads each admitted job's state: a cost bounded by the tenants'
// limits.
func (t *Tenancy) Sweep(ctx context.Context) ([]Admission, error) {
	if err := t.moveKnown(ctx); err != nil {
		return nil, err
	}
	seen, err := t.rdb.ZRangeWithScores(ctx, t.key("seen"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
	}
	now := t.now()
	forgetBefore := float64(now.Add(-tenantForget).UnixMilli())
	var idle []any
	var active []redis.Z
	for _, z := range seen {
		tn, _ := z.Member.(string)
		ids, err := t.rdb.SMembers(ctx, t.key("busy:"+tn)).Result()
		if err != nil {
			return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
		}
		states, err := t.states(ctx, ids)
		if err != nil {
			return nil, err
		}
		var stale []any
		for i, id := range ids {
			if !slices.Contains(busyStates, states[i]) {
				stale = append(stale, id)
			}
		}
		if len(stale) > 0 {
			if err := t.rdb.SRem(ctx, t.key("busy:"+tn), stale...).Err(); err != nil {
				return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
			}
		}
		switch {
		case len(stale) < len(ids):
			// Jobs admitted: seen now.
			active = append(active, redis.Z{Score: float64(now.UnixMilli()), Member: tn})
		case z.Score < forgetBefore:
			idle = append(idle, tn)
		}
	}
	if len(active) > 0 {
		if err := t.rdb.ZAddXX(ctx, t.key("seen"), active...).Err(); err != nil {
			return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
		}
	}
	if err := t.forgetIdle(ctx, idle); err != nil {
		return nil, err
	}
	ids, err := t.rdb.ZRange(ctx, t.key("adm"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
	}
	states, err := t.states(ctx, ids)
	if err != nil {
		return nil, err
	}
	var stale []any
	for i, id := range ids {
		if states[i] != StateQueued && states[i] != StateTenantWait {
			stale = append(stale, id)
		}
	}
	if len(stale) > 0 {
		if err := t.rdb.ZRem(ctx, t.key("adm"), stale...).Err(); err != nil {
			return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
		}
	}
	return t.Admit(ctx)
}

// tenantForget is how long a tenant with no waiting or admitted job stays
// among the tenants listed (dashboard, videoworker_tenant_jobs) after it
// was last seen active: the list is bounded by the tenants active in a
// day, not by every tenant ever seen.
const tenantForget = 24 * time.Hour

// forgetIdleScript drops from the seen set each of the given tenants that
// still has no waiting job (its list may have filled since Sweep looked;
// its admitted set was found empty). KEYS: seen. ARGV: the key prefix,
// then tenants.
var forgetIdleScript = redis.NewScript(`
local n = 0
for i = 2, #ARGV do
  local tn = ARGV[i]
  if redis.call('LLEN', ARGV[1] .. 'wait:' .. tn) == 0 and redis.call('SCARD', ARGV[1] .. 'busy:' .. tn) == 0 then
    n = n + redis.call('ZREM', KEYS[1], tn)
  end
end
return n
`)

// forgetIdle drops idle tenants from the seen set (forgetIdleScript).
func (t *Tenancy) forgetIdle(ctx context.Context, tenants []any) error {
	if len(tenants) == 0 {
		return nil
	}
	if err := forgetIdleScript.Run(ctx, t.rdb, []string{t.key("seen")}, append([]any{t.key("")}, tenants...)...).Err(); err != nil {
		return fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
	}
	return nil
}

// moveKnown moves an older release's "known" set of tenants into the
// seen set (as seen now), so that a fleet upgraded while tenants wait
// keeps listing them.
var moveKnownScript = redis.NewScript(`
local tenants = redis.call('SMEMBERS', KEYS[1])
for _, tn in ipairs(tenants) do redis.call('ZADD', KEYS[2], 'NX', ARGV[1], tn) end
redis.call('DEL', KEYS[1])
return #tenants
`)

func (t *Tenancy) moveKnown(ctx context.Context) error {
	if err := moveKnownScript.Run(ctx, t.rdb, []string{t.key("known"), t.key("seen")}, t.now().UnixMilli()).Err(); err != nil {
		return fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
	}
	return nil
}

// states reads the state of each job ("" when it is gone), pipelined.
func (t *Tenancy) states(ctx context.Context, ids []string) ([]State, error) {
	out := make([]State, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	pipe := t.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, t.store.jobKey(id), FieldState)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("tenancy sweep: %w", ClassifyRedis(err))
	}
	for i, c := range cmds {
		out[i] = State(c.Val())
	}
	return out, nil
}

// TenantFigures is one tenant's jobs in the tenancy structures.
type TenantFigures struct {
	Tenant string
	// Waiting is how many jobs wait in tenant_wait; Admitted how many
	// are admitted and not yet past generating; Limit the tenant's limit
	// (0: none).
	Waiting, Admitted int64
	Limit             int
}

// Figures reads the figures of every tenant seen (active within a day,
// see tenantForget): two commands per tenant, pipelined (for the
// dashboard and /metrics).
func (t *Tenancy) Figures(ctx context.Context) ([]TenantFigures, error) {
	tenants, err := t.rdb.ZRange(ctx, t.key("seen"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("tenant figures: %w", ClassifyRedis(err))
	}
	// An older release's set, until the first sweep moves it.
	legacy, err := t.rdb.SMembers(ctx, t.key("known")).Result()
	if err != nil {
		return nil, fmt.Errorf("tenant figures: %w", ClassifyRedis(err))
	}
	tenants = append(tenants, legacy...)
	slices.Sort(tenants)
	tenants = slices.Compact(tenants)
	pipe := t.rdb.Pipeline()
	waits := make([]*redis.IntCmd, len(tenants))
	busy := make([]*redis.IntCmd, len(tenants))
	for i, tn := range tenants {
		waits[i] = pipe.LLen(ctx, t.key("wait:"+tn))
		busy[i] = pipe.SCard(ctx, t.key("busy:"+tn))
	}
	if len(tenants) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("tenant figures: %w", ClassifyRedis(err))
		}
	}
	out := make([]TenantFigures, len(tenants))
	for i, tn := range tenants {
		out[i] = TenantFigures{Tenant: tn, Waiting: waits[i].Val(), Admitted: busy[i].Val(), Limit: t.cfg.Limits.Of(tn)}
	}
	return out, nil
}
