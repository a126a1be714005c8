package jobs_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

func TestStateTerminal(t *testing.T) {
	t.Parallel()
	terminal := map[jobs.State]bool{
		jobs.StateStored: true, jobs.StateFailed: true, jobs.StateCancelled: true,
		jobs.StateExpired: true, jobs.StateTimedOut: true,
	}
	if len(jobs.AllStates) != 11 {
		t.Fatalf("AllStates has %d states, want 11", len(jobs.AllStates))
	}
	for _, s := range jobs.AllStates {
		if got := s.Terminal(); got != terminal[s] {
			t.Errorf("%s.Terminal() = %v, want %v", s, got, terminal[s])
		}
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)

	first := &jobs.Record{ID: "j1", Request: apiclient.CreateRequest{Model: "veo-3", Prompt: "first"}}
	created, rec, err := b.store.Create(b.ctx, first)
	if err != nil || !created {
		t.Fatalf("first Create = %v, %v; want created", created, err)
	}
	if rec.State != jobs.StateQueued || !rec.SubmittedAt.Equal(t0) || !rec.UpdatedAt.Equal(t0) {
		t.Errorf("first Create returned state %q, submitted %v, updated %v; want queued at %v", rec.State, rec.SubmittedAt, rec.UpdatedAt, t0)
	}

	b.clock.Advance(time.Minute)
	second := &jobs.Record{ID: "j1", Request: apiclient.CreateRequest{Model: "other", Prompt: "second"}}
	created, existing, err := b.store.Create(b.ctx, second)
	if err != nil {
		t.Fatalf("second Create: %v", err)
	}
	if created {
		t.Fatal("second Create reported created=true")
	}
	if existing.Request.Prompt != "first" || !existing.SubmittedAt.Equal(t0.Truncate(time.Millisecond)) {
		t.Errorf("second Create returned prompt %q submitted %v; want the first record", existing.Request.Prompt, existing.SubmittedAt)
	}
	if diff := cmp.Diff(b.get(t, "j1"), existing); diff != "" {
		t.Errorf("second Create's record differs from Get (-get +create):\n%s", diff)
	}

	ids, _, err := b.store.Page(b.ctx, jobs.Cursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"j1"}, ids); diff != "" {
		t.Errorf("Page (-want +got):\n%s", diff)
	}
	// History times keep milliseconds, like the record's.
	want := []jobs.Event{{At: t0.Truncate(time.Millisecond), State: jobs.StateQueued, Event: "submitted", Detail: "model veo-3"}}
	if diff := cmp.Diff(want, b.events(t, "j1")); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

func TestCreateRefusesEmptyID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if created, _, err := b.store.Create(b.ctx, &jobs.Record{}); err == nil || created {
		t.Fatalf("Create without id = %v, %v; want an error", created, err)
	}
	if n := b.rdb.DBSize(b.ctx).Val(); n != 0 {
		t.Errorf("Create without id wrote %d keys", n)
	}
}

