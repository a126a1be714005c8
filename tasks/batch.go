package tasks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/internal/tracing"
	"github.com/videoworker/videoworker/jobs"
)

// MaxBatch is the most jobs one SubmitMany call takes.
const MaxBatch = 1000

// SubmitResult is what SubmitMany did with one request.
type SubmitResult struct {
	// ID is the job's id (the request's, or a generated one).
	ID JobID
	// New is true when this call created the job, false when it found it
	// (a resubmission: nothing was started again).
	New bool
	// Err is ErrJobIDConflict (wrapped) when the id was already used for a
	// different request; the other items are not affected by it.
	Err error
}

// BatchError names the invalid requests of a SubmitMany call by their
// index: nothing of the batch was accepted. errors.Is(err,
// ErrInvalidRequest) is true for it.
type BatchError struct {
	// Items maps the index of each invalid request to its problems.
	Items map[int]*ValidationError
	// TooMany is set when the batch is empty or longer than MaxBatch.
	TooMany bool
}

func (e *BatchError) Error() string {
	if e.TooMany {
		return fmt.Sprintf("%s: a batch holds 1 to %d jobs", ErrInvalidRequest, MaxBatch)
	}
	idx := make([]int, 0, len(e.Items))
	for i := range e.Items {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	msg := fmt.Sprintf("%s: %d of the batch's jobs are invalid, none accepted", ErrInvalidRequest, len(idx))
	for k, i := range idx {
		if k == 3 {
			msg += "; …"
			break
		}
		msg += fmt.Sprintf("; job %d: %s", i, e.Items[i].Error())
	}
	return msg
}

// Is makes errors.Is(err, ErrInvalidRequest) true.
func (e *BatchError) Is(target error) bool { return target == ErrInvalidRequest }

// SubmitMany submits up to MaxBatch jobs at once. Every request is
// validated first: if any is invalid, nothing is accepted and the error
// is a *BatchError naming each bad one by index. Otherwise the records
// are created in one pipeline of scripts, each over a chunk of jobs and
// writing each new job's record, history, index entries and create task
// together (atomically, jobs.Store.CreateMany with the task as the
// record's jobs.Companion), then one wake-up is sent for the whole batch:
// a batch of new jobs costs two round trips to Redis, not three per job.
//
// Each job is idempotent by its own JobID exactly as in SubmitCreated:
// a job found already with the same request is reported with New false
// (its create task enqueued again if it is still queued, a no-op when the
// task exists); one found with a different request gets ErrJobIDConflict
// in its result, and the rest of the batch goes on. Two requests of one
// batch with the same JobID are an invalid batch. The i-th result belongs
// to reqs[i]. An error other than a *BatchError comes from Redis: some
// jobs may have been stored; submitting the same batch again (with job
// ids) finishes it without duplicates.
func (c *Client) SubmitMany(ctx context.Context, reqs []Request) (out []SubmitResult, err error) {
	if len(reqs) == 0 || len(reqs) > MaxBatch {
		return nil, &BatchError{TooMany: true}
	}
	if c.cbDefault != "" {
		reqs = slices.Clone(reqs)
		for i := range reqs {
			reqs[i] = c.withDefaults(reqs[i])
		}
	}
	bad := map[int]*ValidationError{}
	seen := make(map[JobID]int, len(reqs))
	for i, req := range reqs {
		if err := c.validate(req); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				return nil, err
			}
			bad[i] = ve
			continue
		}
		if req.JobID == "" {
			continue
		}
		if j, dup := seen[req.JobID]; dup {
			ve := &ValidationError{}
			ve.add("job_id", fmt.Sprintf("job id %q is also the id of job %d of this batch", truncate(string(req.JobID), 40), j))
			bad[i] = ve
			continue
		}
		seen[req.JobID] = i
	}
	if len(bad) > 0 {
		return nil, &BatchError{Items: bad}
	}
	now := time.Now().UTC()
	recs := make([]*jobs.Record, len(reqs))
	comps := make([]jobs.Companion, len(reqs))
	since := strconv.FormatInt(now.UnixNano(), 10)
	for i, req := range reqs {
		id := req.JobID
		if id == "" {
			id = newJobID()
		}
		recs[i] = c.newRecord(id, req, now)
	}
	var spans []tracing.Span // tracing on: one trace per job, as in SubmitCreated
	if c.tracer.On() {
		spans = make([]tracing.Span, len(recs))
		for i, rec := range recs {
			_, spans[i] = c.startJob(ctx, rec)
		}
		defer func() {
			for i, sp := range spans {
				if err == nil && out[i].Err != nil {
					sp.End(out[i].Err)
					continue
				}
				sp.End(err)
			}
		}()
	}
	for i, rec := range recs {
		if rec.State == jobs.StateTenantWait {
			continue // no task yet: it waits in its tenant's list until admitted
		}
		comps[i] = createCompanion(rec.ID, rec.Trace, since)
	}
	created, err := c.store.CreateMany(ctx, recs, comps)
	if err != nil {
		return nil, fmt.Errorf("submit batch: %w", err)
	}
	out = make([]SubmitResult, len(reqs))
	var toEnqueue []*Next
	anyNew := false
	for i, rec := range recs {
		out[i] = SubmitResult{ID: JobID(rec.ID), New: created[i].Created}
		if created[i].Created && rec.State == jobs.StateTenantWait {
			adm, err := c.tenancy.Enter(ctx, rec.ID, rec.Tenant)
			if err != nil {
				return nil, fmt.Errorf("submit batch: %w", err)
			}
			nexts, err := admittedTasks(adm)
			if err != nil {
				return nil, err
			}
			toEnqueue = append(toEnqueue, nexts...)
			continue
		}
		if created[i].Companion {
			anyNew = true
			continue // its create task was written with it
		}
		if !created[i].Created {
			if spans != nil {
				spans[i].Bool(tracing.AttrCreated, false)
			}
			existing := created[i].Existing
			if !sameRequest(existing, reqs[i]) {
				out[i].Err = fmt.Errorf("submit %s: %w", rec.ID, ErrJobIDConflict)
				continue
			}
			if existing.State != jobs.StateQueued {
				continue // already past creation: nothing to enqueue
			}
			rec = existing
		}
		next, err := NextTask(rec, 0)
		if err != nil {
			return nil, err
		}
		if next != nil {
			toEnqueue = append(toEnqueue, next)
		}
	}
	if err := c.enqueueMany(ctx, toEnqueue, anyNew); err != nil {
		return nil, fmt.Errorf("submit batch: %w", err)
	}
	n := 0
	for _, r := range out {
		if r.New {
			n++
		}
	}
	c.log.InfoContext(ctx, "job batch submitted", "jobs", len(reqs), "new", n)
	return out, nil
}

