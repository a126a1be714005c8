package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// slowCreates makes every create call take d.
type slowCreates struct {
	worker.VideoAPI
	d time.Duration
}

func (s slowCreates) Create(ctx context.Context, req apiclient.CreateRequest, opts apiclient.CreateOptions) (*apiclient.Video, error) {
	time.Sleep(s.d)
	return s.VideoAPI.Create(ctx, req, opts)
}

// TestCreatesStartInSubmissionOrder: the creates of one model start in
// the order the jobs were submitted, although four create slots race for
// the model's create lock and each freed slot brings a newcomer that
// looks at once. Only the first create is anyone's: the first look of
// each of the first jobs taken is a plain SET NX.
func TestCreatesStartInSubmissionOrder(t *testing.T) {
	t.Parallel()
	e := setup(t, fastStandin())
	const n = 12
	var ids []tasks.JobID
	for i := range n {
		id, err := e.producer.Submit(context.Background(), tasks.Request{JobID: tasks.JobID(fmt.Sprintf("order-%02d", i)),
			Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: fmt.Sprintf("prompt %02d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(3 * time.Millisecond) // distinct tickets (ms)
	}
	cfg := fastConfig()
	cfg.CreateConcurrency = 4
	e.startWorker(cfg, slowCreates{VideoAPI: e.client, d: 15 * time.Millisecond})
	recs := e.waitTerminal(ids, 60*time.Second)
	e.checkStored(recs)
	sort.Slice(recs, func(i, j int) bool { return recs[i].CreateStartedAt.Before(recs[j].CreateStartedAt) })
	var got, want []string
	for _, r := range recs[1:] {
		got = append(got, r.ID)
	}
	for _, id := range ids {
		if string(id) != recs[0].ID {
			want = append(want, string(id))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("after the first (%s), creates started in the order %v; want the submission order %v", recs[0].ID, got, want)
	}
}
