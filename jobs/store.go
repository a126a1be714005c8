package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the default key prefix of every key this package writes.
const DefaultPrefix = "videoworker:"

// historyLen is how many history events a job keeps.
const historyLen = 200

// Store reads and writes job records in Redis. It is safe for concurrent
// use. Every change of a record writes the record, its history line and
// its membership of the fleet-wide sets (the job index, the unfinished
// jobs, the video claims) in one script. On a Redis Cluster, where one
// script reaches only one job's keys (they share a hash tag), the
// fleet-wide sets are written around the script instead, in the order
// that leaves nothing invisible when a step fails: a job joins the index
// and the unfinished set before its record says so, and leaves the
// unfinished set after (the stranded-job reconciler drops ids without an
// unfinished record).
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// cluster is set on a Redis Cluster, where a script may only touch the
	// keys of one job (one hash slot): see apply.
	cluster bool
	now     func() time.Time
	// retention is how long finished jobs stay (0: forever); see
	// SetRetention.
	retention time.Duration
}

// NewStore returns a Store using rdb with keys under prefix (DefaultPrefix
// when empty).
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	_, cluster := rdb.(*redis.ClusterClient)
	return &Store{rdb: rdb, prefix: prefix, cluster: cluster, now: func() time.Time { return time.Now().UTC() }}
}

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.prefix }

func (s *Store) jobKey(id string) string      { return s.prefix + "job:{" + id + "}" }
func (s *Store) eventsKey(id string) string   { return s.prefix + "job:{" + id + "}:events" }
func (s *Store) specKey(id string) string     { return s.prefix + "job:{" + id + "}:spec" }
func (s *Store) indexKey() string             { return s.prefix + "jobs" }
func (s *Store) webhooksKey(id string) string { return s.prefix + "job:{" + id + "}:webhooks" }
func (s *Store) webhookStatsKey() string      { return s.prefix + "webhook_stats" }
func (s *Store) claimsKey() string            { return s.prefix + "claims" }
func (s *Store) activeKey() string            { return s.prefix + "active" }
func (s *Store) callbacksKey() string         { return s.prefix + "callbacks_due" }

// createScript writes a new record, its spec, its first history line, its
// place in the job index and its membership of the unfinished set in one
// step. KEYS: job, events, index, active, spec. ARGV: event, score, id,
// spec, fields...
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[4] ~= '' then redis.call('SET', KEYS[5], ARGV[4]) end
if KEYS[3] == KEYS[1] then return 1 end -- a Cluster: the caller keeps the sets
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
return 1
`)

// Create stores rec if no record with its id exists. It reports whether it
// created the record; when one existed already, it returns that one.
func (s *Store) Create(ctx context.Context, rec *Record) (bool, *Record, error) {
	keys, args, err := s.createCall(rec)
	if err != nil {
		return false, nil, err
	}
	if s.cluster {
		pipe := s.rdb.Pipeline()
		pipe.ZAdd(ctx, s.indexKey(), redis.Z{Score: float64(rec.SubmittedAt.UnixMilli()), Member: rec.ID})
		pipe.SAdd(ctx, s.activeKey(), rec.ID)
		if _, err := pipe.Exec(ctx); err != nil {
			return false, nil, fmt.Errorf("index job %s: %w", rec.ID, ClassifyRedis(err))
		}
		keys[2], keys[3] = keys[0], keys[0]
	}
	n, err := createScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return false, nil, fmt.Errorf("create job %s: %w", rec.ID, ClassifyRedis(err))
	}
	if n == 0 {
		existing, err := s.Get(ctx, rec.ID)
		return false, existing, err
	}
	return true, rec, nil
}

// spec is what was asked of a job when it does not fit in the record
// compactly (a request longer than compactValueMax, or labels): kept
// beside the record under its own key, since one long value turns the
// whole record into Redis's large hash encoding, about three times the
// memory of the compact one. It never changes after Create.
type spec struct {
	Request any               `json:"request,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// compactValueMax is the longest value Redis keeps in a hash's compact
// encoding (its default hash-max-listpack-value).
const compactValueMax = 64

// Get returns the record of id with its request and labels, or an error
// wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, ClassifyRedis(err))
	}
	r, err := s.decode(id, m)
	if err != nil || m[FieldRequest] != "" {
		return r, err // a short request is in the record
	}
	v, err := s.rdb.Get(ctx, s.specKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, ClassifyRedis(err))
	}
	if err := decodeSpec(id, v, r); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeSpec fills r's request and labels from its spec key's value v.
func decodeSpec(id, v string, r *Record) error {
	var x struct {
		Request *json.RawMessage  `json:"request"`
		Labels  map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(v), &x); err != nil {
		return fmt.Errorf("job %s: spec: %w", id, err)
	}
	if x.Request != nil {
		if err := json.Unmarshal(*x.Request, &r.Request); err != nil {
			return fmt.Errorf("job %s: spec: %w", id, err)
		}
	}
	r.Labels = x.Labels
	return nil
}

// Load returns the record of id without a request and labels kept under
// the spec key (a short request is in the record itself): what the steps
// after the create need, in one read.
func (s *Store) Load(ctx context.Context, id string) (*Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, ClassifyRedis(err))
	}
	return s.decode(id, m)
}

