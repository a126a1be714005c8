package jobs_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

func TestParseBudgets(t *testing.T) {
	t.Parallel()
	got, errs := jobs.ParseBudgets("day=200, month=4000,model:openai/sora-2/day=50")
	if len(errs) != 0 || len(got) != 3 || got[2].Model != "openai/sora-2" || got[2].Limit != 50_000_000 || got[1].Window != jobs.WindowMonth {
		t.Fatalf("got %v, %v", got, errs)
	}
	_, errs = jobs.ParseBudgets("week=1,day=x,tenant:Acme/day=20,day,model:/day=1,day=2,day=3,tenant:/day=1")
	if len(errs) != 7 {
		t.Fatalf("want 7 problems, got %d: %v", len(errs), errs)
	}
	if !errors.Is(errs[2], jobs.ErrInvalidTenant) {
		t.Errorf("tenant scope with an invalid name: %v", errs[2])
	}
	got, errs = jobs.ParseBudgets("day=200,tenant:acme/day=20,tenant:acme/month=100")
	if len(errs) != 0 || len(got) != 3 || got[1].Tenant != "acme" || got[1].Limit != 20_000_000 || got[2].String() != "tenant:acme/month=100.00" {
		t.Fatalf("tenant scopes: %v, %v", got, errs)
	}
	prices, errs := jobs.ParsePrices("google/veo-3.1-lite=0.05/s,openai/sora-2=0.80")
	if len(errs) != 0 || prices["google/veo-3.1-lite"].PerSecond != 50_000 || prices["openai/sora-2"].PerVideo != 800_000 {
		t.Fatalf("prices %v %v", prices, errs)
	}
	if _, errs := jobs.ParsePrices("a=x/s,b,=1"); len(errs) != 3 {
		t.Fatalf("want 3 problems: %v", errs)
	}
	est, ok := jobs.Estimate(prices, apiclient.CreateRequest{Model: "google/veo-3.1-lite", Duration: 4, SampleCount: 2})
	if !ok || est != 400_000 {
		t.Fatalf("estimate %d %v", est, ok)
	}
	if _, ok := jobs.Estimate(prices, apiclient.CreateRequest{Model: "x"}); ok {
		t.Fatal("an unpriced model has an estimate")
	}
}

// TestTenantBudget: a tenant's budget limits that tenant's jobs only; the
// fleet-wide budget still counts them.
func TestTenantBudget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	budgets, errs := jobs.ParseBudgets("day=100,tenant:acme/day=1")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	bud := jobs.NewBudgeter(b.rdb, "", jobs.BudgetConfig{Budgets: budgets})
	if !bud.Applies("m", "acme") || !bud.Applies("m", "") {
		t.Fatal("the fleet budget applies to every job")
	}
	if err := bud.Reserve(b.ctx, "a1", "m", "acme", 600_000); err != nil {
		t.Fatal(err)
	}
	var ex *jobs.ExceededError
	if err := bud.Reserve(b.ctx, "a2", "m", "acme", 600_000); !errors.As(err, &ex) || ex.Budget.Tenant != "acme" {
		t.Fatalf("acme's second job: %v; want its tenant budget exceeded", err)
	}
	for _, tn := range []string{"", "default", "other"} {
		if err := bud.Reserve(b.ctx, "o-"+tn, "m", tn, 600_000); err != nil {
			t.Errorf("tenant %q: %v; want it to fit (acme's budget is acme's)", tn, err)
		}
	}
	use, err := bud.Use(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if use[0].Reserved != 4*600_000 || use[1].Reserved != 600_000 {
		t.Errorf("use %+v; want 2.40 reserved fleet-wide, 0.60 for acme", use)
	}
}

// TestBudgetRace: 50 goroutines reserve at the edge of a budget at once;
// the reservations never exceed it, and exactly as many fit as the limit
// allows.
func TestBudgetRace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bud := jobs.NewBudgeter(b.rdb, "", jobs.BudgetConfig{Budgets: []jobs.Budget{
		{Window: jobs.WindowDay, Limit: 10_000_000},                  // $10 a day
		{Window: jobs.WindowMonth, Model: "m", Limit: 1_000_000_000}, // $1000 a month of m
	}})
	const est = 400_000 // $0.40: 25 fit
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	var held []string
	for i := range 50 {
		wg.Go(func() {
			err := bud.Reserve(b.ctx, fmt.Sprintf("j%d", i), "m", "", est)
			var ex *jobs.ExceededError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
				held = append(held, fmt.Sprintf("j%d", i))
			case errors.As(err, &ex):
				refused++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok != 25 || refused != 25 {
		t.Fatalf("%d reserved, %d refused; want 25 and 25", ok, refused)
	}
	use, err := bud.Use(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if use[0].Reserved != 10_000_000 || use[1].Reserved != 10_000_000 {
		t.Fatalf("use %+v", use)
	}
	// Settling below the estimate, and releasing, make room again.
	if err := bud.Settle(b.ctx, held[0], 100_000); err != nil {
		t.Fatal(err)
	}
	if err := bud.Settle(b.ctx, held[0], 100_000); err != nil { // a repeat is a no-op
		t.Fatal(err)
	}
	if err := bud.Settle(b.ctx, held[1], 0); err != nil {
		t.Fatal(err)
	}
	use, _ = bud.Use(b.ctx)
	if use[0].Spent != 100_000 || use[0].Reserved != 9_200_000 {
		t.Fatalf("after settling: %+v", use[0])
	}
	if err := bud.Reserve(b.ctx, "late", "m", "", est); err != nil {
		t.Fatalf("a job that fits after settling: %v", err)
	}
	if err := bud.Reserve(b.ctx, "later", "m", "", est); err == nil || !strings.Contains(err.Error(), "day=10.0") {
		t.Fatalf("want the day budget named, got %v", err)
	}
}

// TestBudgetReservationExpires: a reservation never settled (its worker
// died) stops holding budget after its TTL.
func TestBudgetReservationExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bud := jobs.NewBudgeter(b.rdb, "", jobs.BudgetConfig{Budgets: []jobs.Budget{{Window: jobs.WindowDay, Limit: 1_000_000}}, ReservationTTL: 50e6})
	jobs.SetBudgetClock(bud, b.clock.Now)
	if err := bud.Reserve(b.ctx, "dead", "m", "", 1_000_000); err != nil {
		t.Fatal(err)
	}
	if err := bud.Reserve(b.ctx, "next", "m", "", 1_000_000); err == nil {
		t.Fatal("the budget is full but a second job reserved")
	}
	b.clock.Advance(100e6)
	if err := bud.Reserve(b.ctx, "next", "m", "", 1_000_000); err != nil {
		t.Fatalf("the dead job's reservation did not expire: %v", err)
	}
}
