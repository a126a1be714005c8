package standin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

const (
	webhookWorkers = 16
	dispatchBatch  = 256
	// fakeClockPoll bounds the loop's sleep when Config.Now is set: the
	// loop cannot see a fake clock move, so it looks again this often.
	fakeClockPoll = 10 * time.Millisecond
	// closeGrace is how long Close lets in-flight attempts finish before
	// it cancels them.
	closeGrace = 2 * time.Second
)

// runner is one Start..Close run of the delivery loop and its workers.
type runner struct {
	stop   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	work   chan *delivery
	wg     sync.WaitGroup
}

// Start starts webhook delivery in the background: one scheduler goroutine
// and 16 workers (so that slow receivers and localhost round trips
// overlap), all stopped by [Server.Close]. Calling Start while started does
// nothing; Start after Close starts again. Without Start nothing is
// delivered unless [Server.DeliverDue] is called.
//
// Timing: the scheduler keeps the jobs that have a webhook (with a secret)
// in a min-heap keyed by the next instant their subscribed state can change
// (start of processing, the next progress bucket, the terminal status), and
// sleeps on a timer until the earliest, so an event is raised and its first
// attempt sent within about a millisecond of the transition (plus
// [WebhookFaults.Latency] and any wait for a free worker). Create, Complete,
// the end of a hold and finished attempts wake it at once. Nothing scans
// all jobs. With [Config.Now] set the scheduler also looks every 10 ms
// (real time), since it cannot see a fake clock move.
func (s *Server) Start() {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.run != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{stop: make(chan struct{}), ctx: ctx, cancel: cancel, work: make(chan *delivery)}
	r.wg.Add(1 + webhookWorkers)
	go s.loop(r)
	for range webhookWorkers {
		go s.worker(r)
	}
	s.run = r
}

// Close stops background delivery started by [Server.Start]: it stops
// taking new attempts, waits up to 2 s for attempts in flight, then cancels
// the rest (a cancelled attempt is not recorded and stays queued), and waits
// for every goroutine to end. It also closes idle webhook connections, so
// call it after [Server.DeliverDue] too. Pending events stay queued. Close
// is idempotent; the API keeps serving.
func (s *Server) Close() {
	s.runMu.Lock()
	r := s.run
	s.run = nil
	s.runMu.Unlock()
	if r != nil {
		close(r.stop)
		done := make(chan struct{})
		go func() { // ends with the workers it waits for
			r.wg.Wait()
			close(done)
		}()
		t := time.NewTimer(closeGrace)
		select {
		case <-done:
		case <-t.C:
			r.cancel()
			<-done
		}
		t.Stop()
		r.cancel()
	}
	if s.ownTransport != nil {
		s.ownTransport.CloseIdleConnections()
	}
}

// DeliverDue raises every event due at Config.Now() and makes every attempt
// due then, one after another in the calling goroutine, until nothing is
// due; retries fall due only once the clock passes their time. It returns
// the number of attempts made. It is meant for tests with a fake clock
// (advance the clock, call DeliverDue) and works with or without Start.
// An attempt cut short by ctx is not recorded and stays queued.
func (s *Server) DeliverDue(ctx context.Context) int {
	n := 0
	for ctx.Err() == nil {
		batch, _ := s.collectDue(s.now(), math.MaxInt)
		if len(batch) == 0 {
			break
		}
		for i, d := range batch {
			if !s.attempt(ctx, d) {
				s.requeue(batch[i+1:])
				return n
			}
			n++
		}
	}
	return n
}

// wakeLoop makes the scheduler look at the queues again.
func (s *Server) wakeLoop() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Server) loop(r *runner) {
	defer r.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch []*delivery
	for {
		var out chan<- *delivery
		var first *delivery
		if len(batch) == 0 {
			var next time.Time
			batch, next = s.collectDue(s.now(), dispatchBatch)
			if len(batch) == 0 {
				timer.Reset(s.sleepFor(next))
			}
		}
		if len(batch) > 0 {
			out, first = r.work, batch[0]
		}
		select {
		case out <- first:
			batch[0] = nil
			batch = batch[1:]
		case <-timer.C:
		case <-s.wake:
		case <-r.stop:
			s.requeue(batch)
			return
		}
	}
}

// sleepFor is how long the loop may sleep when next is the earliest due
// time (zero: nothing queued).
func (s *Server) sleepFor(next time.Time) time.Duration {
	d := time.Hour
	if !next.IsZero() {
		d = max(next.Sub(s.now()), 0)
	}
	if s.cfg.Now != nil {
		d = min(d, fakeClockPoll)
	}
	return d
}

func (s *Server) worker(r *runner) {
	defer r.wg.Done()
	for {
		select {
		case d := <-r.work:
			s.attempt(r.ctx, d)
		case <-r.stop:
			return
		}
	}
}