func (s *Store) decode(id string, m map[string]string) (*Record, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	r, err := decodeRecord(m)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", id, err)
	}
	return r, nil
}

// Change is a conditional update of one record, applied atomically.
type Change struct {
	// From lists the states the record must be in. Empty means any
	// non-terminal state: terminal records change only when From names
	// their state.
	From []State
	// To is the new state; empty keeps the state.
	To State
	// IfEqual holds fields that must have these stored values. A field
	// never written meets a condition on its zero value ("", 0, false, the
	// zero time), as Get reads it.
	IfEqual map[string]any
	// Set holds fields to write (values as in the Record: string, int,
	// int64, bool, time.Time, State; "" or a zero time clears nothing but
	// stores an empty value).
	Set map[string]any
	// Incr holds fields to increment.
	Incr map[string]int64
	// Event names the history line written when the change applies; empty
	// writes none. Detail adds text to it.
	Event, Detail string
	// Return asks for the whole record, read in the same atomic step, in
	// Outcome.Record: what a caller learns from it cannot have changed
	// between its update and the read (e.g. an early webhook recorded just
	// before the video id was saved).
	Return bool

	// setIfEmpty holds fields written only where no value is stored yet.
	setIfEmpty map[string]any
}

// Outcome says whether a Change applied.
type Outcome struct {
	// Applied is true when the record met the conditions and changed.
	Applied bool
	// State is the record's state after the call.
	State State
	// Record is the record right after the change (as it stands when the
	// change did not apply), when Change.Return asked for it; else nil.
	Record *Record
}

// scriptLib holds the Lua helpers the record scripts share, written out
// from the Go definitions: terminal(state), and addEvent(event, state),
// which appends a history line (KEYS[2]) with its state filled in and
// keeps the newest historyLen.
var scriptLib = func() string {
	var terms []string
	for _, st := range AllStates {
		if st.Terminal() {
			terms = append(terms, "st == '"+string(st)+"'")
		}
	}
	return "local function terminal(st) return " + strings.Join(terms, " or ") + " end\n" +
		"local function addEvent(ev, st)\n" +
		"  if redis.call('RPUSH', KEYS[2], (string.gsub(ev, '\"s\":\"\"', '\"s\":\"' .. st .. '\"', 1))) > " + strconv.Itoa(historyLen) + " then\n" +
		"    redis.call('LTRIM', KEYS[2], -" + strconv.Itoa(historyLen) + ", -1)\n" +
		"  end\n" +
		"end\n"
}()

