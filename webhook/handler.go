package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/tasks"
)

// MaxBody is the largest delivery accepted (1 MiB).
const MaxBody = 1 << 20

// Path is where the server mounts the receiver.
const Path = "/webhooks/aistats"

// Event is a delivery's payload.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt apiclient.Time  `json:"created_at"`
	Delivery  json.RawMessage `json:"delivery,omitempty"`
	Data      apiclient.Video `json:"data"`
}

// Enqueuer enqueues tasks; *asynq.Client is one.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Handler receives webhook deliveries. It is an http.Handler.
type Handler struct {
	verifier *Verifier
	jobs     *jobs.Store
	enqueue  Enqueuer
	log      *slog.Logger
	met      *metrics.Metrics
	now      func() time.Time
	rej      rejections

	// beforeEarly, when set (tests), runs between reading a job without a
	// video id and recording an early delivery on it.
	beforeEarly func()
}

// WithMetrics makes h count deliveries by outcome in m; it returns h.
func (h *Handler) WithMetrics(m *metrics.Metrics) *Handler {
	h.met = m
	return h
}

// NewHandler returns the receiver. log may be nil. Rejected requests are
// counted in memory: run Run (or call Flush) for them to reach the
// fleet-wide counters.
func NewHandler(v *Verifier, store *jobs.Store, enq Enqueuer, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{verifier: v, jobs: store, enqueue: enq, log: log, now: time.Now, rej: rejections{pending: make(chan struct{}, 1)}}
}

// reply is the JSON answer of every request.
type reply struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	JobID  string `json:"job_id,omitempty"`
}

// Outcomes counted fleet-wide (jobs.Store.CountWebhookOutcome).
const (
	OutcomeAccepted     = "accepted"
	OutcomeDuplicate    = "duplicate"
	OutcomeEarly        = "early"
	OutcomeBadSignature = "bad_signature"
	OutcomeBadTimestamp = "bad_timestamp"
	OutcomeBadRequest   = "bad_request"
	OutcomeUnknownJob   = "unknown_job"
	OutcomeMismatch     = "video_mismatch"
	OutcomeError        = "error"
)

