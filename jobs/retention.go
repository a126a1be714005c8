package jobs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/storage"
)

// Retention of finished jobs. With a retention set (SetRetention), the
// transition that ends a job adds its id to the finished set, scored now;
// a Retried transition takes it out again, in the same atomic step. One
// elected worker sweeps the set (Due, ReadArchive, Compact, Forget): it
// writes each ended job's archive document to storage, then compacts the
// job in Redis (its history, spec and webhook keys go; the record keeps
// what status, the job API and idempotency need: CompactFields) and moves
// it to the retained set, scored by when it is to be forgotten. When that
// time passes (Retained, Forget), everything the job left in Redis is
// removed. A change of an ended job (a late webhook, a late create
// answer) makes it due again: the sweep archives it again, the archive
// growing by what changed. Unfinished jobs are never in either set, so
// they are never touched.

// MinRetention and MaxRetention bound a job's own retention.
const (
	MinRetention = time.Minute
	MaxRetention = 365 * 24 * time.Hour
)

// DefaultRetention is how long a finished job stays in Redis by default.
const DefaultRetention = 7 * 24 * time.Hour

// SetRetention sets how long finished jobs stay in Redis (0: forever, as
// without retention: no command is added to any transition). Call it
// before the store is used. On a Redis Cluster the fleet-wide sets are
// kept in step around each job's script (see applyCluster), and the
// sweep's steps work job by job.
func (s *Store) SetRetention(d time.Duration) {
	s.retention = max(d, 0)
}

// Retention is the store's retention (0: finished jobs stay forever).
func (s *Store) Retention() time.Duration { return s.retention }

func (s *Store) finishedKey() string       { return s.prefix + "finished" }
func (s *Store) retainedKey() string       { return s.prefix + "retained" }
func (s *Store) retentionStatsKey() string { return s.prefix + "retention_stats" }

// ForgetAt is when the ended job rec is to be forgotten: its end plus its
// own retention, else the store's.
func (s *Store) ForgetAt(rec *Record) time.Time {
	r := s.retention
	if rec.RetentionMS > 0 {
		r = time.Duration(rec.RetentionMS) * time.Millisecond
	}
	at := rec.FinishedAt
	if at.IsZero() {
		at = rec.UpdatedAt
	}
	return at.Add(r)
}

// ArchiveKey is the storage key of a job's archive document. It is a
// function of the id alone (so a forgotten job's archive is found without
// anything kept in Redis): records/<2 hex digits of the id's sha256>/<the
// id escaped as storage keys escape values>.json. The escaping is
// injective, so two ids never share a document.
func ArchiveKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return "records/" + hex.EncodeToString(h[:1]) + "/" + storage.EscapeKeyValue(id) + ".json"
}

// Archive is a finished job's archive document: the record (with its
// request and labels) and its full history.
type Archive struct {
	// Format is the document's format version (1).
	Format     int       `json:"format"`
	ArchivedAt time.Time `json:"archived_at"`
	Record     *Record   `json:"record"`
	History    []Event   `json:"history"`
}

// DueJob is a job of the finished set due for the sweep, with its score
// there (Compact's condition).
type DueJob struct {
	ID    string
	Score float64
}

// Due returns up to limit jobs of the finished set due at now, oldest
// first: newly ended jobs, ended jobs changed since they were archived,
// and jobs deferred or kept whole (Rescore) whose time has come.
func (s *Store) Due(ctx context.Context, now time.Time, limit int) ([]DueJob, error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, s.finishedKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("due finished jobs: %w", ClassifyRedis(err))
	}
	out := make([]DueJob, len(zs))
	for i, z := range zs {
		out[i].ID, _ = z.Member.(string)
		out[i].Score = z.Score
	}
	return out, nil
}

// Rescore sets when jobs of the finished set are next due (jobs no longer
// in it are left out): a job still waiting on a task (a callback, a
// cancellation) is looked at again later; with the archive off, a job is
// kept whole until it is forgotten.
func (s *Store) Rescore(ctx context.Context, at map[string]time.Time) error {
	if len(at) == 0 {
		return nil
	}
	zs := make([]redis.Z, 0, len(at))
	for id, t := range at {
		zs = append(zs, redis.Z{Score: float64(t.UnixMilli()), Member: id})
	}
	return ClassifyRedis(s.rdb.ZAddXX(ctx, s.finishedKey(), zs...).Err())
}