// applyScript is the one atomic update of a record: it reads the record
// once (HGETALL when the caller wants it back, else HMGET of the state and
// the fields its conditions and increments need), checks the conditions,
// writes every field with one HSET, appends the history line, and keeps
// the record's membership of the unfinished set in step when the state
// enters or leaves a terminal one. A claim of a video (before the
// conditions: a video the API made for this job is the job's whatever its
// state) and the release of the model's create lock go in the same step.
//
// With retention on (ARGV 8 > 0), a job entering a terminal state joins
// the finished set scored now: the retention sweep archives and compacts
// it, then keeps it in the retained set until it is forgotten. A change
// of an ended job makes it due again (a new score: see Store.Compact),
// so that its archive gets the change. A job that comes back (Retried)
// leaves both sets, whatever this store's retention.
//
// KEYS: job, events, active, claims, create lock, finished, callbacks due
// (the ended jobs whose callback delivery has not finished: kept in step
// only for jobs with a callback URL, on a single Redis, not on a Cluster),
// retained, then, when the change adds spend or releases the lock, the
// day's spend hash (the job key when it adds none), and, when it releases
// the lock, the lock's waiters and their seen set (releaseLockLua).
// ARGV: from, to, now, event, return, claim video, release owner,
// retention (ms, 0: off), then
// the counted lists: conditions (field, value, unset matches), sets
// (field, value), increments (field, delta), then with a spend key the
// model, the micro-dollars, the hash's TTL in seconds and the tenant (""
// for DefaultTenant; else also added to the field "t:<tenant>").
var applyScript = redis.NewScript(scriptLib + releaseLockLua + `
local i = 9
local nif = tonumber(ARGV[i]); i = i + 1
local conds = {}
for _ = 1, nif do conds[#conds+1] = {ARGV[i], ARGV[i+1], ARGV[i+2]}; i = i + 3 end
local nset = tonumber(ARGV[i]); i = i + 1
local sets = {}
for _ = 1, nset do
  local f, once = ARGV[i], false
  if string.sub(f, 1, 1) == '?' then f, once = string.sub(f, 2), true end
  sets[#sets+1] = {f, ARGV[i+1], once}; i = i + 2
end
local ninc = tonumber(ARGV[i]); i = i + 1
local incs = {}
for _ = 1, ninc do incs[#incs+1] = {ARGV[i], tonumber(ARGV[i+1])}; i = i + 2 end
local spendAt = i
local cur = {}
if ARGV[5] == '1' then
  local flat = redis.call('HGETALL', KEYS[1])
  for j = 1, #flat, 2 do cur[flat[j]] = flat[j+1] end
else
  local names = {'state', 'id', 'waiter', 'callback_url', 'callback_event', 'callback_status', 'retries', 'video_id', 'archived_at'}
  for _, c in ipairs(conds) do names[#names+1] = c[1] end
  for _, c in ipairs(incs) do names[#names+1] = c[1] end
  for _, c in ipairs(sets) do if c[3] then names[#names+1] = c[1] end end
  if ARGV[8] ~= '0' then names[#names+1] = 'retention_ms' end
  local vals = redis.call('HMGET', KEYS[1], unpack(names))
  for j, n in ipairs(names) do if vals[j] then cur[n] = vals[j] end end
end
local st = cur['state']
if not st then return {-1, '', ''} end
local function reply(code, extra)
  if ARGV[5] ~= '1' then return {code, st, extra or ''} end
  local flat = {}
  for k, v in pairs(cur) do flat[#flat+1] = k; flat[#flat+1] = v end
  return {code, st, extra or '', flat}
end
if ARGV[7] ~= '' then releaseLock(KEYS[5], KEYS[10], KEYS[11], ARGV[7]) end
if ARGV[6] ~= '' and redis.call('HSETNX', KEYS[4], ARGV[6], cur['id'] or '') == 0 then
  local owner = redis.call('HGET', KEYS[4], ARGV[6])
  if owner ~= cur['id'] then return reply(-2, owner) end
end
local from = ARGV[1]
if from == '' then
  if terminal(st) then return reply(0) end
elseif from ~= '*' then
  local ok = false
  for s in string.gmatch(from, '[^,]+') do if s == st then ok = true end end
  if not ok then return reply(0) end
end
for _, c in ipairs(conds) do
  local v = cur[c[1]] or ''
  if v ~= c[2] and not (v == '' and c[3] == '1') then return reply(0) end
end
local upd = {}
for _, c in ipairs(sets) do
  if not (c[3] and (cur[c[1]] or '') ~= '') then upd[c[1]] = c[2] end
end
for _, c in ipairs(incs) do
  upd[c[1]] = tostring((tonumber(upd[c[1]] or cur[c[1]] or '0') or 0) + c[2])
end
local was, archived, oldvid = st, (cur['archived_at'] or '') ~= '', cur['video_id'] or ''
if ARGV[2] ~= '' then upd['state'] = ARGV[2]; st = ARGV[2] end
upd['updated_at'] = ARGV[3]
local fv = {}
for k, v in pairs(upd) do fv[#fv+1] = k; fv[#fv+1] = v; cur[k] = v end
redis.call('HSET', KEYS[1], unpack(fv))
if KEYS[3] == KEYS[1] then
  -- a Cluster: the caller keeps the unfinished set
elseif terminal(st) and not terminal(was) then
  redis.call('SREM', KEYS[3], cur['id'] or '')
elseif terminal(was) and not terminal(st) then
  redis.call('SADD', KEYS[3], cur['id'] or '')
end
if KEYS[6] ~= KEYS[1] then
  local id = cur['id'] or ''
  if ARGV[8] ~= '0' and terminal(st) and not terminal(was) then
    -- due for the sweep at once: it archives and compacts the job
    redis.call('ZADD', KEYS[6], ARGV[3], id)
  elseif terminal(was) and not terminal(st) then
    -- also with retention off here: a retry must never leave the job
    -- to a sweep of the workers
    redis.call('ZREM', KEYS[6], id)
    if archived then redis.call('ZREM', KEYS[8], id, id .. ' ' .. oldvid) end
  elseif ARGV[8] ~= '0' and terminal(st) then
    -- an ended job changed: due again (a new score, which the sweep's
    -- compaction checks), so that its archive gets the change
    if archived then redis.call('ZADD', KEYS[6], ARGV[3], id) else redis.call('ZINCRBY', KEYS[6], 1, id) end
  end
end
if KEYS[7] ~= KEYS[1] and (cur['callback_url'] or '') ~= '' and (terminal(st) ~= terminal(was) or upd['callback_status']) then
  local done = cur['callback_event'] == (cur['id'] or '') .. ':' .. st .. ':' .. (cur['retries'] or '0') and
    (cur['callback_status'] == 'delivered' or cur['callback_status'] == 'failed')
  if terminal(st) and not done then redis.call('SADD', KEYS[7], cur['id'] or '') else redis.call('SREM', KEYS[7], cur['id'] or '') end
end
if ARGV[4] ~= '' then addEvent(ARGV[4], st) end
if cur['waiter'] and terminal(st) and not terminal(was) then redis.call('PUBLISH', KEYS[1] .. ':done', st) end
if KEYS[9] and KEYS[9] ~= KEYS[1] then
  -- the day's spend of a model: a new field sets the hash's expiry
  if redis.call('HINCRBY', KEYS[9], ARGV[spendAt], ARGV[spendAt+1]) == tonumber(ARGV[spendAt+1]) then
    redis.call('EXPIRE', KEYS[9], ARGV[spendAt+2])
  end
  if (ARGV[spendAt+3] or '') ~= '' then redis.call('HINCRBY', KEYS[9], 't:' .. ARGV[spendAt+3], ARGV[spendAt+1]) end
end
return reply(1)
`)

