package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/videoworker/videoworker/tasks"
)

// maxBatchBody caps the body of POST /v1/jobs/batch: 1,000 jobs of about
// 16 KiB each.
const maxBatchBody = 16 << 20

// batchJobRequest is one job of POST /v1/jobs/batch: a POST /v1/jobs body
// with an optional idempotency key, which stands for job_id as the
// Idempotency-Key header does for a single job.
type batchJobRequest struct {
	createJobRequest
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// batchRequest is the body of POST /v1/jobs/batch.
type batchRequest struct {
	Jobs []batchJobRequest `json:"jobs"`
}

// batchItem is one job of the batch's answer.
type batchItem struct {
	JobID string `json:"job_id"`
	New   bool   `json:"new"`
	// Error is "job_id_conflict" when the id was already used for a
	// different request (that job was not accepted; the others were).
	Error string `json:"error,omitempty"`
}

// batchAnswer is the answer of POST /v1/jobs/batch, one item per job in
// the order of the request.
type batchAnswer struct {
	Data []batchItem `json:"data"`
}

// createBatch submits up to tasks.MaxBatch jobs: all valid, or none
// accepted (400, each problem named "jobs[i].field").
func (a *jobsAPI) createBatch(w http.ResponseWriter, r *http.Request) {
	var body batchRequest
	if !decodeBodyMax(w, r, &body, maxBatchBody) {
		return
	}
	if n := len(body.Jobs); n == 0 || n > tasks.MaxBatch {
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request",
			map[string]string{"jobs": fmt.Sprintf("must hold 1 to %d jobs, not %d", tasks.MaxBatch, n)})
		return
	}
	bad := map[string]string{}
	skip := map[int]bool{} // the jobs with a problem found here
	reqs := make([]tasks.Request, len(body.Jobs))
	for i, j := range body.Jobs {
		if j.IdempotencyKey != "" {
			if j.JobID != "" && j.JobID != j.IdempotencyKey {
				bad[fmt.Sprintf("jobs[%d].job_id", i)] = "must equal idempotency_key when both are given"
				skip[i] = true
				continue
			}
			j.JobID = j.IdempotencyKey
		}
		if field, msg := j.checkSeconds(); field != "" {
			bad[fmt.Sprintf("jobs[%d].%s", i, field)] = msg
			skip[i] = true
			continue
		}
		reqs[i] = j.taskRequest()
	}
	if len(bad) > 0 {
		// Name the problems of the other jobs too, so that one answer
		// lists all of them.
		for i, req := range reqs {
			var ve *tasks.ValidationError
			if !skip[i] && errors.As(a.producer.Validate(req), &ve) {
				addBatchProblems(bad, i, ve)
			}
		}
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request; no job of the batch was accepted", bad)
		return
	}
	res, err := a.producer.SubmitMany(r.Context(), reqs)
	var be *tasks.BatchError
	switch {
	case errors.As(err, &be):
		for i, ve := range be.Items {
			addBatchProblems(bad, i, ve)
		}
		writeError(w, http.StatusBadRequest, "validation_error", "invalid request; no job of the batch was accepted", bad)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "could not store the batch; send it again with the same job ids", nil)
		return
	}
	out := batchAnswer{Data: make([]batchItem, len(res))}
	status := http.StatusOK
	for i, r := range res {
		out.Data[i] = batchItem{JobID: string(r.ID), New: r.New}
		if errors.Is(r.Err, tasks.ErrJobIDConflict) {
			out.Data[i].Error = "job_id_conflict"
		}
		if r.New {
			status = http.StatusAccepted
		}
	}
	writeJSON(w, status, out)
}

// addBatchProblems adds the problems of the batch's i-th job to bad, as
// "jobs[i].field".
func addBatchProblems(bad map[string]string, i int, ve *tasks.ValidationError) {
	for f, msg := range ve.Fields {
		if f == "timeout" { // this API's name for it
			f = "timeout_seconds"
		}
		bad[fmt.Sprintf("jobs[%d].%s", i, f)] = msg
	}
}
