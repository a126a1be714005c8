// Package tasks is the wire contract between producers and workers: the
// task type names, their versioned JSON payloads and the constructors that
// give each task its default options, plus the producer API (Client) that
// other Go services import to submit video jobs and look them up.
//
// Task type names and payload fields are a stored format: tasks enqueued by
// one release are processed by the next, so a name never changes and a
// payload only gains optional fields. A payload with a newer version than
// this code understands is refused as a permanent error.
package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// Task type names. They are a wire contract: never rename one.
const (
	// TypeCreate submits the job to the API.
	TypeCreate = "video:create"
	// TypePoll checks the job's status once and schedules the next check.
	TypePoll = "video:poll"
	// TypeDownload streams the finished video into storage.
	TypeDownload = "video:download"
	// TypeCancel asks the API to cancel a job that a user cancelled, and
	// records the answer.
	TypeCancel = "video:cancel"
	// TypeCallback delivers an ended job's terminal state to the job's
	// callback URL (queue QueuePoll), retried with backoff for a bounded
	// time.
	TypeCallback = "video:callback"
)

// Queue names, one per step, so that workers can be given roles (for
// example download-only) and steps that finish work run before steps that
// start new work.
const (
	QueueCreate   = "video_create"
	QueuePoll     = "video_poll"
	QueueDownload = "video_download"
)

// DefaultQueues are the queue priorities a worker uses by default: finishing
// jobs (download, poll) comes before starting new ones.
func DefaultQueues() map[string]int {
	return map[string]int{QueueDownload: 6, QueuePoll: 5, QueueCreate: 3}
}

// PayloadVersion is the payload format version this code writes and reads.
const PayloadVersion = 1

// ErrBadPayload marks a payload that can never be processed (malformed,
// or from a newer release). Handlers treat it as permanent.
var ErrBadPayload = errors.New("bad task payload")

// CreatePayload is the payload of TypeCreate.
type CreatePayload struct {
	Version int    `json:"v"`
	JobID   string `json:"job_id"`
	// Trace is the W3C traceparent of the job's submit span (the job's
	// record keeps it), so that the step's span joins the job's trace;
	// absent when tracing was off (see docs/tracing.md).
	Trace string `json:"trace,omitempty"`
}

// PollPayload is the payload of TypePoll, which carries two kinds of
// status check (one task type on the wire, for compatibility):
//   - a link of the job's poll chain (Seq ≥ 1, NewPollTask): only the link
//     whose Seq matches the job's record does any work, so duplicates and
//     stale retries are no-ops, and it schedules the next link;
//   - a check outside the chain (Seq = CheckSeq, NewCheckTask, after a
//     webhook): it refreshes the status but never schedules a follow-up.
//
// IsCheck tells them apart.
type PollPayload struct {
	Version int    `json:"v"`
	JobID   string `json:"job_id"`
	// Seq is the link's place in the chain, or CheckSeq.
	Seq int `json:"seq"`
	// Reason says why an out-of-chain check was made (e.g. "webhook").
	Reason string `json:"reason,omitempty"`
	// NotBefore is when a delayed check was scheduled to run, in Unix
	// milliseconds (0 for a check enqueued to run at once). asynq does not
	// tell a handler when its task was due; the worker compares this with
	// the time the check starts to measure how late polls fire.
	NotBefore int64 `json:"not_before,omitempty"`
	// Trace is the W3C traceparent of the job's submit span (the job's
	// record keeps it), so that the step's span joins the job's trace;
	// absent when tracing was off (see docs/tracing.md).
	Trace string `json:"trace,omitempty"`
}

// CheckSeq is the Seq of a status check outside the poll chain.
const CheckSeq = 0

// IsCheck reports whether p is a status check outside the poll chain
// rather than a link of it.
func (p *PollPayload) IsCheck() bool { return p.Seq == CheckSeq }

// DownloadPayload is the payload of TypeDownload.
type DownloadPayload struct {
	Version int    `json:"v"`
	JobID   string `json:"job_id"`
	VideoID string `json:"video_id"`
	// Trace is the W3C traceparent of the job's submit span (the job's
	// record keeps it), so that the step's span joins the job's trace;
	// absent when tracing was off (see docs/tracing.md).
	Trace string `json:"trace,omitempty"`
}

// Task IDs make enqueueing idempotent: asynq refuses a second task with
// the same id while the first exists (ErrTaskIDConflict).