func TestCreateUsesPrefix(t *testing.T) {
	t.Parallel()
	b := setup(t)
	st := jobs.NewStore(b.rdb, "other:")
	if st.Prefix() != "other:" || b.store.Prefix() != jobs.DefaultPrefix {
		t.Fatalf("prefixes %q and %q", st.Prefix(), b.store.Prefix())
	}
	if _, _, err := st.Create(b.ctx, &jobs.Record{ID: "j1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Get(b.ctx, "j1"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("default-prefix Get of another prefix's job: %v, want ErrNotFound", err)
	}
	keys, err := b.rdb.Keys(b.ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k[:len("other:")] != "other:" {
			t.Errorf("key %q outside the prefix", k)
		}
	}
	// Keys of one job share a hash tag (Redis Cluster).
	for _, k := range []string{"other:job:{j1}", "other:job:{j1}:events", "other:jobs"} {
		if n := b.rdb.Exists(b.ctx, k).Val(); n != 1 {
			t.Errorf("key %q missing", k)
		}
	}
}

func TestPageNewestFirst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	// Created out of order: the index sorts by submission time.
	for _, i := range []int{3, 1, 5, 2, 4} {
		rec := &jobs.Record{ID: "j" + strconv.Itoa(i), SubmittedAt: at(i)}
		if _, _, err := b.store.Create(b.ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	// Walking the pages visits every job once, newest first.
	var all []string
	var cur jobs.Cursor
	for page := 0; page < 10; page++ {
		got, next, err := b.store.Page(b.ctx, cur, 2)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		if next.ID == "" {
			break
		}
		cur = next
	}
	if diff := cmp.Diff([]string{"j5", "j4", "j3", "j2", "j1"}, all); diff != "" {
		t.Errorf("paged walk (-want +got):\n%s", diff)
	}
}

func TestMissingRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.store.Get(b.ctx, "nope"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get of a missing job: %v, want ErrNotFound", err)
	}
	out, err := b.store.Apply(b.ctx, "nope", jobs.Change{Set: map[string]any{jobs.FieldError: "x"}, Event: "x"})
	if !errors.Is(err, jobs.ErrNotFound) || out.Applied {
		t.Errorf("Apply to a missing job = %+v, %v; want ErrNotFound", out, err)
	}
	if evs := b.events(t, "nope"); len(evs) != 0 {
		t.Errorf("history of a missing job: %v", evs)
	}
	if n := b.rdb.DBSize(b.ctx).Val(); n != 0 {
		t.Errorf("reads of a missing job wrote %d keys", n)
	}
}

func TestGetRefusesCorruptRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range []string{jobs.FieldPolls, jobs.FieldBytes, jobs.FieldStoredAt, jobs.FieldRequest, jobs.FieldLabels} {
		id := "bad-" + f
		b.create(t, id, "m")
		b.rdb.HSet(b.ctx, "videoworker:job:{"+id+"}", f, "{not a value")
		if _, err := b.store.Get(b.ctx, id); err == nil || errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("Get with a corrupt %s: %v, want a decode error", f, err)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Times in another zone and with nanoseconds come back in UTC, to the
	// millisecond.
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	ts := func(i int) time.Time { return t0.Add(time.Duration(i)*time.Hour + 123_456*time.Nanosecond).In(zone) }
	ms := func(tm time.Time) time.Time { return tm.Truncate(time.Millisecond).UTC() }
	seed, yes, no, quality := int64(-42), true, false, 7

	rec := &jobs.Record{
		ID: "round-trip",
		Request: apiclient.CreateRequest{
			Model: "veo-3", Prompt: "a lighthouse in a storm, \"quoted\" and ünïcödé", Duration: 8,
			Resolution: "1080p", AspectRatio: "16:9", Seed: &seed, SampleCount: 2,
			NegativePrompt: "blur", GenerateAudio: &yes, EnhancePrompt: &no, CompressionQuality: &quality,
			PersonGeneration: "allow_adult", ResizeMode: "pad",
			InputReferences: []json.RawMessage{json.RawMessage(`{"type":"image","uri":"gs://b/i.png"}`)},
			ProviderParams:  map[string]any{"style": "noir", "strength": 0.5, "flags": []any{"a", true}},
			Output:          &apiclient.OutputOptions{Access: "signed_url"},
			Provider:        map[string]any{"region": "eu"},
		},
		Labels:      map[string]string{"team": "ads", "campaign": "spring / 2025", "empty": ""},
		SubmittedAt: ts(-1),
		Deadline:    ts(6),
	}
	if created, _, err := b.store.Create(b.ctx, rec); err != nil || !created {
		t.Fatalf("Create = %v, %v", created, err)
	}
	now := b.clock.Advance(90 * time.Second)
	out := b.apply(t, "round-trip", jobs.Change{
		From: []jobs.State{jobs.StateQueued},
		To:   jobs.StateDownloading,
		Set: map[string]any{
			jobs.FieldVideoID: "vid_123", jobs.FieldAPIStatus: "completed",
			jobs.FieldProgress: 100, jobs.FieldOutputs: 2,
			jobs.FieldCreateStartedAt: ts(0), jobs.FieldCreateEndedAt: ts(1), jobs.FieldCreatedAt: ts(2),
			jobs.FieldCompletedAt: ts(3), jobs.FieldDownloadStartedAt: ts(4), jobs.FieldStoredAt: ts(5),
			jobs.FieldFinishedAt:    ts(7),
			jobs.FieldCreateInDoubt: true, jobs.FieldCreateAttempts: 3, jobs.FieldPolls: 17, jobs.FieldPollSeq: 18,
			jobs.FieldDownloadAttempts: 1,
			jobs.FieldExpectedBytes:    int64(5_000_000_123), jobs.FieldExpectedSHA256: "abc123",
			jobs.FieldStorageKey: "videos/round-trip.mp4", jobs.FieldLocation: "file:///videos/round-trip.mp4",
			jobs.FieldBytes: int64(5_000_000_123), jobs.FieldSHA256: "abc123",
			jobs.FieldErrorCode: "rate_limited", jobs.FieldError: "slow down: 429",
			jobs.FieldReconcile:      "adopted vid_123",
			jobs.FieldEarlyWebhookAt: ts(8), jobs.FieldEarlyWebhookEvent: "video.completed",
			jobs.FieldEarlyWebhookKey: "video.completed", jobs.FieldEarlyWebhookVideo: "vid_123",
		},
	})
	if !out.Applied || out.State != jobs.StateDownloading {
		t.Fatalf("Apply = %+v", out)
	}

	want := &jobs.Record{
		ID: "round-trip", State: jobs.StateDownloading, Request: rec.Request, Labels: rec.Labels, Tenant: jobs.DefaultTenant,
		VideoID: "vid_123", APIStatus: "completed", Progress: 100, Outputs: 2,
		SubmittedAt: ms(ts(-1)), CreateStartedAt: ms(ts(0)), CreateEndedAt: ms(ts(1)), CreatedAt: ms(ts(2)),
		CompletedAt: ms(ts(3)), DownloadStartedAt: ms(ts(4)), StoredAt: ms(ts(5)), FinishedAt: ms(ts(7)),
		UpdatedAt: ms(now), Deadline: ms(ts(6)),
		CreateInDoubt: true, CreateAttempts: 3, Polls: 17, PollSeq: 18, DownloadAttempts: 1,
		ExpectedBytes: 5_000_000_123, ExpectedSHA256: "abc123",
		StorageKey: "videos/round-trip.mp4", Location: "file:///videos/round-trip.mp4", Bytes: 5_000_000_123, SHA256: "abc123",
		ErrorCode: "rate_limited", Error: "slow down: 429", Reconcile: "adopted vid_123",
		EarlyWebhookAt: ms(ts(8)), EarlyWebhookEvent: "video.completed", EarlyWebhookKey: "video.completed", EarlyWebhookVideo: "vid_123",
	}
	got := b.get(t, "round-trip")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record round trip (-want +got):\n%s", diff)
	}
	for name, tm := range map[string]time.Time{"submitted_at": got.SubmittedAt, "updated_at": got.UpdatedAt, "deadline": got.Deadline, "early_webhook_at": got.EarlyWebhookAt} {
		if tm.Location() != time.UTC {
			t.Errorf("%s is in %v, want UTC", name, tm.Location())
		}
	}

	// Clearing: false, 0 and "" and a zero time read back as zero values.
	b.apply(t, "round-trip", jobs.Change{Set: map[string]any{
		jobs.FieldCreateInDoubt: false, jobs.FieldProgress: 0, jobs.FieldError: "", jobs.FieldStoredAt: time.Time{},
		jobs.FieldBytes: "",
	}})
	got = b.get(t, "round-trip")
	if got.CreateInDoubt || got.Progress != 0 || got.Error != "" || !got.StoredAt.IsZero() || got.Bytes != 0 {
		t.Errorf("cleared fields read back as in_doubt=%v progress=%d error=%q stored_at=%v bytes=%d",
			got.CreateInDoubt, got.Progress, got.Error, got.StoredAt, got.Bytes)
	}
}

func TestMinimalRecordRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "min", "")
	want := &jobs.Record{ID: "min", State: jobs.StateQueued, Request: apiclient.CreateRequest{Prompt: "a prompt"}, Tenant: jobs.DefaultTenant,
		SubmittedAt: t0.Truncate(time.Millisecond), UpdatedAt: t0.Truncate(time.Millisecond)}
	if diff := cmp.Diff(want, b.get(t, "min")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestApplyFrom(t *testing.T) {
	t.Parallel()
	b := setup(t)
	set := map[string]any{jobs.FieldError: "changed"}
	for _, cur := range jobs.AllStates {
		t.Run(string(cur), func(t *testing.T) {
			id := "from-" + string(cur)
			b.create(t, id, "m")
			b.apply(t, id, jobs.Change{From: []jobs.State{jobs.StateQueued}, To: cur})

			// From naming the state (among others) applies, even to a terminal record.
			out := b.apply(t, id, jobs.Change{From: []jobs.State{jobs.StateGenerating, cur}, Set: set})
			if !out.Applied || out.State != cur {
				t.Errorf("From naming %s: %+v, want applied", cur, out)
			}
			// From not naming it refuses.
			other := jobs.StateQueued
			if cur == jobs.StateQueued {
				other = jobs.StateSubmitting
			}
			out = b.apply(t, id, jobs.Change{From: []jobs.State{other}, To: other, Set: map[string]any{jobs.FieldError: "refused"}})
			if out.Applied || out.State != cur {
				t.Errorf("From %s on a %s record: %+v, want not applied, state %s", other, cur, out, cur)
			}
			// Empty From: any non-terminal state.
			out = b.apply(t, id, jobs.Change{Set: map[string]any{jobs.FieldReconcile: "empty from"}})
			if out.Applied == cur.Terminal() || out.State != cur {
				t.Errorf("empty From on a %s record: %+v, want applied=%v", cur, out, !cur.Terminal())
			}
			rec := b.get(t, id)
			if rec.State != cur || rec.Error != "changed" {
				t.Errorf("record state %s error %q, want %s, \"changed\"", rec.State, rec.Error, cur)
			}
			if (rec.Reconcile == "empty from") == cur.Terminal() {
				t.Errorf("empty From changed a %s record: reconcile=%q", cur, rec.Reconcile)
			}
		})
	}
}

func TestApplyIfEqual(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	at := t0.Add(time.Hour)
	b.apply(t, "j", jobs.Change{Set: map[string]any{
		jobs.FieldVideoID: "vid_1", jobs.FieldPollSeq: 3, jobs.FieldBytes: int64(1 << 40),
		jobs.FieldCreateInDoubt: true, jobs.FieldCreatedAt: at, jobs.FieldAPIStatus: "in_progress",
	}})

	tests := []struct {
		name  string
		cond  map[string]any
		apply bool
	}{
		{"string", map[string]any{jobs.FieldVideoID: "vid_1"}, true},
		{"string differs", map[string]any{jobs.FieldVideoID: "vid_2"}, false},
		{"string empty but set", map[string]any{jobs.FieldVideoID: ""}, false},
		{"int", map[string]any{jobs.FieldPollSeq: 3}, true},
		{"int differs", map[string]any{jobs.FieldPollSeq: 2}, false},
		{"int64", map[string]any{jobs.FieldBytes: int64(1 << 40)}, true},
		{"bool", map[string]any{jobs.FieldCreateInDoubt: true}, true},
		{"bool differs", map[string]any{jobs.FieldCreateInDoubt: false}, false},
		{"bool set at create", map[string]any{jobs.FieldCreateInDoubt: true, jobs.FieldVideoID: "vid_1"}, true},
		{"time", map[string]any{jobs.FieldCreatedAt: at}, true},
		{"time to the millisecond", map[string]any{jobs.FieldCreatedAt: at.Truncate(time.Millisecond).Add(999 * time.Microsecond)}, true},
		{"time differs", map[string]any{jobs.FieldCreatedAt: at.Add(time.Millisecond)}, false},
		{"state", map[string]any{jobs.FieldState: jobs.StateQueued}, true},
		{"all of several", map[string]any{jobs.FieldVideoID: "vid_1", jobs.FieldPollSeq: 3, jobs.FieldAPIStatus: "in_progress"}, true},
		{"one of several differs", map[string]any{jobs.FieldVideoID: "vid_1", jobs.FieldPollSeq: 3, jobs.FieldAPIStatus: "queued"}, false},
		// Fields never written read as their zero value (as Get reports
		// them), so a condition on the zero value holds.
		{"never set: empty string", map[string]any{jobs.FieldStorageKey: ""}, true},
		{"never set: zero time", map[string]any{jobs.FieldStoredAt: time.Time{}}, true},
		{"never set: zero int", map[string]any{jobs.FieldPolls: 0}, true},
		{"never set: zero int64", map[string]any{jobs.FieldExpectedBytes: int64(0)}, true},
		{"never set: non-zero int", map[string]any{jobs.FieldPolls: 1}, false},
		{"never set: non-empty string", map[string]any{jobs.FieldStorageKey: "k"}, false},
		{"never set: the string 0", map[string]any{jobs.FieldStorageKey: "0"}, false},
		{"never set: zero poll_seq", map[string]any{jobs.FieldDownloadAttempts: 0, jobs.FieldPollSeq: 3}, true},
		{"never set: unknown field", map[string]any{"no_such_field": ""}, true},
	}
	// create_in_doubt is written by Create; a record without it (and an
	// int field stored empty) reads as false and 0.
	b.create(t, "bare", "m")
	b.rdb.HDel(b.ctx, "videoworker:job:{bare}", jobs.FieldCreateInDoubt)
	b.apply(t, "bare", jobs.Change{Set: map[string]any{jobs.FieldPollSeq: ""}})
	out := b.apply(t, "bare", jobs.Change{IfEqual: map[string]any{jobs.FieldCreateInDoubt: false, jobs.FieldPollSeq: 0},
		Set: map[string]any{jobs.FieldPollSeq: 1}})
	if !out.Applied || b.get(t, "bare").PollSeq != 1 {
		t.Errorf("CAS on false and 0 of unwritten/empty fields: %+v, want applied", out)
	}
	if out := b.apply(t, "bare", jobs.Change{IfEqual: map[string]any{jobs.FieldCreateInDoubt: true}}); out.Applied {
		t.Errorf("IfEqual true on an unwritten bool applied")
	}

	for i, tt := range tests {
		marker := fmt.Sprintf("case %d", i)
		out := b.apply(t, "j", jobs.Change{IfEqual: tt.cond, Set: map[string]any{jobs.FieldReconcile: marker}, Event: "checked"})
		if out.Applied != tt.apply || out.State != jobs.StateQueued {
			t.Errorf("%s: IfEqual %v = %+v, want applied=%v state queued", tt.name, tt.cond, out, tt.apply)
		}
		if got := b.get(t, "j").Reconcile == marker; got != tt.apply {
			t.Errorf("%s: record changed=%v, want %v", tt.name, got, tt.apply)
		}
	}
}

func TestApplyPollSeqCAS(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	b.apply(t, "j", jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: "v", jobs.FieldPollSeq: 1}})

	advance := func(seq int) jobs.Outcome {
		return b.apply(t, "j", jobs.Change{From: []jobs.State{jobs.StateGenerating},
			IfEqual: map[string]any{jobs.FieldPollSeq: seq}, Set: map[string]any{jobs.FieldPollSeq: seq + 1},
			Incr: map[string]int64{jobs.FieldPolls: 1}})
	}
	if out := advance(1); !out.Applied {
		t.Fatalf("advance from 1: %+v", out)
	}
	if out := advance(1); out.Applied || out.State != jobs.StateGenerating {
		t.Errorf("stale advance from 1: %+v, want not applied", out)
	}
	if out := advance(2); !out.Applied {
		t.Errorf("advance from 2: %+v", out)
	}
	if rec := b.get(t, "j"); rec.PollSeq != 3 || rec.Polls != 2 {
		t.Errorf("poll_seq %d polls %d, want 3 and 2", rec.PollSeq, rec.Polls)
	}
}

