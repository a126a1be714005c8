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
	"github.com/videoworker/videoworker/storage"
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
	// RetentionSeconds is how long the job stays in Redis once finished
	// (0: the fleet's JOB_RETENTION).
	RetentionSeconds int64 `json:"retention_seconds,omitempty"`
	// CallbackURL receives the job's terminal state (see the README,
	// "Completion callbacks").
	CallbackURL string `json:"callback_url,omitempty"`
	// Tenant is whose job it is (absent: "default"); see docs/tenants.md.
	Tenant string `json:"tenant,omitempty"`
}

// checkSeconds bounds r's numbers of seconds before they become
// Durations (18446744074 s would wrap to a deadline a fraction of a second
// away): it names the first field out of range and why, or "".
func (r createJobRequest) checkSeconds() (string, string) {
	if r.TimeoutSeconds < 0 || r.TimeoutSeconds > maxTimeoutSeconds {
		return "timeout_seconds", fmt.Sprintf("must be between 1 and %d (%s); omit it for the default", maxTimeoutSeconds, tasks.MaxTimeout)
	}
	if r.RetentionSeconds < 0 || r.RetentionSeconds > int64(jobs.MaxRetention/time.Second) {
		return "retention_seconds", fmt.Sprintf("must be between %d and %d; omit it for the fleet's JOB_RETENTION",
			int64(jobs.MinRetention/time.Second), int64(jobs.MaxRetention/time.Second))
	}
	return "", ""
}

// taskRequest is the producer's request of r: the single and the batch
// route both build it here, so that neither drops a field.
func (r createJobRequest) taskRequest() tasks.Request {
	return tasks.Request{
		JobID: tasks.JobID(r.JobID), Video: r.CreateRequest,
		Timeout: time.Duration(r.TimeoutSeconds) * time.Second, Labels: r.Labels, CallbackURL: r.CallbackURL,
		Retention: time.Duration(r.RetentionSeconds) * time.Second, Tenant: r.Tenant,
	}
}

// jobView is a job as the API shows it.
type jobView struct {
	*jobs.Record
	History []jobs.Event `json:"history,omitempty"`
	// Archive is where the job's archive document is, once the retention
	// sweep wrote it (the record in Redis is then compact: the job is
	// shown from the archive and what Redis says since).
	Archive string `json:"archive,omitempty"`
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
	// Archive is where a forgotten job's record and history are (410).
	Archive string `json:"archive,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, reason string, fields map[string]string) {
	writeJSON(w, status, apiError{Error: code, Reason: reason, Fields: fields})
}

// jobsAPI serves /v1/jobs.
type jobsAPI struct {
	producer *tasks.Client
	// archive, with retention on, is the storage holding the archives of
	// forgotten jobs (jobs.ArchiveKey); nil: retention off.
	archive storage.Store
}

func (a *jobsAPI) routes(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	mux.Handle("POST /v1/jobs", wrap(http.HandlerFunc(a.create)))
	mux.Handle("POST /v1/jobs/batch", wrap(http.HandlerFunc(a.createBatch)))
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
	if field, msg := req.checkSeconds(); field != "" {
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request", map[string]string{field: msg})
		return
	}
	// A job id whose job was forgotten (its archive exists, its record
	// does not) is not taken again: a second generation under one key.
	if loc := a.forgotten(r.Context(), req.JobID); loc != "" {
		writeJSON(w, http.StatusConflict, apiError{Error: "job_forgotten", Archive: loc,
			Reason: "this job id was used by a job that finished and was forgotten after its retention; its archive is kept; use another job id"})
		return
	}
	// Of concurrent requests with one key exactly one creates the job
	// (202); the others find it (200) or differ from it (409).
	id, created, err := a.producer.SubmitCreated(r.Context(), req.taskRequest())
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		fields := ve.Fields
		for name, api := range map[string]string{"timeout": "timeout_seconds", "retention": "retention_seconds"} {
			if msg, ok := fields[name]; ok { // this API's name for it
				fields = maps.Clone(fields)
				delete(fields, name)
				fields[api] = msg
			}
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
	rec, hist, loc := withArchive(r.Context(), a.archive, rec, hist)
	writeJSON(w, http.StatusOK, jobView{Record: rec, History: hist, Archive: loc})
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
	if tn := q.Get("tenant"); tn != "" {
		if err := jobs.ValidateTenant(tn); err != nil {
			writeError(w, http.StatusBadRequest, "validation_error", "invalid query", map[string]string{"tenant": err.Error()})
			return
		}
		opts.Tenant = tn
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
		if loc := a.forgotten(r.Context(), id); loc != "" {
			writeJSON(w, http.StatusGone, apiError{Error: "forgotten", Archive: loc,
				Reason: "the job finished and was removed from Redis after its retention; its record and history are archived"})
			return nil, false
		}
		writeError(w, http.StatusNotFound, "not_found", "no such job", nil)
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not read the job", nil)
		return nil, false
	}
	return rec, true
}

// forgotten returns where the archive of job id is when the job was
// forgotten (retention on, an archive, and no record), else "".
func (a *jobsAPI) forgotten(ctx context.Context, id string) string {
	if a.archive == nil || id == "" || tasks.ValidateJobID(id) != nil {
		return ""
	}
	info, err := a.archive.Stat(ctx, jobs.ArchiveKey(id))
	if err != nil {
		return ""
	}
	if _, err := a.producer.Status(ctx, tasks.JobID(id)); !errors.Is(err, jobs.ErrNotFound) {
		return "" // still in Redis (the sweep archived it but has not removed it yet)
	}
	return info.Location
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
	return decodeBodyMax(w, r, v, maxRequestBody)
}

// decodeBodyMax is decodeBody with a cap of limit bytes.
func decodeBodyMax(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json", nil)
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
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
		writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("body larger than %d bytes", limit), nil)
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
