package jobs_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
)

func TestValidateTenant(t *testing.T) {
	for _, ok := range []string{"default", "acme", "a", "team-7.eu_west", strings.Repeat("a", 63)} {
		if err := jobs.ValidateTenant(ok); err != nil {
			t.Errorf("ValidateTenant(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "Acme", "-acme", ".x", "a b", "a/b", "tenant:x", strings.Repeat("a", 64), "é"} {
		if err := jobs.ValidateTenant(bad); !errors.Is(err, jobs.ErrInvalidTenant) {
			t.Errorf("ValidateTenant(%q) = %v; want ErrInvalidTenant", bad, err)
		}
	}
}

func TestParseTenantLimits(t *testing.T) {
	l, errs := jobs.ParseTenantLimits("default=5, acme=20,bulk=2")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if l.Of("acme") != 20 || l.Of("bulk") != 2 || l.Of("other") != 5 || l.Of("default") != 5 {
		t.Errorf("limits %v", l)
	}
	_, errs = jobs.ParseTenantLimits("default=x,Acme=3,bulk,bulk=2,bulk=3,z=-1")
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	for _, want := range []string{`"default=x"`, `"Acme=3"`, `"bulk"`, `"bulk=3": tenant given twice`, `"z=-1"`} {
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
			t.Errorf("errors %q: none names %s", msgs, want)
		}
	}
}

// waitJob creates a job in tenant_wait for tenant.
func (b *bundle) waitJob(tb testing.TB, id, tenant string) {
	tb.Helper()
	rec := &jobs.Record{ID: id, State: jobs.StateTenantWait, Tenant: tenant}
	rec.Request.Model, rec.Request.Prompt = "m", "p"
	if created, _, err := b.store.Create(b.ctx, rec); err != nil || !created {
		tb.Fatalf("Create(%s) = %v, %v", id, created, err)
	}
}

func ids(adm []jobs.Admission) []string {
	var out []string
	for _, a := range adm {
		out = append(out, a.ID)
	}
	return out
}

// TestTenancyRoundRobin: with one create at a time admitted, three
// tenants' waiting jobs are admitted in turn, whatever how many each has
// waiting.
func TestTenancyRoundRobin(t *testing.T) {
	b := setup(t)
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 1})
	b.waitJob(t, "z1", "zed")
	adm, err := ten.Enter(b.ctx, "z1", "zed")
	if err != nil || !slices.Equal(ids(adm), []string{"z1"}) {
		t.Fatalf("Enter(z1) = %v, %v; want z1 admitted (the window was empty)", ids(adm), err)
	}
	// The window is full: everything else waits.
	for _, tj := range []struct {
		tenant string
		n      int
	}{{"a", 6}, {"b", 3}, {"c", 3}} {
		for i := 1; i <= tj.n; i++ {
			id := fmt.Sprintf("%s%d", tj.tenant, i)
			b.waitJob(t, id, tj.tenant)
			if adm, err := ten.Enter(b.ctx, id, tj.tenant); err != nil || len(adm) > 0 {
				t.Fatalf("Enter(%s) = %v, %v; want nothing admitted", id, ids(adm), err)
			}
		}
	}
	var order []string
	last := "z1"
	for range 12 {
		adm, err := ten.Started(b.ctx, last, "")
		if err != nil || len(adm) != 1 {
			t.Fatalf("Started(%s) = %v, %v; want one admitted", last, ids(adm), err)
		}
		last = adm[0].ID
		order = append(order, last)
		if rec := b.get(t, last); rec.State != jobs.StateQueued {
			t.Errorf("%s: state %s after admission; want queued", last, rec.State)
		}
	}
	want := []string{"a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3", "a4", "a5", "a6"}
	if !slices.Equal(order, want) {
		t.Errorf("admission order %v; want %v", order, want)
	}
	if adm, err := ten.Started(b.ctx, last, ""); err != nil || len(adm) != 0 {
		t.Errorf("nothing waits, yet Started admitted %v, %v", ids(adm), err)
	}
	evs := b.events(t, "b2")
	if e := evs[len(evs)-1]; e.Event != string(jobs.TAdmitted) || e.State != jobs.StateQueued || e.Detail != "tenant b" {
		t.Errorf("b2's last history line %+v; want admitted, queued, tenant b", e)
	}
}

