package worker_test

import (
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
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

// TestBudgetUnpricedModel: with budgets on, a model without a price (not
// in MODEL_PRICES, and a pricing in the API's model list in a currency
// other than USD) is refused at its create step, with no API call.
func TestBudgetUnpricedModel(t *testing.T) {
	t.Parallel()
	scfg := fastStandin()
	scfg.ModelPricing = map[string]string{"openai/sora-2": `{"per_second_usd": 0.10, "currency": "eur"}`}
	e := setup(t, scfg)
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

// TestBudgetPricesFromModelList: with budgets on, a model that MODEL_PRICES
// does not name is priced from the API's model list (read over HTTP from
// the stand-in once at start, not per job); MODEL_PRICES comes first; a
// pricing of a shape the worker does not recognise prices nothing.
func TestBudgetPricesFromModelList(t *testing.T) {
	t.Parallel()
	scfg := fastStandin()
	scfg.PricePerSecond = map[string]float64{"openai/sora-2": 0.10, "google/veo-3.1-lite": 1.00}
	scfg.ModelPricing = map[string]string{"google/veo-3.1": `{"per_second_usd": {"720p": 0.1, "1080p": 0.2}}`}
	e := setup(t, scfg)
	cfg := fastConfig()
	budgets, _ := jobs.ParseBudgets("day=20")
	prices, _ := jobs.ParsePrices("google/veo-3.1-lite=0.05/s")
	bud := jobs.NewBudgeter(e.rdb, "", jobs.BudgetConfig{Budgets: budgets, Prices: prices})
	cfg.Budgets = bud
	e.startWorker(cfg, nil)
	ids := []tasks.JobID{e.submitOne(t, "sora", "openai/sora-2"), e.submitOne(t, "lite", "google/veo-3.1-lite")}
	e.checkStored(e.waitTerminal(ids, 30*time.Second))
	for _, c := range []struct {
		req  apiclient.CreateRequest
		want int64
		ok   bool
	}{
		{apiclient.CreateRequest{Model: "openai/sora-2", Duration: 4, SampleCount: 2}, 800_000, true}, // the API's $0.10/s
		{apiclient.CreateRequest{Model: "google/veo-3.1-lite"}, 400_000, true},                        // MODEL_PRICES, not the API's $1/s
		{apiclient.CreateRequest{Model: "google/veo-3.1"}, 0, false},                                  // prices by resolution: not read
	} {
		if got, ok := bud.Price(c.req); got != c.want || ok != c.ok {
			t.Errorf("Price(%s, %d s, %d samples) = %d, %v; want %d, %v", c.req.Model, c.req.Duration, c.req.SampleCount, got, ok, c.want, c.ok)
		}
	}
	r := e.waitTerminal([]tasks.JobID{e.submitOne(t, "veo", "google/veo-3.1")}, 10*time.Second)[0]
	if r.ErrorCode != "unpriced_model" || r.CreateAttempts != 0 {
		t.Errorf("veo-3.1: code %q, %d create attempts; want unpriced_model, 0", r.ErrorCode, r.CreateAttempts)
	}
	if n := e.api.Stats().Calls[standin.EndpointModels]; n != 1 {
		t.Errorf("%d model list calls for 3 jobs, want 1 (at start)", n)
	}
}

// TestBudgetModelListDown: a model list that answers 500 does not stop the
// worker: MODEL_PRICES still prices its models, the others are refused
// unpriced.
func TestBudgetModelListDown(t *testing.T) {
	t.Parallel()
	scfg := fastStandin()
	scfg.Faults = standin.Faults{ServerErrorRate: 1, Endpoints: []string{standin.EndpointModels}}
	e := setup(t, scfg)
	cfg := fastConfig()
	cfg.Budgets = e.budgetsFor(t)
	e.startWorker(cfg, nil)
	e.checkStored(e.waitTerminal([]tasks.JobID{e.submitOne(t, "lite", "google/veo-3.1-lite")}, 30*time.Second))
	r := e.waitTerminal([]tasks.JobID{e.submitOne(t, "sora", "openai/sora-2")}, 10*time.Second)[0]
	if r.ErrorCode != "unpriced_model" || r.CreateAttempts != 0 {
		t.Errorf("sora-2: code %q, %d create attempts; want unpriced_model, 0", r.ErrorCode, r.CreateAttempts)
	}
	if n := e.api.Stats().Calls[standin.EndpointModels]; n == 0 {
		t.Error("the worker never asked for the model list")
	}
}

// TestNoModelListWithoutBudgets: with budgets off the worker never reads
// the model list.
func TestNoModelListWithoutBudgets(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	e.startWorker(fastConfig(), nil)
	e.checkStored(e.waitTerminal(e.submit(2, "openai/sora-2"), 30*time.Second))
	if n := e.api.Stats().Calls[standin.EndpointModels]; n != 0 {
		t.Errorf("%d model list calls with budgets off, want 0", n)
	}
}

// submitOne submits one job with id for model.
func (e *env) submitOne(t *testing.T, id, model string) tasks.JobID {
	t.Helper()
	got, err := e.producer.Submit(t.Context(), tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: model, Prompt: "prompt " + id}})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