// ReadArchive reads the archive documents of ids: the record with its
// spec and the whole history of each, in one round trip (two when some
// keep their request under the spec key). An id whose record is gone has
// a nil entry.
func (s *Store) ReadArchive(ctx context.Context, ids []string, now time.Time) ([]*Archive, error) {
	pipe := s.rdb.Pipeline()
	recs := make([]*redis.MapStringStringCmd, len(ids))
	hist := make([]*redis.StringSliceCmd, len(ids))
	for i, id := range ids {
		recs[i] = pipe.HGetAll(ctx, s.jobKey(id))
		hist[i] = pipe.LRange(ctx, s.eventsKey(id), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read finished jobs: %w", ClassifyRedis(err))
	}
	out := make([]*Archive, len(ids))
	specs := map[int]*redis.StringCmd{}
	pipe = s.rdb.Pipeline()
	for i, id := range ids {
		m := recs[i].Val()
		if len(m) == 0 {
			continue
		}
		rec, err := s.decode(id, m)
		if err != nil {
			return nil, err
		}
		if m[FieldRequest] == "" {
			specs[i] = pipe.Get(ctx, s.specKey(id))
		}
		a := &Archive{Format: 1, ArchivedAt: now, Record: rec}
		for _, raw := range hist[i].Val() {
			if e, ok := decodeEvent(raw); ok {
				a.History = append(a.History, e)
			}
		}
		out[i] = a
	}
	if len(specs) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read finished jobs: %w", ClassifyRedis(err))
	}
	for i, c := range specs {
		if v := c.Val(); v != "" {
			if err := decodeSpec(ids[i], v, out[i].Record); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// compactValue is v as the compact record keeps it, or "" (not kept): a
// value longer than compactValueMax would turn the record into Redis's
// large hash encoding (its archive has it).
func compactValue(v string) string {
	if len(v) > compactValueMax {
		return ""
	}
	return v
}

// CompactFields are the fields a compact record keeps, with their stored
// values (empty and zero fields left out), for a job archived at: what
// status, the job API, the dashboard and a resubmission of its id need.
// A failed or timed-out job is never compacted (it may be retried, and a
// retry needs all of it): only its history goes.
func CompactFields(r *Record, at time.Time) []any {
	out := make([]any, 0, 48)
	add := func(f string, v any) {
		if sv := encodeValue(v); sv != "" && sv != "0" {
			out = append(out, f, sv)
		}
	}
	add(FieldVersion, recordVersion)
	add(FieldID, r.ID)
	add(FieldState, r.State)
	if r.Tenant != DefaultTenant {
		add(FieldTenant, r.Tenant)
	}
	add(FieldVideoID, compactValue(r.VideoID))
	add(FieldAPIStatus, r.APIStatus)
	add(FieldSubmittedAt, r.SubmittedAt)
	add(FieldFinishedAt, r.FinishedAt)
	add(FieldUpdatedAt, r.UpdatedAt)
	add(FieldStorageKey, compactValue(r.StorageKey))
	add(FieldLocation, compactValue(r.Location))
	add(FieldBytes, r.Bytes)
	add(FieldSHA256, r.SHA256)
	add(FieldErrorCode, compactValue(r.ErrorCode))
	add(FieldError, compactValue(r.Error))
	add(FieldFailedStep, r.FailedStep)
	add(FieldSettledCost, r.SettledCost)
	add(FieldBillingState, r.BillingState)
	add(FieldRetries, r.Retries)
	add(FieldCancelOutcome, compactValue(r.CancelOutcome))
	add(FieldDeadTask, compactValue(r.DeadTask))
	add(FieldCallbackStatus, r.CallbackStatus)
	add(FieldRetention, r.RetentionMS)
	// What a resubmission of the id is checked against (the request,
	// labels and callback URL as a digest; the timeout as the deadline
	// and the retry that restarted it): without them a resubmission of
	// the same request would be refused as a conflict.
	sum := r.RequestSum
	if !r.Compact {
		sum = RequestSum(r.Request, r.Labels, r.CallbackURL)
	}
	add(FieldRequestSum, sum)
	add(FieldDeadline, r.Deadline)
	add(FieldRetriedAt, r.RetriedAt)
	add(FieldArchivedAt, at)
	add(FieldCompact, true)
	return out
}

// RequestSum is the digest of what a resubmission of a job must repeat
// besides its tenant and timeout: the video request (as JSON), the
// labels and the callback URL. A compact record keeps it instead of
// them (FieldRequestSum).
func RequestSum(req apiclient.CreateRequest, labels map[string]string, callbackURL string) string {
	h := sha256.New()
	b, _ := json.Marshal(req)
	h.Write(b)
	h.Write([]byte{0})
	if len(labels) > 0 {
		b, _ = json.Marshal(labels) // keys sorted
		h.Write(b)
	}
	h.Write([]byte{0})
	h.Write([]byte(callbackURL))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Compactable reports whether the sweep may archive and compact rec now:
// it has ended and waits on no task (a callback delivery, a cancellation),
// and no create call of it is in flight (a late answer would change it).
func Compactable(rec *Record) bool {
	return rec.State.Terminal() && NextWait(rec).Step == StepNone && !rec.CreateInDoubt
}

// Compaction is one job for Compact: its id and its finished-set score
// as read (the condition), when it is to be forgotten, and the record
// read (archived just before).
type Compaction struct {
	ID       string
	Score    float64
	ForgetAt time.Time
	Record   *Record
}

// compactScript compacts, for each job still in the finished set with the
// score read (a job changed since has a new score, a retried one none),
// what it keeps in Redis: a failed or timed-out job loses its history
// and webhook keys and notes archived_at; any other loses its record,
// history, spec and webhook keys and gets its compact record (written
// afresh, so that Redis keeps it in the compact hash encoding). It then
// moves from the finished set to the retained set, as "<id> <video id>"
// (so that forgetting it needs no read) scored by when it is forgotten.
// KEYS: finished, retained, then 4 per job (record, events, spec,
// webhooks). ARGV: per job id, score, forget-at ms, retained member, mode
// ("c" compact, "h" history only), n, then n field/value pairs. It
// returns how many it compacted.
var compactScript = redis.NewScript(`
local jobs, ids, j = {}, {}, 1
while j <= #ARGV do
  local n = tonumber(ARGV[j+5])
  jobs[#jobs+1] = {id = ARGV[j], score = ARGV[j+1], at = ARGV[j+2], member = ARGV[j+3], mode = ARGV[j+4], f = j + 6, n = n, k = 2 + 4*#jobs}
  ids[#ids+1] = ARGV[j]
  j = j + 6 + 2*n
end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local unl, done, gone, zadd = {}, {}, {}, {}
for x, e in ipairs(jobs) do
  if scores[x] and tonumber(scores[x]) == tonumber(e.score) then
    if e.mode == 'c' then
      for k = e.k + 1, e.k + 4 do unl[#unl+1] = KEYS[k] end
    else
      unl[#unl+1] = KEYS[e.k + 2]; unl[#unl+1] = KEYS[e.k + 4]
    end
    done[#done+1] = e; gone[#gone+1] = e.id
    zadd[#zadd+1] = e.at; zadd[#zadd+1] = e.member
  end
end
if #done == 0 then return 0 end
redis.call('UNLINK', unpack(unl))
for _, e in ipairs(done) do
  if e.n > 0 then redis.call('HSET', KEYS[e.k + 1], unpack(ARGV, e.f, e.f + 2*e.n - 1)) end
end
redis.call('ZREM', KEYS[1], unpack(gone))
redis.call('ZREM', KEYS[2], unpack(gone)) -- an earlier member without a video
redis.call('ZADD', KEYS[2], unpack(zadd))
return #done
`)

// retainedMember is a job's member of the retained set.
func retainedMember(id, videoID string) string {
	if videoID == "" {
		return id
	}
	return id + " " + videoID
}

// Compact compacts the jobs of batch, archived just before (see
// compactScript), in one atomic step; it returns how many it compacted.
// A job changed or retried since it was read is left for the next sweep.
func (s *Store) Compact(ctx context.Context, now time.Time, batch []Compaction) (int, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	keys := make([]string, 0, 2+4*len(batch))
	keys = append(keys, s.finishedKey(), s.retainedKey())
	args := make([]any, 0, 40*len(batch))
	for _, c := range batch {
		r := c.Record
		keys = append(keys, s.jobKey(c.ID), s.eventsKey(c.ID), s.specKey(c.ID), s.webhooksKey(c.ID))
		args = append(args, c.ID, strconv.FormatFloat(c.Score, 'f', -1, 64), c.ForgetAt.UnixMilli(), retainedMember(c.ID, r.VideoID))
		if r.State == StateFailed || r.State == StateTimedOut {
			args = append(args, "h", 1, FieldArchivedAt, encodeValue(now))
			continue
		}
		f := CompactFields(r, now)
		args = append(args, "c", len(f)/2)
		args = append(args, f...)
	}
	if s.cluster {
		return s.compactCluster(ctx, batch, keys, args)
	}
	n, err := compactScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("compact finished jobs: %w", ClassifyRedis(err))
	}
	return n, nil
}

// compactJobScript is compactScript for one job on a Redis Cluster, where
// a script reaches one job's keys only: its condition is the record as
// read (updated_at, which every transition writes, and the webhook
// counters, which every delivery changes) instead of the finished set's
// score. KEYS: record, events, spec, webhooks. ARGV: updated_at,
// webhook_deliveries, webhook_duplicates as read, then mode, n, fields as
// compactScript's.
var compactJobScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'updated_at', 'webhook_deliveries', 'webhook_duplicates')
for j = 1, 3 do if (cur[j] or '') ~= ARGV[j] then return 0 end end
if ARGV[4] == 'c' then redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) else redis.call('UNLINK', KEYS[2], KEYS[4]) end
local n = tonumber(ARGV[5])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + 2*n)) end
return 1
`)

// unmarkScript takes jobs out of the finished set while their score is
// the one given (a job changed since stays due). KEYS: finished. ARGV:
// id, score pairs.
var unmarkScript = redis.NewScript(`
for j = 1, #ARGV, 2 do
  local sc = redis.call('ZSCORE', KEYS[1], ARGV[j])
  if sc and tonumber(sc) == tonumber(ARGV[j+1]) then redis.call('ZREM', KEYS[1], ARGV[j]) end