func TestApplySetAndIncr(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	now := b.clock.Advance(time.Minute)
	for i := 1; i <= 3; i++ {
		out := b.apply(t, "j", jobs.Change{
			Set:  map[string]any{jobs.FieldAPIStatus: "in_progress", jobs.FieldProgress: 10 * i},
			Incr: map[string]int64{jobs.FieldPolls: 1, jobs.FieldCreateAttempts: 2, jobs.FieldBytes: 1 << 33},
		})
		if !out.Applied || out.State != jobs.StateQueued {
			t.Fatalf("Apply %d: %+v", i, out)
		}
	}
	rec := b.get(t, "j")
	if rec.APIStatus != "in_progress" || rec.Progress != 30 || rec.Polls != 3 || rec.CreateAttempts != 6 || rec.Bytes != 3<<33 {
		t.Errorf("got status %q progress %d polls %d attempts %d bytes %d", rec.APIStatus, rec.Progress, rec.Polls, rec.CreateAttempts, rec.Bytes)
	}
	if !rec.UpdatedAt.Equal(now.Truncate(time.Millisecond)) {
		t.Errorf("updated_at %v, want %v", rec.UpdatedAt, now)
	}
	// Negative increments, and Set then Incr of one field.
	b.apply(t, "j", jobs.Change{Set: map[string]any{jobs.FieldPolls: 10}, Incr: map[string]int64{jobs.FieldPolls: -1}})
	if rec := b.get(t, "j"); rec.Polls != 9 {
		t.Errorf("polls after set 10 and incr -1: %d, want 9", rec.Polls)
	}
	// An unmet condition changes nothing, not even updated_at.
	b.clock.Advance(time.Minute)
	b.apply(t, "j", jobs.Change{From: []jobs.State{jobs.StateGenerating}, Incr: map[string]int64{jobs.FieldPolls: 1}})
	if rec := b.get(t, "j"); rec.Polls != 9 || !rec.UpdatedAt.Equal(now.Truncate(time.Millisecond)) {
		t.Errorf("refused change wrote polls %d updated_at %v", rec.Polls, rec.UpdatedAt)
	}
}

