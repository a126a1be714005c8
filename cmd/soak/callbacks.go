package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// callbackSecret signs the soak's completion callbacks.
const callbackSecret = "soak-callback-secret-0123456789"

// Callbacks are what the soak's callback receiver got.
type Callbacks struct {
	On bool `json:"on"`
	// Requests received; Verified of them with a good signature; Events
	// distinct event ids; Duplicates the repeats of an event (allowed:
	// a retry after a worker died mid-delivery); BadSignature the ones
	// refused.
	Requests     int `json:"requests"`
	Verified     int `json:"verified"`
	Events       int `json:"events"`
	Duplicates   int `json:"duplicates"`
	BadSignature int `json:"bad_signature"`
	// Missing: terminal jobs whose final event never arrived.
	Missing int `json:"missing"`
}

// callbackReceiver is an HTTP receiver in the soak process: it verifies
// each delivery and counts it by event id.
type callbackReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events map[string]int
	rep    Callbacks
}

func newCallbackReceiver() *callbackReceiver {
	r := &callbackReceiver{events: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *callbackReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	err := tasks.VerifyCallback([]string{callbackSecret}, 5*time.Minute, req.Header, body, time.Now())
	var ev callback.Event
	_ = json.Unmarshal(body, &ev)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Requests++
	if err != nil || ev.ID == "" || ev.ID != req.Header.Get(callback.HeaderEventID) {
		r.rep.BadSignature++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.rep.Verified++
	r.events[ev.ID]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *callbackReceiver) got(event string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[event] > 0
}

// report counts the receiver's deliveries and the terminal jobs whose
// final event never arrived, adding a problem for each.
func (r *callbackReceiver) report(recs []*jobs.Record, add func(i int, kind, detail string)) Callbacks {
	r.mu.Lock()
	rep := r.rep
	rep.On = true
	rep.Events = len(r.events)
	for _, n := range r.events {
		rep.Duplicates += n - 1
	}
	r.mu.Unlock()
	for i, rec := range recs {
		if rec == nil || !rec.State.Terminal() {
			continue
		}
		if ev := rec.CallbackEventID(); !r.got(ev) {
			rep.Missing++
			add(i, "callback missing", "no delivery of "+ev+" (callback "+rec.CallbackStatus+", last "+rec.CallbackLastError+")")
		}
	}
	return rep
}

// callbacksDue is how many ended jobs still have a callback to deliver.
func (h *harness) callbacksDue(ctx context.Context) int64 {
	n, err := h.rdb.SCard(ctx, "videoworker:callbacks_due").Result()
	if err != nil {
		return 1 // unknown: not drained
	}
	return n
}
