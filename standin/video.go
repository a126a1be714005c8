package standin

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// defaultLinkTTL is the lifetime of signed links in video objects
// (reference section 6).
const defaultLinkTTL = 900 * time.Second

// snapshot is a copy of a job plus its derived status, taken under the lock
// and rendered outside it.
type snapshot struct {
	job
	status   status
	progress int
	hook     hookView // webhook bookkeeping
}

func (s *Server) snapshotLocked(j *job, now time.Time) snapshot {
	st, progress := s.statusLocked(j, now)
	sn := snapshot{job: *j, status: st, progress: progress}
	if j.hook != nil && j.hook.view != nil {
		sn.hook = *j.hook.view
	}
	return sn
}

// ensureSHA fills the sha256 of output 0 into a completed snapshot, hashing
// outside the lock and caching the result on the job.
func (s *Server) ensureSHA(sn *snapshot) {
	if sn.status != statusCompleted || sn.hasSHA {
		return
	}
	sn.sha, sn.hasSHA = contentSHA256(s.cfg.Seed, sn.id, 0, s.cfg.ContentSize), true
	s.mu.Lock()
	if j := s.byID[sn.id]; j != nil {
		j.sha, j.hasSHA = sn.sha, true
	}
	s.mu.Unlock()
}

// opt is a JSON member that can be omitted (zero), null, or set.
type opt[T any] struct {
	present bool
	v       *T
}

func some[T any](v T) opt[T]  { return opt[T]{present: true, v: &v} }
func null[T any]() opt[T]     { return opt[T]{present: true} }
func (o opt[T]) IsZero() bool { return !o.present }
func (o opt[T]) MarshalJSON() ([]byte, error) {
	if o.v == nil {
		return []byte("null"), nil
	}
	return json.Marshal(*o.v)
}

// videoJSON is the video object of reference 3.3.
type videoJSON struct {
	ID               string       `json:"id"`
	Object           string       `json:"object"`
	Status           string       `json:"status"`
	LifecycleStatus  string       `json:"lifecycle_status"`
	OutputAccess     string       `json:"output_access"`
	Progress         int          `json:"progress"`
	ProgressSource   string       `json:"progress_source"`
	PollingURL       string       `json:"polling_url"`
	PollAfterSeconds int          `json:"poll_after_seconds,omitempty"`
	CancelURL        *string      `json:"cancel_url"`
	GenerationID     string       `json:"generation_id"`
	NativeVideoID    string       `json:"native_video_id"`
	CreatedAt        string       `json:"created_at"`
	StartedAt        *string      `json:"started_at"`
	CompletedAt      *string      `json:"completed_at"`
	Provider         string       `json:"provider"`
	Model            string       `json:"model"`
	Seconds          int32        `json:"seconds"`
	Size             string       `json:"size"`
	Audio            *bool        `json:"audio"`
	Asset            *assetJSON   `json:"asset"`
	Outputs          []outputJSON `json:"outputs"`
	ContentURL       string       `json:"content_url,omitempty"`
	DownloadURL      opt[string]  `json:"download_url,omitzero"`
	ExpiresAt        opt[int64]   `json:"expires_at,omitzero"`
	Usage            usageJSON    `json:"usage"`
	Billing          billingJSON  `json:"billing"`
	Error            *string      `json:"error"`
	Webhook          *webhookJSON `json:"webhook,omitempty"`
	// Kind is "video" in webhook data only.
	Kind string `json:"kind,omitempty"`
	// Delivery bookkeeping (gateway source), present once a webhook
	// attempt was made.
	NextWebhookRetryAt      opt[string] `json:"next_webhook_retry_at,omitzero"`
	LastWebhookProgress     opt[int]    `json:"last_webhook_progress,omitzero"`
	LastWebhookProgressAt   opt[string] `json:"last_webhook_progress_at,omitzero"`
	LastWebhookDispatchedAt opt[string] `json:"last_webhook_dispatched_at,omitzero"`
}

