package jobs_test

import (
	"testing"

	"github.com/videoworker/videoworker/jobs"
)

// TestCreateManyWithoutCompanions: a caller that passes no companions
// must write each new job's task itself, so CreateMany reports none
// written (Companion false) for the records it creates.
func TestCreateManyWithoutCompanions(t *testing.T) {
	b := setup(t)
	recs := []*jobs.Record{{ID: "nc-1"}, {ID: "nc-2"}}
	for _, r := range recs {
		r.State, r.Request.Model, r.Request.Prompt = jobs.StateQueued, "m", "p "+r.ID
	}
	res, err := b.store.CreateMany(b.ctx, recs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Created || r.Companion {
			t.Errorf("%s: created %v, companion %v; want created, no companion written", recs[i].ID, r.Created, r.Companion)
		}
	}
}