end
return 0
`)

// compactCluster is Compact on a Redis Cluster: each job's keys in a
// script of their own (compactJobScript), then the job joins the retained
// set, then it leaves the finished set unless it changed meanwhile. A
// crash in between leaves the job due: the next sweep archives it again
// (extending its archive) and compacts it again.
func (s *Store) compactCluster(ctx context.Context, batch []Compaction, keys []string, args []any) (int, error) {
	var retained []redis.Z
	var unmark []any
	a := 0
	for i, c := range batch {
		r := c.Record
		mode, nf := args[a+4], args[a+5].(int)
		count := func(n int) string {
			if n == 0 {
				return ""
			}
			return strconv.Itoa(n)
		}
		jargs := append([]any{encodeValue(r.UpdatedAt), count(r.WebhookDeliveries), count(r.WebhookDuplicates), mode, nf}, args[a+6:a+6+2*nf]...)
		a += 6 + 2*nf
		n, err := compactJobScript.Run(ctx, s.rdb, keys[2+4*i:6+4*i], jargs...).Int()
		if err != nil {
			return len(retained), fmt.Errorf("compact job %s: %w", c.ID, ClassifyRedis(err))
		}
		if n == 1 {
			retained = append(retained, redis.Z{Score: float64(c.ForgetAt.UnixMilli()), Member: retainedMember(c.ID, r.VideoID)})
			unmark = append(unmark, c.ID, strconv.FormatFloat(c.Score, 'f', -1, 64))
		}
	}
	if len(retained) == 0 {
		return 0, nil
	}
	ids := make([]string, 0, len(unmark)/2)
	for j := 0; j < len(unmark); j += 2 {
		ids = append(ids, unmark[j].(string))
	}
	if err := s.rdb.ZRem(ctx, s.retainedKey(), ids).Err(); err != nil { // an earlier member without a video
		return 0, fmt.Errorf("compact finished jobs: %w", ClassifyRedis(err))
	}
	if err := s.rdb.ZAdd(ctx, s.retainedKey(), retained...).Err(); err != nil {
		return 0, fmt.Errorf("compact finished jobs: %w", ClassifyRedis(err))
	}
	if err := unmarkScript.Run(ctx, s.rdb, []string{s.finishedKey()}, unmark...).Err(); err != nil {
		return 0, fmt.Errorf("compact finished jobs: %w", ClassifyRedis(err))
	}
	return len(retained), nil
}

// Forgotten is one job for Forget: its id, its video (whose claim goes
// with it), whether its archive was written, and its member of the
// retained set ("" for a job of the finished set).
type Forgotten struct {
	ID, VideoID string
	Archived    bool
	Member      string
}

// Retained returns up to limit jobs of the retained set whose retention
// has passed at now, oldest first, for Forget.
func (s *Store) Retained(ctx context.Context, now time.Time, limit int) ([]Forgotten, error) {
	ms, err := s.rdb.ZRangeByScore(ctx, s.retainedKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("expired jobs: %w", ClassifyRedis(err))
	}
	out := make([]Forgotten, len(ms))
	for i, m := range ms {
		id, vid, _ := strings.Cut(m, " ")
		out[i] = Forgotten{ID: id, VideoID: vid, Archived: true, Member: m}
	}
	return out, nil
}

// forgetScript removes, for each job whose time has come, everything it
// left in Redis: the record, history, webhook keys and spec, its index
// entry, its video's claim and its entries in the finished and retained
// sets, and counts what it removed and archived. A job of the finished
// set goes while its score there is at or before now (a Retried job has
// left it); one of the retained set while its member's score is, and it
// is not due in the finished set again. Each of these is one command for
// the whole batch, so that a job costs a fraction of a command here. (A
// job's claim names the job: the transition that saved the video id
// claimed it for the job, or refused.) A job in the unfinished set is
// never removed, whatever the sets say. KEYS: finished, index, claims,
// stats, unfinished, retained, then 4 per job (record, history, webhooks,
// spec). ARGV: now, then 4 per job (id, video, archived "1"/"0", retained
// member or ""). It returns how many it removed.
var forgetScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local n = (#ARGV - 1) / 4
local ids, members = {}, {}
for j = 0, n - 1 do
  ids[#ids+1] = ARGV[2 + 4*j]
  local m = ARGV[5 + 4*j]
  if m == '' then m = ARGV[2 + 4*j] end
  members[#members+1] = m
end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local kept = redis.call('ZMSCORE', KEYS[6], unpack(members))
local running = redis.call('SMISMEMBER', KEYS[5], unpack(ids))
local keys, gone, vids, rem, archived = {}, {}, {}, {}, 0
for j = 0, n - 1 do
  local sc, ok = scores[j+1], false
  if ARGV[5 + 4*j] == '' then ok = sc and tonumber(sc) <= now
  else ok = (not sc) and kept[j+1] and tonumber(kept[j+1]) <= now end
  if ok and running[j+1] == 0 then
    for k = 7 + 4*j, 10 + 4*j do keys[#keys+1] = KEYS[k] end
    local id, vid = ids[j+1], ARGV[3 + 4*j]
    gone[#gone+1] = id
    rem[#rem+1] = id
    if vid ~= '' then vids[#vids+1] = vid; rem[#rem+1] = id .. ' ' .. vid end
    if ARGV[4 + 4*j] == '1' then archived = archived + 1 end
  end
end
if #gone == 0 then return 0 end
redis.call('UNLINK', unpack(keys))
redis.call('ZREM', KEYS[1], unpack(gone))
redis.call('ZREM', KEYS[6], unpack(rem))
redis.call('ZREM', KEYS[2], unpack(gone))
if #vids > 0 then redis.call('HDEL', KEYS[3], unpack(vids)) end
redis.call('HINCRBY', KEYS[4], 'removed', #gone)
if archived > 0 then redis.call('HINCRBY', KEYS[4], 'archived', archived) end
return #gone
`)

