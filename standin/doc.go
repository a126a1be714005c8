// Package standin is an in-memory stand-in for the AI Stats (Phaseo) video
// generation API, for tests, benchmarks and demos. The real API cannot be
// reached from these machines.
//
// A [Server] is an [http.Handler] that serves the routes in
// shared/reference/ai-stats-video-api.md (sections 3, 4, 5, 6, 8 and 9) under
// /v1: create, list, models, status, content, signed download links, cancel
// and delete. It uses the documented request validation, video object, list
// envelope, signed-link format and flat error body. Job status comes from the
// injectable clock: a job is "queued" for [Config.QueuedFor], "processing" for
// [Config.ProcessingFor], then terminal. Each job's outcome and output bytes
// are derived from [Config.Seed] and the video id, so they are deterministic.
// The server holds about 330 bytes per job (plus the prompt; see TestScale)
// and never stores output bytes: it streams them from a seeded ChaCha8
// generator on each request.
//
// Test controls go beyond the contract: fault injection ([Faults]: 5xx, 429,
// latency, dropped connections, truncated content), counters ([Server.Stats])
// that prove whether a client submitted a job twice, forced completion
// ([Server.Complete]), a global hold ([Server.Hold]) and introspection
// ([Server.Job], [Server.ContentSHA256]).
//
// What it does not do: deliver webhooks (the subscription is validated,
// stored and echoed, nothing is sent yet), serve the experimental WebSocket,
// cancel jobs (cancel answers 501 as the current gateway does), honour
// Idempotency-Key (the real API does not document idempotency, so every
// create makes a new job), honour Range, produce real MP4 files (outputs are
// pseudo-random bytes labelled video/mp4), enforce per-model parameter
// support, scope jobs by key or workspace, or start goroutines. All work
// happens inside ServeHTTP and the control methods, so there is nothing to
// stop.
package standin
