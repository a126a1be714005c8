// Package jobs holds the durable record of each video job: what was asked,
// where the job is in its life, what the API said, and where the video was
// stored. Records live in Redis, one hash per job plus a capped history
// list, and change only through the named transitions of the job's life
// (Table, in transitions.go), each a conditional, atomic update applied by
// Store.Do, so that a retried or duplicated task can never move a job
// backwards or twice.
package jobs

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// State is where a job is in its life.
type State string

// Job states. Stored, Failed, Cancelled, Expired and TimedOut are terminal.
const (
	// TenantWait: accepted with tenancy on (TENANT_LIMITS or
	// TENANT_FAIRNESS); the job waits in its tenant's list, without a
	// task, until admission (round-robin across tenants, within the
	// tenant's limit) moves it to queued and enqueues its create task.
	StateTenantWait State = "tenant_wait"
	// Queued: accepted; the create call has not been made.
	StateQueued State = "queued"
	// BudgetWait: the job's estimated cost does not fit a budget now; its
	// create waits (a delayed retry of its create task), with no API call.
	StateBudgetWait State = "budget_wait"
	// Submitting: a create call is in flight, or its outcome is in doubt
	// and must be reconciled before anything is submitted again.
	StateSubmitting State = "submitting"
	// Generating: the API has the job (the video id is saved); polling.
	StateGenerating State = "generating"
	// Downloading: the API finished; the video is being stored.
	StateDownloading State = "downloading"
	// Stored: the video is in storage, verified.
	StateStored State = "stored"
	// Failed: the API or a permanent error ended the job.
	StateFailed State = "failed"
	// Cancelled: cancelled by a user or by the API.
	StateCancelled State = "cancelled"
	// Expired: the API expired the job.
	StateExpired State = "expired"
	// TimedOut: the job's overall deadline passed before it finished.
	StateTimedOut State = "timed_out"
)

// Terminal reports whether s is final.
func (s State) Terminal() bool {
	switch s {
	case StateStored, StateFailed, StateCancelled, StateExpired, StateTimedOut:
		return true
	}
	return false
}

// AllStates lists every state in life order.
var AllStates = []State{StateTenantWait, StateQueued, StateBudgetWait, StateSubmitting, StateGenerating, StateDownloading, StateStored, StateFailed, StateCancelled, StateExpired, StateTimedOut}

// ErrNotFound is returned for a job id without a record.
var ErrNotFound = errors.New("job not found")

