package webhook

import "time"

// SetBeforeEarly makes h call fn between reading a job that has no video
// id and recording an early delivery on it, so that a test can save the id
// in between.
func (h *Handler) SetBeforeEarly(fn func()) { h.beforeEarly = fn }

// SetClock makes h read the time from now (status check intervals).
func (h *Handler) SetClock(now func() time.Time) { h.now = now }
