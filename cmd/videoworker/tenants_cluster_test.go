package main

import (
	"encoding/json"
	"testing"

	"github.com/hibiken/asynq"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestTenancyAdmissionOnRedisClusterKeepsTrace: on a Redis Cluster, where
// the admission script cannot reach the records and the admitted jobs'
// transitions are applied after it, an admitted job's create task carries
// the job's trace, as on a single Redis.
func TestTenancyAdmissionOnRedisClusterKeepsTrace(t *testing.T) {
	rdb, _ := startCluster(t)
	defer rdb.Close()
	ctx := t.Context()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(ctx) })
	js := jobs.NewStore(rdb, "")
	c := tasks.NewClient(rdb, tasks.ClientOptions{TracerProvider: tp, Tenancy: jobs.NewTenancy(js, jobs.TenancyConfig{})})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, id := range []string{"cl-1", "cl-2"} {
		if _, err := c.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Tenant: "acme", Video: apiclient.CreateRequest{Model: "m", Prompt: "p " + id}}); err != nil {
			t.Fatal(err)
		}
		rec, err := js.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != jobs.StateQueued || rec.Trace == "" {
			t.Fatalf("job %s: state %s, trace %q; want admitted (queued), traced", id, rec.State, rec.Trace)
		}
		info, err := insp.GetTaskInfo(tasks.QueueCreate, tasks.CreateTaskID(id))
		if err != nil {
			t.Fatalf("job %s: create task: %v", id, err)
		}
		var p struct {
			Trace string `json:"trace"`
		}
		if err := json.Unmarshal(info.Payload, &p); err != nil || p.Trace != rec.Trace {
			t.Errorf("job %s: create task carries trace %q (%v), record %q", id, p.Trace, err, rec.Trace)
		}
	}
}
