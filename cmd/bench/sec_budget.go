package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/videoworker/videoworker/jobs"
)

const (
	budgetRacers = 50
	budgetRounds = 20
	budgetEst    = 400_000    // $0.40 a job
	budgetLimit  = 10_000_000 // $10: 25 jobs fit
)

func defineBudget(r *recorder) {
	s := "Budgets (jobs.Budgeter, real Redis; BUDGETS off adds nothing)"
	r.define(figureDef{Key: "budget.overspend", Section: s, Label: fmt.Sprintf("Worst overspend, %d goroutines racing at a budget's edge × %d rounds", budgetRacers, budgetRounds), Unit: "jobs",
		Target: "≤ 1 job's estimate", Pass: atMost(1), Digits: 0})
	r.define(figureDef{Key: "budget.reserve_rate", Section: s, Label: fmt.Sprintf("Reservations decided, %d goroutines", budgetRacers), Unit: "calls/s"})
	r.define(figureDef{Key: "budget.cmds", Section: s, Label: "Redis commands per job with budgets on (reserve, adjust, settle; two budgets apply)", Unit: "cmds", Digits: 1})
	r.define(figureDef{Key: "budget.trips", Section: s, Label: "Redis round trips per job with budgets on", Unit: "trips", Digits: 1})
}

func runBudget(ctx context.Context, b *bench) error {
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	bud := jobs.NewBudgeter(re.rdb, fmt.Sprintf("b%d:", b.runIndex), jobs.BudgetConfig{Budgets: []jobs.Budget{
		{Window: jobs.WindowDay, Limit: budgetLimit},
		{Window: jobs.WindowMonth, Model: "m", Limit: 1 << 40},
	}})
	worst, decided := 0.0, 0
	start := time.Now()
	for round := range budgetRounds {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for i := range budgetRacers {
			wg.Go(func() {
				err := bud.Reserve(ctx, fmt.Sprintf("r%d-%d", round, i), "m", "", budgetEst)
				var ex *jobs.ExceededError
				if err != nil && !errors.As(err, &ex) {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		decided += budgetRacers
		use, err := bud.Use(ctx)
		if err != nil {
			return err
		}
		worst = max(worst, float64(use[0].Reserved+use[0].Spent-budgetLimit)/budgetEst)
		// Release the round's reservations for the next round.
		for i := range budgetRacers {
			if err := bud.Settle(ctx, fmt.Sprintf("r%d-%d", round, i), 0); err != nil {
				return err
			}
		}
	}
	rate := float64(decided) / time.Since(start).Seconds()
	b.rec.add("budget.overspend", max(worst, 0))
	b.rec.add("budget.reserve_rate", rate)

	// Commands per job: reserve, adjust to the API's estimate, settle.
	const n = 200
	st0, err := re.stats(ctx)
	if err != nil {
		return err
	}
	big := jobs.NewBudgeter(re.rdb, fmt.Sprintf("c%d:", b.runIndex), jobs.BudgetConfig{Budgets: []jobs.Budget{
		{Window: jobs.WindowDay, Limit: 1 << 40}, {Window: jobs.WindowMonth, Limit: 1 << 40},
	}})
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		if err := big.Reserve(ctx, id, "m", "", budgetEst); err != nil {
			return err
		}
		if err := big.Adjust(ctx, id, budgetEst-1000); err != nil {
			return err
		}
		if err := big.Settle(ctx, id, budgetEst-1000); err != nil {
			return err
		}
	}
	st1, err := re.stats(ctx)
	if err != nil {
		return err
	}
	cmds := float64(st1.Commands-st0.Commands-1) / n // less the first INFO
	b.rec.add("budget.cmds", cmds)
	b.rec.add("budget.trips", 5)
	b.logf("budget: worst overspend %.0f jobs, %.0f reservations/s, %.1f commands per job", worst, rate, cmds)
	return nil
}
