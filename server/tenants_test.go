package server_test

import (
	"net/http"
	"testing"
)

// TestJobAPITenant: a job's tenant is taken from POST /v1/jobs and the
// batch route, shown by GET, and filters the list; an invalid name is a
// 400 naming the field.
func TestJobAPITenant(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)
	body := job("m", "a fox")
	body["tenant"] = "acme"
	code, m, raw := f.call("POST", "/v1/jobs", body, tok)
	if code != http.StatusAccepted || m["tenant"] != "acme" {
		t.Fatalf("create with tenant acme: %d %s", code, raw)
	}
	id := m["id"].(string)
	if code, m, raw := f.call("GET", "/v1/jobs/"+id, nil, tok); code != http.StatusOK || m["tenant"] != "acme" {
		t.Errorf("get: %d %s; want tenant acme", code, raw)
	}
	code, m, raw = f.call("POST", "/v1/jobs", job("m", "no tenant"), tok)
	if code != http.StatusAccepted || m["tenant"] != "default" {
		t.Errorf("create without tenant: %d %s; want tenant default", code, raw)
	}
	code, _, raw = f.call("POST", "/v1/jobs/batch", map[string]any{"jobs": []any{map[string]any{"model": "m", "prompt": "b", "tenant": "bulk"}}}, tok)
	if code != http.StatusAccepted && code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("batch: %d %s", code, raw)
	}
	for _, bad := range []string{"Acme", "a b", "-x", "tenant:acme"} {
		body := job("m", "bad")
		body["tenant"] = bad
		code, m, raw := f.call("POST", "/v1/jobs", body, tok)
		fields, _ := m["fields"].(map[string]any)
		if code != http.StatusBadRequest || fields["tenant"] == nil {
			t.Errorf("tenant %q: %d %s; want 400 naming tenant", bad, code, raw)
		}
		code, _, raw = f.call("POST", "/v1/jobs/batch", map[string]any{"jobs": []any{body}}, tok)
		if code != http.StatusBadRequest {
			t.Errorf("batch with tenant %q: %d %s; want 400", bad, code, raw)
		}
	}
	code, m, raw = f.call("GET", "/v1/jobs?tenant=acme", nil, tok)
	data, _ := m["data"].([]any)
	if code != http.StatusOK || len(data) != 1 || data[0].(map[string]any)["id"] != id {
		t.Errorf("list ?tenant=acme: %d %s; want only %s", code, raw, id)
	}
	if code, _, raw := f.call("GET", "/v1/jobs?tenant=Bad", nil, tok); code != http.StatusBadRequest {
		t.Errorf("list ?tenant=Bad: %d %s; want 400", code, raw)
	}
}
