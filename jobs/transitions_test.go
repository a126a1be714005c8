package jobs_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

// ops is one operation of each transition, as a handler would make it.
var ops = []jobs.Op{
	jobs.Admitted{Tenant: "acme"},
	jobs.Submitting{},
	jobs.BudgetWaited{Reason: "budget day=1.00: 1.00 used"},
	jobs.CreateInDoubt{Code: "timeout", Err: "no answer"},
	jobs.CreateFailed{Code: "http_400", Err: "refused"},
	jobs.Reconciled{Note: "no job created", NothingCreated: true},
	jobs.Adopted{VideoID: "vid_1", APIStatus: "queued", Model: "m", How: "created in 1ms"},
	jobs.AdoptedAfterCancel{VideoID: "vid_1", Model: "m"},
	jobs.PollTakenOver{Seq: 1},
	jobs.Observed{Seq: 0, APIStatus: "in_progress", Progress: 10},
	jobs.Completed{APIStatus: "completed", Progress: 100, Outputs: 1, SeenBy: "test"},
	jobs.DownloadStarted{},
	jobs.Stored{Key: "k", Location: "file:///k", Bytes: 1, SHA256: "ab"},
	jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "poll"},
	jobs.Cancelled{Reason: "test"},
	jobs.CancelAnswered{Outcome: "ok"},
	jobs.DeadLettered{Task: "q/id"},
	jobs.Reenqueued{Task: "video:poll"},
	jobs.CallbackAttempted{Event: "e", Status: jobs.CallbackDelivered, Attempt: 1, Code: 200},
}

// TestTableCoversEveryTransition: every operation has its row, every row
// an operation, and every state but the ended ones is left by some
// transition.
func TestTableCoversEveryTransition(t *testing.T) {
	seen := map[jobs.Transition]bool{jobs.TRetried: true} // Retried is made by PlanRetry
	for _, op := range ops {
		if _, ok := jobs.RuleOf(op.Transition()); !ok {
			t.Errorf("%T: transition %q has no row in the table", op, op.Transition())
		}
		seen[op.Transition()] = true
	}
	for _, r := range jobs.Table {
		if !seen[r.Transition] {
			t.Errorf("row %s has no operation in this test", r)
		}
		if len(r.From) == 0 {
			t.Errorf("row %s starts nowhere", r)
		}
	}
}

// TestDoFollowsTheTable applies each operation to a job in each state: it
// applies exactly where the table allows it, and elsewhere gives a
// *TransitionError and changes nothing.
func TestDoFollowsTheTable(t *testing.T) {
	b := setup(t)
	for _, op := range ops {
		rule, _ := jobs.RuleOf(op.Transition())
		for _, st := range jobs.AllStates {
			t.Run(string(op.Transition())+"/from_"+string(st), func(t *testing.T) {
				id := string(op.Transition()) + "-" + string(st)
				b.create(t, id, "m")
				set := map[string]any{}
				if _, ok := op.(jobs.PollTakenOver); ok {
					set[jobs.FieldPollSeq] = 0
				}
				b.apply(t, id, jobs.Change{From: jobs.AllStates, To: st, Set: set})
				before := b.get(t, id)
				b.rdb.Del(b.ctx, "videoworker:claims") // every Adopted here names the same video
				res, err := b.store.Do(b.ctx, id, op)
				allowed := slices.Contains(rule.From, st)
				if !allowed {
					var te *jobs.TransitionError
					if !errors.As(err, &te) || !errors.Is(err, jobs.ErrIllegalTransition) || te.From != st || te.Transition != op.Transition() {
						t.Fatalf("Do from %s = %+v, %v; want a *TransitionError from %s", st, res, err, st)
					}
					if after := b.get(t, id); after.UpdatedAt != before.UpdatedAt {
						t.Errorf("a refused transition changed the record")
					}
					return
				}
				if err != nil {
					t.Fatalf("Do from %s: %v", st, err)
				}
				if res.State != st && !slices.Contains(rule.To, res.State) {
					t.Errorf("Do from %s led to %s, not in the row's %v", st, res.State, rule.To)
				}
			})
		}
	}
}