// Forget removes the jobs of batch whose time has come at now (see
// forgetScript), in one atomic step; it returns how many it removed. Jobs
// retried or changed since they were read are left alone.
func (s *Store) Forget(ctx context.Context, now time.Time, batch []Forgotten) (int, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	if s.cluster {
		return s.forgetCluster(ctx, now, batch)
	}
	keys := make([]string, 0, 6+4*len(batch))
	keys = append(keys, s.finishedKey(), s.indexKey(), s.claimsKey(), s.retentionStatsKey(), s.activeKey(), s.retainedKey())
	args := make([]any, 0, 1+4*len(batch))
	args = append(args, now.UnixMilli())
	for _, f := range batch {
		keys = append(keys, s.jobKey(f.ID), s.eventsKey(f.ID), s.webhooksKey(f.ID), s.specKey(f.ID))
		args = append(args, f.ID, f.VideoID, encodeValue(f.Archived), f.Member)
	}
	n, err := forgetScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("forget finished jobs: %w", ClassifyRedis(err))
	}
	return n, nil
}

// forgetJobScript removes one job's keys on a Redis Cluster unless its
// record says it is unfinished (retried since the sets were read).
// KEYS: record, events, webhooks, spec.
var forgetJobScript = redis.NewScript(scriptLib + `
local st = redis.call('HGET', KEYS[1], 'state')
if st and not terminal(st) then return 0 end
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
`)

