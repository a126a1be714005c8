// Package standin is an in-memory stand-in for the AI Stats (Phaseo) video
// generation API, for tests, benchmarks and demos. The real API cannot be
// reached from these machines.
//
// A [Server] is an [http.Handler] that serves the routes in
// docs/ai-stats-video-api.md (sections 3, 4, 5, 6, 8 and 9) under
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
// Webhooks (reference section 7): a job created with webhook {url, events,
// secret} gets signed POSTs as it moves: video.created, video.progress (10 %
// buckets clamped to 5..95, one each, only when subscribed), the terminal
// video.completed, video.failed and video.expired (video.cancelled never
// happens: cancel answers 501) and, when subscribed, video.status_changed.
// The default subscription is the four terminal events; job.* names are
// delivered as video.*. Headers, payload, event ids, delivery keys, the 30 s
// timeout, no redirects and the 4 attempts 1, 5 and 15 minutes apart follow
// the gateway source. Without a secret nothing is delivered, as in the
// newest gateway source. Delivery runs in the background between
// [Server.Start] and [Server.Close], a few milliseconds after each
// transition, or synchronously in [Server.DeliverDue] for tests with a fake
// clock (x-ai-stats-timestamp then comes from the fake clock too, so a
// receiver checking its 300 s tolerance must share that clock); [Sign]
// computes signatures; [WebhookFaults] injects wrong
// signatures, lost, duplicated, reordered and slow deliveries;
// [Stats.Webhooks] counts. Choices where the source is silent: an event's
// data is the job as it stood when the event was raised (download_url
// signed at each attempt), its created_at stays the same on retries, the
// status_changed delivery key carries the new status
// ("video.status_changed:processing"), and a check that comes late (a fake
// clock moved far) raises only the current progress bucket and status, like
// a gateway learning the state from a poll.
//
// Test controls go beyond the contract: fault injection ([Faults]: 5xx, 429,
// latency, dropped connections, truncated content), counters ([Server.Stats])
// that prove whether a client submitted a job twice, forced completion
// ([Server.Complete]), a global hold ([Server.Hold]) and introspection
// ([Server.Job], [Server.ContentSHA256]).
//
// What it does not do: serve the experimental WebSocket, manage webhook
// endpoints (webhook.endpoint_id is rejected), cancel jobs (cancel answers
// 501 as the current gateway does), honour Idempotency-Key (the real API does
// not document idempotency, so every create makes a new job), honour Range,
// produce real MP4 files (outputs are pseudo-random bytes labelled
// video/mp4), enforce per-model parameter support, or scope jobs by key or
// workspace. Only [Server.Start] starts goroutines; [Server.Close] stops
// them. Everything else happens inside ServeHTTP and the control methods.
package standin
