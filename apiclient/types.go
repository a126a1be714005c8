package apiclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
)

// Status is the canonical status of a video job.
type Status string

// The documented statuses. Completed, Failed, Cancelled and Expired are
// terminal.
const (
	StatusQueued     Status = "queued"
	StatusProcessing Status = "processing"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusCancelled  Status = "cancelled"
	StatusExpired    Status = "expired"
)

// ParseStatus maps a status string, including every alias the reference
// lists (pending, in_progress, running, canceled, succeeded, error), to its
// canonical Status. Matching ignores case and surrounding space. An unknown
// value is returned as it is; it is not terminal.
func ParseStatus(s string) Status {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "pending", "queued":
		return StatusQueued
	case "in_progress", "running", "processing":
		return StatusProcessing
	case "succeeded", "completed":
		return StatusCompleted
	case "error", "failed":
		return StatusFailed
	case "canceled", "cancelled":
		return StatusCancelled
	case "expired":
		return StatusExpired
	}
	return Status(v)
}

// Terminal reports whether s is a final status: completed, failed,
// cancelled or expired. Unknown statuses are not terminal.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusExpired:
		return true
	}
	return false
}

// UnmarshalJSON normalises aliases while decoding.
func (s *Status) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = ""
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	*s = ParseStatus(v)
	return nil
}

// Time is a timestamp the API sends either as unix seconds (an integer, or
// milliseconds when the value is too large to be seconds) or as an ISO-8601
// string. The zero Time means absent or null.
type Time struct{ time.Time }

// UnmarshalJSON accepts null, a number or a string.
func (t *Time) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" || string(b) == `""` {
		t.Time = time.Time{}
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("time: %w", err)
		}
		if n, err := strconv.ParseFloat(s, 64); err == nil {
			t.Time = unixTime(n)
			return nil
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"} {
			if v, err := time.Parse(layout, s); err == nil {
				t.Time = v.UTC()
				return nil
			}
		}
		return fmt.Errorf("time: cannot parse %q", s)
	}
	n, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("time: cannot parse %s", b)
	}
	t.Time = unixTime(n)
	return nil
}

// MarshalJSON writes RFC 3339 with milliseconds, or null for the zero Time.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
}

func unixTime(n float64) time.Time {
	if n > 1e12 { // milliseconds
		return time.UnixMilli(int64(n)).UTC()
	}
	sec := int64(n)
	return time.Unix(sec, int64((n-float64(sec))*1e9)).UTC()
}

// Video is the API's video job object. Fields the worker does not use are
// left out; unknown fields are ignored.
type Video struct {
	ID               string       `json:"id"`
	Object           string       `json:"object,omitempty"`
	Status           Status       `json:"status"`
	LifecycleStatus  string       `json:"lifecycle_status,omitempty"`
	OutputAccess     string       `json:"output_access,omitempty"`
	Progress         *int         `json:"progress,omitempty"`
	PollingURL       string       `json:"polling_url,omitempty"`
	PollAfterSeconds *int         `json:"poll_after_seconds,omitempty"`
	GenerationID     string       `json:"generation_id,omitempty"`
	NativeVideoID    string       `json:"native_video_id,omitempty"`
	Provider         string       `json:"provider,omitempty"`
	Model            string       `json:"model,omitempty"`
	CreatedAt        Time         `json:"created_at"`
	StartedAt        Time         `json:"started_at"`
	CompletedAt      Time         `json:"completed_at"`
	Seconds          *float64     `json:"seconds,omitempty"`
	Size             string       `json:"size,omitempty"`
	Asset            *Asset       `json:"asset,omitempty"`
	Outputs          []Output     `json:"outputs,omitempty"`
	ContentURL       string       `json:"content_url,omitempty"`
	DownloadURL      string       `json:"download_url,omitempty"`
	ExpiresAt        *int64       `json:"expires_at,omitempty"`
	Error            *VideoError  `json:"error,omitempty"`
	Webhook          *WebhookInfo `json:"webhook,omitempty"`
	// Usage and Billing say what the job costs (final at terminal states).
	Usage   Usage   `json:"usage"`
	Billing Billing `json:"billing"`
}