// TestDoRefusesATargetOutsideTheTable: asking a transition for a state
// its row does not lead to is refused before Redis is touched.
func TestDoRefusesATargetOutsideTheTable(t *testing.T) {
	b := setup(t)
	b.create(t, "j", "m")
	b.apply(t, "j", jobs.Change{To: jobs.StateGenerating})
	_, err := b.store.Do(b.ctx, "j", jobs.Failed{To: jobs.StateStored, Code: "x"})
	var te *jobs.TransitionError
	if !errors.As(err, &te) || te.To != jobs.StateStored {
		t.Fatalf("Failed to stored: %v; want a *TransitionError", err)
	}
	if got := b.get(t, "j").State; got != jobs.StateGenerating {
		t.Errorf("state %s, want generating", got)
	}
}

// TestActiveSetFollowsTheRecord: the unfinished set changes in the same
// step as the record: Create adds, an ending removes, a retry adds back.
func TestActiveSetFollowsTheRecord(t *testing.T) {
	b := setup(t)
	active := func(id string) bool {
		ok, err := b.rdb.SIsMember(b.ctx, "videoworker:active", id).Result()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	b.create(t, "j", "m")
	if !active("j") {
		t.Fatal("created job not in the unfinished set")
	}
	if _, err := b.store.Do(b.ctx, "j", jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "y", Step: "create"}); err != nil || active("j") {
		t.Fatalf("failed job: %v, active %v", err, active("j"))
	}
	plan, err := jobs.PlanRetry(b.get(t, "j"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := b.store.Do(b.ctx, "j", plan); err != nil || !res.Applied || !active("j") {
		t.Fatalf("retried job: %+v %v, active %v", res, err, active("j"))
	}
}

// dieAfter is a go-redis hook that lets the first n round trips through
// and fails every later one, as if the process had died there.
type dieAfter struct{ left atomic.Int32 }

func (d *dieAfter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (d *dieAfter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "hello", "select", "client", "auth":
			return next(ctx, cmd) // setting up a connection
		}
		if d.left.Add(-1) < 0 {
			return errors.New("process died")
		}
		return next(ctx, cmd)
	}
}
func (d *dieAfter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if d.left.Add(-1) < 0 {
			return errors.New("process died")
		}
		return next(ctx, cmds)
	}
}

// TestCreateIsOneStep is issue 11's defect 2: Create wrote the record in
// one round trip and its index entry and unfinished-set membership in a
// second, so a producer that died in between left a job that the
// stranded-job reconciler and the dashboard never saw. Whatever point the
// producer dies at, a record that exists is indexed and unfinished.
func TestCreateIsOneStep(t *testing.T) {
	b := setup(t)
	for _, n := range []int32{1, 2, 3, 4, 5, 6} {
		d := &dieAfter{}
		d.left.Store(n)
		rdb := redisSrv.Client(t, b.rdb.Options().DB)
		rdb.AddHook(d)
		st := jobs.NewStore(rdb, "")
		id := "die-" + string(rune('0'+n))
		rec := &jobs.Record{ID: id}
		rec.Request.Model, rec.Request.Prompt = "m", "p"
		_, _, _ = st.Create(b.ctx, rec)
		if _, err := b.store.Get(b.ctx, id); errors.Is(err, jobs.ErrNotFound) {
			continue // died before anything was written
		}
		if ok, _ := b.rdb.SIsMember(b.ctx, "videoworker:active", id).Result(); !ok {
			t.Errorf("died after %d round trips: the record exists but is not in the unfinished set", n)
		}
		if _, err := b.rdb.ZScore(b.ctx, "videoworker:jobs", id).Result(); err != nil {
			t.Errorf("died after %d round trips: the record exists but is not in the job index: %v", n, err)
		}
	}
}