// forgetCluster is Forget on a Redis Cluster, where a script reaches one
// job's keys only: the sets' conditions are read first (each set one
// command), then each job's keys go in a script of their own that checks
// the job is still ended, then the sets' entries.
func (s *Store) forgetCluster(ctx context.Context, now time.Time, batch []Forgotten) (int, error) {
	ids := make([]string, len(batch))
	members := make([]string, len(batch))
	for i, f := range batch {
		ids[i], members[i] = f.ID, cmp.Or(f.Member, f.ID)
	}
	pipe := s.rdb.Pipeline()
	fin := pipe.ZMScore(ctx, s.finishedKey(), ids...)
	ret := pipe.ZMScore(ctx, s.retainedKey(), members...)
	run := pipe.SMIsMember(ctx, s.activeKey(), toAny(ids)...)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("forget finished jobs: %w", ClassifyRedis(err))
	}
	at := float64(now.UnixMilli())
	var gone, rem, vids []string
	archived := 0
	for i, f := range batch {
		fs, rs := fin.Val()[i], ret.Val()[i]
		// ZMSCORE reads a missing member as 0 here: a finished-set job
		// has a score after the epoch, a retained one too.
		ok := (f.Member == "" && fs > 0 && fs <= at) || (f.Member != "" && fs == 0 && rs > 0 && rs <= at)
		if !ok || run.Val()[i] {
			continue
		}
		n, err := forgetJobScript.Run(ctx, s.rdb, []string{s.jobKey(f.ID), s.eventsKey(f.ID), s.webhooksKey(f.ID), s.specKey(f.ID)}).Int()
		if err != nil {
			return len(gone), fmt.Errorf("forget job %s: %w", f.ID, ClassifyRedis(err))
		}
		if n == 0 {
			continue
		}
		gone = append(gone, f.ID)
		rem = append(rem, f.ID)
		if f.VideoID != "" {
			vids = append(vids, f.VideoID)
			rem = append(rem, retainedMember(f.ID, f.VideoID))
		}
		if f.Archived {
			archived++
		}
	}
	if len(gone) == 0 {
		return 0, nil
	}
	pipe = s.rdb.Pipeline()
	pipe.ZRem(ctx, s.finishedKey(), toAny(gone)...)
	pipe.ZRem(ctx, s.retainedKey(), toAny(rem)...)
	pipe.ZRem(ctx, s.indexKey(), toAny(gone)...)
	if len(vids) > 0 {
		pipe.HDel(ctx, s.claimsKey(), vids...)
	}
	pipe.HIncrBy(ctx, s.retentionStatsKey(), "removed", int64(len(gone)))
	if archived > 0 {
		pipe.HIncrBy(ctx, s.retentionStatsKey(), "archived", int64(archived))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return len(gone), fmt.Errorf("forget finished jobs: %w", ClassifyRedis(err))
	}
	return len(gone), nil
}