// TestTenancyLimits: goroutines submitting and finishing jobs of three
// tenants at once never see a tenant with more jobs admitted than its
// limit, and every job is admitted in the end.
func TestTenancyLimits(t *testing.T) {
	b := setup(t)
	limits, errs := jobs.ParseTenantLimits("default=2,acme=3,bulk=1")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{Limits: limits, AdmitAhead: 8})
	tenants := []string{"acme", "bulk", "other"}
	const producers, perProducer = 12, 15
	var mu sync.Mutex
	held := map[string]int{}
	peak := map[string]int{}
	admitted := map[string]bool{}
	work := make(chan jobs.Admission, producers*perProducer)
	take := func(adm []jobs.Admission, err error) {
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, a := range adm {
			if admitted[a.ID] {
				t.Errorf("%s admitted twice", a.ID)
			}
			admitted[a.ID] = true
			held[a.Tenant]++
			peak[a.Tenant] = max(peak[a.Tenant], held[a.Tenant])
			work <- a
		}
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				tn := tenants[(p+i)%len(tenants)]
				id := fmt.Sprintf("j%d-%d", p, i)
				b.waitJob(t, id, tn)
				take(ten.Enter(b.ctx, id, tn))
			}
		})
	}
	// Workers: start each admitted job's create, then let it go.
	done := make(chan struct{})
	var workers sync.WaitGroup
	for range 8 {
		workers.Go(func() {
			for {
				select {
				case <-done:
					return
				case a := <-work:
					take(ten.Started(b.ctx, a.ID, a.Tenant))
					if rand.IntN(2) == 0 {
						take(ten.Admit(b.ctx))
					}
					mu.Lock()
					held[a.Tenant]--
					mu.Unlock()
					take(ten.Left(b.ctx, a.ID, a.Tenant))
				}
			}
		})
	}
	wg.Wait()
	for {
		mu.Lock()
		n := len(admitted)
		mu.Unlock()
		if n == producers*perProducer {
			break
		}
		// Everything is entered: the workers' triggers admit the rest;
		// a round here covers a trigger that found nothing yet.
		take(ten.Admit(b.ctx))
	}
	close(done)
	workers.Wait()
	for _, tn := range tenants {
		if peak[tn] > limits.Of(tn) {
			t.Errorf("tenant %s had %d jobs admitted at once; limit %d", tn, peak[tn], limits.Of(tn))
		}
		if peak[tn] == 0 {
			t.Errorf("tenant %s: nothing admitted", tn)
		}
	}
	figs, err := ten.Figures(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range figs {
		if f.Admitted != 0 || f.Waiting != 0 {
			t.Errorf("after the run %+v; want nothing admitted or waiting", f)
		}
	}
}

