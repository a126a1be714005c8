package jobs

import "time"

// SetClock makes s read the current time from now. Tests call it before
// using s.
func (s *Store) SetClock(now func() time.Time) { s.now = now }

func SetBudgetClock(b *Budgeter, now func() time.Time) { b.now = now }
