package worker_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// withTenancy turns tenancy on for the env's producer and returns it for
// the workers' configuration.
func (e *env) withTenancy(limits string, ahead int) *jobs.Tenancy {
	e.t.Helper()
	l, errs := jobs.ParseTenantLimits(limits)
	if len(errs) > 0 {
		e.t.Fatal(errs)
	}
	ten := jobs.NewTenancy(e.jobs, jobs.TenancyConfig{Limits: l, AdmitAhead: ahead})
	e.producer = tasks.NewClient(e.rdb, tasks.ClientOptions{Tenancy: ten})
	return ten
}

func (e *env) submitFor(tenant string, n int) []tasks.JobID {
	e.t.Helper()
	var ids []tasks.JobID
	for i := range n {
		id, err := e.producer.Submit(context.Background(), tasks.Request{JobID: tasks.JobID(fmt.Sprintf("%s-%02d", tenant, i)), Tenant: tenant,
			Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: fmt.Sprintf("%s prompt %02d", tenant, i)}})
		if err != nil {
			e.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestTenantsEndToEnd: two tenants' jobs go through the worker and the
// stand-in with tenancy on: every job is stored once, each tenant never
// had more jobs between admission and the end of generating than its
// limit (read from the jobs' histories), and the tenant that submitted
// second was not kept behind the first one's backlog.
func TestTenantsEndToEnd(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ten := e.withTenancy("default=2,small=1", 2)
	big := e.submitFor("big", 10)
	small := e.submitFor("small", 4)
	for _, id := range big[2:] {
		if rec, _ := e.jobs.Get(context.Background(), string(id)); rec.State != jobs.StateTenantWait {
			t.Fatalf("%s is %s before any worker ran; want tenant_wait", id, rec.State)
		}
	}
	cfg := fastConfig()
	cfg.Tenancy = ten
	e.startWorker(cfg, nil)
	recs := e.waitTerminal(append(big, small...), 60*time.Second)
	e.checkStored(recs)

	type edge struct {
		at   time.Time
		step int
	}
	byTenant := map[string][]edge{}
	firstSmall, lastBig := time.Time{}, time.Time{}
	for _, r := range recs {
		hist, err := e.jobs.Events(context.Background(), r.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		var in, out time.Time
		for _, ev := range hist {
			switch ev.Event {
			case string(jobs.TAdmitted):
				in = ev.At
			case string(jobs.TCompleted), string(jobs.TFailed):
				if out.IsZero() {
					out = ev.At
				}
			}
		}
		if in.IsZero() {
			// Admitted at Submit (the window had room): the record was
			// created queued by the admission in the same step.
			in = r.SubmittedAt
		}
		byTenant[r.Tenant] = append(byTenant[r.Tenant], edge{in, 1}, edge{out, -1})
		if r.Tenant == "small" && (firstSmall.IsZero() || in.Before(firstSmall)) {
			firstSmall = in
		}
		if r.Tenant == "big" && in.After(lastBig) {
			lastBig = in
		}
	}
	for tn, edges := range byTenant {
		sort.Slice(edges, func(i, j int) bool {
			if edges[i].at.Equal(edges[j].at) {
				return edges[i].step < edges[j].step // leaving first at equal times
			}
			return edges[i].at.Before(edges[j].at)
		})
		n, peak := 0, 0
		for _, e := range edges {
			n += e.step
			peak = max(peak, n)
		}
		limit := map[string]int{"big": 2, "small": 1}[tn]
		if peak > limit {
			t.Errorf("tenant %s had %d jobs admitted and generating at once; limit %d", tn, peak, limit)
		}
	}
	if !firstSmall.Before(lastBig) {
		t.Errorf("small's first job was admitted at %s, after big's last (%s): not served round-robin", firstSmall, lastBig)
	}
	figs, err := ten.Figures(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range figs {
		if f.Waiting != 0 || f.Admitted != 0 {
			t.Errorf("after the run: %+v; want nothing waiting or admitted", f)
		}
	}
}

// TestTenantWaitCancelled: a job cancelled while it waits in tenant_wait
// ends cancelled without an API call, and the others still run.
func TestTenantWaitCancelled(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ten := e.withTenancy("default=1", 1)
	ids := e.submitFor("a", 3)
	rec, err := e.producer.Cancel(context.Background(), ids[1], "changed my mind")
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != jobs.StateCancelled {
		t.Fatalf("cancelled job is %s", rec.State)
	}
	if f, _ := ten.Figures(context.Background()); len(f) != 1 || f[0].Waiting != 1 {
		t.Errorf("figures after the cancel %+v; want one job waiting (the third)", f)
	}
	cfg := fastConfig()
	cfg.Tenancy = ten
	e.startWorker(cfg, nil)
	recs := e.waitTerminal(ids, 30*time.Second)
	e.checkStored([]*jobs.Record{recs[0], recs[2]})
	if recs[1].State != jobs.StateCancelled || recs[1].VideoID != "" {
		t.Errorf("cancelled job: %s video %q; want cancelled without a video", recs[1].State, recs[1].VideoID)
	}
	if n := e.api.Stats().JobsByPrompt[recs[1].Request.Prompt]; n != 0 {
		t.Errorf("the API created %d jobs for the cancelled job", n)
	}
}

// TestTenantAdmissionRepaired: an admitted job whose create task was
// lost (the admitting process died before enqueueing it) is queued
// without a task; and a job in tenant_wait missing from its tenant's list
// (Submit died between the record and the list). The stranded-job check
// repairs both, and they are stored.
func TestTenantAdmissionRepaired(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ten := e.withTenancy("default=0", 4)
	ctx := context.Background()
	ids := e.submitFor("a", 1)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	if err := insp.DeleteTask(tasks.QueueCreate, tasks.CreateTaskID(string(ids[0]))); err != nil {
		t.Fatal(err)
	}
	if rec, _ := e.jobs.Get(ctx, string(ids[0])); rec.State != jobs.StateQueued {
		t.Fatalf("admitted job is %s; want queued", rec.State)
	}
	lost := &jobs.Record{ID: "lost", State: jobs.StateTenantWait, Tenant: "b", Request: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "lost prompt"}}
	if _, _, err := e.jobs.Create(ctx, lost); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.Tenancy = ten
	cfg.StrandedGrace = time.Nanosecond
	cfg.StrandedCheckInterval = -1
	w := e.newWorker(cfg, nil)
	if n, err := w.RecoverStranded(ctx); err != nil || n != 2 {
		t.Fatalf("RecoverStranded = %d, %v; want 2", n, err)
	}
	if _, err := insp.GetTaskInfo(tasks.QueueCreate, tasks.CreateTaskID("lost")); err != nil {
		t.Errorf("lost job's create task: %v; want it enqueued (re-entered and admitted)", err)
	}
	if n, err := w.RecoverStranded(ctx); err != nil || n != 0 {
		t.Errorf("second pass: %d, %v; want 0", n, err)
	}
	e.startWorker(cfg, nil)
	e.checkStored(e.waitTerminal(append(ids, "lost"), 30*time.Second))
}

// TestTenantWaitWithTenancyOff: a job left in tenant_wait by a fleet
// that turned tenancy off is admitted by the stranded-job check of a
// worker without tenancy, and stored.
func TestTenantWaitWithTenancyOff(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ctx := context.Background()
	left := &jobs.Record{ID: "left", State: jobs.StateTenantWait, Tenant: "a", Request: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "left prompt"}}
	if _, _, err := e.jobs.Create(ctx, left); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.StrandedGrace = time.Nanosecond
	cfg.StrandedCheckInterval = -1
	w := e.newWorker(cfg, nil)
	if n, err := w.RecoverStranded(ctx); err != nil || n != 1 {
		t.Fatalf("RecoverStranded = %d, %v; want 1", n, err)
	}
	e.startWorker(cfg, nil)
	e.checkStored(e.waitTerminal([]tasks.JobID{"left"}, 30*time.Second))
}

// TestTenantAdmissionNotBlockedByModelLock: admitted jobs that wait for
// their model's create lock (held, say, by a worker killed mid-create
// until its lease lapses) give their place in the admission window back,
// so that jobs of other models are admitted and run meanwhile. Before,
// the window stayed full of the blocked model's jobs and admission of
// every tenant and model stalled until the lock's lease ran out.
func TestTenantAdmissionNotBlockedByModelLock(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	ten := e.withTenancy("default=0", 2)
	ctx := context.Background()
	const blocked, free = "openai/sora-2", "google/veo-3.1-lite"
	if try, err := e.jobs.AcquireCreateLock(ctx, blocked, "a-dead-worker", time.Now(), time.Hour); err != nil || !try.Held {
		t.Fatalf("take %s's create lock: %+v, %v", blocked, try, err)
	}
	var stuck, others []tasks.JobID
	for i := range 6 {
		model, list := free, &others
		if i < 2 {
			model, list = blocked, &stuck
		}
		id, err := e.producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(fmt.Sprintf("lock-%02d", i)),
			Video: apiclient.CreateRequest{Model: model, Prompt: fmt.Sprintf("lock prompt %02d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		*list = append(*list, id)
	}
	cfg := fastConfig()
	cfg.Tenancy = ten
	e.startWorker(cfg, nil)
	e.checkStored(e.waitTerminal(others, 30*time.Second))
	for _, id := range stuck {
		if rec, _ := e.jobs.Get(ctx, string(id)); rec.State.Terminal() || rec.VideoID != "" {
			t.Errorf("%s: %s with video %q while its model's lock is held; want it waiting", id, rec.State, rec.VideoID)
		}
	}
}
