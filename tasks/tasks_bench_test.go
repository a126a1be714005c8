package tasks_test

import (
	"testing"
	"time"

	"github.com/videoworker/videoworker/tasks"
)

// BenchmarkNewPollTask measures building the next link of a poll chain:
// the JSON payload (with not_before) and the task options.
func BenchmarkNewPollTask(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tasks.NewPollTask("job_0123456789abcdef01234567", 7, 20*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePollPayload measures what every poll handler does first.
func BenchmarkDecodePollPayload(b *testing.B) {
	t, err := tasks.NewPollTask("job_0123456789abcdef01234567", 7, 20*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	payload := t.Payload()
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := tasks.Decode[tasks.PollPayload](payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewCreateTask measures the create task Submit enqueues.
func BenchmarkNewCreateTask(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tasks.NewCreateTask("job_0123456789abcdef01234567"); err != nil {
			b.Fatal(err)
		}
	}
}