// toAny is ss as command arguments.
func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// CountArchiveFailure counts a job whose archive could not be written
// (the job stays until it can be).
func (s *Store) CountArchiveFailure(ctx context.Context) error {
	return ClassifyRedis(s.rdb.HIncrBy(ctx, s.retentionStatsKey(), "archive_failures", 1).Err())
}

// RetentionStats are the fleet-wide counters of retention.
type RetentionStats struct {
	// Removed counts jobs forgotten (removed from Redis), Archived those of
	// them whose archive document was written, ArchiveFailures failed
	// attempts to write one.
	Removed, Archived, ArchiveFailures int64
	// Retained is how many finished jobs wait for their retention to pass
	// (compacted or not yet).
	Retained int64
}

// RetentionStats reads the fleet-wide retention counters.
func (s *Store) RetentionStats(ctx context.Context) (RetentionStats, error) {
	pipe := s.rdb.Pipeline()
	m := pipe.HGetAll(ctx, s.retentionStatsKey())
	n := pipe.ZCard(ctx, s.finishedKey())
	k := pipe.ZCard(ctx, s.retainedKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return RetentionStats{}, fmt.Errorf("retention stats: %w", ClassifyRedis(err))
	}
	num := func(k string) int64 { v, _ := strconv.ParseInt(m.Val()[k], 10, 64); return v }
	return RetentionStats{Removed: num("removed"), Archived: num("archived"), ArchiveFailures: num("archive_failures"), Retained: n.Val() + k.Val()}, nil
}