// Validate checks req as Submit does, without storing anything: nil, or
// a *ValidationError naming every problem.
func (c *Client) Validate(req Request) error { return c.validate(req) }

// asynqEnqueueMany is asynq v0.26's own enqueue script (internal/rdb
// enqueueCmd) looped over many tasks. KEYS: task key and pending list of
// each task in turn; ARGV: encoded message and task id of each task, then
// the time in ns. A task whose id exists is left alone (asynq's
// ErrTaskIDConflict, which counts as done here, as in enqueue). It
// returns how many it enqueued.
var asynqEnqueueMany = redis.NewScript(`
local n = 0
for i = 1, #KEYS, 2 do
  if redis.call("EXISTS", KEYS[i]) == 0 then
    redis.call("HSET", KEYS[i], "msg", ARGV[i], "state", "pending", "pending_since", ARGV[#ARGV])
    redis.call("LPUSH", KEYS[i + 1], ARGV[i + 1])
    n = n + 1
  end
end
return n
`)

// enqueueMany enqueues ns. asynq v0.26 has no batch enqueue, so the
// create tasks (due at once, the only kind a submit makes) are written as
// asynq writes them, with its script (looped over chunks of tasks) and
// its message encoding (createMessage), in one pipeline, then announced
// with one wake-up. Any other task goes through enqueue, one call each.
//
// announce says that create tasks were written already (with their
// records): the queue set and the wake-up are then sent even when ns
// holds none.
func (c *Client) enqueueMany(ctx context.Context, ns []*Next, announce bool) error {
	var batch []*Next
	for _, n := range ns {
		if n.Type != TypeCreate || n.ProcessIn > 0 {
			if err := enqueue(ctx, c.aq, c.wake, n); err != nil {
				return err
			}
			continue
		}
		batch = append(batch, n)
	}
	if len(batch) == 0 {
		if !announce {
			return nil
		}
		// The queue set asynq's inspector and servers list queues from
		// (what asynq's client adds once per process), and the wake-up.
		pipe := c.rdb.Pipeline()
		queues := pipe.SAdd(ctx, "asynq:queues", QueueCreate)
		c.wake.AnnouncePendingIn(ctx, pipe, QueueCreate)
		_, _ = pipe.Exec(ctx) // a lost wake-up: found at the next idle check
		if err := queues.Err(); err != nil {
			return fmt.Errorf("enqueue: %w", jobs.ClassifyRedis(err))
		}
		return nil
	}
	// enqueueChunk tasks per script call keep each under a millisecond.
	const enqueueChunk = 100
	var chunkKeys [][]string
	var chunkArgs [][]any
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	for i := 0; i < len(batch); i += enqueueChunk {
		part := batch[i:min(i+enqueueChunk, len(batch))]
		keys := make([]string, 0, 2*len(part))
		args := make([]any, 0, 2*len(part)+1)
		for _, n := range part {
			prefix := "asynq:{" + n.Queue + "}:"
			keys = append(keys, prefix+"t:"+n.ID, prefix+"pending")
			args = append(args, createMessage(n), n.ID)
		}
		chunkKeys, chunkArgs = append(chunkKeys, keys), append(chunkArgs, append(args, now))
	}
	cmds := make([]*redis.Cmd, len(chunkKeys))
	var queues *redis.IntCmd
	for attempt := 0; ; attempt++ {
		pipe := c.rdb.Pipeline()
		if attempt == 0 {
			// The queue set asynq's inspector and servers list queues from
			// (what asynq's client adds once per process).
			queues = pipe.SAdd(ctx, "asynq:queues", QueueCreate)
		}
		for j := range cmds {
			if cmds[j] == nil || redis.HasErrorPrefix(cmds[j].Err(), "NOSCRIPT") {
				cmds[j] = asynqEnqueueMany.EvalSha(ctx, pipe, chunkKeys[j], chunkArgs[j]...)
			}
		}
		_, err := pipe.Exec(ctx)
		if attempt > 0 || err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			break
		}
		// Nothing ran for a chunk that got NOSCRIPT: load the script and
		// send those chunks again.
		if err := asynqEnqueueMany.Load(ctx, c.rdb).Err(); err != nil {
			return fmt.Errorf("enqueue: load script: %w", jobs.ClassifyRedis(err))
		}
	}
	if err := queues.Err(); err != nil {
		return fmt.Errorf("enqueue: %w", jobs.ClassifyRedis(err))
	}
	for j, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return fmt.Errorf("enqueue %d create tasks from %s: %w", len(chunkKeys[j])/2, chunkArgs[j][1], jobs.ClassifyRedis(err))
		}
	}
	_ = c.wake.AnnouncePending(ctx, QueueCreate) // lost: found at the next idle check
	return nil
}

