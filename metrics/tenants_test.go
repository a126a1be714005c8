package metrics_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/videoworker/videoworker/metrics"
)

// TestTenantJobs: the tenants' figures are read at scrape time, a series
// per tenant and state; Spend is labelled with the job's tenant.
func TestTenantJobs(t *testing.T) {
	m := metrics.New()
	m.AddTenants(func(context.Context) ([]metrics.TenantJobs, error) {
		return []metrics.TenantJobs{{Tenant: "acme", Waiting: 7, Admitted: 2}}, nil
	})
	m.Spend("m", "acme", 1_500_000)
	m.Spend("m", "", 500_000)
	rr := httptest.NewRecorder()
	m.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rr.Body)
	for _, s := range []string{`videoworker_tenant_jobs{state="tenant_wait",tenant="acme"} 7`, `videoworker_tenant_jobs{state="admitted",tenant="acme"} 2`,
		`videoworker_spend_usd_total{model="m",tenant="acme"} 1.5`, `videoworker_spend_usd_total{model="m",tenant="default"} 0.5`} {
		if !strings.Contains(string(body), s) {
			t.Errorf("/metrics lacks %s", s)
		}
	}
}