type assetJSON struct {
	ID              string `json:"id"`
	MimeType        string `json:"mime_type"`
	Bytes           int64  `json:"bytes"`
	SHA256          string `json:"sha256"`
	Width           int32  `json:"width"`
	Height          int32  `json:"height"`
	DurationSeconds int32  `json:"duration_seconds"`
}

type outputJSON struct {
	Index          int    `json:"index"`
	MimeType       string `json:"mime_type"`
	BytesAvailable bool   `json:"bytes_available"`
	ContentURL     string `json:"content_url,omitempty"`
	DownloadURL    string `json:"download_url,omitempty"`
	ExpiresAt      int64  `json:"expires_at,omitempty"`
}

type usageJSON struct {
	Cost    float64 `json:"cost"`
	CostUSD float64 `json:"cost_usd"`
	IsBYOK  bool    `json:"is_byok"`
}

type billingJSON struct {
	Currency              string  `json:"currency"`
	EstimatedProviderCost *string `json:"estimated_provider_cost"`
	EstimatedUserCost     *string `json:"estimated_user_cost"`
	SettledProviderCost   *string `json:"settled_provider_cost"`
	SettledUserCost       *string `json:"settled_user_cost"`
	State                 string  `json:"state"`
	Billable              bool    `json:"billable"`
	TotalNanos            int64   `json:"total_nanos"`
	EstimatedNanos        int64   `json:"estimated_nanos"`
	ReservedNanos         int64   `json:"reserved_nanos"`
	ReservationID         string  `json:"reservation_id"`
	ReservationStatus     string  `json:"reservation_status"`
	ChargeReason          *string `json:"charge_reason"`
	Charged               bool    `json:"charged"`
	BilledAt              *string `json:"billed_at,omitempty"`
}

type webhookJSON struct {
	URL        string               `json:"url,omitempty"`         // inline revision
	EndpointID string               `json:"endpoint_id,omitempty"` // endpoint revision
	Events     []string             `json:"events"`
	HasSecret  bool                 `json:"has_secret"`
	Delivery   *webhookDeliveryJSON `json:"delivery,omitempty"` // once attempted
	Attempts   []webhookAttemptJSON `json:"attempts,omitempty"` // the last 10
}

// webhookDeliveryJSON is the gateway's delivery summary.
type webhookDeliveryJSON struct {
	TotalAttempts       int      `json:"total_attempts"`
	DeliveredEvents     int      `json:"delivered_events"`
	DeliveredEventTypes []string `json:"delivered_event_types"` // delivery keys, sorted
	PendingRetries      int      `json:"pending_retries"`
	NextRetryAt         *string  `json:"next_retry_at"`
	LastAttemptAt       *string  `json:"last_attempt_at"`
	LastAttemptStatus   *string  `json:"last_attempt_status"`
	LastResponseStatus  *int     `json:"last_response_status"`
	LastDeliveredAt     *string  `json:"last_delivered_at"`
	LastFailureAt       *string  `json:"last_failure_at"`
	LastErrorMessage    *string  `json:"last_error_message"`
}

// webhookAttemptJSON is one attempt as the gateway records it, plus
// event_id.
type webhookAttemptJSON struct {
	ID             string  `json:"id"`
	EventID        string  `json:"event_id"`
	DeliveryKey    string  `json:"delivery_key"`
	EventType      string  `json:"event_type"`
	Status         string  `json:"status"`
	AttemptNumber  int     `json:"attempt_number"`
	MaxAttempts    int     `json:"max_attempts"`
	TriedAt        string  `json:"tried_at"`
	DeliveredAt    *string `json:"delivered_at"`
	NextRetryAt    *string `json:"next_retry_at"`
	ResponseStatus *int    `json:"response_status"`
	ErrorMessage   *string `json:"error_message"`
}

func isoOrNull(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return ptr(isoMillis(t))
}

