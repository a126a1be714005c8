package metrics

import "github.com/prometheus/client_golang/prometheus"

func newWebhookRefused() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{
		Name: "videoworker_webhook_subscriptions_refused_total",
		Help: "Creates whose inline webhook subscription the API refused (400 on the webhook field; the newest API takes only endpoint ids): each was sent again without it and the job goes on by polling.",
	})
}

// WebhookRefused counts one create whose webhook subscription the API
// refused and that was sent again without it.
func (m *Metrics) WebhookRefused() {
	if m == nil {
		return
	}
	m.webhookRefused.Inc()
}