// CreateTaskID is the id of a job's create task.
func CreateTaskID(jobID string) string { return "create:" + jobID }

// PollTaskID is the id of the seq-th check of a job's poll chain.
func PollTaskID(jobID string, seq int) string { return "poll:" + jobID + ":" + strconv.Itoa(seq) }

// CheckTaskID is the id of an out-of-chain status check keyed by key (for
// example a webhook delivery key).
func CheckTaskID(jobID, key string) string { return "check:" + jobID + ":" + key }

// RetryTaskID is the id of a step's task after the job's n-th retry: the
// archived task of the failed attempt keeps the plain id, so a retried
// job's task needs its own.
func RetryTaskID(base string, n int) string {
	if n <= 0 {
		return base
	}
	return base + ":r" + strconv.Itoa(n)
}

// CancelTaskID is the id of a job's cancel task.
func CancelTaskID(jobID string) string { return "cancel:" + jobID }

// DownloadTaskID is the id of a job's download task.
func DownloadTaskID(jobID string) string { return "download:" + jobID }

// Default task options.
const (
	createMaxRetry   = 25
	pollMaxRetry     = 25
	downloadMaxRetry = 25
	createTimeout    = 2 * time.Minute
	pollTimeout      = time.Minute
	downloadTimeout  = 60 * time.Minute
)

// NewCreateTask returns the create task of jobID: queue QueueCreate, 25
// retries, a 2-minute timeout, and TaskID CreateTaskID(jobID).
func NewCreateTask(jobID string, opts ...asynq.Option) (*asynq.Task, error) {
	return newCreateTask(jobID, "", opts...)
}

func newCreateTask(jobID, trace string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(CreatePayload{Version: PayloadVersion, JobID: jobID, Trace: trace})
	if err != nil {
		return nil, err
	}
	base := []asynq.Option{asynq.Queue(QueueCreate), asynq.MaxRetry(createMaxRetry), asynq.Timeout(createTimeout), asynq.TaskID(CreateTaskID(jobID))}
	return asynq.NewTask(TypeCreate, b, append(base, opts...)...), nil
}

// NewPollTask returns check number seq of jobID's poll chain, to run after
// delay: queue QueuePoll, 25 retries, a 1-minute timeout, and TaskID
// PollTaskID(jobID, seq). A positive delay is also recorded in the payload
// as NotBefore.
func NewPollTask(jobID string, seq int, delay time.Duration, opts ...asynq.Option) (*asynq.Task, error) {
	return newPollTask(jobID, "", seq, delay, opts...)
}

