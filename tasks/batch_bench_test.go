package tasks_test

import (
	"fmt"
	"testing"

	"github.com/videoworker/videoworker/tasks"
)

// BenchmarkSubmitMany submits batches of 500 new jobs; b.N counts batches.
func BenchmarkSubmitMany(b *testing.B) {
	bu := setup(b)
	reqs := batchOf(500, "")
	for i := 0; b.Loop(); i++ {
		for k := range reqs {
			reqs[k].JobID = tasks.JobID(fmt.Sprintf("b%d-%d", i, k))
		}
		if _, err := bu.client.SubmitMany(bu.ctx, reqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "jobs/s")
	if testing.Verbose() {
		info, _ := bu.rdb.Info(bu.ctx, "commandstats").Result()
		b.Log(info)
	}
}