// Record is one job. Times are UTC; a zero time means "not yet". A long
// Request, and Labels, are kept under a key of their own beside the
// record's hash; Store.Get reads them, Store.Load does not.
type Record struct {
	ID      string                  `json:"id"`
	State   State                   `json:"state"`
	Request apiclient.CreateRequest `json:"request,omitempty"`
	Labels  map[string]string       `json:"labels,omitempty"`
	// Tenant is whose job it is (DefaultTenant when the producer named
	// none); the record stores it only when it is not the default.
	Tenant string `json:"tenant"`

	VideoID   string `json:"video_id,omitempty"`
	APIStatus string `json:"api_status,omitempty"`
	Progress  int    `json:"progress,omitempty"`
	Outputs   int    `json:"outputs,omitempty"`

	SubmittedAt       time.Time `json:"submitted_at,omitzero"`      // accepted by the producer
	CreateStartedAt   time.Time `json:"create_started_at,omitzero"` // last create call started
	CreateEndedAt     time.Time `json:"create_ended_at,omitzero"`   // last create call ended (zero while in flight or after a crash)
	CreatedAt         time.Time `json:"created_at,omitzero"`        // the API accepted the job
	CompletedAt       time.Time `json:"completed_at,omitzero"`      // the API reported a terminal status
	DownloadStartedAt time.Time `json:"download_started_at,omitzero"`
	StoredAt          time.Time `json:"stored_at,omitzero"`
	FinishedAt        time.Time `json:"finished_at,omitzero"` // reached a terminal state
	UpdatedAt         time.Time `json:"updated_at,omitzero"`
	// Deadline ends the job as timed out when it passes; zero means the
	// worker's default applies from SubmittedAt.
	Deadline time.Time `json:"deadline,omitzero"`
	// RetentionMS is how long, in milliseconds, the job is kept in Redis
	// once finished, when it differs from the store's (zero: the store's;
	// see Store.SetRetention).
	RetentionMS int64 `json:"retention_ms,omitempty"`

	// CreateInDoubt is set while a create call is in flight and stays set
	// when its outcome is unknown: the next attempt reconciles first.
	CreateInDoubt    bool `json:"create_in_doubt,omitempty"`
	CreateAttempts   int  `json:"create_attempts,omitempty"`
	Polls            int  `json:"polls,omitempty"`
	PollSeq          int  `json:"poll_seq,omitempty"`
	DownloadAttempts int  `json:"download_attempts,omitempty"`

	ExpectedBytes  int64  `json:"expected_bytes,omitempty"`
	ExpectedSHA256 string `json:"expected_sha256,omitempty"`

	StorageKey string `json:"storage_key,omitempty"`
	Location   string `json:"location,omitempty"`
	Bytes      int64  `json:"bytes,omitempty"`
	SHA256     string `json:"sha256,omitempty"`

	ErrorCode string `json:"error_code,omitempty"`
	Error     string `json:"error,omitempty"`
	// Reconcile says what the last reconciliation of an in-doubt create did.
	Reconcile string `json:"reconcile,omitempty"`
	// FailedStep is the step that ended a failed job: create, poll,
	// download or generation (the API's own failure).
	FailedStep string `json:"failed_step,omitempty"`

	// Webhook deliveries received for this job (verified, first time),
	// duplicates of deliveries already applied, and the last one's event
	// type, time and delivery attempt number.
	WebhookDeliveries  int       `json:"webhook_deliveries,omitempty"`
	WebhookDuplicates  int       `json:"webhook_duplicates,omitempty"`
	LastWebhookEvent   string    `json:"last_webhook_event,omitempty"`
	LastWebhookAt      time.Time `json:"last_webhook_at,omitzero"`
	LastWebhookAttempt int       `json:"last_webhook_attempt,omitempty"`

	// The last early delivery: a verified delivery that arrived while the
	// job had no video id yet (the API finished before the create call's
	// answer was saved), recorded by RecordEarlyWebhook: when, its event
	// type, its delivery key and the video its event named. The create
	// step, on saving the video id, sees it in the same atomic update and
	// checks the job's status at once instead of at the first scheduled
	// poll. It never moves the job by itself.
	EarlyWebhookAt    time.Time `json:"early_webhook_at,omitzero"`
	EarlyWebhookEvent string    `json:"early_webhook_event,omitempty"`
	EarlyWebhookKey   string    `json:"early_webhook_key,omitempty"`
	EarlyWebhookVideo string    `json:"early_webhook_video,omitempty"`

	// Retries counts operator retries of a finished job; RetriedAt is the
	// last one. A retry restarts the default deadline from RetriedAt.
	Retries   int       `json:"retries,omitempty"`
	RetriedAt time.Time `json:"retried_at,omitzero"`
	// CancelOutcome says what the API answered when asked to cancel.
	CancelOutcome string `json:"cancel_outcome,omitempty"`
	// DeadTask is the queue and id ("queue/id") of the task archived when
	// the job failed: running that task again (asynqmon's "retry" on the
	// dead letter) retries the job.
	DeadTask string `json:"dead_task,omitempty"`

	// CallbackURL is where the job's terminal state is POSTed (empty:
	// nowhere). The delivery of the current terminal state
	// (CallbackEventID) is recorded by CallbackAttempted: its attempts,
	// the last attempt's time, HTTP status (0: no answer) and error, and
	// its status: CallbackRetrying, CallbackDelivered or CallbackFailed.
	// The fields describe the delivery named by CallbackEvent; a retried
	// job that ends again has a new event.
	CallbackURL       string    `json:"callback_url,omitempty"`
	CallbackEvent     string    `json:"callback_event,omitempty"`
	CallbackStatus    string    `json:"callback_status,omitempty"`
	CallbackAttempts  int       `json:"callback_attempts,omitempty"`
	CallbackLastAt    time.Time `json:"callback_last_at,omitzero"`
	CallbackLastCode  int       `json:"callback_last_code,omitempty"`
	CallbackLastError string    `json:"callback_last_error,omitempty"`
	// What the API says the job costs, in exact micro-dollars: its
	// estimate after the create (EstimatedCost), and once the generation
	// ended the settled cost and the billing state (pending, estimated,
	// settled, void: a failed, cancelled or expired generation settles at
	// 0.00). Unknown costs have Known false.
	EstimatedCost apiclient.Cost `json:"estimated_cost_usd,omitzero"`
	SettledCost   apiclient.Cost `json:"settled_cost_usd,omitzero"`
	BillingState  string         `json:"billing_state,omitempty"`

	// ArchivedAt is when the job's history (and, for a Compact record,
	// the rest of it) was last written to its archive document
	// (ArchiveKey) by the retention sweep; zero: never. Compact says the
	// record in Redis was then cut down to what status, the job API and a
	// resubmission's idempotency need (see CompactFields): the fields it
	// lacks are in the archive.
	ArchivedAt time.Time `json:"archived_at,omitzero"`
	Compact    bool      `json:"compact,omitempty"`
	// RequestSum is, on a Compact record, the digest of the request,
	// labels and callback URL the job was submitted with (RequestSum),
	// which a resubmission of its id is checked against: the record no
	// longer holds them.
	RequestSum string `json:"-"`

	// Trace is the W3C traceparent of the job's submit span when the
	// producer traced it (package internal/tracing), "" otherwise: every
	// task made for the job carries it, so that each step's span joins the
	// job's one trace, whichever path enqueued the task (a handler, a
	// retry, dead-letter revival, the stranded-job reconciler).
	Trace string `json:"trace,omitempty"`
}

