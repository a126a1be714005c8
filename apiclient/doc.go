// Package apiclient is a typed client of the AI Stats (Phaseo) video
// generation API: create a job, read its status, list jobs, stream its
// content, mint a signed download link and delete it.
//
// Every call has a timeout. Failures come back as one of two typed errors:
//
//   - *APIError: the API answered with a non-2xx status. Retryable reports
//     whether the same call may succeed later (429 and 5xx, except 501);
//     NotReady reports the documented "409 not_ready" that means "poll again
//     later"; RetryAfter carries the server's Retry-After.
//   - *TransportError: no usable answer arrived. Sent reports whether the
//     request may have reached the server, which matters for Create: a create
//     whose request was sent may have started a paid job, so its outcome is
//     "in doubt" and the caller must reconcile before submitting again.
//
// The client never retries Create. Idempotent reads are retried a few times
// on transport errors and retryable statuses, with jittered backoff that
// honours a short Retry-After and stops when the context ends.
//
// The API key is sent only in the Authorization header. It never appears in
// an error message or a log value; signed download links are treated as
// secrets too and are never put into error text.
package apiclient
