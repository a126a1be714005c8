package standin

import (
	"container/heap"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Webhook header prefixes (reference section 7): [Config.HeaderPrefix].
const (
	HeaderPrefixAIStats = "x-ai-stats-"
	HeaderPrefixPhaseo  = "x-phaseo-"
)

// Webhook attempt statuses shown under webhook.attempts (reference 7).
const (
	AttemptDelivered         = "delivered"
	AttemptScheduledRetry    = "scheduled_retry"
	AttemptFailedPermanently = "failed_permanently"
)

const (
	webhookMaxAttempts = 4
	webhookHistory     = 10 // attempts shown on the video object
	webhookTimeout     = 30 * time.Second
	webhookMinTimeout  = time.Second
)

// webhookRetryDelays[n-1] is the wait after attempt n fails (gateway source:
// 1, 5 and 15 minutes), before [Config.WebhookTimeScale].
var webhookRetryDelays = [webhookMaxAttempts - 1]time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute}

// WebhookFaults injects webhook delivery failures. Each rate is a
// probability in 0..1. Draws are derived from [Config.Seed], the event id
// and the attempt number (the reorder draw from the event id alone), so a
// given event sees the same faults whatever the worker scheduling.
type WebhookFaults struct {
	// WrongSecretRate signs an attempt with a wrong secret. A receiver
	// that verifies rejects it, which fails the attempt (and schedules a
	// retry, drawn afresh).
	WrongSecretRate float64
	// DropRate skips an attempt's request entirely but records it as
	// delivered (HTTP 200): the event is lost and never retried.
	DropRate float64
	// DuplicateRate sends an attempt's request a second time right after
	// the first: same body, headers, event id and delivery key. Only the
	// first answer counts.
	DuplicateRate float64
	// OutOfOrderRate holds an event back and releases it once the next
	// event of the same job has been attempted, e.g. a progress event after
	// video.completed. A job's last event is never held back.
	OutOfOrderRate float64
	// Latency is waited (real time) before each attempt.
	Latency time.Duration
}

func (f WebhookFaults) normalize() WebhookFaults {
	f.WrongSecretRate = clamp01(f.WrongSecretRate)
	f.DropRate = clamp01(f.DropRate)
	f.DuplicateRate = clamp01(f.DuplicateRate)
	f.OutOfOrderRate = clamp01(f.OutOfOrderRate)
	f.Latency = max(f.Latency, 0)
	return f
}

// WebhookStats counts webhook work; see [Stats.Webhooks].
type WebhookStats struct {
	// Events counts events raised, by type ("video.completed", ...), each
	// once however many attempts it takes.
	Events map[string]int
	// DeliveredEvents counts events whose delivery succeeded (2xx), by
	// type. Dropped events are not included.
	DeliveredEvents map[string]int
	// Attempts counts delivery attempts: first attempts and retries,
	// dropped ones included, duplicate copies excluded. Attempts =
	// Delivered + Failed + Dropped.
	Attempts int
	// Delivered counts attempts answered 2xx.
	Delivered int
	// Failed counts attempts that failed: non-2xx (3xx included), network
	// error or timeout.
	Failed int
	// Retried counts retries scheduled after a failed attempt.
	Retried int
	// FailedPermanently counts events given up after the last attempt.
	FailedPermanently int
	// Dropped counts attempts skipped by [WebhookFaults.DropRate].
	Dropped int
	// Duplicated counts extra copies sent by [WebhookFaults.DuplicateRate].
	Duplicated int
	// WrongSignature counts attempts signed with a wrong secret.
	WrongSignature int
	// Reordered counts events held back by [WebhookFaults.OutOfOrderRate].
	Reordered int
	// NoSecret counts jobs created with a webhook but no secret; nothing
	// is delivered for them.
	NoSecret int
	// Pending counts events raised but not yet finished: queued, in
	// flight, awaiting a retry or held back.
	Pending int
}

func (w WebhookStats) clone() WebhookStats {
	w.Events = maps.Clone(w.Events)
	w.DeliveredEvents = maps.Clone(w.DeliveredEvents)
	return w
}