// createCompanion is the create task of a new job (what NextTask gives
// for its record: TypeCreate, id CreateTaskID, queue QueueCreate, pending
// since sinceNS) as it is written beside the record: asynq v0.26's task
// hash (fields msg, state, pending_since) and its push to the queue's
// pending list, which is what asynq's own enqueue script writes.
func createCompanion(jobID, trace, sinceNS string) jobs.Companion {
	id := CreateTaskID(jobID)
	prefix := "asynq:{" + QueueCreate + "}:"
	return jobs.Companion{Key: prefix + "t:" + id, List: prefix + "pending", Member: id,
		Fields: []string{"msg", createMessageFor(jobID, trace, id), "state", "pending", "pending_since", sinceNS}}
}

// createMessageFor is createMessage of the create task of a new job, its
// payload written without json.Marshal (a job id is plain ASCII that JSON
// needs no escape for: ValidateJobID, newJobID).
func createMessageFor(jobID, trace, taskID string) string {
	if !plainJobID(jobID) || trace != "" { // never for a validated untraced id: json.Marshal's way
		t, _ := newCreateTask(jobID, trace, asynq.TaskID(taskID))
		return createMessage(&Next{Task: t, Type: TypeCreate, Queue: QueueCreate, ID: taskID})
	}
	payload := make([]byte, 0, 24+len(jobID))
	payload = append(payload, `{"v":`...)
	payload = strconv.AppendInt(payload, PayloadVersion, 10)
	payload = append(payload, `,"job_id":"`...)
	payload = append(payload, jobID...)
	payload = append(payload, `"}`...)
	b := make([]byte, 0, 32+len(payload)+len(taskID))
	b = appendBytes(b, 1, []byte(TypeCreate))
	b = appendBytes(b, 2, payload)
	b = appendBytes(b, 3, []byte(taskID))
	b = appendBytes(b, 4, []byte(QueueCreate))
	b = appendVarint(b, 5, createMaxRetry)
	b = appendVarint(b, 8, uint64(createTimeout/time.Second))
	return string(b)
}

// createMessage encodes n's create task as asynq v0.26 does (its
// TaskMessage protobuf, internal/proto/asynq.proto): type (1), payload (2),
// id (3), queue (4), retry (5), timeout in seconds (8); no deadline,
// unique key, group or retention, as NewCreateTask sets none. A test reads
// the task back with asynq's inspector and runs it with an asynq server.
func createMessage(n *Next) string {
	b := make([]byte, 0, 64+len(n.Task.Payload()))
	b = appendBytes(b, 1, []byte(n.Type))
	b = appendBytes(b, 2, n.Task.Payload())
	b = appendBytes(b, 3, []byte(n.ID))
	b = appendBytes(b, 4, []byte(n.Queue))
	b = appendVarint(b, 5, createMaxRetry)
	b = appendVarint(b, 8, uint64(createTimeout/time.Second))
	return string(b)
}

// appendBytes appends a protobuf length-delimited field (omitted when
// empty, as proto3 does).
func appendBytes(b []byte, field uint64, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, field<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendVarint appends a protobuf varint field (omitted when zero).
func appendVarint(b []byte, field, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = binary.AppendUvarint(b, field<<3)
	return binary.AppendUvarint(b, v)
}