var safeKey = regexp.MustCompile(`[^A-Za-z0-9_.:-]`)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reject(ctx, w, http.StatusMethodNotAllowed, OutcomeBadRequest, "method "+r.Method+" not allowed; deliveries are POST")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.reject(ctx, w, http.StatusUnsupportedMediaType, OutcomeBadRequest, "content type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.reject(ctx, w, http.StatusRequestEntityTooLarge, OutcomeBadRequest, fmt.Sprintf("body larger than %d bytes", MaxBody))
			return
		}
		h.reject(ctx, w, http.StatusBadRequest, OutcomeBadRequest, "could not read body")
		return
	}
	hd := ReadHeaders(r.Header)
	if err := h.verifier.Verify(hd, body); err != nil {
		switch {
		case errors.Is(err, ErrMissingHeaders):
			h.reject(ctx, w, http.StatusBadRequest, OutcomeBadRequest, err.Error())
		case errors.Is(err, ErrBadTimestamp):
			h.reject(ctx, w, http.StatusUnauthorized, OutcomeBadTimestamp, err.Error())
		default:
			h.reject(ctx, w, http.StatusUnauthorized, OutcomeBadSignature, err.Error())
		}
		return
	}
	// From here the body is the API's own words.
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.Data.ID == "" {
		h.reject(ctx, w, http.StatusBadRequest, OutcomeBadRequest, "payload is not a video event (need JSON with data.id)")
		return
	}
	eventType := firstNonEmpty(ev.Type, hd.EventType)
	key, attempt := signedDelivery(ev, body, hd.Attempt)
	hd.Attempt = attempt

	jobID, status, reason := h.findJob(ctx, r, ev.Data.ID)
	if status == 0 && jobID == "" {
		// No job id in the URL (webhook endpoint ids) and no job owns the
		// video yet: the create's answer is not saved yet.
		owner, done := h.earlyVideo(ctx, w, ev.Data.ID, eventType, key, hd.Attempt)
		if done {
			return
		}
		jobID = owner
	}
	if status != 0 {
		outcome := OutcomeUnknownJob
		if status == http.StatusConflict {
			outcome = OutcomeMismatch
		}
		if status >= 500 {
			outcome = OutcomeError
		}
		h.reject(ctx, w, status, outcome, reason)
		return
	}
	rec, err := h.jobs.Get(ctx, jobID)
	if err != nil {
		h.reject(ctx, w, http.StatusInternalServerError, OutcomeError, "job store unavailable")
		return
	}
	if rec.VideoID == "" {
		// The API announced the job before our create call's answer was
		// saved.
		if rec.State.Terminal() || !wantsCheck(eventType) {
			h.count(ctx, OutcomeEarly, "")
			writeJSON(w, http.StatusAccepted, reply{Status: "ignored", Reason: "job has no video id yet", JobID: jobID})
			return
		}
		if h.beforeEarly != nil {
			h.beforeEarly()
		}
		// Record it on the job, on condition that the id is still not
		// saved. The create step saves the id with an update that returns
		// the record: it sees this delivery and checks the job's status at
		// once, or this sees the id and the delivery goes the usual way.
		// The event's video cannot be matched with the job yet, so this
		// changes nothing but when the job's own video is next checked.
		out, err := h.jobs.RecordEarlyWebhook(ctx, jobID, jobs.WebhookDelivery{Key: key, EventType: eventType, Attempt: hd.Attempt, VideoID: ev.Data.ID})
		if err != nil {
			h.reject(ctx, w, http.StatusInternalServerError, OutcomeError, "job store unavailable")
			return
		}
		switch out.Result {
		case jobs.EarlyRecorded:
			h.count(ctx, OutcomeEarly, "")
			h.log.InfoContext(ctx, "webhook early: status check when the video id is saved", "job_id", jobID, "video_id", ev.Data.ID, "event", eventType, "delivery_key", key, "attempt", hd.Attempt)
			writeJSON(w, http.StatusAccepted, reply{Status: "early", Reason: "job has no video id yet; its status is checked as soon as it is saved", JobID: jobID})
			return
		case jobs.EarlyDuplicate:
			h.count(ctx, OutcomeDuplicate, "")
			h.log.InfoContext(ctx, "webhook duplicate acknowledged", "job_id", jobID, "video_id", ev.Data.ID, "event", eventType, "delivery_key", key, "attempt", hd.Attempt)
			writeJSON(w, http.StatusOK, reply{Status: "duplicate", JobID: jobID})
			return
		case jobs.EarlyHasVideo:
			// Saved meanwhile: go on as if it had been saved all along.
			rec.VideoID, rec.State = out.VideoID, out.State
		default: // ended meanwhile
			h.count(ctx, OutcomeEarly, "")
			writeJSON(w, http.StatusAccepted, reply{Status: "ignored", Reason: "job has no video id and has ended", JobID: jobID})
			return
		}
	}
	switch {
	case rec.VideoID != ev.Data.ID:
		h.reject(ctx, w, http.StatusConflict, OutcomeMismatch, "the event's video does not belong to this job")
		return
	}

	seen, err := h.jobs.SeenWebhook(ctx, jobID, key)
	if err != nil {
		h.reject(ctx, w, http.StatusInternalServerError, OutcomeError, "job store unavailable")
		return
	}
	// The early delivery again: the create step checked the job for it
	// (RecordWebhook counts it as a duplicate).
	seen = seen || (key == rec.EarlyWebhookKey && ev.Data.ID == rec.EarlyWebhookVideo)
	if !seen && wantsCheck(eventType) && !rec.State.Terminal() {
		// Reconcile, do not trust: check the job's status now, at most
		// once per CheckInterval (enqueueCheck).
		if err := h.enqueueCheck(ctx, rec, "webhook "+eventType); err != nil {
			h.log.ErrorContext(ctx, "webhook: enqueue status check", "job_id", jobID, "err", err.Error())
			h.reject(ctx, w, http.StatusInternalServerError, OutcomeError, "could not schedule the status check; retry")
			return
		}
	}
	first, err := h.jobs.RecordWebhook(ctx, jobID, jobs.WebhookDelivery{Key: key, EventType: eventType, Attempt: hd.Attempt, VideoID: ev.Data.ID, KeepKeysFor: h.seenKeysTTL()})
	if err != nil {
		h.reject(ctx, w, http.StatusInternalServerError, OutcomeError, "job store unavailable")
		return
	}
	if !first {
		h.count(ctx, OutcomeDuplicate, "")
		h.log.InfoContext(ctx, "webhook duplicate acknowledged", "job_id", jobID, "video_id", rec.VideoID, "event", eventType, "delivery_key", key, "attempt", hd.Attempt)
		writeJSON(w, http.StatusOK, reply{Status: "duplicate", JobID: jobID})
		return
	}
	h.count(ctx, OutcomeAccepted, "")
	h.log.InfoContext(ctx, "webhook accepted", "job_id", jobID, "video_id", rec.VideoID, "event", eventType, "delivery_key", key, "attempt", hd.Attempt)
	writeJSON(w, http.StatusOK, reply{Status: "accepted", JobID: jobID})
}

