package jobs_test

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
)

// commandCalls reads INFO commandstats: calls per command (those run
// inside scripts included).
func commandCalls(tb testing.TB, ctx context.Context, rdb *redis.Client) map[string]int {
	tb.Helper()
	txt, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(txt, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

// TestTerminalTransitionCost measures the Redis commands of the
// transition that ends a job (on a server of its own, so that the counts
// are this test's): a job without a callback URL nobody waits on costs
// what it cost before callbacks existed; a callback URL adds one SADD (the
// set of callbacks due), a waiter one PUBLISH.
func TestTerminalTransitionCost(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t, 0)
	ctx := t.Context()
	store := jobs.NewStore(rdb, "")
	// The first transition loads the script: warm the cache.
	if _, _, err := store.Create(ctx, &jobs.Record{ID: "warm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Do(ctx, "warm", jobs.Cancelled{Reason: "warm"}); err != nil {
		t.Fatal(err)
	}
	measure := func(id string, rec *jobs.Record, waiter bool) map[string]int {
		rec.ID = id
		rec.Request.Model, rec.Request.Prompt = "m", "p"
		if _, _, err := store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if waiter {
			if _, err := store.MarkWaiter(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Do(ctx, id, jobs.Cancelled{Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		got := commandCalls(t, ctx, rdb)
		delete(got, "config|resetstat")
		delete(got, "config")
		delete(got, "info")
		return got
	}
	plain := measure("plain", &jobs.Record{}, false)
	withURL := measure("cb", &jobs.Record{CallbackURL: "https://hooks.example.com/x"}, false)
	waited := measure("waited", &jobs.Record{}, true)
	total := func(m map[string]int) (n int, names []string) {
		for k, v := range m {
			n += v
			names = append(names, k+"="+strconv.Itoa(v))
		}
		sort.Strings(names)
		return n, names
	}
	np, pn := total(plain)
	nc, cn := total(withURL)
	nw, wn := total(waited)
	t.Logf("terminal transition: no callback, no waiter: %d commands %v; with a callback URL: %d %v; waited on: %d %v", np, pn, nc, cn, nw, wn)
	if plain["publish"] != 0 || plain["sadd"] != 0 {
		t.Errorf("a job without callback or waiter: %v; want no PUBLISH and no SADD", pn)
	}
	if nc != np+1 || withURL["sadd"] != 1 {
		t.Errorf("a callback URL costs %d commands more (%v), want one SADD", nc-np, cn)
	}
	if nw != np+1 || waited["publish"] != 1 {
		t.Errorf("a waiter costs %d commands more (%v), want one PUBLISH", nw-np, wn)
	}
}
