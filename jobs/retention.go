package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/storage"
)

// Retention of finished jobs. With a retention set (SetRetention), the
// transition that ends a job adds its id to the finished set, scored by
// when it is to be forgotten (the job's own Record.Retention, else the
// store's); a Retried transition takes it out again, in the same atomic
// step. One elected worker sweeps the set (Expired, ReadArchive, Forget):
// it writes each expired job's archive document to storage, then removes
// everything the job left in Redis. Unfinished jobs are never in the set,
// so they are never touched.

// MinRetention and MaxRetention bound a job's own retention.
const (
	MinRetention = time.Minute
	MaxRetention = 365 * 24 * time.Hour
)

// DefaultRetention is how long a finished job stays in Redis by default.
const DefaultRetention = 7 * 24 * time.Hour

// SetRetention sets how long finished jobs stay in Redis (0: forever, as
// without retention: no command is added to any transition). Call it
// before the store is used. On a Redis Cluster retention is not
// supported (the sweep's batch script reaches many jobs' keys) and
// SetRetention is ignored.
func (s *Store) SetRetention(d time.Duration) {
	if s.cluster || d < 0 {
		d = 0
	}
	s.retention = d
}

// Retention is the store's retention (0: finished jobs stay forever).
func (s *Store) Retention() time.Duration { return s.retention }

func (s *Store) finishedKey() string       { return s.prefix + "finished" }
func (s *Store) retentionStatsKey() string { return s.prefix + "retention_stats" }

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

// Expired returns up to limit ids of finished jobs whose retention has
// passed at now, oldest first.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]string, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.finishedKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("expired jobs: %w", ClassifyRedis(err))
	}
	return ids, nil
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

// Forgotten is one job for Forget: its id, its video (whose claim goes
// with it) and whether its archive was written.
type Forgotten struct {
	ID, VideoID string
	Archived    bool
}

// forgetScript removes, for each job still in the finished set with a
// score at or before now (a Retried job has left it; a job finished again
// has a later score), everything it left in Redis: the record, history,
// webhook keys and spec, its index entry, its video's claim and its
// finished-set entry, and counts what it removed and archived. Each of
// these is one command for the whole batch, so that a job costs a
// fraction of a command here. (A job's claim names the job: the
// transition that saved the video id claimed it for the job, or refused.)
// A job in the unfinished set is never removed, whatever the finished set
// says. KEYS: finished, index, claims, stats, unfinished, then 4 per job
// (record, history, webhooks, spec). ARGV: now, then 3 per job (id, video, archived
// "1"/"0"). It returns how many it removed.
var forgetScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local n = (#ARGV - 1) / 3
local ids = {}
for j = 0, n - 1 do ids[#ids+1] = ARGV[2 + 3*j] end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local running = redis.call('SMISMEMBER', KEYS[5], unpack(ids))
local keys, gone, vids, archived = {}, {}, {}, 0
for j = 0, n - 1 do
  local sc = scores[j+1]
  if sc and tonumber(sc) <= now and running[j+1] == 0 then
    for k = 6 + 4*j, 9 + 4*j do keys[#keys+1] = KEYS[k] end
    gone[#gone+1] = ids[j+1]
    if ARGV[3 + 3*j] ~= '' then vids[#vids+1] = ARGV[3 + 3*j] end
    if ARGV[4 + 3*j] == '1' then archived = archived + 1 end
  end
end
if #gone == 0 then return 0 end
redis.call('UNLINK', unpack(keys))
redis.call('ZREM', KEYS[1], unpack(gone))
redis.call('ZREM', KEYS[2], unpack(gone))
if #vids > 0 then redis.call('HDEL', KEYS[3], unpack(vids)) end
redis.call('HINCRBY', KEYS[4], 'removed', #gone)
if archived > 0 then redis.call('HINCRBY', KEYS[4], 'archived', archived) end
return #gone
`)

// Forget removes the jobs of batch whose retention has passed at now and
// that are still finished (see forgetScript), in one atomic step; it
// returns how many it removed. Jobs retried since they were read are left
// alone.
func (s *Store) Forget(ctx context.Context, now time.Time, batch []Forgotten) (int, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	keys := make([]string, 0, 5+4*len(batch))
	keys = append(keys, s.finishedKey(), s.indexKey(), s.claimsKey(), s.retentionStatsKey(), s.activeKey())
	args := make([]any, 0, 1+3*len(batch))
	args = append(args, now.UnixMilli())
	for _, f := range batch {
		keys = append(keys, s.jobKey(f.ID), s.eventsKey(f.ID), s.webhooksKey(f.ID), s.specKey(f.ID))
		args = append(args, f.ID, f.VideoID, encodeValue(f.Archived))
	}
	n, err := forgetScript.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("forget finished jobs: %w", ClassifyRedis(err))
	}
	return n, nil
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
	// Retained is how many finished jobs wait for their retention to pass.
	Retained int64
}

// RetentionStats reads the fleet-wide retention counters.
func (s *Store) RetentionStats(ctx context.Context) (RetentionStats, error) {
	pipe := s.rdb.Pipeline()
	m := pipe.HGetAll(ctx, s.retentionStatsKey())
	n := pipe.ZCard(ctx, s.finishedKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return RetentionStats{}, fmt.Errorf("retention stats: %w", ClassifyRedis(err))
	}
	num := func(k string) int64 { v, _ := strconv.ParseInt(m.Val()[k], 10, 64); return v }
	return RetentionStats{Removed: num("removed"), Archived: num("archived"), ArchiveFailures: num("archive_failures"), Retained: n.Val()}, nil
}