// UnmarshalJSON reads id, falling back to video_id (a cookbook snippet uses
// that name).
func (v *Video) UnmarshalJSON(b []byte) error {
	type plain Video
	var aux struct {
		plain
		VideoID string `json:"video_id"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*v = Video(aux.plain)
	if v.ID == "" {
		v.ID = aux.VideoID
	}
	return nil
}

// PollAfter is the server's suggested wait before the next status check,
// or 0 when the object does not say. A value beyond what a Duration holds
// saturates instead of wrapping to a short or negative wait.
func (v *Video) PollAfter() time.Duration {
	if v.PollAfterSeconds == nil || *v.PollAfterSeconds <= 0 {
		return 0
	}
	if s := int64(*v.PollAfterSeconds); s > int64(math.MaxInt64/time.Second) {
		return math.MaxInt64
	}
	return time.Duration(*v.PollAfterSeconds) * time.Second
}

// OutputCount is the number of outputs the job produced (at least 1).
func (v *Video) OutputCount() int {
	if len(v.Outputs) > 1 {
		return len(v.Outputs)
	}
	return 1
}

// Asset describes the finished video; several fields may be absent.
type Asset struct {
	ID              string   `json:"id,omitempty"`
	MimeType        string   `json:"mime_type,omitempty"`
	Bytes           *int64   `json:"bytes,omitempty"`
	SHA256          string   `json:"sha256,omitempty"`
	Width           *int     `json:"width,omitempty"`
	Height          *int     `json:"height,omitempty"`
	DurationSeconds *float64 `json:"duration_seconds,omitempty"`
}

// Output is one rendered output of a job.
type Output struct {
	Index          int    `json:"index"`
	MimeType       string `json:"mime_type,omitempty"`
	BytesAvailable Flag   `json:"bytes_available,omitempty"`
	ContentURL     string `json:"content_url,omitempty"`
	DownloadURL    string `json:"download_url,omitempty"`
	ExpiresAt      *int64 `json:"expires_at,omitempty"`
}

// Flag is a boolean the API may send as true/false or as a number (non-zero
// means true).
type Flag bool

// UnmarshalJSON accepts a boolean, a number or null.
func (f *Flag) UnmarshalJSON(b []byte) error {
	switch s := string(bytes.TrimSpace(b)); s {
	case "true":
		*f = true
	case "false", "null", "0":
		*f = false
	default:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("flag: cannot parse %s", s)
		}
		*f = n != 0
	}
	return nil
}

// VideoError is the final provider error of a failed job. The API sends
// either a string or an object; both decode here.
type VideoError struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// UnmarshalJSON accepts a string, an object with code/message (or
// error/description), or null.
func (e *VideoError) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &e.Message)
	}
	var aux struct {
		Code        string `json:"code"`
		Message     string `json:"message"`
		Error       string `json:"error"`
		Description string `json:"description"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return fmt.Errorf("video error: %w", err)
	}
	e.Code = firstNonEmpty(aux.Code, aux.Error)
	e.Message = firstNonEmpty(aux.Message, aux.Description)
	return nil
}

func (e *VideoError) String() string {
	if e == nil {
		return ""
	}
	switch {
	case e.Code != "" && e.Message != "":
		return e.Code + ": " + e.Message
	case e.Message != "":
		return e.Message
	}
	return e.Code
}

// WebhookInfo is the webhook configuration echoed on a video; secrets are
// never returned by the API.
type WebhookInfo struct {
	URL string `json:"url,omitempty"`
	// EndpointID is the workspace endpoint subscribed (the newest API
	// revision), which echoes no URL.
	EndpointID string   `json:"endpoint_id,omitempty"`
	Events     []string `json:"events,omitempty"`
	HasSecret  bool     `json:"has_secret,omitempty"`
}

