package worker

import (
	"context"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

// ModelLister reads the API's model catalogue (GET /videos/models). With
// budgets on, a VideoAPI that has it prices the models MODEL_PRICES does
// not name; one without it (a test double) leaves MODEL_PRICES alone.
type ModelLister interface {
	Models(ctx context.Context) ([]apiclient.Model, error)
}

var _ ModelLister = (*apiclient.Client)(nil)

// pricesReadTimeout bounds one read of the catalogue, retries included.
const pricesReadTimeout = 30 * time.Second

// refreshPrices reads the API's model catalogue once and gives the
// budgets the prices it recognises (jobs.ParseModelPricing). On a
// failure the prices of the last good read stay (none before the first):
// a warning, never a stop; MODEL_PRICES apply either way.
func (w *Worker) refreshPrices(ctx context.Context) error {
	ml, ok := w.api.(ModelLister)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, pricesReadTimeout)
	defer cancel()
	models, err := ml.Models(ctx)
	if err != nil {
		w.log.WarnContext(ctx, "model prices: cannot read the API's model catalogue; models without MODEL_PRICES keep their last known price, or none (refused as unpriced_model)", "err", err.Error())
		return err
	}
	prices, unrecognised := jobs.APIPrices(models)
	w.cfg.Budgets.SetAPIPrices(prices)
	args := []any{"models", len(models), "priced_by_api", len(prices), "priced_by_model_prices", w.cfg.Budgets.OperatorPrices()}
	if len(unrecognised) > 0 {
		args = append(args, "unrecognised_pricing", unrecognised[:min(len(unrecognised), 10)])
	}
	w.log.InfoContext(ctx, "model prices read from the API", args...)
	return nil
}

// runPriceRefresh re-reads the catalogue every interval until ctx ends.
func (w *Worker) runPriceRefresh(ctx context.Context, every time.Duration) {
	runEvery(ctx, every, func() { _ = w.refreshPrices(ctx) })
}