// waitScript marks a job as waited on (FieldWaiter) unless it has ended,
// and returns its state (” when there is no such job).
var waitScript = redis.NewScript(scriptLib + `
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return '' end
if not terminal(st) then redis.call('HSET', KEYS[1], 'waiter', '1') end
return st
`)

// DoneChannel is the pub/sub channel on which the transition that ends
// the job publishes its state, once MarkWaiter has marked it.
func (s *Store) DoneChannel(id string) string { return s.jobKey(id) + ":done" }

// MarkWaiter marks the job as waited on and returns its state: from then
// on, the transition that ends it publishes on DoneChannel (one PUBLISH,
// only for jobs someone waits on). Subscribe first, then mark: a job that
// ends in between is seen ended here. A missing job gives an error
// wrapping ErrNotFound.
func (s *Store) MarkWaiter(ctx context.Context, id string) (State, error) {
	st, err := waitScript.Run(ctx, s.rdb, []string{s.jobKey(id)}).Text()
	if err != nil {
		return "", fmt.Errorf("wait for job %s: %w", id, ClassifyRedis(err))
	}
	if st == "" {
		return "", fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	return State(st), nil
}

// Apply applies c to the record of id atomically. A record that does not
// exist gives an error wrapping ErrNotFound; unmet conditions give an
// Outcome with Applied false and no error.
//
// Apply is the raw conditional update underneath the transitions; the
// job's life changes only through Store.Do with one of the operations of
// the transition table. Apply stays for tests and repair tools that must
// set a record up field by field.
func (s *Store) Apply(ctx context.Context, id string, c Change) (Outcome, error) {
	return s.apply(ctx, id, c, applyExtra{})
}

// applyExtra are the parts of an update that only transitions use.
type applyExtra struct {
	claimVideo  string // claim this video for the job first
	lockModel   string // release this model's create lock if the job holds it
	releaseLock bool
	spendModel  string // add spendMicros to the day's spend of this model
	spendMicros int64
	spendTenant string // and of this tenant ("": DefaultTenant, not counted apart)
}

func (s *Store) apply(ctx context.Context, id string, c Change, x applyExtra) (Outcome, error) {
	now := s.now()
	from := make([]string, len(c.From))
	for i, st := range c.From {
		from[i] = string(st)
	}
	set := c.Set
	if c.To.Terminal() {
		set = make(map[string]any, len(c.Set)+1)
		for k, v := range c.Set {
			set[k] = v
		}
		if _, ok := set[FieldFinishedAt]; !ok {
			set[FieldFinishedAt] = now
		}
	}
	ev := ""
	if c.Event != "" {
		ev = encodeEvent(Event{At: now, State: c.To, Event: c.Event, Detail: c.Detail})
	}
	lockKey, release := s.jobKey(id), ""
	if x.releaseLock {
		lockKey, release = s.createLockKey(x.lockModel), id
	}
	args := make([]any, 0, 12+3*len(c.IfEqual)+2*(len(set)+len(c.Incr)))
	args = append(args, strings.Join(from, ","), string(c.To), encodeValue(now), ev, encodeValue(c.Return), x.claimVideo, release, s.retention.Milliseconds())
	args = append(args, len(c.IfEqual))
	for k, v := range c.IfEqual {
		args = append(args, k, encodeValue(v), unsetMatches(v))
	}
	args = append(args, len(set)+len(c.setIfEmpty))
	for k, v := range set {
		args = append(args, k, encodeValue(v))
	}
	for k, v := range c.setIfEmpty {
		args = append(args, "?"+k, encodeValue(v))
	}
	args = append(args, len(c.Incr))
	for k, v := range c.Incr {
		args = append(args, k, v)
	}
	keys := []string{s.jobKey(id), s.eventsKey(id), s.activeKey(), s.claimsKey(), lockKey, s.finishedKey(), s.callbacksKey(), s.retainedKey()}
	if x.spendMicros != 0 {
		keys = append(keys, s.SpendKey(now))
		args = append(args, x.spendModel, x.spendMicros, int64(spendTTL/time.Second), x.spendTenant)
	}
	if x.releaseLock {
		if len(keys) == 8 {
			keys = append(keys, s.jobKey(id)) // no spend
		}
		w := s.createWaitersKey(x.lockModel)
		keys = append(keys, w, seenKey(w))
	}
	if s.cluster {
		return s.applyCluster(ctx, id, c, x, keys, args)
	}
	res, err := applyScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return Outcome{}, fmt.Errorf("update job %s: %w", id, ClassifyRedis(err))
	}
	return s.outcome(id, c, x, res)
}