// The statuses of a callback delivery.
const (
	CallbackRetrying  = "retrying"
	CallbackDelivered = "delivered"
	CallbackFailed    = "failed"
)

// CallbackEventID is the id of the delivery of the job's current state:
// "<job>:<state>:<retries>", the same on every attempt of that delivery
// and different after a retry of the job.
func (r *Record) CallbackEventID() string {
	return r.ID + ":" + string(r.State) + ":" + strconv.Itoa(r.Retries)
}

// CallbackDue reports whether the job has a callback to deliver: it has
// ended, has a callback URL, and the delivery of this terminal state has
// not finished (delivered or failed for good).
func (r *Record) CallbackDue() bool {
	if r.CallbackURL == "" || !r.State.Terminal() {
		return false
	}
	return r.CallbackEvent != r.CallbackEventID() || (r.CallbackStatus != CallbackDelivered && r.CallbackStatus != CallbackFailed)
}

// Field names of the Redis hash. They are part of the stored format.
const (
	FieldID                 = "id"
	FieldVersion            = "v"
	FieldState              = "state"
	FieldRequest            = "request"
	FieldLabels             = "labels"
	FieldVideoID            = "video_id"
	FieldAPIStatus          = "api_status"
	FieldProgress           = "progress"
	FieldOutputs            = "outputs"
	FieldSubmittedAt        = "submitted_at"
	FieldCreateStartedAt    = "create_started_at"
	FieldCreateEndedAt      = "create_ended_at"
	FieldCreatedAt          = "created_at"
	FieldCompletedAt        = "completed_at"
	FieldDownloadStartedAt  = "download_started_at"
	FieldStoredAt           = "stored_at"
	FieldFinishedAt         = "finished_at"
	FieldUpdatedAt          = "updated_at"
	FieldDeadline           = "deadline"
	FieldRequestSum         = "request_sum"
	FieldCreateInDoubt      = "create_in_doubt"
	FieldCreateAttempts     = "create_attempts"
	FieldPolls              = "polls"
	FieldPollSeq            = "poll_seq"
	FieldDownloadAttempts   = "download_attempts"
	FieldExpectedBytes      = "expected_bytes"
	FieldExpectedSHA256     = "expected_sha256"
	FieldStorageKey         = "storage_key"
	FieldLocation           = "location"
	FieldBytes              = "bytes"
	FieldSHA256             = "sha256"
	FieldErrorCode          = "error_code"
	FieldError              = "error"
	FieldReconcile          = "reconcile"
	FieldFailedStep         = "failed_step"
	FieldWebhookDeliveries  = "webhook_deliveries"
	FieldWebhookDuplicates  = "webhook_duplicates"
	FieldLastWebhookEvent   = "last_webhook_event"
	FieldLastWebhookAt      = "last_webhook_at"
	FieldLastWebhookAttempt = "last_webhook_attempt"
	FieldEarlyWebhookAt     = "early_webhook_at"
	FieldEarlyWebhookEvent  = "early_webhook_event"
	FieldEarlyWebhookKey    = "early_webhook_key"
	FieldEarlyWebhookVideo  = "early_webhook_video"
	FieldRetries            = "retries"
	FieldRetriedAt          = "retried_at"
	FieldCancelOutcome      = "cancel_outcome"
	FieldDeadTask           = "dead_task"
	FieldRetention          = "retention_ms"
	FieldCallbackURL        = "callback_url"
	FieldCallbackEvent      = "callback_event"
	FieldCallbackStatus     = "callback_status"
	FieldCallbackAttempts   = "callback_attempts"
	FieldCallbackLastAt     = "callback_last_at"
	FieldCallbackLastCode   = "callback_last_code"
	FieldCallbackLastError  = "callback_last_error"
	// FieldWaiter is set by Store.MarkWaiter: the terminal transition
	// publishes on the job's done channel only when it is set.
	FieldWaiter        = "waiter"
	FieldEstimatedCost = "estimated_cost_usd" // decimal dollars; empty: unknown
	FieldSettledCost   = "settled_cost_usd"   // decimal dollars; empty: unknown
	FieldBillingState  = "billing_state"
	FieldArchivedAt    = "archived_at"
	FieldCompact       = "compact"
	// FieldTenant is the job's tenant, absent for DefaultTenant.
	FieldTenant = "tenant"
	FieldTrace  = "trace"
)

