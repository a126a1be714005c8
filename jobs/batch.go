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
	keys := make([][]string, len(recs))
	args := make([][]any, len(recs))
	for i, rec := range recs {
		k, a, err := s.createCall(rec)
		if err != nil {
			return nil, err
		}
		keys[i], args[i] = k, a
	}
	pending := make([]int, len(recs))
	for i := range pending {
		pending[i] = i
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(pending))
		for j, i := range pending {
			cmds[j] = createScript.EvalSha(ctx, pipe, keys[i], args[i]...)
		}
		_, _ = pipe.Exec(ctx) // each command's error is looked at below
		var again []int
		for j, i := range pending {
			n, err := cmds[j].Int()
			switch {
			case err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0:
				again = append(again, i) // nothing ran for it: load and send again
				continue
			case err != nil:
				return nil, fmt.Errorf("create job %s: %w", recs[i].ID, ClassifyRedis(err))
			}
			out[i].Created = n == 1
		}
		if len(again) > 0 {
			if err := createScript.Load(ctx, s.rdb).Err(); err != nil {
				return nil, fmt.Errorf("create jobs: load script: %w", ClassifyRedis(err))
			}
		}
		pending = again
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