// applyCluster is apply on a Redis Cluster: the claim, and joining the
// unfinished set, before the script; leaving the set, and releasing the
// create lock, after it.
func (s *Store) applyCluster(ctx context.Context, id string, c Change, x applyExtra, keys []string, args []any) (Outcome, error) {
	if x.claimVideo != "" {
		owner, err := s.Claim(ctx, x.claimVideo, id)
		if err != nil {
			return Outcome{}, err
		}
		if owner != id {
			if x.releaseLock {
				_ = s.ReleaseCreateLock(ctx, x.lockModel, id) // as the script does
			}
			return Outcome{}, &ClaimError{VideoID: x.claimVideo, JobID: id, Owner: owner}
		}
		args[5] = ""
	}
	retry := c.To != "" && !c.To.Terminal() && slices.ContainsFunc(c.From, State.Terminal)
	oldVideo := ""
	if retry {
		if err := s.rdb.SAdd(ctx, s.activeKey(), id).Err(); err != nil {
			return Outcome{}, fmt.Errorf("update job %s: unfinished set: %w", id, ClassifyRedis(err))
		}
		// A retry may forget the video: its retained entry names it.
		v, err := s.rdb.HGet(ctx, s.jobKey(id), FieldVideoID).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return Outcome{}, fmt.Errorf("update job %s: %w", id, ClassifyRedis(err))
		}
		oldVideo = v
	}
	args[6] = ""
	spendKey := ""
	if x.spendMicros != 0 {
		spendKey = keys[8]
	}
	for i := 2; i < len(keys); i++ {
		keys[i] = keys[0] // the script reaches only the job's own slot
	}
	res, err := applyScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return Outcome{}, fmt.Errorf("update job %s: %w", id, ClassifyRedis(err))
	}
	out, err := s.outcome(id, c, x, res)
	if err == nil && out.Applied && c.To.Terminal() {
		if err := s.rdb.SRem(ctx, s.activeKey(), id).Err(); err != nil {
			return out, fmt.Errorf("update job %s: unfinished set: %w", id, ClassifyRedis(err))
		}
	}
	if err == nil && out.Applied {
		if err := s.retentionCluster(ctx, id, c, out, retry, oldVideo); err != nil {
			return out, err
		}
	}
	if err == nil && out.Applied && spendKey != "" {
		if err := s.addSpend(ctx, spendKey, x.spendModel, x.spendTenant, x.spendMicros); err != nil {
			return out, err
		}
	}
	if x.releaseLock {
		if err := s.ReleaseCreateLock(ctx, x.lockModel, id); err != nil {
			return out, err
		}
	}
	return out, err
}

// markScript makes a job of the finished set due again with a new score
// (one more millisecond), or adds one that has left it (compacted) due
// now. KEYS: finished. ARGV: id, now (ms).
var markScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return redis.call('ZINCRBY', KEYS[1], 1, ARGV[1]) end
return redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
`)

// retentionCluster keeps the retention sets in step with an applied
// change on a Redis Cluster, after the record's script, as applyScript
// does on a single Redis: an ended job joins the finished set, a retried
// one leaves both sets, and a change of an ended job makes it due again.
func (s *Store) retentionCluster(ctx context.Context, id string, c Change, out Outcome, retry bool, oldVideo string) error {
	var err error
	switch {
	case retry:
		pipe := s.rdb.Pipeline()
		pipe.ZRem(ctx, s.finishedKey(), id)
		pipe.ZRem(ctx, s.retainedKey(), id, retainedMember(id, oldVideo))
		_, err = pipe.Exec(ctx)
	case s.retention == 0:
	case c.To.Terminal():
		err = s.rdb.ZAdd(ctx, s.finishedKey(), redis.Z{Score: float64(s.now().UnixMilli()), Member: id}).Err()
	case out.State.Terminal():
		err = markScript.Run(ctx, s.rdb, []string{s.finishedKey()}, id, s.now().UnixMilli()).Err()
	}
	if err != nil {
		return fmt.Errorf("update job %s: retention sets: %w", id, ClassifyRedis(err))
	}
	return nil
}

// outcome decodes the apply script's reply.
func (s *Store) outcome(id string, c Change, x applyExtra, res []any) (Outcome, error) {
	var err error
	code, _ := res[0].(int64)
	state, _ := res[1].(string)
	extra, _ := res[2].(string)
	switch code {
	case -1:
		return Outcome{}, fmt.Errorf("update job %s: %w", id, ErrNotFound)
	case -2:
		return Outcome{State: State(state)}, &ClaimError{VideoID: x.claimVideo, JobID: id, Owner: extra}
	}
	var rec *Record
	if c.Return {
		if len(res) < 4 {
			return Outcome{}, fmt.Errorf("update job %s: no record in the reply", id)
		}
		if rec, err = decodeFlat(res[3]); err != nil {
			return Outcome{}, fmt.Errorf("update job %s: %w", id, err)
		}
	}
	return Outcome{Applied: code == 1, State: State(state), Record: rec}, nil
}

// ClaimError says that a video the job tried to claim belongs to another
// job. errors.Is(err, ErrClaimed) is true for it.
type ClaimError struct {
	VideoID, JobID, Owner string
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("video %s is already owned by job %s (not %s)", e.VideoID, e.Owner, e.JobID)
}

// Is makes errors.Is(err, ErrClaimed) true.
func (e *ClaimError) Is(target error) bool { return target == ErrClaimed }

// ErrClaimed marks a video owned by another job.
var ErrClaimed = errors.New("video owned by another job")

// decodeFlat decodes a flat field/value list (as HGETALL in a script
// returns it).
func decodeFlat(v any) (*Record, error) {
	flat, _ := v.([]any)
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		m[k] = v
	}
	return decodeRecord(m)
}

// unsetMatches says ("1") whether a field never written (or stored empty)
// meets an IfEqual condition on v: it does for a zero number and false,
// which is how Get reads such a field. "" and the zero time encode as ""
// and match it anyway.
func unsetMatches(v any) string {
	switch x := v.(type) {
	case int:
		if x == 0 {
			return "1"
		}
	case int64:
		if x == 0 {
			return "1"
		}
	case bool:
		if !x {
			return "1"
		}
	}
	return "0"
}

// Events returns up to the last n history lines of a job, oldest first.
func (s *Store) Events(ctx context.Context, id string, n int) ([]Event, error) {
	if n <= 0 || n > historyLen {
		n = historyLen
	}
	raw, err := s.rdb.LRange(ctx, s.eventsKey(id), int64(-n), -1).Result()
	if err != nil {
		return nil, fmt.Errorf("job %s history: %w", id, ClassifyRedis(err))
	}
	out := make([]Event, 0, len(raw))
	for _, r := range raw {
		if e, ok := decodeEvent(r); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Claim records that videoID belongs to jobID. It returns the owner: jobID
// when the claim succeeded or the video was already this job's, another id
// when a different job owns it. Claims let reconciliation skip videos that
// other jobs own.
func (s *Store) Claim(ctx context.Context, videoID, jobID string) (string, error) {
	ok, err := s.rdb.HSetNX(ctx, s.claimsKey(), videoID, jobID).Result()
	if err != nil {
		return "", fmt.Errorf("claim video %s: %w", videoID, ClassifyRedis(err))
	}
	if ok {
		return jobID, nil
	}
	owner, err := s.rdb.HGet(ctx, s.claimsKey(), videoID).Result()
	if err != nil {
		return "", fmt.Errorf("claim video %s: %w", videoID, ClassifyRedis(err))
	}
	return owner, nil
}

// Owners returns the owning job of each video id that has one.
func (s *Store) Owners(ctx context.Context, videoIDs []string) (map[string]string, error) {
	out := map[string]string{}
	if len(videoIDs) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.claimsKey(), videoIDs...).Result()
	if err != nil {
		return nil, fmt.Errorf("video owners: %w", ClassifyRedis(err))
	}
	for i, v := range vals {
		if str, ok := v.(string); ok && str != "" {
			out[videoIDs[i]] = str
		}
	}
	return out, nil
}

// WebhookDelivery describes a verified webhook delivery for RecordWebhook
// and RecordEarlyWebhook.
type WebhookDelivery struct {
	// Key deduplicates deliveries: the delivery key, or the payload id.
	Key       string
	EventType string
	Attempt   int
	// VideoID is the video the event names (its data.id).
	VideoID string
	// KeepKeysFor, when positive, is how long RecordWebhook keeps the
	// job's set of applied keys after this delivery (it expires as a
	// whole); zero keeps it as long as the job.
	KeepKeysFor time.Duration
}

// A delivery is a duplicate when its key was applied before, or when it is
// the job's early delivery again (same key, same video) arriving now that
// the video id is saved: the create step has checked the job for it.
var webhookScript = redis.NewScript(scriptLib + `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local early = ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'early_webhook_key') == ARGV[1] and redis.call('HGET', KEYS[1], 'early_webhook_video') == ARGV[6]
local added = redis.call('SADD', KEYS[3], ARGV[1])
if tonumber(ARGV[7]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[7]) end
if added == 0 or early then
  redis.call('HINCRBY', KEYS[1], 'webhook_duplicates', 1)
  return 0
