package worker_test

import (
	"testing"
	"time"
)

// TestJobsFlowOnWakeUpsAlone: with the idle check an hour away, jobs still
// go from submission to stored, with and without webhooks: every step that
// adds a task (the producer's submit, the worker's own enqueues, the
// webhook receiver, the forwarding of scheduled polls) wakes the worker.
func TestJobsFlowOnWakeUpsAlone(t *testing.T) {
	t.Parallel()
	for _, hooks := range []bool{false, true} {
		e := setup(t, fastStandin())
		cfg := fastConfig()
		cfg.IdleCheckInterval = time.Hour
		if hooks {
			cfg = e.withWebhooks(t, cfg)
		}
		e.startWorker(cfg, nil)
		// Two rounds: the second finds every queue and set long known
		// empty by the gate.
		for range 2 {
			ids := e.submit(3, "google/veo-3.1-lite")
			e.checkStored(e.waitTerminal(ids, 30*time.Second))
		}
	}
}
