package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// This file is the job's life in one place: the states a job moves
// through, the named transitions between them (Table), and which task
// each state waits on (Wait). Every change of a record after Create is one
// of the operations below, applied by Store.Do in one atomic step that
// writes the record, its history line and its membership of the
// unfinished set together.

// Transition names a state change of the table.
type Transition string

// The transitions. Their names are also the history lines' event names.
const (
	// TAdmitted: the job's tenant had room (TENANT_LIMITS) and its turn
	// (round-robin across tenants): it leaves its tenant's waiting list
	// and its create task is enqueued. Applied by the admission script
	// (Tenancy), or by Store.Do on a Redis Cluster.
	TAdmitted Transition = "admitted"
	// TSubmitting: a create call is about to be made (the record says "in
	// doubt" until its outcome is known).
	TSubmitting Transition = "submitting"
	// TBudgetWait: the job's estimate does not fit a budget; its create
	// waits without an API call.
	TBudgetWait Transition = "budget_wait"
	// TCreateInDoubt: the create call got no answer; the API may have
	// started a job, which must be reconciled before submitting again.
	TCreateInDoubt Transition = "create_in_doubt"
	// TCreateFailed: the API answered the create call with an error;
	// nothing was created.
	TCreateFailed Transition = "create_failed"
	// TReconciled: a reconciliation of an in-doubt create found nothing
	// (the doubt is cleared), or could not decide (a note).
	TReconciled Transition = "reconciled"
	// TAdopted: the API's job is the job's (the video id is saved); the
	// poll chain starts.
	TAdopted Transition = "created"
	// TAdoptedAfterCancel: a create answered after the job was cancelled;
	// its video is kept so that it can be cancelled too.
	TAdoptedAfterCancel Transition = "created_after_cancel"
	// TPollTakenOver: a poll link takes over from a predecessor that died
	// before it advanced the record.
	TPollTakenOver Transition = "poll_taken_over"
	// TObserved: a status check saw the job still running (or failed to
	// ask); a chain link also moves the chain on.
	TObserved Transition = "api_status"
	// TCompleted: the API finished the video; it is to be downloaded.
	TCompleted Transition = "completed"
	// TDownloadStarted: a download attempt starts.
	TDownloadStarted Transition = "download_started"
	// TStored: every output is stored and verified.
	TStored Transition = "stored"
	// TFailed: the job ends without a video: failed, timed out, expired,
	// or cancelled by the API.
	TFailed Transition = "failed"
	// TCancelled: a user cancelled the job.
	TCancelled Transition = "cancelled"
	// TCancelAnswered: the API's answer to the cancellation is recorded.
	TCancelAnswered Transition = "cancel_outcome"
	// TRetried: a failed or timed-out job goes back to the step that
	// failed (see PlanRetry).
	TRetried Transition = "retried"
	// TDeadLettered: the task that failed the job went to the archive;
	// running it again retries the job.
	TDeadLettered Transition = "dead_lettered"
	// TReenqueued: the stranded-job reconciler enqueued the missing task.
	TReenqueued Transition = "reenqueued"
	// TCallbackAttempted: one attempt to deliver the job's terminal state
	// to its callback URL is recorded; the job's state never changes.
	TCallbackAttempted Transition = "callback_attempted"
)

// Rule is one row of the transition table: the states a transition may
// start from and the states it may lead to (To empty: the state stays).
type Rule struct {
	Transition Transition
	From       []State
	To         []State
}

var (
	unfinished = []State{StateTenantWait, StateQueued, StateBudgetWait, StateSubmitting, StateGenerating, StateDownloading}
	ended      = []State{StateFailed, StateTimedOut}
	terminal   = []State{StateStored, StateFailed, StateCancelled, StateExpired, StateTimedOut}
)

