package jobs_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/videoworker/videoworker/jobs"
)

// saveVideo is the create step's update that saves the video id (as
// worker.adopt makes it), asking for the record back.
func (b *bundle) saveVideo(tb testing.TB, id, video string) jobs.Outcome {
	tb.Helper()
	return b.apply(tb, id, jobs.Change{
		From:    []jobs.State{jobs.StateQueued, jobs.StateSubmitting},
		To:      jobs.StateGenerating,
		Set:     map[string]any{jobs.FieldVideoID: video, jobs.FieldPollSeq: 1, jobs.FieldCreateInDoubt: false},
		IfEqual: map[string]any{jobs.FieldVideoID: ""},
		Event:   "created",
		Return:  true,
	})
}

func (b *bundle) early(tb testing.TB, id string, d jobs.WebhookDelivery) jobs.EarlyOutcome {
	tb.Helper()
	out, err := b.store.RecordEarlyWebhook(b.ctx, id, d)
	if err != nil {
		tb.Fatalf("RecordEarlyWebhook(%s, %+v): %v", id, d, err)
	}
	return out
}

var completed = jobs.WebhookDelivery{Key: "video.completed", EventType: "video.completed", Attempt: 1, VideoID: "vid_1"}

// The delivery is recorded first: the update that saves the video id
// returns a record that shows it.
func TestEarlyWebhookBeforeTheSave(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	b.apply(t, "j", jobs.Change{To: jobs.StateSubmitting})
	at := b.clock.Advance(time.Second)

	if out := b.early(t, "j", completed); out != (jobs.EarlyOutcome{Result: jobs.EarlyRecorded, State: jobs.StateSubmitting}) {
		t.Fatalf("early delivery: %+v, want recorded", out)
	}
	rec := b.get(t, "j")
	ms := at.Truncate(time.Millisecond)
	if !rec.EarlyWebhookAt.Equal(ms) || rec.EarlyWebhookEvent != "video.completed" || rec.EarlyWebhookKey != "video.completed" ||
		rec.EarlyWebhookVideo != "vid_1" || rec.WebhookDeliveries != 1 || rec.LastWebhookEvent != "video.completed" ||
		!rec.LastWebhookAt.Equal(ms) || rec.LastWebhookAttempt != 1 || rec.VideoID != "" || rec.State != jobs.StateSubmitting {
		t.Errorf("record after an early delivery: %+v", rec)
	}
	evs := b.events(t, "j")
	if last := evs[len(evs)-1]; last.Event != "webhook_early" || last.State != jobs.StateSubmitting || last.Detail == "" {
		t.Errorf("history line %+v, want webhook_early in state submitting", last)
	}
	// Not an applied key: the job's own delivery with this key must not
	// look like a duplicate of it (the event's video is unchecked yet).
	if seen, err := b.store.SeenWebhook(b.ctx, "j", completed.Key); err != nil || seen {
		t.Errorf("SeenWebhook after an early delivery = %v, %v; want false", seen, err)
	}

	// The same delivery again: a duplicate, nothing else changes.
	before := b.get(t, "j")
	if out := b.early(t, "j", completed); out.Result != jobs.EarlyDuplicate {
		t.Errorf("replayed early delivery: %+v, want duplicate", out)
	}
	after := b.get(t, "j")
	if after.WebhookDuplicates != 1 || len(b.events(t, "j")) != len(evs) {
		t.Errorf("replay: duplicates %d, history %d lines (was %d)", after.WebhookDuplicates, len(b.events(t, "j")), len(evs))
	}
	after.WebhookDuplicates = 0
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("replay changed the record (-before +after):\n%s", d)
	}

	out := b.saveVideo(t, "j", "vid_1")
	if !out.Applied || out.Record == nil {
		t.Fatalf("saving the video id: %+v", out)
	}
	if r := out.Record; r.VideoID != "vid_1" || r.State != jobs.StateGenerating || !r.EarlyWebhookAt.Equal(ms) || r.EarlyWebhookKey != "video.completed" || r.EarlyWebhookVideo != "vid_1" {
		t.Errorf("record returned by the save: %+v; want the video id and the early delivery", r)
	}
	stored, err := b.store.Load(b.ctx, "j") // the record without its spec, as the script returns it
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(stored, out.Record); d != "" {
		t.Errorf("returned record differs from the stored one (-stored +returned):\n%s", d)
	}

	// Now that the id is saved: no early recording; the caller is told the id.
	before = b.get(t, "j")
	if out := b.early(t, "j", completed); out != (jobs.EarlyOutcome{Result: jobs.EarlyHasVideo, State: jobs.StateGenerating, VideoID: "vid_1"}) {
		t.Errorf("delivery after the save: %+v, want has-video vid_1", out)
	}
	if d := cmp.Diff(before, b.get(t, "j")); d != "" {
		t.Errorf("has-video changed the record:\n%s", d)
	}
	// The early delivery arriving again by the usual path is a duplicate:
	// the create step checked the job for it.
	first, err := b.store.RecordWebhook(b.ctx, "j", completed)
	if err != nil || first {
		t.Errorf("RecordWebhook of the early delivery after the save = %v, %v; want a duplicate", first, err)
	}
	if r := b.get(t, "j"); r.WebhookDeliveries != 1 || r.WebhookDuplicates != 2 {
		t.Errorf("deliveries %d duplicates %d, want 1 and 2", r.WebhookDeliveries, r.WebhookDuplicates)
	}
}

