package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// CreateResult is what CreateMany did with one record.
type CreateResult struct {
	// Created is true when this call created the record.
	Created bool
	// Existing is the record found under the id when Created is false.
	Existing *Record
}

// CreateMany is Create for many records at once: the create scripts of
// all of them go to Redis in one pipeline (one round trip), each still
// atomic on its own, so that of concurrent calls with one id exactly one
// creates the record. Records whose id exists already are read back
// (Existing), one Get each: the resubmission path. On a Redis Cluster it
// creates them one by one. The i-th result belongs to recs[i]; on an
// error some records may have been created (a retry finds them).
func (s *Store) CreateMany(ctx context.Context, recs []*Record) ([]CreateResult, error) {
	out := make([]CreateResult, len(recs))
	if s.cluster {
		for i, rec := range recs {
			created, existing, err := s.Create(ctx, rec)
			if err != nil {
				return nil, err
			}
			out[i] = CreateResult{Created: created, Existing: existing}
			if created {
				out[i].Existing = nil
			}
		}
		return out, nil
	}
	// createChunk records per script call: Redis runs a script without
	// serving anyone else, so a chunk stays well under a millisecond.
	const createChunk = 50
	var chunkKeys [][]string
	var chunkArgs [][]any
	var keys []string
	var args []any
	for i, rec := range recs {
		k, a, err := s.createCall(rec)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k...)
		args = append(append(args, len(a)), a...)
		if (i+1)%createChunk == 0 || i == len(recs)-1 {
			chunkKeys, chunkArgs = append(chunkKeys, keys), append(chunkArgs, args)
			keys, args = nil, nil
		}
	}
	cmds := make([]*redis.Cmd, len(chunkKeys))
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		sent := 0
		for j := range cmds {
			if cmds[j] == nil || (attempt > 0 && redis.HasErrorPrefix(cmds[j].Err(), "NOSCRIPT")) {
				cmds[j] = createManyScript.EvalSha(ctx, pipe, chunkKeys[j], chunkArgs[j]...)
				sent++
			}
		}
		if sent == 0 {
			break
		}
		_, err := pipe.Exec(ctx)
		if attempt > 0 || err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			break
		}
		// Nothing ran for a chunk that got NOSCRIPT: load the script and
		// send those chunks again (the others are done).
		if err := createManyScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("create jobs: load script: %w", ClassifyRedis(err))
		}
	}
	for j, c := range cmds {
		created, err := c.Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("create jobs: %w", ClassifyRedis(err))
		}
		for k, n := range created {
			out[j*createChunk+k].Created = n == 1
		}
	}
	for i, rec := range recs {
		if out[i].Created {
			continue
		}
		existing, err := s.Get(ctx, rec.ID)
		if err != nil {
			return nil, err
		}
		out[i].Existing = existing
	}
	return out, nil
}

// createManyScript is createScript for many records (single Redis only).
// KEYS: job, events, index, active, spec of each record in turn. ARGV: for
// each record n, then its n arguments as createScript takes them (event,
// score, id, spec, fields...). It returns 1 (created) or 0 per record.
var createManyScript = redis.NewScript(`
local out = {}
local a = 1
for r = 0, #KEYS / 5 - 1 do
  local k = r * 5
  local n = tonumber(ARGV[a])
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    out[r + 1] = 0
  else
    redis.call('HSET', KEYS[k + 1], unpack(ARGV, a + 5, a + n))
    if ARGV[a + 4] ~= '' then redis.call('SET', KEYS[k + 5], ARGV[a + 4]) end
    redis.call('RPUSH', KEYS[k + 2], ARGV[a + 1])
    redis.call('ZADD', KEYS[k + 3], ARGV[a + 2], ARGV[a + 3])
    redis.call('SADD', KEYS[k + 4], ARGV[a + 3])
    out[r + 1] = 1
  end
  a = a + n + 1
end
return out
`)

// createCall returns the keys and arguments of createScript for rec, as
// Create sends them on a single Redis (not a Cluster), filling in rec's
// defaults (submission and update time, state).
func (s *Store) createCall(rec *Record) ([]string, []any, error) {
	if rec.ID == "" {
		return nil, nil, errors.New("create job: empty id")
	}
	now := s.now()
	if rec.SubmittedAt.IsZero() {
		rec.SubmittedAt = now
	}
	if rec.State == "" {
		rec.State = StateQueued
	}
	rec.UpdatedAt = now
	fields := []any{
		FieldVersion, recordVersion,
		FieldID, rec.ID,
		FieldState, string(rec.State),
		FieldSubmittedAt, encodeValue(rec.SubmittedAt),
		FieldUpdatedAt, encodeValue(rec.UpdatedAt),
	}
	if !rec.Deadline.IsZero() {
		fields = append(fields, FieldDeadline, encodeValue(rec.Deadline))
	}
	if rec.RetentionMS > 0 {
		fields = append(fields, FieldRetention, rec.RetentionMS)
	}
	if rec.CallbackURL != "" {
		fields = append(fields, FieldCallbackURL, rec.CallbackURL)
	}
	if rec.Tenant != "" && rec.Tenant != DefaultTenant {
		fields = append(fields, FieldTenant, rec.Tenant)
	}
	if rec.Trace != "" {
		fields = append(fields, FieldTrace, rec.Trace)
	}
	// A short request without labels stays in the record; anything longer
	// goes under the spec key (see spec).
	ev := encodeEvent(Event{At: now, State: rec.State, Event: "submitted", Detail: "model " + rec.Request.Model})
	req := encodeValue(rec.Request)
	sp := ""
	if len(req) <= compactValueMax && len(rec.Labels) == 0 {
		fields = append(fields, FieldRequest, req)
	} else {
		b, err := json.Marshal(spec{Request: rec.Request, Labels: rec.Labels})
		if err != nil {
			return nil, nil, fmt.Errorf("create job %s: %w", rec.ID, err)
		}
		sp = string(b)
	}
	args := append([]any{string(ev), rec.SubmittedAt.UnixMilli(), rec.ID, sp}, fields...)
	keys := []string{s.jobKey(rec.ID), s.eventsKey(rec.ID), s.indexKey(), s.activeKey(), s.specKey(rec.ID)}
	return keys, args, nil
}