// Table is the job's life: every transition, where it may start and where
// it may lead. Store.Do refuses anything else with a *TransitionError.
// docs/state-machine.md's diagram is checked against it.
var Table = []Rule{
	{TAdmitted, []State{StateTenantWait}, []State{StateQueued}},
	{TSubmitting, []State{StateQueued, StateBudgetWait, StateSubmitting}, []State{StateSubmitting}},
	{TBudgetWait, []State{StateQueued, StateBudgetWait, StateSubmitting}, []State{StateBudgetWait}},
	{TCreateInDoubt, []State{StateSubmitting}, nil},
	{TCreateFailed, []State{StateSubmitting}, nil},
	{TReconciled, []State{StateSubmitting}, nil},
	{TAdopted, []State{StateQueued, StateSubmitting}, []State{StateGenerating}},
	{TAdoptedAfterCancel, []State{StateCancelled}, nil},
	{TPollTakenOver, []State{StateGenerating}, nil},
	{TObserved, []State{StateGenerating}, nil},
	{TCompleted, []State{StateGenerating}, []State{StateDownloading}},
	{TDownloadStarted, []State{StateDownloading}, nil},
	{TStored, []State{StateDownloading}, []State{StateStored}},
	{TFailed, unfinished, []State{StateFailed, StateTimedOut, StateExpired, StateCancelled}},
	{TCancelled, unfinished, []State{StateCancelled}},
	{TCancelAnswered, []State{StateCancelled}, nil},
	{TRetried, ended, []State{StateQueued, StateSubmitting, StateGenerating, StateDownloading}},
	{TDeadLettered, AllStates, nil},
	{TReenqueued, unfinished, nil},
	{TCallbackAttempted, terminal, nil},
}

// RuleOf returns the table's row of t.
func RuleOf(t Transition) (Rule, bool) {
	for _, r := range Table {
		if r.Transition == t {
			return r, true
		}
	}
	return Rule{}, false
}

// ErrIllegalTransition marks a transition the table does not allow from
// the job's state (or to the state asked). errors.As gives the
// *TransitionError.
var ErrIllegalTransition = errors.New("illegal job transition")

// TransitionError is a refused transition.
type TransitionError struct {
	JobID      string
	Transition Transition
	// From is the job's state when the transition was refused; To the
	// state asked for ("" when the transition keeps the state).
	From, To State
}