end
redis.call('HINCRBY', KEYS[1], 'webhook_deliveries', 1)
redis.call('HSET', KEYS[1], 'last_webhook_event', ARGV[2], 'last_webhook_at', ARGV[3], 'last_webhook_attempt', ARGV[4])
local cur = redis.call('HMGET', KEYS[1], 'state', 'archived_at', 'id')
local st = cur[1] or ''
addEvent(ARGV[5], st)
if ARGV[8] == '1' and KEYS[4] ~= KEYS[1] and terminal(st) then
  -- a delivery to an ended job: due for the retention sweep again (as in applyScript)
  if cur[2] then redis.call('ZADD', KEYS[4], ARGV[3], cur[3] or '') else redis.call('ZINCRBY', KEYS[4], 1, cur[3] or '') end
end
return 1
`)

// SeenWebhook reports whether a delivery with key was already applied to
// the job.
func (s *Store) SeenWebhook(ctx context.Context, jobID, key string) (bool, error) {
	ok, err := s.rdb.SIsMember(ctx, s.webhooksKey(jobID), key).Result()
	if err != nil {
		return false, fmt.Errorf("job %s webhooks: %w", jobID, ClassifyRedis(err))
	}
	return ok, nil
}

// RecordWebhook applies a verified delivery to the job's record once: the
// first time its key is seen it counts a delivery, keeps the event type,
// time and attempt, and writes a history line, and reports true; a repeat
// counts a duplicate and reports false. With d.KeepKeysFor set, the job's
// applied keys expire that long after its latest delivery, so that the set
// stays small (keys of deliveries whose signature window has long passed
// cannot be replayed anyway). A missing job wraps ErrNotFound.
func (s *Store) RecordWebhook(ctx context.Context, jobID string, d WebhookDelivery) (bool, error) {
	now := s.now()
	ev := encodeEvent(Event{At: now, Event: "webhook", Detail: fmt.Sprintf("%s (delivery attempt %d)", d.EventType, d.Attempt)})
	finished := s.finishedKey()
	if s.cluster {
		finished = s.jobKey(jobID) // the script leaves the set alone
	}
	n, err := webhookScript.Run(ctx, s.rdb, []string{s.jobKey(jobID), s.eventsKey(jobID), s.webhooksKey(jobID), finished},
		d.Key, d.EventType, encodeValue(now), d.Attempt, string(ev), d.VideoID, d.KeepKeysFor.Milliseconds(), encodeValue(s.retention > 0)).Int()
	if err != nil {
		return false, fmt.Errorf("job %s webhook: %w", jobID, ClassifyRedis(err))
	}
	if n < 0 {
		return false, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
	}
	return n == 1, nil
}

// EarlyResult says what RecordEarlyWebhook did.
type EarlyResult int

const (
	// EarlyRecorded: the job had no video id; the delivery is recorded on
	// it (early_webhook_*), counted, and written to its history. The
	// create step checks the job's status as soon as it saves the id.
	EarlyRecorded EarlyResult = iota + 1
	// EarlyDuplicate: the same delivery (key and video) was recorded
	// early before; only the duplicate counter changed.
	EarlyDuplicate
	// EarlyHasVideo: the video id was saved meanwhile; nothing changed.
	// The delivery takes the normal path (EarlyOutcome.VideoID).
	EarlyHasVideo
	// EarlyTerminal: the job has ended; nothing changed.
	EarlyTerminal
)

// EarlyOutcome is the answer of RecordEarlyWebhook.
type EarlyOutcome struct {
	Result EarlyResult
	// State is the job's state, VideoID its video id (set with
	// EarlyHasVideo), both read in the same atomic step.
	State   State
	VideoID string
}

var earlyWebhookScript = redis.NewScript(scriptLib + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, '', ''} end
local st = redis.call('HGET', KEYS[1], 'state') or ''
if terminal(st) then return {4, st, ''} end
local vid = redis.call('HGET', KEYS[1], 'video_id') or ''
if vid ~= '' then return {3, st, vid} end
if redis.call('HGET', KEYS[1], 'early_webhook_key') == ARGV[1] and redis.call('HGET', KEYS[1], 'early_webhook_video') == ARGV[5] then
  redis.call('HINCRBY', KEYS[1], 'webhook_duplicates', 1)
  return {2, st, ''}
end
redis.call('HINCRBY', KEYS[1], 'webhook_deliveries', 1)
redis.call('HSET', KEYS[1], 'last_webhook_event', ARGV[2], 'last_webhook_at', ARGV[3], 'last_webhook_attempt', ARGV[4],
  'early_webhook_at', ARGV[3], 'early_webhook_event', ARGV[2], 'early_webhook_key', ARGV[1], 'early_webhook_video', ARGV[5])
addEvent(ARGV[6], st)
return {1, st, ''}
`)

