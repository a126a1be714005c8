package jobs_test

import (
	"testing"

	"github.com/videoworker/videoworker/jobs"
)

// BenchmarkApply measures a typical poll update: a poll_seq CAS that
// advances the chain, records the API status and writes a history line.
func BenchmarkApply(b *testing.B) {
	env := setup(b)
	env.create(b, "j", "veo-3")
	env.apply(b, "j", jobs.Change{To: jobs.StateGenerating, Set: map[string]any{jobs.FieldVideoID: "vid_1", jobs.FieldPollSeq: 1}})
	seq := 1
	b.ReportAllocs()
	for b.Loop() {
		out, err := env.store.Apply(env.ctx, "j", jobs.Change{
			From:    []jobs.State{jobs.StateGenerating},
			IfEqual: map[string]any{jobs.FieldPollSeq: seq},
			Set: map[string]any{jobs.FieldPollSeq: seq + 1, jobs.FieldAPIStatus: "in_progress", jobs.FieldProgress: seq % 100,
				jobs.FieldErrorCode: "", jobs.FieldError: ""},
			Incr:   map[string]int64{jobs.FieldPolls: 1},
			Event:  "api_status",
			Detail: "api status in_progress",
		})
		if err != nil || !out.Applied {
			b.Fatalf("Apply at seq %d = %+v, %v", seq, out, err)
		}
		seq++
	}
}
