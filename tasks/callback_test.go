package tasks_test

import (
	"errors"
	"testing"
	"time"

	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestSubmitCallbackURL: a callback URL is validated at submit (field
// callback_url), kept on the record, part of the request an idempotent
// resubmission must repeat, and taken from the default when absent.
func TestSubmitCallbackURL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, u := range []string{"http://hooks.example.com/x", "https://10.0.0.5/x", "https://169.254.169.254/", "http://127.0.0.1:9/x", "gopher://x"} {
		_, err := b.client.Submit(b.ctx, tasks.Request{Video: video("p"), CallbackURL: u})
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) || ve.Fields["callback_url"] == "" {
			t.Errorf("Submit with callback %s: %v; want a ValidationError naming callback_url", u, err)
		}
	}
	id := b.submit(t, tasks.Request{JobID: "cb-1", Video: video("p"), CallbackURL: "https://hooks.example.com/x"})
	rec, err := b.client.Status(b.ctx, id)
	if err != nil || rec.CallbackURL != "https://hooks.example.com/x" {
		t.Fatalf("record %+v, %v; want the callback URL kept", rec, err)
	}
	if _, err := b.client.Submit(b.ctx, tasks.Request{JobID: "cb-1", Video: video("p"), CallbackURL: "https://other.example.com/"}); !errors.Is(err, tasks.ErrJobIDConflict) {
		t.Errorf("resubmission with another callback URL: %v, want ErrJobIDConflict", err)
	}
	private := tasks.NewClient(b.rdb, tasks.ClientOptions{DefaultCallbackURL: "https://10.0.0.5/x", CallbackPolicy: callback.Policy{AllowPrivate: true}})
	id, err = private.Submit(b.ctx, tasks.Request{Video: video("p")})
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := b.client.Status(b.ctx, id); rec.CallbackURL != "https://10.0.0.5/x" {
		t.Errorf("callback URL %q, want the default", rec.CallbackURL)
	}
}

// TestWaitWokenByTheTerminalTransition: Wait returns as soon as the job
// ends, although its polling fallback is an hour away.
func TestWaitWokenByTheTerminalTransition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := tasks.NewClient(b.rdb, tasks.ClientOptions{WaitPollInterval: time.Hour})
	id := b.submit(t, tasks.Request{Video: video("wait")})
	type result struct {
		rec *jobs.Record
		err error
	}
	done := make(chan result, 1)
	go func() {
		rec, err := c.Wait(b.ctx, id)
		done <- result{rec, err}
	}()
	// Wait has marked the job once it is waited on; then end it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := b.rdb.HExists(b.ctx, "videoworker:job:{"+string(id)+"}", jobs.FieldWaiter).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Wait never marked the job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := b.store.Do(b.ctx, string(id), jobs.Cancelled{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.rec.State != jobs.StateCancelled {
			t.Fatalf("Wait = %+v, %v; want the cancelled job", r.rec, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the job ended")
	}
	// An ended job returns at once; a missing one is not found.
	if rec, err := c.Wait(b.ctx, id); err != nil || rec.State != jobs.StateCancelled {
		t.Errorf("Wait on an ended job = %+v, %v", rec, err)
	}
	if _, err := c.Wait(b.ctx, "nope"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Wait on a missing job: %v, want ErrNotFound", err)
	}
}