func TestApplyTerminalSetsFinishedAt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, st := range jobs.AllStates {
		id := "to-" + string(st)
		b.create(t, id, "m")
		now := b.clock.Advance(time.Second)
		b.apply(t, id, jobs.Change{To: st})
		got := b.get(t, id).FinishedAt
		switch {
		case st.Terminal() && !got.Equal(now.Truncate(time.Millisecond)):
			t.Errorf("To %s: finished_at %v, want %v", st, got, now)
		case !st.Terminal() && !got.IsZero():
			t.Errorf("To %s: finished_at %v, want zero", st, got)
		}
	}

	// An explicit finished_at wins.
	b.create(t, "explicit", "m")
	b.clock.Advance(time.Second)
	at := t0.Add(-time.Hour)
	set := map[string]any{jobs.FieldFinishedAt: at}
	b.apply(t, "explicit", jobs.Change{To: jobs.StateStored, Set: set})
	if got := b.get(t, "explicit").FinishedAt; !got.Equal(at.Truncate(time.Millisecond)) {
		t.Errorf("explicit finished_at: got %v, want %v", got, at)
	}
	if len(set) != 1 {
		t.Errorf("Apply modified the caller's Set map: %v", set)
	}
	// Apply does not modify the caller's Set map when it adds finished_at.
	set = map[string]any{jobs.FieldError: "boom"}
	b.create(t, "caller-map", "m")
	b.apply(t, "caller-map", jobs.Change{To: jobs.StateFailed, Set: set})
	if _, ok := set[jobs.FieldFinishedAt]; ok || len(set) != 1 {
		t.Errorf("Apply modified the caller's Set map: %v", set)
	}
}

func TestApplyHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "veo-3")

	at1 := b.clock.Advance(time.Second)
	b.apply(t, "j", jobs.Change{To: jobs.StateSubmitting, Event: "create_started"})
	b.clock.Advance(time.Second)
	b.apply(t, "j", jobs.Change{Set: map[string]any{jobs.FieldError: "no event"}})
	at3 := b.clock.Advance(time.Second)
	// No To: the line carries the record's current state.
	b.apply(t, "j", jobs.Change{Set: map[string]any{jobs.FieldError: "x"}, Event: "create_in_doubt", Detail: `timeout "s":"" "state":"" {}`})
	b.clock.Advance(time.Second)
	// Unmet conditions write no line.
	b.apply(t, "j", jobs.Change{From: []jobs.State{jobs.StateQueued}, To: jobs.StateFailed, Event: "refused"})
	at5 := b.clock.Advance(time.Second)
	b.apply(t, "j", jobs.Change{From: []jobs.State{jobs.StateSubmitting}, To: jobs.StateGenerating, Event: "created", Detail: "video v1"})

	ms := func(t time.Time) time.Time { return t.Truncate(time.Millisecond) }
	want := []jobs.Event{
		{At: ms(t0), State: jobs.StateQueued, Event: "submitted", Detail: "model veo-3"},
		{At: ms(at1), State: jobs.StateSubmitting, Event: "create_started"},
		{At: ms(at3), State: jobs.StateSubmitting, Event: "create_in_doubt", Detail: `timeout "s":"" "state":"" {}`},
		{At: ms(at5), State: jobs.StateGenerating, Event: "created", Detail: "video v1"},
	}
	if diff := cmp.Diff(want, b.events(t, "j")); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	// Events(n) returns the last n, oldest first.
	last, err := b.store.Events(b.ctx, "j", 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[2:], last); diff != "" {
		t.Errorf("Events(2) (-want +got):\n%s", diff)
	}
}

