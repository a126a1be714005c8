package worker_test

import (
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// budgetsFor is $1.00 a day with the stand-in's list price of the model
// ($0.05/s × 8 s = $0.40 a job): two jobs fit, the third does not.
func (e *env) budgetsFor(t *testing.T) *jobs.Budgeter {
	budgets, errs := jobs.ParseBudgets("day=1.00")
	prices, perrs := jobs.ParsePrices("google/veo-3.1-lite=0.05/s")
	if len(errs)+len(perrs) > 0 {
		t.Fatal(errs, perrs)
	}
	return jobs.NewBudgeter(e.rdb, "", jobs.BudgetConfig{Budgets: budgets, Prices: prices})
}

// TestBudgetStopsCreates: jobs beyond a budget make no API call; they wait
// in budget_wait (policy wait) or end budget_exceeded (policy reject),
// and the budget holds what the API settled.
func TestBudgetStopsCreates(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{worker.BudgetWait, worker.BudgetReject} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			e := setup(t, fastStandin())
			cfg := fastConfig()
			bud := e.budgetsFor(t)
			cfg.Budgets, cfg.BudgetPolicy = bud, policy
			e.startWorker(cfg, nil)
			ids := e.submit(2, "google/veo-3.1-lite")
			e.checkStored(e.waitTerminal(ids, 30*time.Second))
			over := e.submit(3, "google/veo-3.1-lite")[2]
			var r *jobs.Record
			if policy == worker.BudgetWait {
				r = e.waitState(over, jobs.StateBudgetWait, 10*time.Second)
			} else {
				r = e.waitTerminal([]tasks.JobID{over}, 10*time.Second)[0]
				if r.State != jobs.StateFailed || r.ErrorCode != "budget_exceeded" {
					t.Fatalf("state %s, code %s; want failed, budget_exceeded", r.State, r.ErrorCode)
				}
			}
			if r.VideoID != "" || r.CreateAttempts != 0 {
				t.Fatalf("the job over budget called the API: video %q, %d create attempts", r.VideoID, r.CreateAttempts)
			}
			use, err := bud.Use(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if use[0].Spent != 800_000 || use[0].Reserved != 0 {
				t.Fatalf("budget use %+v; want $0.80 spent, nothing reserved", use[0])
			}
		})
	}
}

// TestBudgetUnpricedModel: with budgets on, a model without a price is
// refused at its create step, with no API call.
func TestBudgetUnpricedModel(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	cfg := fastConfig()
	cfg.Budgets = e.budgetsFor(t)
	e.startWorker(cfg, nil)
	r := e.waitTerminal(e.submit(1, "openai/sora-2"), 10*time.Second)[0]
	if r.State != jobs.StateFailed || r.ErrorCode != "unpriced_model" || r.CreateAttempts != 0 {
		t.Fatalf("state %s, code %s, %d create attempts; want failed, unpriced_model, 0", r.State, r.ErrorCode, r.CreateAttempts)
	}
}

// TestBudgetWaitResumes: a job in budget_wait goes ahead, with one create,
// once a reservation that filled the budget is released.
func TestBudgetWaitResumes(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	cfg := fastConfig()
	bud := e.budgetsFor(t)
	cfg.Budgets, cfg.BudgetRetryInterval = bud, 200*time.Millisecond
	if err := bud.Reserve(t.Context(), "blocker", "google/veo-3.1-lite", "", 1_000_000); err != nil {
		t.Fatal(err)
	}
	e.startWorker(cfg, nil)
	id := e.submit(1, "google/veo-3.1-lite")[0]
	e.waitState(id, jobs.StateBudgetWait, 10*time.Second)
	if err := bud.Settle(t.Context(), "blocker", 0); err != nil {
		t.Fatal(err)
	}
	r := e.waitTerminal([]tasks.JobID{id}, 30*time.Second)[0]
	e.checkStored([]*jobs.Record{r})
	if r.CreateAttempts != 1 || r.SettledCost.Micros != 400_000 {
		t.Fatalf("create attempts %d, settled %v; want 1, 0.40", r.CreateAttempts, r.SettledCost)
	}
}
