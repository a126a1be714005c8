package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/wake"
)

// The create lock: creates of one model are serialised fleet-wide (the
// API has no idempotency key; a reconciliation tells which job an
// unanswered create started only if no other create of the model ran
// meanwhile). Jobs that find the lock taken wait in the model's queue of
// waiters, in the order of their tickets (the time they became ready to
// create), and the holder's release hands the lock straight to the first
// of them: first come, first served, so that no waiter is passed over
// again and again by newcomers that happen to look at the right moment,
// and creates start in the order in which admission (tenancy) or
// submission queued them. The handed-over lock is reserved for
// handoffLease; the new holder extends it to its lease when it takes it.
//
// Keys (the waiters' keys share the lock's hash slot):
//
//	create_lock:<model>           the holder's job id, with the lease as TTL
//	{create_lock:<model>}:waiters sorted set of waiting job ids by ticket (ms)
//	{create_lock:<model>}:seen    sorted set of the same ids by their last try (ms)
//
// A waiter not seen for waiterStale (its worker died, or it stopped
// waiting without saying so) is passed over. A hand-over publishes
// wake.ReleasedMessage naming the lock and the waiter (HandOverName), so
// that the waiter takes it at once rather than poll (worker), and the
// others are not disturbed. Taking a free lock that nobody waits for is
// one command; its release costs one more command than a plain DEL.
//
// The lock is free with waiters queued only when a lease or a reservation
// lapsed (a holder's worker died): then the first waiter to look takes
// it if none before it is alive, and a newcomer's first look (a plain SET
// NX) may take it ahead of them: rare, and harmless to correctness.

// waiterStale is how long a waiter may go without a try before a free
// lock passes it over. Waiters try at least every 250 ms (worker).
const waiterStale = time.Second

// handoffLease is how long a lock handed to a waiter is reserved for it
// before it takes it: a waiter that died meanwhile holds the others up
// for no longer.
const handoffLease = time.Second

// serverMillisLua defines serverMillis(): Redis's clock (TIME) in ms.
const serverMillisLua = `
local function serverMillis()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// releaseLockLua is the release shared by releaseScript, leaveScript and
// applyScript: releaseLock(lock, waiters, seen, holder) frees the lock if
// holder holds it, handing it to the first live waiter (announced on
// wake.Channel to that waiter: HandOverName) when there is one; stale
// waiters met on the way leave the queue. Liveness is judged by Redis's
// clock (serverMillisLua), as it is recorded, so that workers' clocks
// need not agree.
var releaseLockLua = serverMillisLua + `
local function releaseLock(lock, waiters, seen, holder)
  if redis.call('GET', lock) ~= holder then return 0 end
  local now
  while true do
    local head = redis.call('ZPOPMIN', waiters)[1]
    if not head then break end
    now = now or serverMillis()
    local at = redis.call('ZSCORE', seen, head)
    redis.call('ZREM', seen, head)
    if at and tonumber(at) > now - ` + strconv.FormatInt(waiterStale.Milliseconds(), 10) + ` then
      redis.call('SET', lock, head, 'PX', ` + strconv.FormatInt(handoffLease.Milliseconds(), 10) + `)
      redis.call('PUBLISH', '` + wake.Channel + `', '` + wake.ReleasedMessage("") + `' .. lock .. ' ' .. head)
      return 1
    end
  end
  redis.call('DEL', lock)
  return 1
end
`

func (s *Store) createLockKey(model string) string {
	return s.prefix + "create_lock:" + strings.ToLower(model)
}

// createWaitersKey is the key of the lock's waiters; its seen set is the
// same with ":seen" for ":waiters" (seenKey). Both are in the lock key's
// hash slot (a Cluster runs the scripts that touch all three).
func (s *Store) createWaitersKey(model string) string {
	return slotWith(s.createLockKey(model)) + ":waiters"
}

func seenKey(waiters string) string { return strings.TrimSuffix(waiters, ":waiters") + ":seen" }

// slotWith returns key itself when it has a hash tag (its slot is the
// tag's), else key wrapped in braces: a key made by appending to the
// result is in key's slot.
func slotWith(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key
		}
	}
	return "{" + key + "}"
}

// HandOverName names, in the announcement of a hand-over
// (wake.ReleasedMessage), the model's create lock handed to jobID: what
// the waiter listens for (wake.Gate.Released).
func (s *Store) HandOverName(model, jobID string) string {
	return s.createLockKey(model) + " " + jobID
}

// LockTry is the outcome of one AcquireCreateLock.
type LockTry struct {
	// Held: the job holds the lock now (for the lease asked).
	Held bool
	// Holder is the lock's holder; "" when the lock is free but waiters
	// with earlier tickets come first.
	Holder string
	// Ahead is how many waiters come before the job (not held).
	Ahead int
}

// acquireScript is a waiter's look at a model's create lock. KEYS: lock,
// waiters, seen. ARGV: job id, lease (ms), ticket (ms), stale (ms). It
// returns {held, holder, ahead}.
//
// A lock the job holds (handed over, or its own in-doubt create's) gets
// the job's lease. A free lock (a lease or reservation lapsed) goes to the
// job if no live waiter comes first. Otherwise the job joins the queue
// (keeping its place if it is there already) and is seen now.
var acquireScript = redis.NewScript(serverMillisLua + `
local id = ARGV[1]
local h = redis.call('GET', KEYS[1])
if h == id then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, h, 0}
end
local now = serverMillis()
local function queue()
  redis.call('ZADD', KEYS[2], 'NX', ARGV[3], id)
  redis.call('ZADD', KEYS[3], now, id)
  return redis.call('ZRANK', KEYS[2], id)