// Sign returns the webhook signature of reference section 7: lowercase hex
// HMAC-SHA256 keyed with the secret's bytes over timestamp + "." + body.
func Sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Event phases as bits of hookState.subs, in eventPhases order.
const (
	phaseCreated = 1 << iota
	phaseProgress
	phaseCompleted
	phaseFailed
	phaseCancelled
	phaseExpired
	phaseStatusChanged
)

func phaseBit(phase string) uint8 {
	if i := slices.Index(eventPhases, phase); i >= 0 {
		return 1 << i
	}
	return 0
}

// subscriptions maps normalised events ("video.X") to phase bits.
func subscriptions(events []string) uint8 {
	var m uint8
	for _, e := range events {
		m |= phaseBit(strings.TrimPrefix(e, "video."))
	}
	return m
}

// progressThresholds are the progress values where the gateway's bucket
// (progressBucket) changes.
var progressThresholds = [...]int{1, 5, 15, 25, 35, 45, 55, 65, 75, 85, 95}

// progressBucket is the gateway's normalizeProgressBucket: 0 (no event)
// outside 1..99, else progress rounded to 10 % and clamped to 5..95.
func progressBucket(p int) int {
	if p <= 0 || p >= 100 {
		return 0
	}
	return min(max((p+5)/10*10, 5), 95)
}

// eventID is the gateway's event id: evt_video_<id>_<key>, runs of
// characters outside [A-Za-z0-9_-] replaced by one "_", cut to 160.
func eventID(videoID, key string) string {
	raw := "evt_video_" + videoID + "_" + key
	var b strings.Builder
	b.Grow(len(raw))
	run := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '_' || c == '-' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') {
			b.WriteByte(c)
			run = false
		} else if !run {
			b.WriteByte('_')
			run = true
		}
	}
	s := b.String()
	return s[:min(len(s), 160)]
}

// hookState is the delivery state of one job whose webhook has a secret.
// Guarded by Server.mu.
type hookState struct {
	job  *job
	base string // scheme://host of the create request, for URLs in data
	subs uint8

	// Transition scheduling: the job sits in hookSched.due (index >= 0)
	// until all its events are raised, except while a hold freezes it.
	index       int
	due         time.Time
	createdDone bool
	lastStatus  status
	lastBucket  int
	finished    bool // the terminal step was raised

	// Delivery: one attempt per job at a time, so events arrive in order
	// unless a fault reorders them.
	inflight bool
	waiting  []*delivery
	heldBack *hookEvent
	retries  []retryRef

	view *hookView // nil until the first attempt
}

type retryRef struct {
	key string
	due time.Time
}

// hookView is the bookkeeping rendered on the video object. Its slices are
// replaced, never modified, so a copy taken under the lock stays valid.
type hookView struct {
	attempts       []attemptRec // the last webhookHistory
	total          int
	deliveredKeys  []string // sorted
	pendingRetries int
	nextRetry      time.Time
	lastDelivered  time.Time
	lastFailure    time.Time
	lastError      string
	lastProgress   int // 0: none
	lastProgressAt time.Time
	lastDispatched time.Time
}

type attemptRec struct {
	eventID, key, typ, status string
	attempt                   int
	at, nextRetry             time.Time
	httpStatus                int // 0: no response
	errMsg                    string
}

// hookEvent is one raised event. snap is the job as it stood when the
// event was raised; data is rendered from it at each attempt.
type hookEvent struct {
	hook     *hookState
	typ, key string
	id       string
	at       time.Time
	snap     snapshot
}

// delivery is one pending attempt of an event.
type delivery struct {
	ev      *hookEvent
	attempt int
	due     time.Time
	seq     uint64
	index   int
	after   *hookEvent // held-back event released once this attempt ends
}

// hookSched holds the scheduler state, guarded by Server.mu.
type hookSched struct {
	due        hookHeap     // jobs by next possible transition
	deliveries deliveryHeap // attempts by due time
	seq        uint64
	bases      map[string]string // interned base URLs
	evals      int               // transition evaluations (tests prove no scans)
}