func nonZero[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

// renderHook fills the webhook bookkeeping of v from h, once an attempt
// was made.
func renderHook(v *videoJSON, h *hookView) {
	if h.total == 0 || v.Webhook == nil {
		return
	}
	last := h.attempts[len(h.attempts)-1]
	v.Webhook.Delivery = &webhookDeliveryJSON{
		TotalAttempts:       h.total,
		DeliveredEvents:     len(h.deliveredKeys),
		DeliveredEventTypes: h.deliveredKeys,
		PendingRetries:      h.pendingRetries,
		NextRetryAt:         isoOrNull(h.nextRetry),
		LastAttemptAt:       ptr(isoMillis(last.at)),
		LastAttemptStatus:   ptr(last.status),
		LastResponseStatus:  nonZero(last.httpStatus),
		LastDeliveredAt:     isoOrNull(h.lastDelivered),
		LastFailureAt:       isoOrNull(h.lastFailure),
		LastErrorMessage:    nonZero(h.lastError),
	}
	v.Webhook.Attempts = make([]webhookAttemptJSON, 0, len(h.attempts))
	for _, a := range h.attempts {
		tried := isoMillis(a.at)
		aj := webhookAttemptJSON{
			ID:             a.key + ":" + strconv.Itoa(a.attempt) + ":" + tried,
			EventID:        a.eventID,
			DeliveryKey:    a.key,
			EventType:      a.typ,
			Status:         a.status,
			AttemptNumber:  a.attempt,
			MaxAttempts:    webhookMaxAttempts,
			TriedAt:        tried,
			NextRetryAt:    isoOrNull(a.nextRetry),
			ResponseStatus: nonZero(a.httpStatus),
			ErrorMessage:   nonZero(a.errMsg),
		}
		if a.status == AttemptDelivered {
			aj.DeliveredAt = &tried
		}
		v.Webhook.Attempts = append(v.Webhook.Attempts, aj)
	}
	v.NextWebhookRetryAt = null[string]()
	if !h.nextRetry.IsZero() {
		v.NextWebhookRetryAt = some(isoMillis(h.nextRetry))
	}
	v.LastWebhookProgress, v.LastWebhookProgressAt = null[int](), null[string]()
	if h.lastProgress > 0 {
		v.LastWebhookProgress, v.LastWebhookProgressAt = some(h.lastProgress), some(isoMillis(h.lastProgressAt))
	}
	v.LastWebhookDispatchedAt = some(isoMillis(h.lastDispatched))
}

// failureMessage is the error of every failed job.
const failureMessage = "provider failed to generate the video (stand-in simulated failure)"

func isoMillis(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func ptr[T any](v T) *T { return &v }

// usd formats nanodollars as a decimal string with at least two decimals.
func usd(nanos int64) string {
	s := fmt.Sprintf("%d.%09d", nanos/1e9, nanos%1e9)
	s = strings.TrimRight(s, "0")
	if i := strings.IndexByte(s, '.'); len(s)-i < 3 {
		s += strings.Repeat("0", 3-(len(s)-i))
	}
	return s
}

// idSuffix is the hex part of a "G-…" id, reused for derived ids.
func idSuffix(id string) string { return strings.TrimPrefix(id, "G-") }

func contentPath(id string, index int) string {
	p := "/v1/videos/" + id + "/content"
	if index > 0 {
		p += "?index=" + strconv.Itoa(index)
	}
	return p
}

// render builds the video object for a snapshot; base is scheme://host of
// the request and now the time the snapshot was taken.
func (s *Server) render(sn *snapshot, base string, now time.Time) videoJSON {
	v := videoJSON{
		ID:               sn.id,
		Object:           "video",
		Status:           sn.status.String(),
		LifecycleStatus:  sn.status.lifecycle(),
		OutputAccess:     sn.access.String(),
		Progress:         sn.progress,
		ProgressSource:   "estimated",
		PollingURL:       base + "/v1/videos/" + sn.id,
		PollAfterSeconds: s.cfg.PollAfterSeconds,
		GenerationID:     sn.id,
		NativeVideoID:    "op_" + idSuffix(sn.id),
		CreatedAt:        isoMillis(sn.createdAt),
		Provider:         sn.provider,
		Model:            sn.model,
		Seconds:          sn.seconds,
		Size:             sn.size,
		Outputs:          []outputJSON{},
		Billing: billingJSON{
			Currency:              "usd",
			EstimatedProviderCost: ptr(usd(sn.costNanos)),
			EstimatedUserCost:     ptr(usd(sn.costNanos)),
			State:                 "pending",
			Billable:              true,
			EstimatedNanos:        sn.costNanos,
			ReservedNanos:         sn.costNanos,
			ReservationID:         "res_" + idSuffix(sn.id),
			ReservationStatus:     "held",
		},
	}
	if sn.status == statusQueued || (sn.status.terminal() && sn.status != statusCompleted) {
		v.ProgressSource = "none"
	}
	if sn.audio >= 0 {
		v.Audio = ptr(sn.audio == 1)
	}
	if sn.status != statusQueued {
		v.StartedAt = ptr(isoMillis(sn.startAt))
	}
	if sn.access.bytes() {
		v.ContentURL = base + contentPath(sn.id, 0)
	}
	if sn.access.signedURL() {
		v.DownloadURL, v.ExpiresAt = null[string](), null[int64]()
	}
	if sn.webhook != nil {
		v.Webhook = &webhookJSON{URL: sn.webhook.url, Events: sn.webhook.events, HasSecret: sn.webhook.secret != ""}
		if sn.webhook.endpointID != "" { // the endpoint's URL is the workspace's, not echoed
			v.Webhook.URL, v.Webhook.EndpointID = "", sn.webhook.endpointID
		}
		renderHook(&v, &sn.hook)
	}
	if !sn.status.terminal() {
		return v
	}

	v.CompletedAt = ptr(isoMillis(sn.endAt))
	b := &v.Billing
	b.ReservedNanos = 0
	if sn.status != statusCompleted {
		zero := usd(0)
		b.SettledProviderCost, b.SettledUserCost = &zero, &zero
		b.State, b.Billable, b.ReservationStatus = "void", false, "released"
		if sn.status == statusFailed {
			v.Error = ptr(failureMessage)
		}
		return v
	}
	cost := usd(sn.costNanos)
	b.SettledProviderCost, b.SettledUserCost = &cost, &cost
	b.State, b.TotalNanos, b.ReservationStatus = "settled", sn.costNanos, "captured"
	b.ChargeReason, b.Charged, b.BilledAt = ptr("video_generation_completed"), true, ptr(isoMillis(sn.endAt))
	v.Usage.Cost = float64(sn.costNanos) / 1e9
	v.Usage.CostUSD = v.Usage.Cost
	v.Asset = &assetJSON{
		ID:              "ast_" + idSuffix(sn.id),
		MimeType:        "video/mp4",
		Bytes:           s.cfg.ContentSize,
		SHA256:          hex.EncodeToString(sn.sha[:]),
		Width:           sn.width,
		Height:          sn.height,
		DurationSeconds: sn.seconds,
	}
	expires := now.Add(defaultLinkTTL).Unix()
	for i := range int(sn.outputs) {
		o := outputJSON{Index: i, MimeType: "video/mp4", BytesAvailable: sn.access.bytes()}
		if sn.access.bytes() {
			o.ContentURL = base + contentPath(sn.id, i)
		}
		if sn.access.signedURL() {
			o.DownloadURL, o.ExpiresAt = s.signedURL(base, sn.id, i, "attachment", expires), expires
		}
		v.Outputs = append(v.Outputs, o)
	}
	if sn.access.signedURL() {
		v.DownloadURL, v.ExpiresAt = some(v.Outputs[0].DownloadURL), some(expires)
	}
	return v
}

// modelPrices are per-second list prices in nanodollars; other models cost
// defaultPriceNanos.
var modelPrices = map[string]int64{
	"google/veo-3.1-lite": 50_000_000,
	"google/veo-3.1":      400_000_000,
	"openai/sora-2":       100_000_000,
}

const defaultPriceNanos = 100_000_000

// pricePerSecondNanos is the model's price: the configured one, else the
// list price.
func (s *Server) pricePerSecondNanos(model string) int64 {
	if usd, ok := s.cfg.PricePerSecond[model]; ok {
		return int64(math.Round(usd * 1e9))
	}
	return pricePerSecondNanos(model)
}

func pricePerSecondNanos(model string) int64 {
	if p, ok := modelPrices[model]; ok {
		return p
	}
	return defaultPriceNanos
}