// findJob finds the job a delivery is about: the job_id query parameter
// that the worker put into the webhook URL, checked against the owner of
// the video; or, without it (webhook endpoint ids), the video's owner. A
// non-zero status means the request is refused with that status and
// reason; "" and 0 mean that there is no job id and no job owns the video
// yet.
func (h *Handler) findJob(ctx context.Context, r *http.Request, videoID string) (string, int, string) {
	owners, err := h.jobs.Owners(ctx, []string{videoID})
	if err != nil {
		return "", http.StatusInternalServerError, "job store unavailable"
	}
	owner := owners[videoID]
	jobID := r.URL.Query().Get("job_id")
	switch {
	case jobID != "" && tasks.ValidateJobID(jobID) != nil:
		return "", http.StatusBadRequest, "job_id is not a valid job id"
	case jobID != "" && owner != "" && owner != jobID:
		return "", http.StatusConflict, "the event's video belongs to another job"
	case jobID == "" && owner == "":
		return "", 0, "" // unclaimed yet: earlyVideo
	case jobID == "":
		jobID = owner
	}
	if _, err := h.jobs.Get(ctx, jobID); errors.Is(err, jobs.ErrNotFound) {
		return "", http.StatusNotFound, "unknown job"
	} else if err != nil {
		return "", http.StatusInternalServerError, "job store unavailable"
	}
	return jobID, 0, ""
}

// earlyVideo handles a delivery that names no job (webhook endpoint ids)
// about a video that no job has claimed yet: the API delivered before the
// create's answer was saved. The delivery is kept under the video id for
// jobs.EarlyVideoTTL (jobs.Store.RecordEarlyVideo) and the create step
// checks the job's status at once when it saves that id. When a job has
// claimed the video meanwhile, it returns that job (done false) and the
// delivery goes the usual way. Progress ticks are not kept.
func (h *Handler) earlyVideo(ctx context.Context, w http.ResponseWriter, videoID, eventType, key string, attempt int) (string, bool) {
	if !wantsCheck(eventType) {
		h.count(ctx, OutcomeEarly, "")
		writeJSON(w, http.StatusAccepted, reply{Status: "ignored", Reason: "no job owns this video yet"})
		return "", true
	}
	owner, err := h.jobs.RecordEarlyVideo(ctx, jobs.WebhookDelivery{Key: key, EventType: eventType, Attempt: attempt, VideoID: videoID})
	if err != nil {
		h.reject(ctx, w, http.StatusInternalServerError, OutcomeError, "job store unavailable")
		return "", true
	}
	if owner != "" {
		return owner, false
	}
	h.count(ctx, OutcomeEarly, "")
	h.log.InfoContext(ctx, "webhook early: no job owns the video yet; status check when its id is saved", "video_id", videoID, "event", eventType, "delivery_key", key, "attempt", attempt)
	writeJSON(w, http.StatusAccepted, reply{Status: "early", Reason: "no job owns this video yet; its job's status is checked as soon as the id is saved"})
	return "", true
}

// wantsCheck reports whether an event type calls for a status check:
// every event but progress ticks.
func wantsCheck(eventType string) bool {
	return !strings.HasSuffix(eventType, ".progress")
}

// reject answers a refused request. The rejection is counted in memory
// (Flush, Run) and its log line sampled (LogEvery): a flood of forged
// requests costs no Redis command and few log lines.
func (h *Handler) reject(ctx context.Context, w http.ResponseWriter, status int, outcome, reason string) {
	h.met.Webhook(outcome)
	if logIt, suppressed := h.rej.add(h.now(), outcome, reason); logIt {
		h.log.WarnContext(ctx, "webhook rejected", "status", status, "outcome", outcome, "reason", reason, "suppressed", suppressed)
	}
	writeJSON(w, status, reply{Status: "rejected", Reason: reason})
}

func (h *Handler) count(ctx context.Context, outcome, reason string) {
	h.met.Webhook(outcome)
	if err := h.jobs.CountWebhookOutcome(context.WithoutCancel(ctx), outcome, reason); err != nil {
		h.log.WarnContext(ctx, "webhook: count outcome", "err", err.Error())
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