// VideoList is one page of GET /videos.
type VideoList struct {
	Object  string  `json:"object"`
	Data    []Video `json:"data"`
	FirstID string  `json:"first_id"`
	LastID  string  `json:"last_id"`
	HasMore bool    `json:"has_more"`
	// ServerDate is the response's Date header (zero when absent): the
	// API's clock, to the second.
	ServerDate time.Time `json:"-"`
}

// CreateRequest is the body of POST /videos. Model and Prompt are required.
type CreateRequest struct {
	Model              string               `json:"model"`
	Prompt             string               `json:"prompt"`
	Duration           int                  `json:"duration,omitempty"`
	Size               string               `json:"size,omitempty"`
	Resolution         string               `json:"resolution,omitempty"`
	AspectRatio        string               `json:"aspect_ratio,omitempty"`
	Seed               *int64               `json:"seed,omitempty"`
	SampleCount        int                  `json:"sample_count,omitempty"`
	NegativePrompt     string               `json:"negative_prompt,omitempty"`
	GenerateAudio      *bool                `json:"generate_audio,omitempty"`
	EnhancePrompt      *bool                `json:"enhance_prompt,omitempty"`
	CompressionQuality *int                 `json:"compression_quality,omitempty"`
	PersonGeneration   string               `json:"person_generation,omitempty"`
	ResizeMode         string               `json:"resize_mode,omitempty"`
	InputReferences    []json.RawMessage    `json:"input_references,omitempty"`
	ProviderParams     map[string]any       `json:"provider_params,omitempty"`
	Output             *OutputOptions       `json:"output,omitempty"`
	Webhook            *WebhookSubscription `json:"webhook,omitempty"`
	Provider           map[string]any       `json:"provider,omitempty"`
}

// OutputOptions selects how the content may be fetched: "bytes",
// "signed_url" or "both" (the default).
type OutputOptions struct {
	Access string `json:"access,omitempty"`
}

// WebhookSubscription subscribes a URL to job events. Secret signs the
// deliveries; it is sent to the API and never logged.
//
// The API's newest revision takes only a workspace-managed endpoint
// (EndpointID, with Events) and refuses the inline URL and Secret: set
// EndpointID and leave those empty; the endpoint's own URL and secret
// are configured at the API.
type WebhookSubscription struct {
	URL        string   `json:"url,omitempty"`
	EndpointID string   `json:"endpoint_id,omitempty"`
	Events     []string `json:"events,omitempty"`
	Secret     string   `json:"secret,omitempty"`
}

// LogValue keeps the secret out of logs.
func (w WebhookSubscription) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", w.URL),
		slog.String("endpoint_id", w.EndpointID),
		slog.Any("events", w.Events),
		slog.Bool("has_secret", w.Secret != ""),
	)
}

// ListParams are the query of GET /videos.
type ListParams struct {
	Limit  int      // 1–200; 0 means the API default (50)
	Status []Status // filter; empty means all
	Order  string   // "asc" or "desc" (default, newest first)
	After  string   // cursor: a video id
}

// Content is a streamed video body. The caller must close Body.
type Content struct {
	Body        io.ReadCloser
	ContentType string
	// Length is the Content-Length, or -1 when unknown.
	Length int64
}

// DownloadURLRequest is the optional body of POST /videos/{id}/download_url.
type DownloadURLRequest struct {
	Index       int    `json:"index,omitempty"`
	TTLSeconds  int    `json:"ttl_seconds,omitempty"`
	Disposition string `json:"disposition,omitempty"`
}

// DownloadLink is a short-lived signed link that needs no bearer. Treat it
// as a secret until it expires.
type DownloadLink struct {
	URL       string `json:"download_url"`
	ExpiresAt int64  `json:"expires_at"`
}

// Deleted is the answer of DELETE /videos/{id}.
type Deleted struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// String keeps the secret out of formatted output.
func (w WebhookSubscription) String() string {
	return fmt.Sprintf("{url:%s endpoint_id:%s events:%v has_secret:%t}", w.URL, w.EndpointID, w.Events, w.Secret != "")
}

// GoString keeps the secret out of %#v output.
func (w WebhookSubscription) GoString() string { return w.String() }