// TestTenancyWithdraw: a job cancelled in tenant_wait leaves its
// tenant's list (and the ring with it) and is never admitted.
func TestTenancyWithdraw(t *testing.T) {
	b := setup(t)
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 1})
	b.waitJob(t, "first", "a")
	if _, err := ten.Enter(b.ctx, "first", "a"); err != nil {
		t.Fatal(err)
	}
	b.waitJob(t, "x", "b")
	b.waitJob(t, "y", "b")
	for _, id := range []string{"x", "y"} {
		if adm, err := ten.Enter(b.ctx, id, "b"); err != nil || len(adm) != 0 {
			t.Fatalf("Enter(%s) = %v, %v", id, ids(adm), err)
		}
	}
	for _, id := range []string{"x", "y"} {
		if _, err := b.store.Do(b.ctx, id, jobs.Cancelled{Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		if _, err := ten.Withdraw(b.ctx, id, "b"); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := b.rdb.ZCard(b.ctx, "videoworker:{tenants}:ring").Result(); n != 0 {
		t.Errorf("ring holds %d tenants; want none (b has nothing waiting)", n)
	}
	if adm, err := ten.Started(b.ctx, "first", "a"); err != nil || len(adm) != 0 {
		t.Errorf("Started admitted %v, %v; want nothing", ids(adm), err)
	}
	// A cancelled job still in a list (the Withdraw lost) is skipped by
	// admission.
	b.waitJob(t, "z", "c")
	b.waitJob(t, "w", "c")
	if _, err := ten.Enter(b.ctx, "z", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := ten.Enter(b.ctx, "w", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Do(b.ctx, "w", jobs.Cancelled{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if adm, err := ten.Started(b.ctx, "z", "c"); err != nil || len(adm) != 0 {
		t.Errorf("Started admitted %v, %v; want nothing (w was cancelled)", ids(adm), err)
	}
	if st := b.get(t, "w").State; st != jobs.StateCancelled {
		t.Errorf("w is %s; want cancelled", st)
	}
}

// TestTenancyRepair: a job in tenant_wait missing from its tenant's list
// joins it again; one admitted in the tenancy structures whose record
// still says tenant_wait (a Cluster admission cut short) is moved to
// queued and returned for its create task.
func TestTenancyRepair(t *testing.T) {
	b := setup(t)
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 1})
	b.waitJob(t, "busy", "a")
	if _, err := ten.Enter(b.ctx, "busy", "a"); err != nil { // fills the window
		t.Fatal(err)
	}
	b.waitJob(t, "lost", "a") // Submit died before Enter
	idx := ten.NewWaitIndex()
	adm, changed, err := idx.Repair(b.ctx, b.get(t, "lost"))
	if err != nil || !changed || len(adm) != 0 {
		t.Fatalf("Repair(lost) = %v, %v, %v; want re-entered, nothing admitted", ids(adm), changed, err)
	}
	if _, changed, err := ten.NewWaitIndex().Repair(b.ctx, b.get(t, "lost")); err != nil || changed {
		t.Errorf("Repair(lost) again = %v, %v; want nothing to do (it waits in its list)", changed, err)
	}
	if adm, err := ten.Started(b.ctx, "busy", "a"); err != nil || !slices.Equal(ids(adm), []string{"lost"}) {
		t.Errorf("Started = %v, %v; want lost admitted", ids(adm), err)
	}
	// Half an admission: in the admitted set, record in tenant_wait.
	b.waitJob(t, "half", "b")
	if err := b.rdb.SAdd(b.ctx, "videoworker:{tenants}:busy:b", "half").Err(); err != nil {
		t.Fatal(err)
	}
	adm, changed, err = ten.NewWaitIndex().Repair(b.ctx, b.get(t, "half"))
	if err != nil || !changed || !slices.Equal(ids(adm), []string{"half"}) {
		t.Fatalf("Repair(half) = %v, %v, %v; want it admitted", ids(adm), changed, err)
	}
	if st := b.get(t, "half").State; st != jobs.StateQueued {
		t.Errorf("half is %s; want queued", st)
	}
}

// TestTenancySweep: admitted jobs whose Left or Started call was lost
// leave the tenancy structures at the next sweep, which frees their
// tenant's place for the next waiting job.
func TestTenancySweep(t *testing.T) {
	b := setup(t)
	limits, _ := jobs.ParseTenantLimits("default=1")
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{Limits: limits, AdmitAhead: 4})
	for _, id := range []string{"one", "two"} {
		b.waitJob(t, id, "a")
		if _, err := ten.Enter(b.ctx, id, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// "one" is admitted; it ends, and the worker dies before Left.
	if _, err := b.store.Do(b.ctx, "one", jobs.Failed{To: jobs.StateFailed, Code: "x", Err: "x"}); err != nil {
		t.Fatal(err)
	}
	if adm, err := ten.Admit(b.ctx); err != nil || len(adm) != 0 {
		t.Fatalf("Admit = %v, %v; want nothing (a's place is still taken)", ids(adm), err)
	}
	adm, err := ten.Sweep(b.ctx)
	if err != nil || !slices.Equal(ids(adm), []string{"two"}) {
		t.Fatalf("Sweep = %v, %v; want two admitted", ids(adm), err)
	}
	if n, _ := b.rdb.ZCard(b.ctx, "videoworker:{tenants}:adm").Result(); n != 1 {
		t.Errorf("%d jobs in the create window; want 1 (two)", n)
	}
}

// TestTenancyLateTenantCatchesUp: a tenant that starts waiting behind
// another's backlog is owed the turns of the jobs already admitted
// ahead of it (they start after it arrived): with two admitted jobs
// waiting, it gets the next three admissions, then they alternate.
func TestTenancyLateTenantCatchesUp(t *testing.T) {
	b := setup(t)
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 2})
	for i := range 20 {
		id := fmt.Sprintf("a%02d", i)
		b.waitJob(t, id, "a")
		if _, err := ten.Enter(b.ctx, id, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// a's jobs flow: a00 and a01 admitted; start a few.
	started := []string{"a00", "a01"}
	for i := range 4 {
		adm, err := ten.Started(b.ctx, started[i], "a")
		if err != nil || len(adm) != 1 {
			t.Fatalf("Started = %v, %v", ids(adm), err)
		}
		started = append(started, adm[0].ID)
	}
	// Two of a's jobs are in the window when b arrives.
	for i := range 5 {
		id := fmt.Sprintf("b%02d", i)
		b.waitJob(t, id, "b")
		if adm, err := ten.Enter(b.ctx, id, "b"); err != nil || len(adm) != 0 {
			t.Fatalf("Enter(%s) = %v, %v; want nothing admitted (the window is full)", id, ids(adm), err)
		}
	}
	var order []string
	for i := range 8 {
		adm, err := ten.Started(b.ctx, started[4+i], "")
		if err != nil || len(adm) != 1 {
			t.Fatalf("Started = %v, %v", ids(adm), err)
		}
		started = append(started, adm[0].ID)
		order = append(order, adm[0].ID)
	}
	want := []string{"b00", "b01", "b02", "a06", "b03", "a07", "b04", "a08"}
	if !slices.Equal(order, want) {
		t.Errorf("admissions after b arrived %v; want %v", order, want)
	}
}

// TestTenancyWindowForgetsDeadCreates: admitted jobs whose creates never
// start (their worker was killed while they waited for their model's
// create lock) hold the create window for 10 s, not longer: then the
// next round admits again.
func TestTenancyWindowForgetsDeadCreates(t *testing.T) {
	b := setup(t)
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 2})
	for _, id := range []string{"a1", "a2", "a3"} {
		b.waitJob(t, id, "a")
		if _, err := ten.Enter(b.ctx, id, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if rec := b.get(t, "a3"); rec.State != jobs.StateTenantWait {
		t.Fatalf("a3 is %s with a1 and a2 in the window; want tenant_wait", rec.State)
	}
	b.clock.Advance(9 * time.Second)
	if adm, err := ten.Admit(b.ctx); err != nil || len(adm) != 0 {
		t.Fatalf("after 9 s: Admit = %v, %v; want nothing (the window still holds a1 and a2)", ids(adm), err)
	}
	b.clock.Advance(2 * time.Second)
	if adm, err := ten.Admit(b.ctx); err != nil || !slices.Equal(ids(adm), []string{"a3"}) {
		t.Fatalf("after 11 s: Admit = %v, %v; want a3 (the dead creates forgotten)", ids(adm), err)
	}
}

// TestTenancyWeights: with TENANT_WEIGHTS heavy=3, light=1, a tenant of
// weight 3 is admitted three jobs for each of the other's while both
// have jobs waiting, and the lighter one is never kept waiting for more
// than three in a row; tenants not named weigh 1.
func TestTenancyWeights(t *testing.T) {
	b := setup(t)
	w, errs := jobs.ParseTenantWeights("heavy=3")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 1, Weights: w})
	b.waitJob(t, "z1", "zed")
	if _, err := ten.Enter(b.ctx, "z1", "zed"); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"heavy", "light"} {
		for i := range 12 {
			id := fmt.Sprintf("%s%02d", tenant, i)
			b.waitJob(t, id, tenant)
			if _, err := ten.Enter(b.ctx, id, tenant); err != nil {
				t.Fatal(err)
			}
		}
	}
	var order []string
	last := "z1"
	for range 16 {
		adm, err := ten.Started(b.ctx, last, "")
		if err != nil || len(adm) != 1 {
			t.Fatalf("Started(%s) = %v, %v; want one admitted", last, ids(adm), err)
		}
		last = adm[0].ID
		order = append(order, adm[0].Tenant)
	}
	heavy, run, longest := 0, 0, 0
	for _, tn := range order {
		if tn == "heavy" {
			heavy, run = heavy+1, run+1
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if heavy != 12 || longest > 3 {
		t.Errorf("admissions by tenant %v: heavy %d of 16, at most %d in a row; want 12, at most 3", order, heavy, longest)
	}
}

func TestParseTenantWeights(t *testing.T) {
	w, errs := jobs.ParseTenantWeights("acme=3, default=2")
	if len(errs) > 0 || w.Of("acme") != 3 || w.Of("other") != 2 {
		t.Errorf("acme=3,default=2: %+v, %v", w, errs)
	}
	if w, _ := jobs.ParseTenantWeights("acme=3"); w.Of("other") != 1 {
		t.Errorf("a tenant not named weighs %d without default=; want 1", w.Of("other"))
	}
	_, errs = jobs.ParseTenantWeights("acme=0,b=1001,c,Bad=2,acme=3")
	if len(errs) != 4 {
		t.Errorf("errors %v; want 4 (0, 1001, no value, invalid name; acme's second entry is dropped after its first failed)", errs)
	}
}

// TestTenancyForgetsIdleTenants: the tenants listed (dashboard, metrics)
// are those active within a day: a tenant with no waiting or admitted
// job leaves the list a day after it last joined; one with jobs waiting
// stays whatever its age; an older release's set of tenants is kept.
func TestTenancyForgetsIdleTenants(t *testing.T) {
	b := setup(t)
	ten := jobs.NewTenancy(b.store, jobs.TenancyConfig{AdmitAhead: 1})
	enter := func(id, tenant string) []jobs.Admission {
		t.Helper()
		b.waitJob(t, id, tenant)
		adm, err := ten.Enter(b.ctx, id, tenant)
		if err != nil {
			t.Fatal(err)
		}
		return adm
	}
	if adm := enter("g1", "gone"); len(adm) != 1 {
		t.Fatalf("g1 not admitted: %v", ids(adm))
	}
	enter("w1", "waiting") // waits behind g1
	if _, err := ten.Left(b.ctx, "g1", "gone"); err != nil {
		t.Fatal(err)
	}
	// w1 is admitted now; w2 waits.
	enter("w2", "waiting")
	if err := b.rdb.SAdd(b.ctx, "videoworker:{tenants}:known", "older").Err(); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(25 * time.Hour)
	enter("r1", "recent")
	if _, err := ten.Sweep(b.ctx); err != nil {
		t.Fatal(err)
	}
	figs, err := ten.Figures(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, f := range figs {
		listed = append(listed, f.Tenant)
	}
	if want := []string{"older", "recent", "waiting"}; !slices.Equal(listed, want) {
		t.Errorf("tenants listed after a day %v; want %v (gone has had nothing for a day)", listed, want)
	}
	if n := b.rdb.Exists(b.ctx, "videoworker:{tenants}:known").Val(); n != 0 {
		t.Error("the older release's set is still there after a sweep")
	}
	// "waiting" was busy until now, though it joined 25 h ago: once its
	// jobs are done it stays listed for a day from the sweep that saw it.
	for _, id := range []string{"w1", "w2"} {
		if _, err := ten.Started(b.ctx, id, "waiting"); err != nil {
			t.Fatal(err)
		}
		if _, err := ten.Left(b.ctx, id, "waiting"); err != nil {
			t.Fatal(err)
		}
	}
	b.clock.Advance(time.Hour)
	if _, err := ten.Sweep(b.ctx); err != nil {
		t.Fatal(err)
	}
	if figs, _ := ten.Figures(b.ctx); !slices.ContainsFunc(figs, func(f jobs.TenantFigures) bool { return f.Tenant == "waiting" }) {
		t.Error("a tenant busy an hour ago was dropped from the list")
	}
}