// RecordEarlyWebhook records a verified delivery that calls for a status
// check on a job that, when the caller looked, had no video id yet. In one
// atomic step it reads the job: if the job has ended it changes nothing
// (EarlyTerminal); if the video id has been saved meanwhile it changes
// nothing and returns the id (EarlyHasVideo), so the caller handles the
// delivery as usual; otherwise it records the delivery as the job's early
// delivery (EarlyRecorded), or counts a duplicate of the one recorded
// (EarlyDuplicate). Because the create step saves the video id with an
// atomic update that returns the record (Change.Return), either that
// update sees the early delivery or this call sees the video id: an early
// delivery is never lost. The delivery key is not added to the job's
// applied keys: the event's video cannot be checked against the job yet,
// so a delivery about another video must not make the job's own delivery
// with the same key (keys are per event type) look like a duplicate.
func (s *Store) RecordEarlyWebhook(ctx context.Context, jobID string, d WebhookDelivery) (EarlyOutcome, error) {
	now := s.now()
	ev := encodeEvent(Event{At: now, Event: "webhook_early", Detail: fmt.Sprintf("%s for video %s before the video id was saved: status check when it is (delivery attempt %d)", d.EventType, d.VideoID, d.Attempt)})
	res, err := earlyWebhookScript.Run(ctx, s.rdb, []string{s.jobKey(jobID), s.eventsKey(jobID)},
		d.Key, d.EventType, encodeValue(now), d.Attempt, d.VideoID, string(ev)).Slice()
	if err != nil {
		return EarlyOutcome{}, fmt.Errorf("job %s early webhook: %w", jobID, ClassifyRedis(err))
	}
	code, _ := res[0].(int64)
	st, _ := res[1].(string)
	vid, _ := res[2].(string)
	if code < 0 {
		return EarlyOutcome{}, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
	}
	return EarlyOutcome{Result: EarlyResult(code), State: State(st), VideoID: vid}, nil
}

// CountWebhookOutcome adds one to the fleet-wide webhook counter of
// outcome (e.g. "accepted", "duplicate", "bad_signature"); a rejection also
// records its time and reason. These counters never touch a job: an
// unverified request must not change any job.
func (s *Store) CountWebhookOutcome(ctx context.Context, outcome, reason string) error {
	pipe := s.rdb.Pipeline()
	pipe.HIncrBy(ctx, s.webhookStatsKey(), outcome, 1)
	if reason != "" {
		pipe.HSet(ctx, s.webhookStatsKey(), "last_rejection_at", encodeValue(s.now()), "last_rejection", outcome+": "+reason)
	}
	_, err := pipe.Exec(ctx)
	return ClassifyRedis(err)
}