func newPollTask(jobID, trace string, seq int, delay time.Duration, opts ...asynq.Option) (*asynq.Task, error) {
	p := PollPayload{Version: PayloadVersion, JobID: jobID, Seq: seq, Trace: trace}
	if delay > 0 {
		p.NotBefore = time.Now().Add(delay).UnixMilli()
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	base := []asynq.Option{asynq.Queue(QueuePoll), asynq.MaxRetry(pollMaxRetry), asynq.Timeout(pollTimeout), asynq.TaskID(PollTaskID(jobID, seq))}
	if delay > 0 {
		base = append(base, asynq.ProcessIn(delay))
	}
	return asynq.NewTask(TypePoll, b, append(base, opts...)...), nil
}

// NewCheckTask returns an immediate out-of-chain status check of jobID,
// deduplicated by key: queue QueuePoll, 3 retries, TaskID
// CheckTaskID(jobID, key).
func NewCheckTask(jobID, key, reason string, opts ...asynq.Option) (*asynq.Task, error) {
	return newCheckTask(jobID, "", key, reason, opts...)
}

func newCheckTask(jobID, trace, key, reason string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(PollPayload{Version: PayloadVersion, JobID: jobID, Seq: CheckSeq, Reason: reason, Trace: trace})
	if err != nil {
		return nil, err
	}
	base := []asynq.Option{asynq.Queue(QueuePoll), asynq.MaxRetry(3), asynq.Timeout(pollTimeout), asynq.TaskID(CheckTaskID(jobID, key))}
	return asynq.NewTask(TypePoll, b, append(base, opts...)...), nil
}

// NewDownloadTask returns the download task of jobID: queue
// QueueDownload, 25 retries, a 60-minute timeout, TaskID
// DownloadTaskID(jobID).
func NewDownloadTask(jobID, videoID string, opts ...asynq.Option) (*asynq.Task, error) {
	return newDownloadTask(jobID, "", videoID, opts...)
}

func newDownloadTask(jobID, trace, videoID string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(DownloadPayload{Version: PayloadVersion, JobID: jobID, VideoID: videoID, Trace: trace})
	if err != nil {
		return nil, err
	}
	base := []asynq.Option{asynq.Queue(QueueDownload), asynq.MaxRetry(downloadMaxRetry), asynq.Timeout(downloadTimeout), asynq.TaskID(DownloadTaskID(jobID))}
	return asynq.NewTask(TypeDownload, b, append(base, opts...)...), nil
}

// CancelPayload is the payload of TypeCancel.
type CancelPayload struct {
	Version int    `json:"v"`
	JobID   string `json:"job_id"`
	// Trace is the W3C traceparent of the job's submit span (the job's
	// record keeps it), so that the step's span joins the job's trace;
	// absent when tracing was off (see docs/tracing.md).
	Trace string `json:"trace,omitempty"`
}

// NewCancelTask returns the cancel task of jobID: queue QueuePoll, 5
// retries, TaskID CancelTaskID(jobID).
func NewCancelTask(jobID string, opts ...asynq.Option) (*asynq.Task, error) {
	return newCancelTask(jobID, "", opts...)
}

func newCancelTask(jobID, trace string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(CancelPayload{Version: PayloadVersion, JobID: jobID, Trace: trace})
	if err != nil {
		return nil, err
	}
	base := []asynq.Option{asynq.Queue(QueuePoll), asynq.MaxRetry(5), asynq.Timeout(pollTimeout), asynq.TaskID(CancelTaskID(jobID))}
	return asynq.NewTask(TypeCancel, b, append(base, opts...)...), nil
}

// CallbackPayload is the payload of TypeCallback.
type CallbackPayload struct {
	Version int    `json:"v"`
	JobID   string `json:"job_id"`
	// Event is the delivery's event id (jobs.Record.CallbackEventID).
	Event string `json:"event"`
	// Trace is the W3C traceparent of the job's submit span (the job's
	// record keeps it), so that the step's span joins the job's trace;
	// absent when tracing was off (see docs/tracing.md).
	Trace string `json:"trace,omitempty"`
}

// CallbackTaskID is the id of the task delivering event (an event id,
// jobs.Record.CallbackEventID): one task per terminal state per retry of
// the job.
func CallbackTaskID(event string) string { return "callback:" + event }

// NewCallbackTask returns the task that delivers event of jobID: queue
// QueuePoll, 25 retries (waits for a receiver that is down do not count:
// the worker bounds those by time), a 2-minute timeout, TaskID
// CallbackTaskID(event).
func NewCallbackTask(jobID, event string, opts ...asynq.Option) (*asynq.Task, error) {
	return newCallbackTask(jobID, "", event, opts...)
}

func newCallbackTask(jobID, trace, event string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(CallbackPayload{Version: PayloadVersion, JobID: jobID, Event: event, Trace: trace})
	if err != nil {
		return nil, err
	}
	base := []asynq.Option{asynq.Queue(QueuePoll), asynq.MaxRetry(25), asynq.Timeout(2 * time.Minute), asynq.TaskID(CallbackTaskID(event))}
	return asynq.NewTask(TypeCallback, b, append(base, opts...)...), nil
}

// versioned is implemented by every payload.
type versioned interface{ check() error }

func (p *CreatePayload) check() error   { return checkCommon(p.Version, p.JobID) }
func (p *PollPayload) check() error     { return checkCommon(p.Version, p.JobID) }
func (p *DownloadPayload) check() error { return checkCommon(p.Version, p.JobID) }
func (p *CancelPayload) check() error   { return checkCommon(p.Version, p.JobID) }
func (p *CallbackPayload) check() error { return checkCommon(p.Version, p.JobID) }

func checkCommon(v int, jobID string) error {
	if v < 1 || v > PayloadVersion {
		return fmt.Errorf("%w: version %d not supported (this build reads up to %d)", ErrBadPayload, v, PayloadVersion)
	}
	if err := ValidateJobID(jobID); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return nil
}

// Decode parses a payload of one of the types above into p (a pointer to
// CreatePayload, PollPayload or DownloadPayload). Errors wrap ErrBadPayload.
func Decode[P any, PP interface {
	*P
	versioned
}](b []byte) (*P, error) {
	p := PP(new(P))
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return (*P)(p), nil
}