func (e *TransitionError) Error() string {
	to := ""
	if e.To != "" {
		to = " to " + string(e.To)
	}
	return fmt.Sprintf("job %s: %s%s is not allowed from state %s", e.JobID, e.Transition, to, e.From)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// Op is one named transition with exactly the fields it may set. The
// operations are the types of this file; Store.Do applies one.
type Op interface {
	// Transition names the operation's row of the table.
	Transition() Transition
	change(now time.Time) (Change, applyExtra)
}

// Result is what Store.Do did.
type Result struct {
	// Applied is true when the record changed. It is false, with a nil
	// error, when the transition is allowed from the job's state but its
	// guard did not hold (a duplicate or stale task).
	Applied bool
	// State is the job's state after the call.
	State State
	// Record is the record right after the call, read in the same atomic
	// step, for the operations that return it (Adopted,
	// AdoptedAfterCancel, PollTakenOver, DownloadStarted, Retried); else
	// nil. A refused transition of those returns the record as it stands.
	// It is the record without its spec, as Store.Load reads it.
	Record *Record
}

// Do applies op to the job's record in one atomic step: the record, its
// history line and its membership of the unfinished set. A job whose state
// the transition may not start from gives a *TransitionError (nothing
// changed); a missing job an error wrapping ErrNotFound; a video claimed
// by another job a *ClaimError.
func (s *Store) Do(ctx context.Context, id string, op Op) (Result, error) {
	rule, ok := RuleOf(op.Transition())
	if !ok {
		return Result{}, &TransitionError{JobID: id, Transition: op.Transition()}
	}
	c, x := op.change(s.now())
	if c.To != "" && !slices.Contains(rule.To, c.To) {
		return Result{}, &TransitionError{JobID: id, Transition: op.Transition(), To: c.To}
	}
	if c.From == nil {
		c.From = rule.From
	}
	out, err := s.apply(ctx, id, c, x)
	if err != nil {
		return Result{State: out.State}, err
	}
	if !out.Applied && !slices.Contains(c.From, out.State) {
		return Result{State: out.State, Record: out.Record}, &TransitionError{JobID: id, Transition: op.Transition(), From: out.State, To: c.To}
	}
	return Result(out), nil
}

// Admitted moves a job from its tenant's waiting list to queued: its
// create task is enqueued next. On a single Redis the admission script
// applies this transition itself, in the step that picks the job; Store.Do
// applies it on a Cluster and in repairs. The record is returned.
type Admitted struct{ Tenant string }

// Transition implements Op.
func (Admitted) Transition() Transition { return TAdmitted }

func (o Admitted) change(time.Time) (Change, applyExtra) {
	return Change{To: StateQueued, Event: string(TAdmitted), Detail: "tenant " + o.Tenant, Return: true}, applyExtra{}
}

// Submitting starts a create call: the job is in doubt from now until the
// call's outcome is recorded. It applies only while the job has no video
// id and no create in doubt (a concurrent copy of the task cannot start a
// second call).
type Submitting struct{}

// Transition implements Op.
func (Submitting) Transition() Transition { return TSubmitting }

func (Submitting) change(now time.Time) (Change, applyExtra) {
	return Change{To: StateSubmitting,
		Set:     map[string]any{FieldCreateInDoubt: true, FieldCreateStartedAt: now, FieldCreateEndedAt: ""},
		Incr:    map[string]int64{FieldCreateAttempts: 1},
		IfEqual: map[string]any{FieldVideoID: "", FieldCreateInDoubt: false},
		Event:   "create_started",
	}, applyExtra{}
}

// BudgetWaited records that the job's estimated cost does not fit a
// budget (Reason names it): the job waits in budget_wait, without an API
// call, for its create task's delayed retry.
type BudgetWaited struct{ Reason string }

// Transition implements Op.
func (BudgetWaited) Transition() Transition { return TBudgetWait }

func (o BudgetWaited) change(time.Time) (Change, applyExtra) {
	return Change{To: StateBudgetWait, Set: map[string]any{FieldErrorCode: "budget_wait", FieldError: clip(o.Reason)},
		IfEqual: map[string]any{FieldVideoID: "", FieldCreateInDoubt: false},
		Event:   string(TBudgetWait), Detail: clip(o.Reason)}, applyExtra{}
}

// CreateInDoubt records a create call that got no answer: the doubt stays.
type CreateInDoubt struct {
	Code, Err string
}

// Transition implements Op.
func (CreateInDoubt) Transition() Transition { return TCreateInDoubt }

func (o CreateInDoubt) change(now time.Time) (Change, applyExtra) {
	return Change{Set: map[string]any{FieldCreateEndedAt: now, FieldErrorCode: o.Code, FieldError: clip(o.Err)},
		Event: string(TCreateInDoubt), Detail: clip(o.Err)}, applyExtra{}
}

// CreateFailed records a create call the API refused: nothing was created
// and the doubt is cleared.
type CreateFailed struct {
	Code, Err string
}

// Transition implements Op.
func (CreateFailed) Transition() Transition { return TCreateFailed }

func (o CreateFailed) change(now time.Time) (Change, applyExtra) {
	return Change{Set: map[string]any{FieldCreateInDoubt: false, FieldCreateEndedAt: now, FieldErrorCode: o.Code, FieldError: clip(o.Err)},
		Event: string(TCreateFailed), Detail: clip(o.Err)}, applyExtra{}
}

// Reconciled records what a reconciliation of an in-doubt create did.
// NothingCreated clears the doubt: submitting again is safe.
type Reconciled struct {
	Note           string
	NothingCreated bool
}

// Transition implements Op.
func (Reconciled) Transition() Transition { return TReconciled }

func (o Reconciled) change(time.Time) (Change, applyExtra) {
	set := map[string]any{FieldReconcile: o.Note}
	if o.NothingCreated {
		set[FieldCreateInDoubt] = false
	}
	return Change{Set: set, Event: string(TReconciled), Detail: o.Note}, applyExtra{}
}

// Adopted saves the API's job as the job's: it claims the video, saves
// its id and starts the poll chain at link 1, on condition that no video
// id is saved yet, and releases the model's create lock (Model) in the
// same step. The returned record shows whether a webhook arrived before
// the id was saved (the early_webhook_* fields).
type Adopted struct {
	VideoID   string
	APIStatus string
	CreatedAt time.Time
	// Model is the model whose create lock the job holds.
	Model string
	// How says how the job was found ("created in 12ms", "reconciled").
	How string
	// Reconcile, when set, is the reconciliation's note (how it knew the
	// job for its own).
	Reconcile string
	// EstimatedCost is the API's billing.estimated_user_cost, when known.
	EstimatedCost apiclient.Cost
}

// Transition implements Op.
func (Adopted) Transition() Transition { return TAdopted }

func (o Adopted) change(now time.Time) (Change, applyExtra) {
	created := o.CreatedAt
	if created.IsZero() {
		created = now
	}
	set := map[string]any{FieldVideoID: o.VideoID, FieldCreatedAt: created, FieldAPIStatus: o.APIStatus,
		FieldCreateInDoubt: false, FieldCreateEndedAt: now, FieldPollSeq: 1, FieldErrorCode: "", FieldError: ""}
	if o.Reconcile != "" {
		set[FieldReconcile] = o.Reconcile
	}
	if o.EstimatedCost.Known {
		set[FieldEstimatedCost] = o.EstimatedCost
	}
	return Change{To: StateGenerating,
			Set:     set,
			IfEqual: map[string]any{FieldVideoID: ""},
			Event:   string(TAdopted), Detail: "video " + o.VideoID + " (" + o.How + ")",
			Return: true,
		},
		// The lock goes whether or not the record changed: once the video
		// is known, nothing is in doubt.
		applyExtra{claimVideo: o.VideoID, releaseLock: o.Model != "", lockModel: o.Model}
}

// AdoptedAfterCancel keeps the video of a create that finished after the
// job was cancelled, and asks for its cancellation (the cancel outcome is
// cleared: Wait then names the cancel task).
type AdoptedAfterCancel struct {
	VideoID string
	Model   string
}

// Transition implements Op.
func (AdoptedAfterCancel) Transition() Transition { return TAdoptedAfterCancel }

func (o AdoptedAfterCancel) change(now time.Time) (Change, applyExtra) {
	return Change{Set: map[string]any{FieldVideoID: o.VideoID, FieldCreateInDoubt: false, FieldCreatedAt: now, FieldCancelOutcome: ""},
		IfEqual: map[string]any{FieldVideoID: ""}, Return: true,
		Event: string(TAdoptedAfterCancel), Detail: "video " + o.VideoID,
	}, applyExtra{claimVideo: o.VideoID, releaseLock: o.Model != "", lockModel: o.Model}
}

// PollTakenOver moves the chain from link Seq-1 to Seq: the link that the
// predecessor enqueued takes over when the predecessor died before it
// advanced the record.
type PollTakenOver struct{ Seq int }

// Transition implements Op.
func (PollTakenOver) Transition() Transition { return TPollTakenOver }

func (o PollTakenOver) change(time.Time) (Change, applyExtra) {
	return Change{IfEqual: map[string]any{FieldPollSeq: o.Seq - 1}, Set: map[string]any{FieldPollSeq: o.Seq}, Return: true}, applyExtra{}
}

// Observed records one status check of a generating job. A chain link
// (Seq > 0) applies only while it is the current link and moves the chain
// to Seq+1 (the caller has enqueued that link first); an out-of-chain check
// (Seq 0) only records what it saw. A failed check (Code set) keeps the
// status and records the error; a successful one clears it. StatusChanged
// writes a history line.
type Observed struct {
	Seq           int
	APIStatus     string
	Progress      int
	StatusChanged bool
	Code, Err     string
}

// Transition implements Op.
func (Observed) Transition() Transition { return TObserved }

func (o Observed) change(time.Time) (Change, applyExtra) {
	c := Change{Set: map[string]any{}, Incr: map[string]int64{FieldPolls: 1}}
	if o.Seq > 0 {
		c.IfEqual = map[string]any{FieldPollSeq: o.Seq}
		c.Set[FieldPollSeq] = o.Seq + 1
	}
	if o.Code != "" {
		c.Set[FieldErrorCode], c.Set[FieldError] = o.Code, clip(o.Err)
		return c, applyExtra{}
	}
	c.Set[FieldAPIStatus], c.Set[FieldProgress] = o.APIStatus, o.Progress
	if o.Seq > 0 {
		c.Set[FieldErrorCode], c.Set[FieldError] = "", ""
	}
	if o.StatusChanged {
		c.Event, c.Detail = string(TObserved), "api status "+o.APIStatus
	}
	return c, applyExtra{}
}

// Completed records that the API finished the video: the job moves to
// downloading.
type Completed struct {
	APIStatus      string
	Progress       int
	Outputs        int
	ExpectedBytes  int64 // 0: unknown
	ExpectedSHA256 string
	SeenBy         string
	// Billing is what the API charged (see Billing); its settled cost is
	// added to the fleet's spend counters in the same step.
	Billing Billing
}

// Billing is the API's final word on a generation's cost: the settled
// cost (Known false when the API did not say), the billing state, and the
// model whose spend counter (spend:<day> in Redis, field model) it adds
// to. A zero Billing changes nothing.
type Billing struct {
	Settled apiclient.Cost
	State   string
	Model   string
	// Tenant is the job's tenant: its spend is also added to the field
	// "t:<tenant>" of the day's hash (none for DefaultTenant).
	Tenant string
}

// BillingOf is v's billing, for Completed and Failed, of a job of model
// and tenant.
func BillingOf(v *apiclient.Video, model, tenant string) Billing {
	return Billing{Settled: v.Settled(), State: v.Billing.State, Model: model, Tenant: tenant}
}

// apply adds the billing's fields to set and its spend to x.
func (b Billing) apply(set map[string]any, x *applyExtra) {
	if b.Settled.Known {
		set[FieldSettledCost] = b.Settled
		if b.Settled.Micros != 0 && b.Model != "" {
			x.spendModel, x.spendMicros = b.Model, b.Settled.Micros
			if b.Tenant != DefaultTenant {
				x.spendTenant = b.Tenant
			}
		}
	}
	if b.State != "" {
		set[FieldBillingState] = b.State
	}
}

// Transition implements Op.
func (Completed) Transition() Transition { return TCompleted }

func (o Completed) change(now time.Time) (Change, applyExtra) {
	set := map[string]any{FieldAPIStatus: o.APIStatus, FieldProgress: o.Progress, FieldCompletedAt: now, FieldOutputs: o.Outputs,
		FieldExpectedSHA256: o.ExpectedSHA256}
	if o.ExpectedBytes > 0 {
		set[FieldExpectedBytes] = o.ExpectedBytes
	}
	var x applyExtra
	o.Billing.apply(set, &x)
	return Change{To: StateDownloading, Set: set, Incr: map[string]int64{FieldPolls: 1},
		Event: string(TCompleted), Detail: "api status completed, " + o.SeenBy}, x
}

// DownloadStarted counts a download attempt (and notes when the first one
// started) and returns the record: it is the download step's read.
type DownloadStarted struct{}

// Transition implements Op.
func (DownloadStarted) Transition() Transition { return TDownloadStarted }

func (DownloadStarted) change(now time.Time) (Change, applyExtra) {
	return Change{setIfEmpty: map[string]any{FieldDownloadStartedAt: now},
		Incr: map[string]int64{FieldDownloadAttempts: 1}, Return: true}, applyExtra{}
}

// Stored ends the job with its video in storage.
type Stored struct {
	Key, Location string
	Bytes         int64
	SHA256        string
}

// Transition implements Op.
func (Stored) Transition() Transition { return TStored }

func (o Stored) change(now time.Time) (Change, applyExtra) {
	return Change{To: StateStored,
		Set: map[string]any{FieldStorageKey: o.Key, FieldLocation: o.Location, FieldBytes: o.Bytes, FieldSHA256: o.SHA256,
			FieldStoredAt: now, FieldErrorCode: "", FieldError: ""},
		Event: string(TStored), Detail: o.Location}, applyExtra{}
}

// Failed ends an unfinished job without a video: To is StateFailed,
// StateTimedOut, StateExpired or StateCancelled (by the API). Step is
// where it failed: create, poll, download, or generation (the API's own
// failure).
type Failed struct {
	To        State
	Code, Err string
	Step      string
	// APIStatus is the API's last status to keep: one of its terminal
	// statuses when the API ended the generation too, else "" (unknown),
	// so that an ended job never shows the API still at work.
	APIStatus string
	// Billing is the API's billing of the ended generation (void for a
	// failed, cancelled or expired one), when the API reported it.
	Billing Billing
}

// Transition implements Op.
func (Failed) Transition() Transition { return TFailed }

func (o Failed) change(time.Time) (Change, applyExtra) {
	set := map[string]any{FieldErrorCode: o.Code, FieldError: clip(o.Err), FieldFailedStep: o.Step, FieldAPIStatus: o.APIStatus}
	var x applyExtra
	o.Billing.apply(set, &x)
	return Change{To: o.To, Set: set, Event: string(TFailed), Detail: o.Code + ": " + clip(o.Err)}, x
}

// Cancelled ends an unfinished job at a user's request. ClearAPIStatus
// forgets the API's last status (it was still running, and nobody polls
// any more: "" says unknown until the cancel step records the API's
// answer).
type Cancelled struct {
	Reason         string
	ClearAPIStatus bool
}

// Transition implements Op.
func (Cancelled) Transition() Transition { return TCancelled }

func (o Cancelled) change(time.Time) (Change, applyExtra) {
	set := map[string]any{FieldErrorCode: "cancelled_by_user", FieldError: o.Reason}
	if o.ClearAPIStatus {
		set[FieldAPIStatus] = ""
	}
	return Change{To: StateCancelled, Set: set, Event: string(TCancelled), Detail: o.Reason}, applyExtra{}
}

// CancelAnswered records what the API answered when asked to cancel, and
// the status it reported for the video (APIStatus, when it answered with
// one).
type CancelAnswered struct {
	Outcome   string
	APIStatus string
}

// Transition implements Op.
func (CancelAnswered) Transition() Transition { return TCancelAnswered }

func (o CancelAnswered) change(time.Time) (Change, applyExtra) {
	set := map[string]any{FieldCancelOutcome: o.Outcome}
	if o.APIStatus != "" {
		set[FieldAPIStatus] = o.APIStatus
	}
	return Change{Set: set, Event: string(TCancelAnswered), Detail: o.Outcome}, applyExtra{}
}

// DeadLettered records the task ("queue/id") archived with the job's
// failure.
type DeadLettered struct{ Task string }

// Transition implements Op.
func (DeadLettered) Transition() Transition { return TDeadLettered }

func (o DeadLettered) change(time.Time) (Change, applyExtra) {
	return Change{Set: map[string]any{FieldDeadTask: o.Task}}, applyExtra{}
}

// Reenqueued notes that the stranded-job reconciler enqueued the job's
// missing task.
type Reenqueued struct{ Task string }

// Transition implements Op.
func (Reenqueued) Transition() Transition { return TReenqueued }

func (o Reenqueued) change(time.Time) (Change, applyExtra) {
	return Change{Event: string(TReenqueued), Detail: "its " + o.Task + " task was missing"}, applyExtra{}
}

// CallbackAttempted records one attempt to deliver the job's terminal
// state (event Event, made at retry count Retries: an attempt for a job
// retried since does not apply). Status is the delivery's status after
// the attempt (jobs.CallbackRetrying, CallbackDelivered, CallbackFailed);
// Code the receiver's HTTP status (0: no answer); Err what went wrong.
type CallbackAttempted struct {
	Event   string
	Retries int
	Attempt int
	Status  string
	Code    int
	Err     string
}

// Transition implements Op.
func (CallbackAttempted) Transition() Transition { return TCallbackAttempted }

func (o CallbackAttempted) change(now time.Time) (Change, applyExtra) {
	detail := o.Status + ", attempt " + strconv.Itoa(o.Attempt)
	if o.Code != 0 {
		detail += ", http " + strconv.Itoa(o.Code)
	}
	if o.Err != "" {
		detail += ": " + clip(o.Err)
	}
	return Change{Set: map[string]any{FieldCallbackEvent: o.Event, FieldCallbackStatus: o.Status, FieldCallbackAttempts: o.Attempt,
		FieldCallbackLastAt: now, FieldCallbackLastCode: o.Code, FieldCallbackLastError: clip(o.Err)},
		IfEqual: map[string]any{FieldRetries: o.Retries},
		Event:   string(TCallbackAttempted), Detail: detail}, applyExtra{}
}

// Retried brings a failed or timed-out job back; PlanRetry makes it.
type Retried struct {
	From, To State
	// Retries is the job's retry count the plan was made on: a concurrent
	// retry makes this one not apply.
	Retries int
	// Deadline is the moved explicit deadline (zero: none).
	Deadline time.Time
	// NewGeneration forgets the failed generation's video (and its early
	// webhook): the next create makes a new one.
	NewGeneration bool
	// PollSeq is the first link of the new poll chain (To generating).
	PollSeq int
	// How says what the retry does.
	How string
}

// Transition implements Op.
func (Retried) Transition() Transition { return TRetried }

func (o Retried) change(now time.Time) (Change, applyExtra) {
	set := map[string]any{FieldErrorCode: "", FieldError: "", FieldFailedStep: "", FieldFinishedAt: "", FieldRetriedAt: now}
	if !o.Deadline.IsZero() {
		set[FieldDeadline] = o.Deadline
	}
	if o.PollSeq > 0 {
		set[FieldPollSeq] = o.PollSeq
	}
	if o.NewGeneration {
		for _, f := range []string{FieldVideoID, FieldAPIStatus, FieldCompletedAt, FieldEarlyWebhookAt, FieldEarlyWebhookEvent, FieldEarlyWebhookKey, FieldEarlyWebhookVideo} {
			set[f] = ""
		}
	}
	return Change{From: []State{o.From}, To: o.To, Set: set, Incr: map[string]int64{FieldRetries: 1},
		IfEqual: map[string]any{FieldRetries: o.Retries}, Event: string(TRetried), Detail: o.How, Return: true}, applyExtra{}
}

// ErrNotRetryable is returned by PlanRetry for a job that is not failed or
// timed out.
var ErrNotRetryable = errors.New("only failed or timed-out jobs can be retried")

// PlanRetry decides how a failed or timed-out job is retried without
// duplicating its remote generation: a job whose video was generated is
// downloaded again; one still generating is polled again; one whose
// create is in doubt is reconciled again; only a job whose generation
// failed at the API, or that never reached it, is submitted (again). An
// explicit deadline moves by the time since submission.
func PlanRetry(rec *Record, now time.Time) (Retried, error) {
	if rec.State != StateFailed && rec.State != StateTimedOut {
		return Retried{}, fmt.Errorf("retry %s: %w (state %s)", rec.ID, ErrNotRetryable, rec.State)
	}
	r := Retried{From: rec.State, Retries: rec.Retries}
	if !rec.Deadline.IsZero() {
		r.Deadline = now.Add(rec.Deadline.Sub(rec.SubmittedAt))
	}
	remoteFailed := rec.FailedStep == "generation"
	switch {
	case rec.VideoID != "" && !rec.CompletedAt.IsZero() && !remoteFailed:
		r.To, r.How = StateDownloading, "download again"
	case rec.VideoID != "" && !remoteFailed:
		r.To, r.How, r.PollSeq = StateGenerating, "poll again", rec.PollSeq+1
	case rec.CreateInDoubt:
		r.To, r.How = StateSubmitting, "reconcile the in-doubt create again"
	case rec.VideoID != "":
		r.To, r.How, r.NewGeneration = StateQueued, "new generation (the previous one failed at the API)", true
	default:
		r.To, r.How = StateQueued, "submit again"
	}
	return r, nil
}

// Step is a kind of task a job waits on.
type Step string

// The steps. StepNone: the job waits on nothing (it has ended).
const (
	StepNone Step = ""
	// StepTenant: the job waits in its tenant's waiting list (no task)
	// for admission.
	StepTenant   Step = "tenant"
	StepCreate   Step = "create"
	StepPoll     Step = "poll"
	StepDownload Step = "download"
	StepCancel   Step = "cancel"
	// StepCallback: an ended job's terminal state is to be delivered to
	// its callback URL.
	StepCallback Step = "callback"
)

// Wait is the task a record waits on: its step, and what makes the task
// unique for this record (the poll chain's link, the retry generation).
type Wait struct {
	Step Step
	// Seq is the poll chain's current link (StepPoll).
	Seq int
	// Generation is the job's retry count: each retry's tasks have ids of
	// their own, since the failed attempt's task may sit in the archive.
	Generation int
	// VideoID is the job's video (StepDownload, StepCancel).
	VideoID string
}

// WaitsOn is the step each state waits on, for docs/state-machine.md;
// NextWait refines it for one record.
var WaitsOn = map[State]Step{
	StateTenantWait:  StepTenant,
	StateQueued:      StepCreate,
	StateBudgetWait:  StepCreate,
	StateSubmitting:  StepCreate,
	StateGenerating:  StepPoll,
	StateDownloading: StepDownload,
	StateCancelled:   StepCancel,
}

// NextWait says which task must exist for rec now. A generating job whose
// poll chain has not started (the create step saved the id, then died)
// waits on its create task, which starts the chain; a cancelled job waits
// on its cancel task until the API's answer is recorded; an ended job
// waits on nothing.
func NextWait(rec *Record) Wait {
	w := Wait{Step: WaitsOn[rec.State], Generation: rec.Retries, VideoID: rec.VideoID}
	switch rec.State {
	case StateGenerating:
		if rec.PollSeq < 1 {
			w.Step = StepCreate
		}
		w.Seq = rec.PollSeq
	case StateCancelled:
		if rec.CancelOutcome != "" {
			w.Step = StepNone
		}
	}
	if w.Step == StepNone && rec.CallbackDue() {
		// An ended job with a callback to deliver waits on its delivery
		// (a cancelled one after the API's answer to the cancellation).
		w.Step = StepCallback
	}
	if w.Step == StepNone {
		return Wait{}
	}
	return w
}

// clip bounds an error text kept on a record.
func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

// String renders a rule as "from1,from2 -> to (transition)".
func (r Rule) String() string {
	var b strings.Builder
	for i, s := range r.From {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(s))
	}
	b.WriteString(" -> ")
	if len(r.To) == 0 {
		b.WriteString("(same)")
	}
	for i, s := range r.To {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(s))
	}
	return b.String() + " (" + string(r.Transition) + ")"
}