// WebhookStats returns the fleet-wide webhook counters.
func (s *Store) WebhookStats(ctx context.Context) (map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.webhookStatsKey()).Result()
	return m, ClassifyRedis(err)
}

// Cursor is a position in the job index, newest first: the submission
// time and id of the last job returned. The zero Cursor is the start.
type Cursor struct {
	SubmittedMS int64
	ID          string
}

// String encodes the cursor for an API ("" for the start).
func (c Cursor) String() string {
	if c.ID == "" {
		return ""
	}
	return strconv.FormatInt(c.SubmittedMS, 10) + "_" + c.ID
}

// ParseCursor decodes a cursor made by Cursor.String.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	ms, id, ok := strings.Cut(s, "_")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || id == "" {
		return Cursor{}, errors.New("malformed cursor")
	}
	return Cursor{SubmittedMS: n, ID: id}, nil
}

// Page returns up to limit job ids after cur, newest first, and the cursor
// of the last one (zero when the index is exhausted). Jobs submitted in the
// same millisecond are ordered by id, so paging never skips or repeats.
func (s *Store) Page(ctx context.Context, cur Cursor, limit int) ([]string, Cursor, error) {
	if limit <= 0 {
		limit = 50
	}
	max := "+inf"
	if cur.ID != "" {
		max = strconv.FormatInt(cur.SubmittedMS, 10)
	}
	var out []string
	var last Cursor
	for len(out) < limit {
		batch, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.indexKey(), &redis.ZRangeBy{Max: max, Min: "-inf", Count: int64(limit - len(out) + 64)}).Result()
		if err != nil {
			return nil, Cursor{}, fmt.Errorf("list jobs: %w", ClassifyRedis(err))
		}
		if len(batch) == 0 {
			return out, Cursor{}, nil
		}
		progressed := false
		for _, z := range batch {
			id, _ := z.Member.(string)
			ms := int64(z.Score)
			// Equal scores come in descending id order: skip up to and
			// including the cursor's id.
			if cur.ID != "" && ms == cur.SubmittedMS && id >= cur.ID {
				continue
			}
			out = append(out, id)
			last, cur = Cursor{SubmittedMS: ms, ID: id}, Cursor{SubmittedMS: ms, ID: id}
			progressed = true
			if len(out) == limit {
				return out, last, nil
			}
		}
		if !progressed {
			// Everything left at this score came before the cursor.
			max = "(" + strconv.FormatInt(cur.SubmittedMS, 10)
			cur = Cursor{}
			continue
		}
		max = strconv.FormatInt(cur.SubmittedMS, 10)
	}
	return out, last, nil
}

// Count returns how many jobs the index holds.
func (s *Store) Count(ctx context.Context) (int64, error) {
	n, err := s.rdb.ZCard(ctx, s.indexKey()).Result()
	return n, ClassifyRedis(err)
}

// ScanActive calls fn for every job id in the set of unfinished jobs, in
// batches, until fn returns an error or the set is walked.
func (s *Store) ScanActive(ctx context.Context, fn func(ids []string) error) error {
	var cursor uint64
	for {
		ids, next, err := s.rdb.SScan(ctx, s.activeKey(), cursor, "", 500).Result()
		if err != nil {
			return fmt.Errorf("scan active jobs: %w", ClassifyRedis(err))
		}
		if len(ids) > 0 {
			if err := fn(ids); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// ScanCallbacksDue calls fn for every job id in the set of ended jobs
// whose callback delivery has not finished (kept by the transitions on a
// single Redis; empty on a Cluster), in batches, until fn returns an error
// or the set is walked.
func (s *Store) ScanCallbacksDue(ctx context.Context, fn func(ids []string) error) error {
	var cursor uint64
	for {
		ids, next, err := s.rdb.SScan(ctx, s.callbacksKey(), cursor, "", 500).Result()
		if err != nil {
			return fmt.Errorf("scan callbacks due: %w", ClassifyRedis(err))
		}
		if len(ids) > 0 {
			if err := fn(ids); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// CallbacksDone removes ids from the set of callbacks due.
func (s *Store) CallbacksDone(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	return ClassifyRedis(s.rdb.SRem(ctx, s.callbacksKey(), ids).Err())
}

// Deactivate removes ids from the set of unfinished jobs.
func (s *Store) Deactivate(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	return ClassifyRedis(s.rdb.SRem(ctx, s.activeKey(), ids).Err())
}

// ActiveCount is the size of the set of unfinished jobs.
func (s *Store) ActiveCount(ctx context.Context) (int64, error) {
	n, err := s.rdb.SCard(ctx, s.activeKey()).Result()
	return n, ClassifyRedis(err)
}

var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// Lease takes or renews a named fleet-wide lease for owner; it reports
// whether owner holds it now.
func (s *Store) Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	n, err := leaseScript.Run(ctx, s.rdb, []string{s.prefix + "lease:" + name}, owner, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, ClassifyRedis(err))
	}
	return n == 1, nil
}
