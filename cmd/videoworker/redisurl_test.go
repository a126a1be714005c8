package main

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/worker"
)

func TestParseRedisURL(t *testing.T) {
	cases := []struct {
		in, kind, addr string
		bad            bool
	}{
		{in: "redis://127.0.0.1:6380/2", kind: "standalone", addr: "127.0.0.1:6380"},
		{in: "rediss://u:p@r.example:6380", kind: "standalone", addr: "r.example:6380"},
		{in: "redis-sentinel://s1:26379,s2:26379/mymaster/3?sentinel_password=x", kind: "sentinel", addr: "sentinel s1:26379,s2:26379 master mymaster"},
		{in: "redis-sentinel://:pw@s1:26379/mymaster", kind: "sentinel", addr: "sentinel s1:26379 master mymaster"},
		{in: "redis-cluster://n1:7000,n2:7001,n3:7002", kind: "cluster", addr: "cluster n1:7000,n2:7001,n3:7002"},
		{in: "redis-sentinel://s1:26379", bad: true},
		{in: "redis-cluster://n1:7000/4", bad: true},
		{in: "redis-cluster://n1", bad: true},
		{in: "http://x:1", bad: true},
		{in: "127.0.0.1:6379", bad: true},
	}
	for _, tc := range cases {
		got, err := parseRedisURL(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: accepted", tc.in)
			}
			continue
		}
		if err != nil || got.kind != tc.kind || got.addr() != tc.addr {
			t.Errorf("%s: %q %q %v; want %q %q", tc.in, got.kind, got.addr(), err, tc.kind, tc.addr)
		}
	}
	got, _ := parseRedisURL("redis-sentinel://alice:secret@s1:26379/m/3?sentinel_password=sp")
	if f := got.failover; f.Username != "alice" || f.Password != "secret" || f.DB != 3 || f.SentinelPassword != "sp" {
		t.Errorf("sentinel options: %+v", f)
	}
	if _, err := parseRedisURL("redis://:hunter2secret@h:x/0"); err == nil || strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("bad URL error leaks or is missing: %v", err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProc runs redis-server with args until the test ends.
func startProc(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = dir
	log, _ := os.Create(filepath.Join(dir, fmt.Sprintf("redis-%d.log", time.Now().UnixNano())))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server (needed for this test; apt-get install -y redis-server): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); log.Close() })
}

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisSentinel connects through a real Sentinel and submits a job.
func TestRedisSentinel(t *testing.T) {
	master := redistest.Start(t, redistest.Options{})
	host, mport, _ := net.SplitHostPort(master.Addr())
	dir := t.TempDir()
	sport := freePort(t)
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor mymaster %s %s 1\nsentinel down-after-milliseconds mymaster 2000\n", sport, dir, host, mport)
	if err := os.WriteFile(filepath.Join(dir, "sentinel.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, dir, filepath.Join(dir, "sentinel.conf"), "--sentinel")
	ctx := t.Context()
	var rdb redis.UniversalClient
	waitFor(t, "sentinel answers", 10*time.Second, func() bool {
		var err error
		rdb, err = openRedis(ctx, fmt.Sprintf("redis-sentinel://127.0.0.1:%d/mymaster/5", sport))
		return err == nil
	})
	defer rdb.Close()
	c := tasks.NewClient(rdb, tasks.ClientOptions{})
	if _, err := c.Submit(ctx, tasks.Request{JobID: "via-sentinel", Video: apiclient.CreateRequest{Model: "m", Prompt: "p"}}); err != nil {
		t.Fatal(err)
	}
	direct := master.Client(t, 5)
	if n, err := direct.Exists(ctx, "videoworker:job:{via-sentinel}").Result(); err != nil || n != 1 {
		t.Errorf("the job record is not on the master's database 5: %d %v", n, err)
	}
	runJobsOn(t, rdb, "sentinel")
}

// TestRedisCluster runs jobs end to end on a real three-node Redis
// Cluster: job keys share hash tags, asynq's queues too.
func TestRedisCluster(t *testing.T) {
	rdb, _ := startCluster(t)
	defer rdb.Close()
	runJobsOn(t, rdb, "cluster")
	runJobsOn(t, rdb, "cluster-tenants", true)
}

// startCluster starts a three-node Redis Cluster and returns a client of
// it (opened as the program opens one) and its nodes' addresses.
func startCluster(t *testing.T) (redis.UniversalClient, []string) {
	t.Helper()
	dir := t.TempDir()
	var addrs []string
	for i := 0; i < 3; i++ {
		p := freePort(t)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
		startProc(t, dir, "--port", fmt.Sprint(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", p), "--save", "", "--appendonly", "no", "--protected-mode", "no")
	}
	for _, a := range addrs {
		waitFor(t, "node "+a, 10*time.Second, func() bool {
			c := redis.NewClient(&redis.Options{Addr: a})
			defer c.Close()
			return c.Ping(t.Context()).Err() == nil
		})
	}
	out, err := exec.Command("redis-cli", append([]string{"--cluster", "create"}, append(addrs, "--cluster-replicas", "0", "--cluster-yes")...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx := t.Context()
	waitFor(t, "cluster state ok", 15*time.Second, func() bool {
		c := redis.NewClient(&redis.Options{Addr: addrs[0]})
		defer c.Close()
		info, err := c.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
	rdb, err := openRedis(ctx, "redis-cluster://"+strings.Join(addrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	return rdb, addrs
}

// runJobsOn runs five jobs end to end on rdb with a worker whose idle
// check is an hour away: they finish only if wake-ups (pub/sub) reach the
// worker on this deployment. With tenants, tenancy is on (two tenants,
// one job each at a time): admission works on this deployment too.
func runJobsOn(t *testing.T, rdb redis.UniversalClient, name string, tenants ...bool) {
	t.Helper()
	ctx := t.Context()
	api := standin.New(standin.Config{APIKey: "k", QueuedFor: 50 * time.Millisecond, ProcessingFor: 150 * time.Millisecond, ContentSize: 4096}, nil)
	hs := httptest.NewServer(api)
	defer hs.Close()
	client, _ := apiclient.New(apiclient.Config{BaseURL: hs.URL + "/v1", APIKey: "k"})
	store, _ := storage.NewDisk(t.TempDir())
	js := jobs.NewStore(rdb, "")
	var ten *jobs.Tenancy
	if len(tenants) > 0 && tenants[0] {
		limits, _ := jobs.ParseTenantLimits("default=1")
		ten = jobs.NewTenancy(js, jobs.TenancyConfig{Limits: limits})
	}
	w, err := worker.New(worker.Config{PollInterval: 100 * time.Millisecond, MaxPollInterval: 300 * time.Millisecond, MinPollInterval: 50 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond, ShutdownTimeout: time.Second, IdleCheckInterval: time.Hour, Tenancy: ten}, worker.Deps{Redis: rdb, API: client, Store: store, Jobs: js})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()
	producer := tasks.NewClient(rdb, tasks.ClientOptions{Tenancy: ten})
	var ids []tasks.JobID
	for i := 0; i < 5; i++ {
		id, err := producer.Submit(ctx, tasks.Request{JobID: tasks.JobID(fmt.Sprintf("%s-%d", name, i)), Video: apiclient.CreateRequest{Model: "m", Prompt: fmt.Sprint("p", i)},
			Tenant: []string{"a", "b"}[i%2]})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waitFor(t, "jobs stored on "+name, 60*time.Second, func() bool {
		for _, id := range ids {
			r, err := producer.Status(ctx, id)
			if err != nil || r.State != jobs.StateStored {
				return false
			}
		}
		return true
	})
}