// The video id is saved first: the conditional update changes nothing and
// returns the id, so the receiver handles the delivery the usual way.
func TestEarlyWebhookAfterTheSave(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	out := b.saveVideo(t, "j", "vid_1")
	if !out.Applied || out.Record == nil || !out.Record.EarlyWebhookAt.IsZero() {
		t.Fatalf("save: %+v", out)
	}
	before := b.get(t, "j")
	hist := len(b.events(t, "j"))
	if got := b.early(t, "j", completed); got != (jobs.EarlyOutcome{Result: jobs.EarlyHasVideo, State: jobs.StateGenerating, VideoID: "vid_1"}) {
		t.Errorf("RecordEarlyWebhook after the save = %+v, want has-video vid_1", got)
	}
	if d := cmp.Diff(before, b.get(t, "j")); d != "" || len(b.events(t, "j")) != hist {
		t.Errorf("RecordEarlyWebhook after the save changed the job:\n%s", d)
	}
}

func TestEarlyWebhookOnEndedOrMissingJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	b.apply(t, "j", jobs.Change{To: jobs.StateCancelled})
	before := b.get(t, "j")
	if out := b.early(t, "j", completed); out.Result != jobs.EarlyTerminal || out.State != jobs.StateCancelled {
		t.Errorf("ended job: %+v, want terminal", out)
	}
	if d := cmp.Diff(before, b.get(t, "j")); d != "" {
		t.Errorf("an ended job changed:\n%s", d)
	}
	if _, err := b.store.RecordEarlyWebhook(b.ctx, "nobody", completed); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("missing job: %v, want ErrNotFound", err)
	}
}

// An early delivery that named another video (a genuine delivery replayed
// to this job's URL) does not make the job's own delivery with the same
// key a duplicate.
func TestEarlyWebhookForAnotherVideo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	other := completed
	other.VideoID = "vid_other"
	if out := b.early(t, "j", other); out.Result != jobs.EarlyRecorded {
		t.Fatalf("early: %+v", out)
	}
	// A different video with the same key is a new early delivery, not a
	// duplicate of the other one.
	if out := b.early(t, "j", completed); out.Result != jobs.EarlyRecorded {
		t.Errorf("own early delivery after another video's: %+v, want recorded", out)
	}
	b.early(t, "j", other)
	b.saveVideo(t, "j", "vid_1")
	first, err := b.store.RecordWebhook(b.ctx, "j", completed)
	if err != nil || !first {
		t.Errorf("own delivery after an early one for another video = %v, %v; want first", first, err)
	}
}