// attempt makes attempt d and records it. It returns false, with d back in
// the queue and nothing recorded, if ctx ended first.
func (s *Server) attempt(ctx context.Context, d *delivery) bool {
	ev, hs := d.ev, d.ev.hook
	f, wrong, drop, dup := s.drawAttemptFaults(ev, d.attempt)
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			s.requeue([]*delivery{d})
			return false
		}
	}
	if drop {
		s.finish(d, attemptResult{httpStatus: http.StatusOK, dropped: true})
		return true
	}
	now := s.now()
	s.ensureSHA(&ev.snap)
	body, err := json.Marshal(eventPayload{
		ID:        ev.id,
		Type:      ev.typ,
		CreatedAt: ev.at.Unix(),
		Delivery:  payloadDelivery{Key: ev.key, Attempt: d.attempt, MaxAttempts: webhookMaxAttempts},
		Data:      s.eventData(ev, now),
	})
	if err != nil { // plain structs: not reached
		s.finish(d, attemptResult{errMsg: "encoding the webhook payload failed: " + err.Error()})
		return true
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	secret := hs.job.webhook.secret
	if wrong {
		secret = "whsec_standin_wrong_" + secret
	}
	p := s.cfg.HeaderPrefix
	hdr := http.Header{
		"Content-Type": {"application/json"},
		"User-Agent":   {s.userAgent},
		// Lowercase names, sent as written, as the gateway does.
		p + "timestamp":    {ts},
		p + "signature":    {Sign(secret, ts, body)},
		p + "event-id":     {ev.id},
		p + "event-type":   {ev.typ},
		p + "delivery-key": {ev.key},
		p + "attempt":      {strconv.Itoa(d.attempt)},
		p + "max-attempts": {strconv.Itoa(webhookMaxAttempts)},
	}
	res := s.post(ctx, hs.job.webhook.url, hdr, body)
	if !res.ok() && ctx.Err() != nil {
		s.requeue([]*delivery{d})
		return false
	}
	if dup {
		s.post(ctx, hs.job.webhook.url, hdr, body) // answer ignored
	}
	if wrong || dup {
		s.mu.Lock()
		if wrong {
			s.stats.Webhooks.WrongSignature++
		}
		if dup {
			s.stats.Webhooks.Duplicated++
		}
		s.mu.Unlock()
	}
	s.finish(d, res)
	return true
}

// post sends one webhook request and classifies the answer like the
// gateway: 2xx succeeds; 3xx (never followed), other statuses, network
// errors and timeouts fail.
func (s *Server) post(ctx context.Context, url string, hdr http.Header, body []byte) attemptResult {
	ctx, cancel := context.WithTimeout(ctx, s.hookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return attemptResult{errMsg: "Webhook request failed: " + err.Error()}
	}
	req.Header = hdr
	res, err := s.hookClient.Do(req)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return attemptResult{errMsg: fmt.Sprintf("Webhook request timed out after %dms", s.hookTimeout.Milliseconds())}
		}
		return attemptResult{errMsg: err.Error()}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // lets the connection be reused
	_ = res.Body.Close()
	switch {
	case res.StatusCode >= 300 && res.StatusCode < 400:
		return attemptResult{httpStatus: res.StatusCode, errMsg: "Webhook redirects are not allowed"}
	case res.StatusCode < 200 || res.StatusCode >= 300:
		return attemptResult{httpStatus: res.StatusCode, errMsg: "Webhook returned HTTP " + strconv.Itoa(res.StatusCode)}
	}
	return attemptResult{httpStatus: res.StatusCode}
}

// eventPayload is the webhook body (gateway source; reference section 7).
type eventPayload struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt int64           `json:"created_at"`
	Delivery  payloadDelivery `json:"delivery"`
	Data      videoJSON       `json:"data"`
}

type payloadDelivery struct {
	Key         string `json:"key"`
	Attempt     int    `json:"attempt"`
	MaxAttempts int    `json:"max_attempts"`
}

// eventData renders the video object of an event: the job as it stood when
// the event was raised, links signed at now.
func (s *Server) eventData(ev *hookEvent, now time.Time) videoJSON {
	v := s.render(&ev.snap, ev.hook.base, now)
	v.Kind = "video"
	return v
}

// newHookClient returns the webhook client: redirects are returned, not
// followed. A nil rt means a transport of the server's own, also returned.
func newHookClient(rt http.RoundTripper) (*http.Client, *http.Transport) {
	var own *http.Transport
	if rt == nil {
		own = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        4 * webhookWorkers,
			MaxIdleConnsPerHost: 2 * webhookWorkers,
			IdleConnTimeout:     30 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}
		rt = own
	}
	return &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, own
}