// recordVersion is the stored format version: 2 may keep the request and
// labels under the job's spec key rather than in the record (records of
// version 1 are read as before).
const recordVersion = "2"

// encodeValue turns a field value into its stored string.
func encodeValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case State:
		return string(x)
	case time.Time:
		if x.IsZero() {
			return ""
		}
		return strconv.FormatInt(x.UnixMilli(), 10)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		if x {
			return "1"
		}
		return "0"
	case nil:
		return ""
	case apiclient.Cost:
		if !x.Known {
			return ""
		}
		return apiclient.FormatMicros(x.Micros)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func decodeRecord(m map[string]string) (*Record, error) {
	r := &Record{
		ID:        m[FieldID],
		State:     State(m[FieldState]),
		Tenant:    m[FieldTenant],
		VideoID:   m[FieldVideoID],
		APIStatus: m[FieldAPIStatus],

		ExpectedSHA256:    m[FieldExpectedSHA256],
		StorageKey:        m[FieldStorageKey],
		Location:          m[FieldLocation],
		SHA256:            m[FieldSHA256],
		ErrorCode:         m[FieldErrorCode],
		Error:             m[FieldError],
		Reconcile:         m[FieldReconcile],
		FailedStep:        m[FieldFailedStep],
		LastWebhookEvent:  m[FieldLastWebhookEvent],
		CancelOutcome:     m[FieldCancelOutcome],
		DeadTask:          m[FieldDeadTask],
		CallbackURL:       m[FieldCallbackURL],
		CallbackEvent:     m[FieldCallbackEvent],
		CallbackStatus:    m[FieldCallbackStatus],
		CallbackLastError: m[FieldCallbackLastError],
		BillingState:      m[FieldBillingState],
		Trace:             m[FieldTrace],
		CreateInDoubt:     m[FieldCreateInDoubt] == "1",
		Compact:           m[FieldCompact] == "1",
		RequestSum:        m[FieldRequestSum],

		EarlyWebhookEvent: m[FieldEarlyWebhookEvent],
		EarlyWebhookKey:   m[FieldEarlyWebhookKey],
		EarlyWebhookVideo: m[FieldEarlyWebhookVideo],
	}
	if r.Tenant == "" {
		r.Tenant = DefaultTenant
	}
	if s := m[FieldRequest]; s != "" {
		if err := json.Unmarshal([]byte(s), &r.Request); err != nil {
			return nil, errors.New("job record: request: " + err.Error())
		}
	}
	if s := m[FieldLabels]; s != "" {
		if err := json.Unmarshal([]byte(s), &r.Labels); err != nil {
			return nil, errors.New("job record: labels: " + err.Error())
		}
	}
	ints := map[string]*int{FieldProgress: &r.Progress, FieldOutputs: &r.Outputs, FieldCreateAttempts: &r.CreateAttempts, FieldPolls: &r.Polls, FieldPollSeq: &r.PollSeq, FieldDownloadAttempts: &r.DownloadAttempts,
		FieldWebhookDeliveries: &r.WebhookDeliveries, FieldWebhookDuplicates: &r.WebhookDuplicates, FieldLastWebhookAttempt: &r.LastWebhookAttempt, FieldRetries: &r.Retries,
		FieldCallbackAttempts: &r.CallbackAttempts, FieldCallbackLastCode: &r.CallbackLastCode}
	for f, p := range ints {
		if s := m[f]; s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, errors.New("job record: " + f + ": not a number")
			}
			*p = n
		}
	}
	if s := m[FieldRetention]; s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, errors.New("job record: " + FieldRetention + ": not a number")
		}
		r.RetentionMS = ms
	}
	int64s := map[string]*int64{FieldExpectedBytes: &r.ExpectedBytes, FieldBytes: &r.Bytes}
	for f, p := range int64s {
		if s := m[f]; s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, errors.New("job record: " + f + ": not a number")
			}
			*p = n
		}
	}
	for f, p := range map[string]*apiclient.Cost{FieldEstimatedCost: &r.EstimatedCost, FieldSettledCost: &r.SettledCost} {
		if s := m[f]; s != "" {
			n, err := apiclient.ParseMicros(s)
			if err != nil {
				return nil, errors.New("job record: " + f + ": not an amount")
			}
			*p = apiclient.Cost{Micros: n, Known: true}
		}
	}
	times := map[string]*time.Time{
		FieldSubmittedAt: &r.SubmittedAt, FieldCreateStartedAt: &r.CreateStartedAt, FieldCreateEndedAt: &r.CreateEndedAt,
		FieldCreatedAt: &r.CreatedAt, FieldCompletedAt: &r.CompletedAt, FieldDownloadStartedAt: &r.DownloadStartedAt,
		FieldStoredAt: &r.StoredAt, FieldFinishedAt: &r.FinishedAt, FieldUpdatedAt: &r.UpdatedAt, FieldDeadline: &r.Deadline, FieldLastWebhookAt: &r.LastWebhookAt, FieldRetriedAt: &r.RetriedAt,
		FieldEarlyWebhookAt: &r.EarlyWebhookAt, FieldCallbackLastAt: &r.CallbackLastAt, FieldArchivedAt: &r.ArchivedAt,
	}
	for f, p := range times {
		if s := m[f]; s != "" {
			ms, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, errors.New("job record: " + f + ": not a time")
			}
			*p = time.UnixMilli(ms).UTC()
		}
	}
	return r, nil
}

// Event is one line of a job's history.
type Event struct {
	At     time.Time `json:"at"`
	State  State     `json:"state"`
	Event  string    `json:"event"`
	Detail string    `json:"detail,omitempty"`
}

// storedEvent is an Event as a history line stores it: short keys and the
// time in Unix milliseconds (a history line is most of a job's memory in
// Redis). Lines of older releases, in Event's own JSON, are read too.
type storedEvent struct {
	T int64  `json:"t"`
	S State  `json:"s"`
	E string `json:"e"`
	D string `json:"d,omitempty"`
}

// decodeEvent reads a history line of this release or an older one.
func decodeEvent(raw string) (Event, bool) {
	var s storedEvent
	if strings.HasPrefix(raw, `{"t":`) && json.Unmarshal([]byte(raw), &s) == nil {
		return Event{At: time.UnixMilli(s.T).UTC(), State: s.S, Event: s.E, Detail: s.D}, true
	}
	var e Event
	if json.Unmarshal([]byte(raw), &e) != nil {
		return Event{}, false
	}
	return e, true
}
