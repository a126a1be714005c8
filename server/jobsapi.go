package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

type roleKey struct{}

func withRole(ctx context.Context, r Role) context.Context {
	return context.WithValue(ctx, roleKey{}, r)
}

// roleOf returns the caller's role as set by Auth.
func roleOf(ctx context.Context) Role {
	r, _ := ctx.Value(roleKey{}).(Role)
	return r
}

// maxRequestBody caps the job API's request bodies.
const maxRequestBody = 256 << 10

// maxTimeoutSeconds is tasks.MaxTimeout in seconds.
const maxTimeoutSeconds = int(tasks.MaxTimeout / time.Second)

// createJobRequest is the body of POST /v1/jobs: the API's generation
// fields, plus a client job id, a timeout, labels and a callback URL.
type createJobRequest struct {
	JobID string `json:"job_id,omitempty"`
	apiclient.CreateRequest
	TimeoutSeconds int               `json:"timeout_seconds,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	// CallbackURL receives the job's terminal state (see the README,
	// "Completion callbacks").
	CallbackURL string `json:"callback_url,omitempty"`
}

// jobView is a job as the API shows it.
type jobView struct {
	*jobs.Record
	History []jobs.Event `json:"history,omitempty"`
}

// jobList is a page of jobs.
type jobList struct {
	Data       []*jobs.Record `json:"data"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// apiError is the job API's error body.
type apiError struct {
	Error  string            `json:"error"`
	Reason string            `json:"reason"`
	Fields map[string]string `json:"fields,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, reason string, fields map[string]string) {
	writeJSON(w, status, apiError{Error: code, Reason: reason, Fields: fields})
}

// jobsAPI serves /v1/jobs.
type jobsAPI struct {
	producer *tasks.Client
}

func (a *jobsAPI) routes(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	mux.Handle("POST /v1/jobs", wrap(http.HandlerFunc(a.create)))
	mux.Handle("GET /v1/jobs", wrap(http.HandlerFunc(a.list)))
	mux.Handle("GET /v1/jobs/{id}", wrap(http.HandlerFunc(a.get)))
	mux.Handle("POST /v1/jobs/{id}/cancel", wrap(http.HandlerFunc(a.cancel)))
	mux.Handle("POST /v1/jobs/{id}/retry", wrap(http.HandlerFunc(a.retry)))
}

func (a *jobsAPI) create(w http.ResponseWriter, r *http.Request) {
	var req createJobRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if req.JobID != "" && req.JobID != key {
			writeError(w, http.StatusBadRequest, "validation_error", "job_id and the Idempotency-Key header differ",
				map[string]string{"job_id": "must equal the Idempotency-Key header when both are given"})
			return
		}
		req.JobID = key
	}
	// Bounded before it becomes a Duration: 18446744074 s would wrap to a
	// deadline a fraction of a second away.
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxTimeoutSeconds {
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request", map[string]string{"timeout_seconds": fmt.Sprintf(
			"must be between 1 and %d (%s); omit it for the default", maxTimeoutSeconds, tasks.MaxTimeout)})
		return
	}
	// Of concurrent requests with one key exactly one creates the job
	// (202); the others find it (200) or differ from it (409).
	id, created, err := a.producer.SubmitCreated(r.Context(), tasks.Request{
		JobID: tasks.JobID(req.JobID), Video: req.CreateRequest,
		Timeout: time.Duration(req.TimeoutSeconds) * time.Second, Labels: req.Labels, CallbackURL: req.CallbackURL,
	})
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		fields := ve.Fields
		if msg, ok := fields["timeout"]; ok { // this API's name for it
			fields = maps.Clone(fields)
			delete(fields, "timeout")
			fields["timeout_seconds"] = msg
		}
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request", fields)
		return
	case errors.Is(err, tasks.ErrJobIDConflict):
		writeError(w, http.StatusConflict, "job_id_conflict", "this job id was already used for a different request", nil)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not store the job; retry with the same job id", nil)
		return
	}
	rec, err := a.producer.Status(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "job stored but could not be read back", nil)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusAccepted
	}
	w.Header().Set("Location", "/v1/jobs/"+string(id))
	writeJSON(w, status, jobView{Record: rec})
}

func (a *jobsAPI) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, ok := a.load(w, r, id)
	if !ok {
		return
	}
	hist, err := a.producer.History(r.Context(), tasks.JobID(id))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not read the job's history", nil)
		return
	}
	writeJSON(w, http.StatusOK, jobView{Record: rec, History: hist})
}

func (a *jobsAPI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := tasks.ListOptions{Cursor: q.Get("cursor")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 200 {
			writeError(w, http.StatusBadRequest, "validation_error", "invalid query", map[string]string{"limit": "must be an integer from 1 to 200"})
			return
		}
		opts.Limit = n
	}
	for _, v := range q["status"] {
		for _, s := range strings.Split(v, ",") {
			st := jobs.State(strings.TrimSpace(s))
			if !validState(st) {
				writeError(w, http.StatusBadRequest, "validation_error", "invalid query",
					map[string]string{"status": fmt.Sprintf("unknown state %q", st)})
				return
			}
			opts.States = append(opts.States, st)
		}
	}
	recs, next, err := a.producer.List(r.Context(), opts)
	if errors.Is(err, tasks.ErrInvalidRequest) {
		writeError(w, http.StatusBadRequest, "validation_error", "invalid query", map[string]string{"cursor": "malformed"})
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not list jobs", nil)
		return
	}
	if recs == nil {
		recs = []*jobs.Record{}
	}
	writeJSON(w, http.StatusOK, jobList{Data: recs, NextCursor: next})
}

func (a *jobsAPI) cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := a.load(w, r, id); !ok {
		return
	}
	rec, err := a.producer.Cancel(r.Context(), tasks.JobID(id), "cancelled through the job API")
	switch {
	case errors.Is(err, tasks.ErrNotCancellable):
		writeError(w, http.StatusConflict, "not_cancellable", err.Error(), nil)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not cancel the job; retry", nil)
	default:
		writeJSON(w, http.StatusOK, jobView{Record: rec})
	}
}

func (a *jobsAPI) retry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := a.load(w, r, id); !ok {
		return
	}
	rec, err := a.producer.Retry(r.Context(), tasks.JobID(id))
	switch {
	case errors.Is(err, tasks.ErrNotRetryable):
		writeError(w, http.StatusConflict, "not_retryable", err.Error(), nil)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not retry the job; try again", nil)
	default:
		writeJSON(w, http.StatusAccepted, jobView{Record: rec})
	}
}

// load reads a job or writes the error answer.
func (a *jobsAPI) load(w http.ResponseWriter, r *http.Request, id string) (*jobs.Record, bool) {
	if tasks.ValidateJobID(id) != nil {
		writeError(w, http.StatusNotFound, "not_found", "no such job", nil)
		return nil, false
	}
	rec, err := a.producer.Status(r.Context(), tasks.JobID(id))
	if errors.Is(err, jobs.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such job", nil)
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not read the job", nil)
		return nil, false
	}
	return rec, true
}

func validState(s jobs.State) bool {
	for _, st := range jobs.AllStates {
		if s == st {
			return true
		}
	}
	return false
}

// decodeBody reads a capped JSON body that has no unknown fields, or
// writes a 4xx naming the problem.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json", nil)
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("body larger than %d bytes", maxRequestBody), nil)
	case errors.As(err, &te):
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request", map[string]string{strings.TrimPrefix(te.Field, "CreateRequest."): "must be " + te.Type.String()})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request", map[string]string{f: "unknown field"})
	default:
		writeError(w, http.StatusBadRequest, "invalid_json", "body is not a JSON object: "+err.Error(), nil)
	}
	return false
}
