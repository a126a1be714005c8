package worker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
)

// listAPI is an API double that answers only List, from a fixed job list
// (newest first) in pages of perPage, with the Date header at date.
type listAPI struct {
	VideoAPI
	videos  []apiclient.Video
	perPage int
	date    time.Time
	// endless makes every page say there is more.
	endless bool
	pages   int
}

func (a *listAPI) List(_ context.Context, p apiclient.ListParams) (*apiclient.VideoList, error) {
	a.pages++
	if a.endless {
		v := apiclient.Video{ID: "v" + strconv.Itoa(a.pages), Model: "m", CreatedAt: apiclient.Time{Time: a.date}}
		return &apiclient.VideoList{Data: []apiclient.Video{v}, HasMore: true, LastID: v.ID, ServerDate: a.date}, nil
	}
	start := 0
	for i, v := range a.videos {
		if v.ID == p.After {
			start = i + 1
		}
	}
	end := min(start+a.perPage, len(a.videos))
	page := a.videos[start:end]
	l := &apiclient.VideoList{Data: page, HasMore: end < len(a.videos), ServerDate: a.date}
	if len(page) > 0 {
		l.LastID = page[len(page)-1].ID
	}
	return l, nil
}

// TestReconcileDecisions pins each outcome of reconciling an in-doubt
// create: the call ran from base to base+1s on the worker's clock, and the
// worker reconciles at base+10s.
func TestReconcileDecisions(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	base := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	now := base.Add(10 * time.Second)
	at := func(d time.Duration) apiclient.Time { return apiclient.Time{Time: base.Add(d)} }
	hook := &apiclient.WebhookSubscription{URL: "https://hooks.example/aistats"}
	ours := "https://hooks.example/aistats?job_id=j"

	type want struct {
		adopted     string // the video adopted, "" for none
		resubmit    bool   // nothing created: the doubt is cleared
		errContains string
	}
	for _, tc := range []struct {
		name    string
		api     *listAPI
		webhook bool
		owned   map[string]string // video → owning job
		want    want
	}{
		{name: "nothing in the window", api: &listAPI{videos: []apiclient.Video{
			{ID: "late", Model: "m", CreatedAt: at(30 * time.Second)},
			{ID: "early", Model: "m", CreatedAt: at(-30 * time.Second)},
		}}, want: want{resubmit: true}},
		{name: "one unowned job in the window", api: &listAPI{videos: []apiclient.Video{
			{ID: "v1", Model: "M", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{adopted: "v1"}},
		{name: "the window is widened by the clock tolerance", api: &listAPI{videos: []apiclient.Video{
			{ID: "v1", Model: "m", CreatedAt: at(2500 * time.Millisecond)},
		}}, want: want{adopted: "v1"}},
		{name: "another model", api: &listAPI{videos: []apiclient.Video{
			{ID: "v1", Model: "other", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{resubmit: true}},
		{name: "owned by another job", owned: map[string]string{"v1": "other-job"}, api: &listAPI{videos: []apiclient.Video{
			{ID: "v1", Model: "m", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{resubmit: true}},
		{name: "already claimed by this job", owned: map[string]string{"v1": "j"}, api: &listAPI{videos: []apiclient.Video{
			{ID: "v1", Model: "m", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{adopted: "v1"}},
		{name: "several candidates", api: &listAPI{videos: []apiclient.Video{
			{ID: "v2", Model: "m", CreatedAt: at(700 * time.Millisecond)},
			{ID: "v1", Model: "m", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{errContains: "2 unowned jobs"}},
		{name: "webhook URL carries the job id, whatever the clocks", webhook: true, api: &listAPI{videos: []apiclient.Video{
			{ID: "far", Model: "m", CreatedAt: at(time.Hour), Webhook: &apiclient.WebhookInfo{URL: ours}},
			{ID: "v1", Model: "m", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{adopted: "far"}},
		{name: "another job's webhook URL", webhook: true, api: &listAPI{videos: []apiclient.Video{
			{ID: "v1", Model: "m", CreatedAt: at(500 * time.Millisecond), Webhook: &apiclient.WebhookInfo{URL: hook.URL + "?job_id=other"}},
		}}, want: want{resubmit: true}},
		{name: "API clock 30s ahead is corrected", api: &listAPI{date: now.Add(30 * time.Second), videos: []apiclient.Video{
			{ID: "v1", Model: "m", CreatedAt: at(30*time.Second + 500*time.Millisecond)},
		}}, want: want{adopted: "v1"}},
		{name: "API clock 1s ahead is within the Date header's resolution", api: &listAPI{date: now.Add(time.Second), videos: []apiclient.Video{
			{ID: "v1", Model: "m", CreatedAt: at(5 * time.Second)},
		}}, want: want{resubmit: true}},
		{name: "the list is read back page by page", api: &listAPI{perPage: 2, videos: []apiclient.Video{
			{ID: "n3", Model: "m", CreatedAt: at(9 * time.Second)},
			{ID: "n2", Model: "m", CreatedAt: at(8 * time.Second)},
			{ID: "n1", Model: "m", CreatedAt: at(7 * time.Second)},
			{ID: "v1", Model: "m", CreatedAt: at(500 * time.Millisecond)},
		}}, want: want{adopted: "v1"}},
		{name: "a list longer than the page limit", api: &listAPI{endless: true}, want: want{errContains: "pages back"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := srv.Client(t, srv.NewDB(t))
			st := jobs.NewStore(rdb, "")
			disk, err := storage.NewDisk(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if tc.api.perPage == 0 {
				tc.api.perPage = 200
			}
			if tc.api.date.IsZero() && !tc.api.endless {
				tc.api.date = now
			}
			if tc.api.endless {
				tc.api.date = now
			}
			cfg := Config{ReconcileDelay: 3 * time.Second, ClockTolerance: 2 * time.Second}
			if tc.webhook {
				cfg.Webhook = hook
			}
			w, err := New(cfg, Deps{Redis: rdb, API: tc.api, Store: disk, Jobs: st, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			rec := &jobs.Record{ID: "j"}
			rec.Request.Model, rec.Request.Prompt = "m", "p"
			if _, _, err := st.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Apply(ctx, "j", jobs.Change{To: jobs.StateSubmitting, Set: map[string]any{
				jobs.FieldCreateInDoubt: true, jobs.FieldCreateStartedAt: base, jobs.FieldCreateEndedAt: base.Add(time.Second)}}); err != nil {
				t.Fatal(err)
			}
			for v, owner := range tc.owned {
				if _, err := st.Claim(ctx, v, owner); err != nil {
					t.Fatal(err)
				}
			}
			if try, err := st.AcquireCreateLock(ctx, "m", "j", time.Now(), time.Minute); err != nil || !try.Held {
				t.Fatalf("lock: %+v %v", try, err)
			}
			rec, err = st.Get(ctx, "j")
			if err != nil {
				t.Fatal(err)
			}
			adopted, err := w.reconcile(ctx, rec)
			after, gerr := st.Get(ctx, "j")
			if gerr != nil {
				t.Fatal(gerr)
			}
			switch {
			case tc.want.errContains != "":
				if err == nil || !strings.Contains(err.Error(), tc.want.errContains) || adopted {
					t.Fatalf("reconcile = %v, %v; want an error with %q", adopted, err, tc.want.errContains)
				}
				if !after.CreateInDoubt || after.State != jobs.StateSubmitting {
					t.Errorf("after an undecided reconciliation: %s, in doubt %v; want submitting, in doubt", after.State, after.CreateInDoubt)
				}
			case tc.want.adopted != "":
				if err != nil || !adopted {
					t.Fatalf("reconcile = %v, %v; want adopted", adopted, err)
				}
				if after.VideoID != tc.want.adopted || after.State != jobs.StateGenerating || after.CreateInDoubt || !strings.HasPrefix(after.Reconcile, "adopted "+tc.want.adopted) {
					t.Errorf("after: video %q, %s, in doubt %v, note %q; want %s adopted", after.VideoID, after.State, after.CreateInDoubt, after.Reconcile, tc.want.adopted)
				}
				if owner, _ := st.Claim(ctx, tc.want.adopted, "x"); owner != "j" {
					t.Errorf("video %s owned by %q, want j", tc.want.adopted, owner)
				}
				if try, _ := st.AcquireCreateLock(ctx, "m", "next", time.Now(), time.Second); !try.Held {
					t.Errorf("the model's create lock is still held by %s after the adoption", try.Holder)
				}
			case tc.want.resubmit:
				if err != nil || adopted {
					t.Fatalf("reconcile = %v, %v; want nothing created", adopted, err)
				}
				if after.CreateInDoubt || rec.CreateInDoubt || after.VideoID != "" || !strings.Contains(after.Reconcile, "no job created") {
					t.Errorf("after: in doubt %v/%v, video %q, note %q; want the doubt cleared", after.CreateInDoubt, rec.CreateInDoubt, after.VideoID, after.Reconcile)
				}
			}
		})
	}

	t.Run("too early: the call's window has not settled", func(t *testing.T) {
		rdb := srv.Client(t, srv.NewDB(t))
		disk, _ := storage.NewDisk(t.TempDir())
		w, err := New(Config{ReconcileDelay: 3 * time.Second}, Deps{Redis: rdb, API: &listAPI{}, Store: disk, Now: func() time.Time { return base.Add(2 * time.Second) }})
		if err != nil {
			t.Fatal(err)
		}
		rec := &jobs.Record{ID: "j", State: jobs.StateSubmitting, CreateInDoubt: true, CreateStartedAt: base, CreateEndedAt: base.Add(time.Second)}
		_, err = w.reconcile(context.Background(), rec)
		var rl *retryLater
		if !errors.As(err, &rl) || rl.after != 2*time.Second {
			t.Errorf("reconcile = %v; want a retryLater in 2s", err)
		}
	})
}

// Timeout is the API client's timeout: the reconcile window of a create
// that got no answer.
func (a *listAPI) Timeout() time.Duration { return 5 * time.Second }