end
if not h then
  if redis.call('ZCARD', KEYS[2]) > 0 then
    local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[4])))
    if #gone > 0 then
      redis.call('ZREM', KEYS[2], unpack(gone))
      redis.call('ZREM', KEYS[3], unpack(gone))
    end
    local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if head and head ~= id then
      local ahead = queue()
      if ahead > 0 then return {0, '', ahead} end
    end
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
  redis.call('SET', KEYS[1], id, 'PX', ARGV[2])
  return {1, id, 0}
end
return {0, h, queue()}
`)

// TryCreateLock is a job's first look at the model's create lock: it takes
// the lock for lease if it is free (one SET NX). When it is taken (by
// another job, or by jobID's own in-doubt create), the job goes on with
// AcquireCreateLock, which queues it.
func (s *Store) TryCreateLock(ctx context.Context, model, jobID string, lease time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.createLockKey(model), jobID, lease).Result()
	if err != nil {
		return false, fmt.Errorf("create lock for model %s: %w", model, ClassifyRedis(err))
	}
	return ok, nil
}

// AcquireCreateLock takes (or extends, when jobID holds it already: handed
// over, or its in-doubt create's) the fleet-wide lock that serialises
// create calls of one model, for lease, or queues jobID among the lock's
// waiters by ticket (the time the job became ready to create: a job that
// stops waiting and comes back keeps its place). One command (a script).
func (s *Store) AcquireCreateLock(ctx context.Context, model, jobID string, ticket time.Time, lease time.Duration) (LockTry, error) {
	key := s.createLockKey(model)
	w := s.createWaitersKey(model)
	res, err := acquireScript.Run(ctx, s.rdb, []string{key, w, seenKey(w)},
		jobID, lease.Milliseconds(), ticket.UnixMilli(), waiterStale.Milliseconds()).Slice()
	if err != nil {
		return LockTry{}, fmt.Errorf("create lock for model %s: %w", model, ClassifyRedis(err))
	}
	if len(res) != 3 {
		return LockTry{}, fmt.Errorf("create lock for model %s: unexpected reply %v", model, res)
	}
	held, _ := res[0].(int64)
	holder, _ := res[1].(string)
	ahead, _ := res[2].(int64)
	return LockTry{Held: held == 1, Holder: holder, Ahead: int(ahead)}, nil
}

// leaveScript takes a job out of a lock's waiters, and releases the lock
// (to the next waiter) if it was handed to the job meanwhile. KEYS: lock,
// waiters, seen. ARGV: job id.
var leaveScript = redis.NewScript(releaseLockLua + `
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return releaseLock(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
`)

// LeaveCreateQueue takes jobID out of the model's create lock waiters: it
// stopped waiting (it retries later, with the same ticket). A lock handed
// to it meanwhile goes to the next waiter. A waiter that does not leave
// is passed over once stale.
func (s *Store) LeaveCreateQueue(ctx context.Context, model, jobID string) error {
	w := s.createWaitersKey(model)
	if err := leaveScript.Run(ctx, s.rdb, []string{s.createLockKey(model), w, seenKey(w)}, jobID).Err(); err != nil {
		return fmt.Errorf("leave create lock queue for model %s: %w", model, ClassifyRedis(err))
	}
	return nil
}

// releaseScript releases a lock its holder holds (releaseLockLua).
// KEYS: lock, waiters, seen. ARGV: holder.
var releaseScript = redis.NewScript(releaseLockLua + `
return releaseLock(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
`)

// ReleaseCreateLock releases the model's create lock if jobID holds it,
// handing it to the first waiter.
func (s *Store) ReleaseCreateLock(ctx context.Context, model, jobID string) error {
	w := s.createWaitersKey(model)
	if err := releaseScript.Run(ctx, s.rdb, []string{s.createLockKey(model), w, seenKey(w)}, jobID).Err(); err != nil {
		return fmt.Errorf("release create lock for model %s: %w", model, ClassifyRedis(err))
	}
	return nil
}