type hookHeap []*hookState

func (h hookHeap) Len() int           { return len(h) }
func (h hookHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h hookHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *hookHeap) Push(x any) {
	hs := x.(*hookState)
	hs.index = len(*h)
	*h = append(*h, hs)
}
func (h *hookHeap) Pop() any {
	old := *h
	hs := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	hs.index = -1
	return hs
}

type deliveryHeap []*delivery

func (h deliveryHeap) Len() int { return len(h) }
func (h deliveryHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h deliveryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deliveryHeap) Push(x any) {
	d := x.(*delivery)
	d.index = len(*h)
	*h = append(*h, d)
}
func (h *deliveryHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	d.index = -1
	return d
}

// watchLocked starts delivering webhooks for a new job created through a
// request with the given base URL. Without a secret nothing is delivered:
// the newest gateway source refuses to send unsigned webhooks.
func (s *Server) watchLocked(j *job, base string, now time.Time) {
	if j.webhook == nil {
		return
	}
	if j.webhook.secret == "" {
		s.stats.Webhooks.NoSecret++
		return
	}
	h := &s.hooks
	if h.bases == nil {
		h.bases = map[string]string{}
	}
	b, ok := h.bases[base]
	if !ok {
		h.bases[base], b = base, base
	}
	hs := &hookState{job: j, base: b, subs: subscriptions(j.webhook.events), index: -1, due: now}
	j.hook = hs
	heap.Push(&h.due, hs)
}

// rearmLocked makes a job's transitions due at now (after Complete or the
// end of a hold).
func (s *Server) rearmLocked(hs *hookState, now time.Time) {
	if hs.finished {
		return
	}
	hs.due = now
	if hs.index >= 0 {
		heap.Fix(&s.hooks.due, hs.index)
	} else {
		heap.Push(&s.hooks.due, hs)
	}
}

// heldLocked reports whether a hold freezes j (see Server.statusLocked).
func (s *Server) heldLocked(j *job) bool {
	return s.held && !j.forced && j.endAt.After(s.holdSince)
}

// advanceLocked raises the events of a job whose transition is due at now,
// then schedules its next check. Like a gateway that learns the provider
// status when it polls, it compares the state now with the state last
// raised: a check that comes late (a fake clock moved far) raises the
// current progress bucket and status only, not each one skipped.
func (s *Server) advanceLocked(hs *hookState, now time.Time) {
	s.hooks.evals++
	j := hs.job
	st, prog := s.statusLocked(j, now)
	var evs []*hookEvent
	raise := func(typ, key string, progress int) {
		sn := s.snapshotLocked(j, now)
		sn.hook = hookView{} // data shows the subscription, not the bookkeeping
		if progress > 0 {
			sn.progress = progress // as the gateway does
		}
		evs = append(evs, &hookEvent{hook: hs, typ: typ, key: key, id: eventID(j.id, key), at: now, snap: sn})
	}
	if !hs.createdDone {
		hs.createdDone = true
		if hs.subs&phaseCreated != 0 {
			raise("video.created", "video.created", 0)
		}
	}
	if st != hs.lastStatus {
		hs.lastStatus = st
		if hs.subs&phaseStatusChanged != 0 {
			raise("video.status_changed", "video.status_changed:"+st.String(), 0)
		}
		if st.terminal() && hs.subs&phaseBit(st.String()) != 0 {
			raise("video."+st.String(), "video."+st.String(), 0)
		}
	}
	if st == statusProcessing && hs.subs&phaseProgress != 0 {
		if b := progressBucket(prog); b > hs.lastBucket {
			hs.lastBucket = b
			raise("video.progress", "video.progress:"+strconv.Itoa(b), b)
		}
	}

	var reorder float64
	if len(evs) > 0 {
		s.faultMu.Lock()
		reorder = s.whFaults.OutOfOrderRate
		s.faultMu.Unlock()
	}
	ws := &s.stats.Webhooks
	for i, ev := range evs {
		ws.Events[ev.typ]++
		ws.Pending++
		last := st.terminal() && i == len(evs)-1
		if !last && hs.heldBack == nil && reorder > 0 && s.drawReorder(ev) < reorder {
			hs.heldBack = ev
			ws.Reordered++
			continue
		}
		d := s.queueLocked(ev, 1, now)
		if hs.heldBack != nil {
			d.after, hs.heldBack = hs.heldBack, nil
		}
	}
	if st.terminal() {
		hs.finished = true
		if hs.heldBack != nil { // not reached: the last event is never held
			s.queueLocked(hs.heldBack, 1, now)
			hs.heldBack = nil
		}
		return
	}
	if next, ok := s.nextCheckLocked(hs, now, st, prog); ok {
		hs.due = next
		heap.Push(&s.hooks.due, hs)
	}
}