func TestApplyHistoryIsCapped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	const n = 250
	for i := 1; i <= n; i++ {
		b.apply(t, "j", jobs.Change{Event: "tick", Detail: strconv.Itoa(i)})
	}
	if l := b.rdb.LLen(b.ctx, "videoworker:job:{j}:events").Val(); l != 200 {
		t.Errorf("history list holds %d lines, want 200", l)
	}
	evs := b.events(t, "j")
	if len(evs) != 200 {
		t.Fatalf("Events returned %d lines, want 200", len(evs))
	}
	if evs[0].Detail != strconv.Itoa(n-199) || evs[199].Detail != strconv.Itoa(n) {
		t.Errorf("history runs from %q to %q, want %d to %d", evs[0].Detail, evs[199].Detail, n-199, n)
	}
	for _, req := range []int{-1, 0, 201, 1000} {
		got, err := b.store.Events(b.ctx, "j", req)
		if err != nil || len(got) != 200 {
			t.Errorf("Events(%d) returned %d lines (%v), want 200", req, len(got), err)
		}
	}
}

func TestApplyConcurrentCAS(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	b.apply(t, "j", jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldPollSeq: 7}})

	const workers = 50
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied int
		errs    []error
	)
	start := make(chan struct{})
	for range workers {
		wg.Go(func() {
			<-start
			out, err := b.store.Apply(b.ctx, "j", jobs.Change{
				From:    []jobs.State{jobs.StateGenerating},
				IfEqual: map[string]any{jobs.FieldPollSeq: 7},
				Set:     map[string]any{jobs.FieldPollSeq: 8},
				Incr:    map[string]int64{jobs.FieldPolls: 1},
				Event:   "api_status",
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if out.Applied {
				applied++
			}
		})
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("Apply errors: %v", errors.Join(errs...))
	}
	if applied != 1 {
		t.Errorf("%d of %d concurrent CAS applied, want exactly 1", applied, workers)
	}
	rec := b.get(t, "j")
	if rec.PollSeq != 8 || rec.Polls != 1 {
		t.Errorf("poll_seq %d polls %d, want 8 and 1", rec.PollSeq, rec.Polls)
	}
	if evs := b.events(t, "j"); len(evs) != 2 {
		t.Errorf("history has %d lines, want submitted + one api_status", len(evs))
	}
}

func TestClaim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	claim := func(video, job, want string) {
		t.Helper()
		owner, err := b.store.Claim(b.ctx, video, job)
		if err != nil {
			t.Fatal(err)
		}
		if owner != want {
			t.Errorf("Claim(%s, %s) = %q, want %q", video, job, owner, want)
		}
	}
	claim("v1", "j1", "j1") // first wins
	claim("v1", "j1", "j1") // same owner: idempotent
	claim("v1", "j2", "j1") // another job: told the owner
	claim("v2", "j2", "j2")

	owners, err := b.store.Owners(b.ctx, []string{"v1", "v2", "v3"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"v1": "j1", "v2": "j2"}, owners); diff != "" {
		t.Errorf("Owners (-want +got):\n%s", diff)
	}
	for _, ids := range [][]string{nil, {}, {"v9"}} {
		owners, err := b.store.Owners(b.ctx, ids)
		if err != nil || owners == nil || len(owners) != 0 {
			t.Errorf("Owners(%q) = %v, %v; want an empty map", ids, owners, err)
		}
	}
}

func TestClaimConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20
	owners := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			owner, err := b.store.Claim(b.ctx, "v", "j"+strconv.Itoa(i))
			if err != nil {
				t.Error(err)
			}
			owners[i] = owner
		})
	}
	wg.Wait()
	for i, o := range owners {
		if o != owners[0] || o == "" {
			t.Fatalf("claimant %d was told owner %q, claimant 0 %q: want one owner", i, o, owners[0])
		}
	}
}

// A delivery writes exactly one history line (the script once pushed the
// match count of its gsub as a second, undecodable line).
func TestRecordWebhookHistoryLine(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(t, "j", "m")
	if _, err := b.store.RecordWebhook(b.ctx, "j", jobs.WebhookDelivery{Key: "k", EventType: "video.completed", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	raw, err := b.rdb.LRange(b.ctx, "videoworker:job:{j}:events", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if evs := b.events(t, "j"); len(raw) != 2 || len(evs) != 2 || evs[1].Event != "webhook" || evs[1].State != jobs.StateQueued {
		t.Errorf("history %q, want submitted and one webhook line", raw)
	}
}