// LoadArchive reads job id's archive document from st; a missing one
// wraps storage.ErrNotExist.
func LoadArchive(ctx context.Context, st storage.Store, id string) (*Archive, error) {
	rc, _, err := st.Open(ctx, ArchiveKey(id))
	if err != nil {
		return nil, fmt.Errorf("archive of job %s: %w", id, err)
	}
	defer rc.Close()
	var a Archive
	if err := json.NewDecoder(rc).Decode(&a); err != nil {
		return nil, fmt.Errorf("archive of job %s: %w", id, err)
	}
	if a.Record == nil {
		return nil, fmt.Errorf("archive of job %s: no record", id)
	}
	return &a, nil
}

// With is the job as it stands: a's record with what the record live in
// Redis says now (for a Compact record, the fields it keeps; for a record
// archived for its history only, all of it), and a's history followed by
// the lines written since. It is how readers show an archived job, and
// how the sweep extends an archive when the job changed after it was
// written.
func (a *Archive) With(live *Record, hist []Event) (*Record, []Event) {
	h := make([]Event, 0, len(a.History)+len(hist))
	h = append(append(h, a.History...), hist...)
	if !live.Compact {
		return live, h
	}
	r := *a.Record
	r.State, r.VideoID, r.APIStatus = live.State, live.VideoID, live.APIStatus
	r.SubmittedAt, r.FinishedAt, r.UpdatedAt = live.SubmittedAt, live.FinishedAt, live.UpdatedAt
	r.StorageKey, r.Bytes, r.SHA256 = live.StorageKey, live.Bytes, live.SHA256
	if live.Location != "" {
		r.Location = live.Location
	}
	if live.Error != "" || live.ErrorCode != a.Record.ErrorCode {
		r.Error = live.Error
	}
	r.ErrorCode, r.FailedStep = live.ErrorCode, live.FailedStep
	r.SettledCost, r.BillingState, r.Retries = live.SettledCost, live.BillingState, live.Retries
	r.CancelOutcome, r.DeadTask, r.CallbackStatus, r.RetentionMS = live.CancelOutcome, live.DeadTask, live.CallbackStatus, live.RetentionMS
	r.WebhookDeliveries += live.WebhookDeliveries
	r.WebhookDuplicates += live.WebhookDuplicates
	if !live.LastWebhookAt.IsZero() {
		r.LastWebhookAt, r.LastWebhookEvent, r.LastWebhookAttempt = live.LastWebhookAt, live.LastWebhookEvent, live.LastWebhookAttempt
	}
	r.ArchivedAt, r.Compact = live.ArchivedAt, false
	return &r, h
}
