package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// CreateResult is what CreateMany did with one record.
type CreateResult struct {
	// Created is true when this call created the record.
	Created bool
	// Existing is the record found under the id when Created is false.
	Existing *Record
	// Companion is true when the record's Companion was written with it
	// (or its key existed already); false when the caller must write it.
	Companion bool
}

// Companion is a write CreateMany makes in the same script as a new
// record, so that the two exist together or not at all: a hash (Key,
// Fields as field, value pairs) and a push of Member to the head of List,
// both skipped when Key exists already. The producer's create task is one
// (asynq's task hash and its queue's pending list). It is written only
// when the record is created, and only on a single Redis (not a Cluster,
// where Key lies in another slot).
type Companion struct {
	Key    string
	Fields []string
	List   string
	Member string
}

// CreateMany is Create for many records at once: the records go to Redis
// in one pipeline of scripts, each script creating a chunk of records, so
// that of concurrent calls with one id exactly one creates the record.
// comps, when not nil, holds each record's Companion (an empty Key: none).
// Records whose id exists already are read back (Existing), one Get each:
// the resubmission path. On a Redis Cluster it creates them one by one
// and writes no companion. The i-th result belongs to recs[i]; on an
// error some records may have been created (a retry finds them).
//
// Each record is written with its history line, index and unfinished-set
// entries and its companion in one script run (atomic, as Create). The
// set and list additions of a chunk are made with one command each at
// the end of the script: a new job costs five Redis commands (two
// EXISTS, two HSET, one RPUSH; a SET for a long request) plus three per
// chunk, rather than nine.
func (s *Store) CreateMany(ctx context.Context, recs []*Record, comps []Companion) ([]CreateResult, error) {
	if comps != nil && len(comps) != len(recs) {
		return nil, fmt.Errorf("create jobs: %d companions for %d records", len(comps), len(recs))
	}
	list := ""
	for _, c := range comps {
		if c.Key == "" {
			continue
		}
		if len(c.Fields) < 2 || len(c.Fields)%2 != 0 || c.List == "" || (list != "" && c.List != list) {
			return nil, fmt.Errorf("create jobs: companion %s: want field, value pairs and the batch's one list", c.Key)
		}
		list = c.List
	}
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
	// serving anyone else, so a chunk stays around a millisecond.
	const createChunk = 50
	nChunks := (len(recs) + createChunk - 1) / createChunk
	chunkKeys := make([][]string, 0, nChunks)
	chunkArgs := make([][]any, 0, nChunks)
	now := s.now()
	for c := 0; c < len(recs); c += createChunk {
		end := min(c+createChunk, len(recs))
		var part []Companion
		if comps != nil {
			part = comps[c:end]
		}
		keys, args, err := s.chunkCall(recs[c:end], part, list, now)
		if err != nil {
			return nil, err
		}
		chunkKeys, chunkArgs = append(chunkKeys, keys), append(chunkArgs, args)
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
		res, err := c.Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("create jobs: %w", ClassifyRedis(err))
		}
		for k, n := range res {
			// 0: the record existed; 1: created, its companion not (its
			// key existed, or it had none); 2: both created.
			i := j*createChunk + k
			out[i].Created = n >= 1
			out[i].Companion = n == 2 || (n == 1 && comps != nil && comps[i].Key != "")
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

// createManyScript creates a chunk of records (single Redis only). KEYS:
// the index and the unfinished set, then for each record its job, events
// and spec keys and its companion's key. ARGV: the companions' list; c and
// the c field, value arguments every record of the chunk has; d and the d
// every companion has; then for each record n and m, its n arguments
// (event, score, id, spec, its own record fields...) and m companion
// arguments (member, its own fields...). Arguments common to the chunk
// are sent once, not once per record: Redis parses fewer. It returns per
// record 0 (it existed), 1 (created, no companion written) or 2 (created
// with its companion). The index, the set and the list get one command
// each, after every record of the chunk is written.
var createManyScript = redis.NewScript(`
local out, zadd, sadd, push = {}, {}, {}, {}
local c = tonumber(ARGV[2])
local d = tonumber(ARGV[3 + c])
local a = 4 + c + d
local function hset(key, from, to, cfrom, cn)
  local f = {unpack(ARGV, from, to)}
  for i = cfrom, cfrom + cn - 1 do f[#f + 1] = ARGV[i] end
  redis.call('HSET', key, unpack(f))
end
for r = 0, (#KEYS - 2) / 4 - 1 do
  local k = 2 + r * 4
  local n, m = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    out[r + 1] = 0
  else
    hset(KEYS[k + 1], a + 4, a + n - 1, 3, c)
    if ARGV[a + 3] ~= '' then redis.call('SET', KEYS[k + 3], ARGV[a + 3]) end
    redis.call('RPUSH', KEYS[k + 2], ARGV[a])
    zadd[#zadd + 1] = ARGV[a + 1]
    zadd[#zadd + 1] = ARGV[a + 2]
    sadd[#sadd + 1] = ARGV[a + 2]
    out[r + 1] = 1
    if m > 0 and redis.call('EXISTS', KEYS[k + 4]) == 0 then
      hset(KEYS[k + 4], a + n + 1, a + n + m - 1, 4 + c, d)
      push[#push + 1] = ARGV[a + n]
      out[r + 1] = 2
    end
  end
  a = a + n + m
end
if #zadd > 0 then
  redis.call('ZADD', KEYS[1], unpack(zadd))
  redis.call('SADD', KEYS[2], unpack(sadd))
end
if #push > 0 then redis.call('LPUSH', ARGV[1], unpack(push)) end
return out
`)

// chunkCall returns the keys and arguments of createManyScript for recs
// (with comps, nil or one per record, a Key "" meaning none; CreateMany
// checked them), filling in each record's defaults as createCall does.
func (s *Store) chunkCall(recs []*Record, comps []Companion, list string, now time.Time) ([]string, []any, error) {
	type part struct {
		ev, sp string
		fields []any
	}
	parts := make([]part, len(recs))
	for i, rec := range recs {
		if rec.ID == "" {
			return nil, nil, errors.New("create job: empty id")
		}
		ev, sp, fields, err := s.createParts(rec, now)
		if err != nil {
			return nil, nil, err
		}
		parts[i] = part{ev, sp, fields}
	}
	// The field, value pairs at the same place in every record (version,
	// state, times) and in every companion are sent once.
	recCommon := commonPairs(len(recs), func(i int) []any { return parts[i].fields })
	var compFields [][]any
	compCommon := map[int]bool{}
	if comps != nil {
		compFields = make([][]any, 0, len(comps))
		for _, c := range comps {
			if c.Key == "" {
				continue
			}
			f := make([]any, len(c.Fields))
			for i, v := range c.Fields {
				f[i] = v
			}
			compFields = append(compFields, f)
		}
		compCommon = commonPairs(len(compFields), func(i int) []any { return compFields[i] })
	}
	keys := make([]string, 2, 2+4*len(recs))
	keys[0], keys[1] = s.indexKey(), s.activeKey()
	args := make([]any, 0, 4+2*len(recCommon)+2*len(compCommon)+12*len(recs))
	args = append(args, list, 2*len(recCommon))
	args = appendPairs(args, parts[0].fields, recCommon, true)
	args = append(args, 2*len(compCommon))
	if len(compFields) > 0 {
		args = appendPairs(args, compFields[0], compCommon, true)
	}
	nc := 0
	for i, rec := range recs {
		p := parts[i]
		own := len(p.fields) - 2*len(recCommon)
		var comp Companion
		if comps != nil {
			comp = comps[i]
		}
		m := 0
		if comp.Key != "" {
			m = 1 + len(comp.Fields) - 2*len(compCommon)
		}
		args = append(args, 4+own, m, p.ev, rec.SubmittedAt.UnixMilli(), rec.ID, p.sp)
		args = appendPairs(args, p.fields, recCommon, false)
		if m > 0 {
			args = append(args, comp.Member)
			args = appendPairs(args, compFields[nc], compCommon, false)
			nc++
		}
		keys = append(keys, s.jobKey(rec.ID), s.eventsKey(rec.ID), s.specKey(rec.ID), comp.Key)
		if comp.Key == "" {
			keys[len(keys)-1] = s.jobKey(rec.ID) // declared, never written
		}
	}
	return keys, args, nil
}

// commonPairs returns the indexes (in pairs) of the field, value pairs
// that all n lists have, equal and at the same place.
func commonPairs(n int, list func(i int) []any) map[int]bool {
	out := map[int]bool{}
	if n == 0 {
		return out
	}
	first := list(0)
	for p := 0; 2*p+1 < len(first); p++ {
		same := true
		for i := 1; i < n && same; i++ {
			l := list(i)
			same = 2*p+1 < len(l) && l[2*p] == first[2*p] && l[2*p+1] == first[2*p+1]
		}
		if same {
			out[p] = true
		}
	}
	return out
}

// appendPairs appends the pairs of fields that are common (or, with
// common false, those that are not).
func appendPairs(args, fields []any, common map[int]bool, want bool) []any {
	for p := 0; 2*p+1 < len(fields); p++ {
		if common[p] == want {
			args = append(args, fields[2*p], fields[2*p+1])
		}
	}
	return args
}

// createCall returns the keys and arguments of createScript for rec, as
// Create sends them on a single Redis (not a Cluster), filling in rec's
// defaults (submission and update time, state).
func (s *Store) createCall(rec *Record) ([]string, []any, error) {
	if rec.ID == "" {
		return nil, nil, errors.New("create job: empty id")
	}
	ev, sp, fields, err := s.createParts(rec, s.now())
	if err != nil {
		return nil, nil, err
	}
	args := append([]any{ev, rec.SubmittedAt.UnixMilli(), rec.ID, sp}, fields...)
	keys := []string{s.jobKey(rec.ID), s.eventsKey(rec.ID), s.indexKey(), s.activeKey(), s.specKey(rec.ID)}
	return keys, args, nil
}

// createParts fills in rec's defaults (submission time, state; update time
// now) and returns its first history line, its spec ("" when the request
// is kept in the record) and the record's fields as field, value pairs.
func (s *Store) createParts(rec *Record, now time.Time) (ev, sp string, fields []any, err error) {
	if rec.SubmittedAt.IsZero() {
		rec.SubmittedAt = now
	}
	if rec.State == "" {
		rec.State = StateQueued
	}
	rec.UpdatedAt = now
	fields = make([]any, 0, 18)
	fields = append(fields,
		FieldVersion, recordVersion,
		FieldID, rec.ID,
		FieldState, string(rec.State),
		FieldSubmittedAt, encodeValue(rec.SubmittedAt),
		FieldUpdatedAt, encodeValue(rec.UpdatedAt),
	)
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
	ev = encodeEvent(Event{At: now, State: rec.State, Event: "submitted", Detail: "model " + rec.Request.Model})
	req := requestJSON(&rec.Request)
	if len(req) <= compactValueMax && len(rec.Labels) == 0 {
		fields = append(fields, FieldRequest, req)
		return ev, "", fields, nil
	}
	if len(rec.Labels) == 0 {
		// spec{Request: r} encodes as {"request":<r>}.
		return ev, `{"request":` + req + `}`, fields, nil
	}
	b, err := json.Marshal(spec{Request: rec.Request, Labels: rec.Labels})
	if err != nil {
		return "", "", nil, fmt.Errorf("create job %s: %w", rec.ID, err)
	}
	return ev, string(b), fields, nil
}
