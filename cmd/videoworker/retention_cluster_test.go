package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

// TestRetentionOnRedisCluster runs jobs through on a real three-node
// Redis Cluster with retention on, where a job's keys (one hash tag) and
// the fleet-wide sets live on different nodes: the sweep archives and
// compacts every ended job, and once the retention has passed nothing of
// them is left on any node (a SCAN of each master, in the test only),
// and every archive document is present.
func TestRetentionOnRedisCluster(t *testing.T) {
	rdb, _ := startCluster(t)
	defer rdb.Close()
	ctx := t.Context()
	api := standin.New(standin.Config{APIKey: "k", QueuedFor: 20 * time.Millisecond, ProcessingFor: 50 * time.Millisecond, ContentSize: 4096}, nil)
	hs := httptest.NewServer(api)
	defer hs.Close()
	client, _ := apiclient.New(apiclient.Config{BaseURL: hs.URL + "/v1", APIKey: "k"})
	store, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	js := jobs.NewStore(rdb, "")
	js.SetRetention(5 * time.Second)
	cfg := worker.Config{PollInterval: 50 * time.Millisecond, MaxPollInterval: 200 * time.Millisecond, MinPollInterval: 20 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond, ShutdownTimeout: time.Second, RetentionSweepInterval: -1}
	deps := worker.Deps{Redis: rdb, API: client, Store: store, Jobs: js}
	w, err := worker.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	// The sweep runs below, its clock ahead by what ahead holds.
	var ahead atomic.Int64
	sdeps := deps
	sdeps.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	sweeper, err := worker.New(cfg, sdeps)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	producer := tasks.NewClient(rdb, tasks.ClientOptions{Retention: 5 * time.Second})
	var ids []string
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("ret-cluster-%d", i)
		req := tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: "m", Prompt: fmt.Sprint("p", i)}}
		if i%4 == 0 {
			req.Labels = map[string]string{"team": "a"} // a spec key too
		}
		if _, err := producer.Submit(ctx, req); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	videos := map[string]string{}
	waitFor(t, "jobs stored on the cluster", 60*time.Second, func() bool {
		for _, id := range ids {
			r, err := producer.Status(ctx, tasks.JobID(id))
			if err != nil || r.State != jobs.StateStored {
				return false
			}
			videos[id] = r.VideoID
		}
		return true
	})
	stop()
	<-done

	// The sweep archives and compacts them.
	if _, err := sweeper.SweepFinished(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		r, err := js.Load(ctx, id)
		if err != nil || !r.Compact || r.State != jobs.StateStored {
			t.Fatalf("job %s after the sweep: %+v, %v; want it compact", id, r, err)
		}
		if n, _ := rdb.Exists(ctx, "videoworker:job:{"+id+"}:events").Result(); n != 0 {
			t.Errorf("job %s: history left after compaction", id)
		}
	}
	// Its retention passes: everything goes.
	ahead.Store(int64(time.Hour))
	n, err := sweeper.SweepFinished(ctx)
	if err != nil || n != len(ids) {
		t.Fatalf("SweepFinished = %d, %v; want %d", n, err, len(ids))
	}
	var left []string
	err = rdb.(*redis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, "videoworker:job:*", 1000).Iterator()
		for iter.Next(ctx) {
			for _, id := range ids {
				if strings.Contains(iter.Val(), "{"+id+"}") {
					left = append(left, iter.Val())
				}
			}
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{"jobs", "finished", "retained"} {
		if n, _ := rdb.ZCard(ctx, "videoworker:"+set).Result(); n != 0 {
			left = append(left, fmt.Sprintf("%d entries in %s", n, set))
		}
	}
	for id, v := range videos {
		if owner, _ := rdb.HGet(ctx, "videoworker:claims", v).Result(); owner == id {
			left = append(left, "claim of "+id)
		}
		a, err := jobs.LoadArchive(ctx, store, id)
		if err != nil || a.Record.VideoID != v || a.Record.Request.Model != "m" || len(a.History) < 4 {
			t.Errorf("archive of %s: %+v, %v", id, a, err)
		}
	}
	if len(left) > 0 {
		t.Errorf("left on the cluster after retention: %v", left)
	}
	if st, err := js.RetentionStats(ctx); err != nil || st.Removed != int64(len(ids)) || st.Archived != int64(len(ids)) {
		t.Errorf("RetentionStats = %+v, %v", st, err)
	}
}
