package tasks_test

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestSubmitInvalidTenant: a tenant name jobs.ValidateTenant refuses is
// a validation error naming the field tenant.
func TestSubmitInvalidTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, bad := range []string{"Acme", "a b", "-x", strings.Repeat("a", 64)} {
		_, err := b.client.Submit(b.ctx, tasks.Request{Tenant: bad, Video: apiclient.CreateRequest{Model: "m", Prompt: "p"}})
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) || ve.Fields["tenant"] == "" || !errors.Is(err, tasks.ErrInvalidRequest) {
			t.Errorf("tenant %q: %v; want a ValidationError naming tenant", bad, err)
		}
	}
	id, err := b.client.Submit(b.ctx, tasks.Request{Tenant: "acme", Video: apiclient.CreateRequest{Model: "m", Prompt: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := b.client.Status(b.ctx, id)
	if err != nil || rec.Tenant != "acme" || rec.State != jobs.StateQueued {
		t.Errorf("Status = %+v, %v; want tenant acme, queued (tenancy off)", rec, err)
	}
	// The same job id with another tenant is another request.
	if _, err := b.client.Submit(b.ctx, tasks.Request{JobID: id, Tenant: "other", Video: apiclient.CreateRequest{Model: "m", Prompt: "p"}}); !errors.Is(err, tasks.ErrJobIDConflict) {
		t.Errorf("resubmitted with another tenant: %v; want ErrJobIDConflict", err)
	}
}

// commands reads INFO commandstats: calls per command.
func commands(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	txt, err := rdb.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(txt, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		if name = strings.TrimPrefix(name, "cmdstat_"); name != "info" && !strings.HasPrefix(name, "config") {
			out[name] = n
		}
	}
	return out
}

// TestTenancyOffCostsNothing: with tenancy off, a job with a tenant costs
// the same Redis commands as one without, and no tenancy key is written;
// with it on, the cost of a Submit is logged.
func TestTenancyOffCostsNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client(t, 0)
	ctx := t.Context()
	measure := func(c *tasks.Client, tenant string, i int) map[string]int {
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, tasks.Request{Tenant: tenant, Video: apiclient.CreateRequest{Model: "m", Prompt: fmt.Sprint("p", i)}}); err != nil {
			t.Fatal(err)
		}
		return commands(t, rdb)
	}
	off := tasks.NewClient(rdb, tasks.ClientOptions{})
	measure(off, "", 0) // loads the scripts
	plain := measure(off, "", 1)
	tenant := measure(off, "acme", 2)
	if !maps.Equal(plain, tenant) {
		t.Errorf("tenancy off: a job of tenant acme costs %v; one without a tenant %v; want the same", tenant, plain)
	}
	if keys, _ := rdb.Keys(ctx, "*{tenants}*").Result(); len(keys) > 0 {
		t.Errorf("tenancy off wrote %v", keys)
	}
	on := tasks.NewClient(rdb, tasks.ClientOptions{Tenancy: jobs.NewTenancy(jobs.NewStore(rdb, ""), jobs.TenancyConfig{})})
	measure(on, "acme", 3)
	withTenancy := measure(on, "acme", 4)
	sum := func(m map[string]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}
	t.Logf("Submit: %d commands with tenancy off %v; %d with it on %v", sum(plain), plain, sum(withTenancy), withTenancy)
}