// nextCheckLocked is when a job's subscribed state can next change, or
// false while a hold freezes it (Hold(false) and Complete re-arm it).
func (s *Server) nextCheckLocked(hs *hookState, now time.Time, st status, prog int) (time.Time, bool) {
	j := hs.job
	if st == statusQueued && hs.subs&(phaseStatusChanged|phaseProgress) != 0 {
		return j.startAt, true
	}
	if s.heldLocked(j) {
		return time.Time{}, false
	}
	next := j.endAt
	if p := s.cfg.ProcessingFor; st == statusProcessing && hs.subs&phaseProgress != 0 && p > 0 {
		// progress >= q from (endAt-p) + ceil(q*p/100): see statusLocked.
		for _, q := range progressThresholds {
			if q > prog {
				t := j.endAt.Add(-p + (time.Duration(q)*p+99)/100)
				next = earlier(next, t)
				break
			}
		}
	}
	if !next.After(now) {
		next = now.Add(time.Nanosecond) // defensive: never loop on one instant
	}
	return next, true
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// queueLocked schedules attempt n of ev at due.
func (s *Server) queueLocked(ev *hookEvent, n int, due time.Time) *delivery {
	s.hooks.seq++
	d := &delivery{ev: ev, attempt: n, due: due, seq: s.hooks.seq, index: -1}
	heap.Push(&s.hooks.deliveries, d)
	return d
}

// collectDue raises up to limit transitions due at now and takes up to
// limit attempts due at now, at most one per job (the others wait for
// it). It returns them and the earliest due time left (zero if none; in
// the past if more is due), so the lock is never held for long.
func (s *Server) collectDue(now time.Time, limit int) ([]*delivery, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.hooks
	for evals := 0; len(h.due) > 0 && !h.due[0].due.After(now) && evals < limit; evals++ {
		s.advanceLocked(heap.Pop(&h.due).(*hookState), now)
	}
	var out []*delivery
	for len(h.deliveries) > 0 && len(out) < limit && !h.deliveries[0].due.After(now) {
		d := heap.Pop(&h.deliveries).(*delivery)
		hs := d.ev.hook
		if hs.inflight {
			hs.waiting = append(hs.waiting, d)
			continue
		}
		hs.inflight = true
		out = append(out, d)
	}
	var next time.Time
	if len(h.due) > 0 {
		next = h.due[0].due
	}
	if len(h.deliveries) > 0 && (next.IsZero() || h.deliveries[0].due.Before(next)) {
		next = h.deliveries[0].due
	}
	return out, next
}

// requeue puts attempts that were taken but not made back in the queue.
func (s *Server) requeue(ds []*delivery) {
	if len(ds) == 0 {
		return
	}
	s.mu.Lock()
	for _, d := range ds {
		s.releaseLocked(d.ev.hook)
		heap.Push(&s.hooks.deliveries, d)
	}
	s.mu.Unlock()
	s.wakeLoop()
}

// releaseLocked ends a job's in-flight attempt and requeues the attempts
// that waited for it.
func (s *Server) releaseLocked(hs *hookState) {
	hs.inflight = false
	for _, w := range hs.waiting {
		heap.Push(&s.hooks.deliveries, w)
	}
	hs.waiting = nil
}

// attemptResult is the outcome of one attempt.
type attemptResult struct {
	httpStatus int    // 0: no response
	errMsg     string // "" on success
	dropped    bool
}

func (r attemptResult) ok() bool { return r.dropped || r.errMsg == "" }

// finish records attempt d's result, schedules a retry or gives up, and
// releases the job's waiting and held-back events.
func (s *Server) finish(d *delivery, r attemptResult) {
	s.mu.Lock()
	defer s.wakeLoop()
	defer s.mu.Unlock()
	now := s.now()
	ev, hs := d.ev, d.ev.hook
	ws := &s.stats.Webhooks
	if hs.view == nil {
		hs.view = &hookView{}
	}
	v := hs.view
	rec := attemptRec{eventID: ev.id, key: ev.key, typ: ev.typ, attempt: d.attempt, at: now, httpStatus: r.httpStatus, errMsg: r.errMsg}

	ws.Attempts++
	hs.retries = slices.DeleteFunc(hs.retries, func(x retryRef) bool { return x.key == ev.key })
	switch {
	case r.ok():
		rec.status = AttemptDelivered
		if r.dropped {
			ws.Dropped++
		} else {
			ws.Delivered++
			ws.DeliveredEvents[ev.typ]++
		}
		ws.Pending--
		if i, found := slices.BinarySearch(v.deliveredKeys, ev.key); !found {
			v.deliveredKeys = slices.Insert(slices.Clone(v.deliveredKeys), i, ev.key)
		}
		v.lastDelivered = now
		if ev.typ == "video.progress" {
			v.lastProgress, v.lastProgressAt = ev.snap.progress, now
		}
	case d.attempt < webhookMaxAttempts:
		rec.status = AttemptScheduledRetry
		rec.nextRetry = now.Add(s.scaled(webhookRetryDelays[d.attempt-1]))
		ws.Failed++
		ws.Retried++
		hs.retries = append(hs.retries, retryRef{key: ev.key, due: rec.nextRetry})
		s.queueLocked(ev, d.attempt+1, rec.nextRetry)
	default:
		rec.status = AttemptFailedPermanently
		ws.Failed++
		ws.FailedPermanently++
		ws.Pending--
	}
	if !r.ok() {
		v.lastFailure, v.lastError = now, r.errMsg
	}
	v.total++
	v.lastDispatched = now
	v.attempts = append(slices.Clone(v.attempts[max(len(v.attempts)-webhookHistory+1, 0):]), rec)
	v.pendingRetries = len(hs.retries)
	v.nextRetry = time.Time{}
	for _, x := range hs.retries {
		if v.nextRetry.IsZero() || x.due.Before(v.nextRetry) {
			v.nextRetry = x.due
		}
	}

	s.releaseLocked(hs)
	if d.after != nil {
		s.queueLocked(d.after, 1, now)
	}
	s.log.Debug("standin webhook attempt", "video_id", hs.job.id, "event_type", ev.typ, "delivery_key", ev.key,
		"attempt", d.attempt, "status", rec.status, "http_status", r.httpStatus, "dropped", r.dropped, "error", r.errMsg)
}

// scaled multiplies a webhook delay by Config.WebhookTimeScale.
func (s *Server) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.cfg.WebhookTimeScale)
}

// drawReorder is the uniform draw deciding whether ev is held back.
func (s *Server) drawReorder(ev *hookEvent) float64 {
	k := seededKey(s.cfg.Seed, "webhook-order", ev.id, 0)
	return unit(k[:8])
}

// drawAttemptFaults draws the faults of attempt n of ev.
func (s *Server) drawAttemptFaults(ev *hookEvent, n int) (f WebhookFaults, wrong, drop, dup bool) {
	s.faultMu.Lock()
	f = s.whFaults
	s.faultMu.Unlock()
	k := seededKey(s.cfg.Seed, "webhook-fault", ev.id, n)
	return f, unit(k[0:8]) < f.WrongSecretRate, unit(k[8:16]) < f.DropRate, unit(k[16:24]) < f.DuplicateRate
}

// unit maps 8 bytes to a uniform float64 in [0, 1).
func unit(b []byte) float64 {
	return float64(binary.LittleEndian.Uint64(b)>>11) / (1 << 53)
}