// Whichever of the receiver's conditional update and the create step's
// save runs first, the early delivery is never lost: either the save's
// returned record shows it, or the receiver is told the video id.
func TestEarlyWebhookRacesTheSave(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const rounds = 300
	counts := map[jobs.EarlyResult]int{}
	for i := range rounds {
		id := fmt.Sprintf("race-%d", i)
		b.create(t, id, "m")
		var (
			wg    sync.WaitGroup
			early jobs.EarlyOutcome
			saved jobs.Outcome
			e1    error
			e2    error
		)
		start := make(chan struct{})
		wg.Go(func() { <-start; early, e1 = b.store.RecordEarlyWebhook(b.ctx, id, completed) })
		wg.Go(func() {
			<-start
			saved, e2 = b.store.Apply(b.ctx, id, jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: "vid_1"},
				IfEqual: map[string]any{jobs.FieldVideoID: ""}, Return: true})
		})
		close(start)
		wg.Wait()
		if e1 != nil || e2 != nil {
			t.Fatalf("round %d: %v %v", i, e1, e2)
		}
		if !saved.Applied || saved.Record == nil {
			t.Fatalf("round %d: save %+v", i, saved)
		}
		sawEarly := !saved.Record.EarlyWebhookAt.IsZero()
		switch early.Result {
		case jobs.EarlyRecorded:
			if !sawEarly {
				t.Fatalf("round %d: delivery recorded early but the save did not see it: lost", i)
			}
		case jobs.EarlyHasVideo:
			if sawEarly || early.VideoID != "vid_1" {
				t.Fatalf("round %d: receiver told %+v, save saw early=%v", i, early, sawEarly)
			}
		default:
			t.Fatalf("round %d: %+v", i, early)
		}
		counts[early.Result]++
	}
	t.Logf("over %d rounds: recorded first %d, saved first %d", rounds, counts[jobs.EarlyRecorded], counts[jobs.EarlyHasVideo])
}

func TestApplyReturn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	if out := b.apply(t, "j", jobs.Change{Set: map[string]any{jobs.FieldReconcile: "x"}}); out.Record != nil {
		t.Errorf("Record without Return: %+v", out.Record)
	}
	out := b.apply(t, "j", jobs.Change{Set: map[string]any{jobs.FieldReconcile: "y"}, Return: true})
	if !out.Applied || out.Record == nil || out.Record.Reconcile != "y" || out.Record.ID != "j" {
		t.Errorf("applied with Return: %+v", out)
	}
	// Not applied: the record as it stands.
	out = b.apply(t, "j", jobs.Change{IfEqual: map[string]any{jobs.FieldVideoID: "other"}, Set: map[string]any{jobs.FieldReconcile: "z"}, Return: true})
	if out.Applied || out.Record == nil || out.Record.Reconcile != "y" || out.State != jobs.StateQueued {
		t.Errorf("not applied with Return: %+v %+v", out, out.Record)
	}
	b.apply(t, "j", jobs.Change{To: jobs.StateFailed})
	out = b.apply(t, "j", jobs.Change{Set: map[string]any{jobs.FieldReconcile: "z"}, Return: true})
	if out.Applied || out.Record == nil || out.Record.State != jobs.StateFailed {
		t.Errorf("terminal, not applied, with Return: %+v", out)
	}
}

// Each webhook script pushes exactly one history line (a Lua gsub as the
// last argument once pushed its match count too).
func TestWebhookHistoryLines(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	b.early(t, "j", completed)
	b.saveVideo(t, "j", "vid_1")
	if _, err := b.store.RecordWebhook(b.ctx, "j", jobs.WebhookDelivery{Key: "video.failed", EventType: "video.failed", Attempt: 1, VideoID: "vid_1"}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.rdb.LRange(b.ctx, "videoworker:job:{j}:events", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	evs := b.events(t, "j")
	if len(raw) != 4 || len(evs) != 4 {
		t.Errorf("history %q: want 4 lines (submitted, webhook_early, created, webhook), all events", raw)
	}
}