// TestPlanRetry pins each way a job comes back.
func TestPlanRetry(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, tt := range []struct {
		name string
		rec  jobs.Record
		want jobs.Retried
	}{
		{"never submitted", jobs.Record{State: jobs.StateFailed, FailedStep: "create"},
			jobs.Retried{From: jobs.StateFailed, To: jobs.StateQueued, How: "submit again"}},
		{"create in doubt", jobs.Record{State: jobs.StateFailed, CreateInDoubt: true, Retries: 2},
			jobs.Retried{From: jobs.StateFailed, To: jobs.StateSubmitting, Retries: 2, How: "reconcile the in-doubt create again"}},
		{"generating timed out", jobs.Record{State: jobs.StateTimedOut, VideoID: "v", PollSeq: 4},
			jobs.Retried{From: jobs.StateTimedOut, To: jobs.StateGenerating, PollSeq: 5, How: "poll again"}},
		{"generated, download failed", jobs.Record{State: jobs.StateFailed, VideoID: "v", CompletedAt: t0, FailedStep: "download"},
			jobs.Retried{From: jobs.StateFailed, To: jobs.StateDownloading, How: "download again"}},
		{"failed at the API", jobs.Record{State: jobs.StateFailed, VideoID: "v", CompletedAt: t0, FailedStep: "generation"},
			jobs.Retried{From: jobs.StateFailed, To: jobs.StateQueued, NewGeneration: true, How: "new generation (the previous one failed at the API)"}},
		{"explicit deadline moves", jobs.Record{State: jobs.StateTimedOut, SubmittedAt: t0, Deadline: t0.Add(time.Minute)},
			jobs.Retried{From: jobs.StateTimedOut, To: jobs.StateQueued, Deadline: now.Add(time.Minute), How: "submit again"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jobs.PlanRetry(&tt.rec, now)
			if err != nil || got != tt.want {
				t.Errorf("PlanRetry = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	for _, st := range jobs.AllStates {
		if st == jobs.StateFailed || st == jobs.StateTimedOut {
			continue
		}
		if _, err := jobs.PlanRetry(&jobs.Record{State: st}, now); !errors.Is(err, jobs.ErrNotRetryable) {
			t.Errorf("PlanRetry from %s: %v, want ErrNotRetryable", st, err)
		}
	}
}

// TestNextWait pins which task each record waits on.
func TestNextWait(t *testing.T) {
	for _, tt := range []struct {
		name string
		rec  jobs.Record
		want jobs.Wait
	}{
		{"queued", jobs.Record{State: jobs.StateQueued}, jobs.Wait{Step: jobs.StepCreate}},
		{"submitting, second retry", jobs.Record{State: jobs.StateSubmitting, Retries: 2}, jobs.Wait{Step: jobs.StepCreate, Generation: 2}},
		{"generating", jobs.Record{State: jobs.StateGenerating, VideoID: "v", PollSeq: 3}, jobs.Wait{Step: jobs.StepPoll, Seq: 3, VideoID: "v"}},
		{"generating, chain not started", jobs.Record{State: jobs.StateGenerating, VideoID: "v"}, jobs.Wait{Step: jobs.StepCreate, VideoID: "v"}},
		{"downloading after a retry", jobs.Record{State: jobs.StateDownloading, VideoID: "v", Retries: 1}, jobs.Wait{Step: jobs.StepDownload, Generation: 1, VideoID: "v"}},
		{"cancelled, API not asked yet", jobs.Record{State: jobs.StateCancelled}, jobs.Wait{Step: jobs.StepCancel}},
		{"cancelled, answered", jobs.Record{State: jobs.StateCancelled, CancelOutcome: "ok"}, jobs.Wait{}},
		{"stored", jobs.Record{State: jobs.StateStored}, jobs.Wait{}},
		{"failed", jobs.Record{State: jobs.StateFailed, VideoID: "v"}, jobs.Wait{}},
		{"timed out", jobs.Record{State: jobs.StateTimedOut}, jobs.Wait{}},
		{"expired", jobs.Record{State: jobs.StateExpired}, jobs.Wait{}},
		{"stored, callback due", jobs.Record{ID: "j", State: jobs.StateStored, CallbackURL: "https://x"}, jobs.Wait{Step: jobs.StepCallback}},
		{"stored, callback retrying", jobs.Record{ID: "j", State: jobs.StateStored, CallbackURL: "https://x", CallbackEvent: "j:stored:0", CallbackStatus: jobs.CallbackRetrying}, jobs.Wait{Step: jobs.StepCallback}},
		{"stored, callback delivered", jobs.Record{ID: "j", State: jobs.StateStored, CallbackURL: "https://x", CallbackEvent: "j:stored:0", CallbackStatus: jobs.CallbackDelivered}, jobs.Wait{}},
		{"failed, callback given up", jobs.Record{ID: "j", State: jobs.StateFailed, CallbackURL: "https://x", CallbackEvent: "j:failed:0", CallbackStatus: jobs.CallbackFailed}, jobs.Wait{}},
		{"stored after a retry, earlier failure delivered", jobs.Record{ID: "j", State: jobs.StateStored, Retries: 1, CallbackURL: "https://x", CallbackEvent: "j:failed:0", CallbackStatus: jobs.CallbackDelivered}, jobs.Wait{Step: jobs.StepCallback, Generation: 1}},
		{"cancelled with a callback, API not asked yet", jobs.Record{State: jobs.StateCancelled, CallbackURL: "https://x"}, jobs.Wait{Step: jobs.StepCancel}},
		{"cancelled with a callback, answered", jobs.Record{ID: "j", State: jobs.StateCancelled, CancelOutcome: "ok", CallbackURL: "https://x"}, jobs.Wait{Step: jobs.StepCallback}},
		{"generating with a callback", jobs.Record{State: jobs.StateGenerating, VideoID: "v", PollSeq: 1, CallbackURL: "https://x"}, jobs.Wait{Step: jobs.StepPoll, Seq: 1, VideoID: "v"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := jobs.NextWait(&tt.rec); got != tt.want {
				t.Errorf("NextWait = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestHistoryOfAnOlderRelease: history lines in the older release's JSON
// are read as before, beside this release's compact lines.
func TestHistoryOfAnOlderRelease(t *testing.T) {
	b := setup(t)
	b.create(t, "j", "m")
	old := `{"at":"2026-12-03T09:34:18.123Z","state":"generating","event":"created","detail":"video v (created in 12ms)"}`
	if err := b.rdb.RPush(b.ctx, "videoworker:job:{j}:events", old).Err(); err != nil {
		t.Fatal(err)
	}
	evs := b.events(t, "j")
	want := jobs.Event{At: time.Date(2026, 12, 3, 9, 34, 18, 123_000_000, time.UTC), State: jobs.StateGenerating, Event: "created", Detail: "video v (created in 12ms)"}
	if len(evs) != 2 || evs[0].Event != "submitted" || !evs[1].At.Equal(want.At) || evs[1].State != want.State || evs[1].Event != want.Event || evs[1].Detail != want.Detail {
		t.Errorf("history %+v; want submitted, then %+v", evs, want)
	}
}

// TestLongRequestKeepsTheRecordCompact: a long request goes under the
// spec key, so the record stays in Redis's compact hash encoding, and Get
// still returns it (Load does not).
func TestLongRequestKeepsTheRecordCompact(t *testing.T) {
	b := setup(t)
	long := &jobs.Record{ID: "long", Labels: map[string]string{"team": "a"}}
	long.Request.Model, long.Request.Prompt = "m", strings.Repeat("a long prompt ", 40)
	short := &jobs.Record{ID: "short"}
	short.Request.Model, short.Request.Prompt = "m", "short"
	for _, rec := range []*jobs.Record{long, short} {
		if _, _, err := b.store.Create(b.ctx, rec); err != nil {
			t.Fatal(err)
		}
		if enc := b.rdb.ObjectEncoding(b.ctx, "videoworker:job:{"+rec.ID+"}").Val(); enc != "listpack" {
			t.Errorf("%s: record encoding %s, want listpack", rec.ID, enc)
		}
		got := b.get(t, rec.ID)
		if got.Request.Prompt != rec.Request.Prompt || len(got.Labels) != len(rec.Labels) {
			t.Errorf("%s: Get = %+v %v; want the request and labels back", rec.ID, got.Request, got.Labels)
		}
	}
	if r, err := b.store.Load(b.ctx, "long"); err != nil || r.Request.Prompt != "" {
		t.Errorf("Load(long) = %+v, %v; want the record without its spec", r, err)
	}
}

// TestDoneChannel: the transition that ends a job publishes its state on
// the job's done channel only when someone marked the job as waited on
// (a job nobody waits on costs no PUBLISH).
func TestDoneChannel(t *testing.T) {
	b := setup(t)
	b.create(t, "plain", "m")
	b.create(t, "waited", "m")
	sub := b.rdb.Subscribe(b.ctx, b.store.DoneChannel("plain"), b.store.DoneChannel("waited"))
	defer sub.Close()
	for range 2 {
		if _, err := sub.Receive(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := b.store.MarkWaiter(b.ctx, "waited"); err != nil || st != jobs.StateQueued {
		t.Fatalf("MarkWaiter = %s, %v", st, err)
	}
	if _, err := b.store.MarkWaiter(b.ctx, "missing"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("MarkWaiter of a missing job: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"plain", "waited"} { // plain ends first
		if _, err := b.store.Do(b.ctx, id, jobs.Cancelled{Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	m, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Channel != b.store.DoneChannel("waited") || m.Payload != "cancelled" {
		t.Errorf("first message %s %q; want the waited job's state (the other job has no waiter)", m.Channel, m.Payload)
	}
}

// TestBillingRecordsCostAndSpend: the API's estimate is kept when the job
// is adopted, its settled cost when it completes, and the completion adds
// the cost to the day's spend of the model in the same step; a void
// failure records 0.00 and adds nothing.
func TestBillingRecordsCostAndSpend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, id := range []string{"j1", "j2", "j3"} {
		b.create(t, id, "m")
		if _, err := b.store.Do(b.ctx, id, jobs.Adopted{VideoID: "v" + id, APIStatus: "queued", Model: "m", How: "test",
			EstimatedCost: apiclient.Cost{Micros: 400_000, Known: true}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.get(t, "j1").EstimatedCost; got.Micros != 400_000 || !got.Known {
		t.Fatalf("estimated cost %+v", got)
	}
	bill := jobs.Billing{Settled: apiclient.Cost{Micros: 400_000, Known: true}, State: "settled", Model: "m"}
	for _, id := range []string{"j1", "j2"} {
		bill := bill
		if id == "j2" {
			bill.Tenant = "acme"
		}
		if _, err := b.store.Do(b.ctx, id, jobs.Completed{APIStatus: "completed", Outputs: 1, SeenBy: "test", Billing: bill}); err != nil {
			t.Fatal(err)
		}
	}
	// A duplicate completion does not apply and adds nothing.
	if _, err := b.store.Do(b.ctx, "j1", jobs.Completed{APIStatus: "completed", Outputs: 1, SeenBy: "test", Billing: bill}); !errors.Is(err, jobs.ErrIllegalTransition) {
		t.Fatalf("duplicate completion: %v", err)
	}
	void := jobs.Billing{Settled: apiclient.Cost{Known: true}, State: "void", Model: "m"}
	if _, err := b.store.Do(b.ctx, "j3", jobs.Failed{To: jobs.StateFailed, Code: "generation_failed", Err: "x", Step: "generation", Billing: void}); err != nil {
		t.Fatal(err)
	}
	r1, r3 := b.get(t, "j1"), b.get(t, "j3")
	if r1.SettledCost.Micros != 400_000 || r1.BillingState != "settled" || !r3.SettledCost.Known || r3.SettledCost.Micros != 0 || r3.BillingState != "void" {
		t.Fatalf("settled: j1 %+v %s, j3 %+v %s", r1.SettledCost, r1.BillingState, r3.SettledCost, r3.BillingState)
	}
	sp, err := b.store.SpendSummary(b.ctx, b.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sp.Today["m"] != 800_000 || sp.Month["m"] != 800_000 || jobs.Total(sp.Today) != 800_000 {
		t.Fatalf("spend %+v", sp)
	}
	if len(sp.TenantToday) != 1 || sp.TenantToday["acme"] != 400_000 || sp.TenantMonth["acme"] != 400_000 {
		t.Fatalf("spend by tenant %+v; want acme 0.40 (the default tenant's is the rest)", sp)
	}
	if ttl := b.rdb.TTL(b.ctx, b.store.SpendKey(b.clock.Now())).Val(); ttl <= 0 {
		t.Fatalf("spend hash TTL %v", ttl)
	}
}
