package server_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/videoworker/videoworker/jobs"
)

func batchBody(n int, prefix string) map[string]any {
	js := make([]any, n)
	for i := range js {
		j := job("m", fmt.Sprintf("batch %d", i))
		if i%2 == 0 {
			j["job_id"] = fmt.Sprintf("%s-%d", prefix, i)
		} else {
			j["idempotency_key"] = fmt.Sprintf("%s-%d", prefix, i)
		}
		js[i] = j
	}
	return map[string]any{"jobs": js}
}

func TestJobAPIBatch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)
	code, m, raw := f.call("POST", "/v1/jobs/batch", batchBody(30, "b"), tok)
	if code != http.StatusAccepted {
		t.Fatalf("batch: %d %s", code, raw)
	}
	data, _ := m["data"].([]any)
	if len(data) != 30 {
		t.Fatalf("batch answer: %s", raw)
	}
	for i, d := range data {
		it := d.(map[string]any)
		if it["job_id"] != fmt.Sprintf("b-%d", i) || it["new"] != true {
			t.Errorf("item %d: %v", i, it)
		}
	}
	rec, err := f.producer.Status(t.Context(), "b-7")
	if err != nil || rec.State != jobs.StateQueued || rec.Request.Prompt != "batch 7" {
		t.Fatalf("job b-7: %+v %v", rec, err)
	}
	// Sent again: the same ids, none new, 200.
	code, m, raw = f.call("POST", "/v1/jobs/batch", batchBody(30, "b"), tok)
	if code != http.StatusOK {
		t.Fatalf("batch again: %d %s", code, raw)
	}
	for i, d := range m["data"].([]any) {
		if it := d.(map[string]any); it["job_id"] != fmt.Sprintf("b-%d", i) || it["new"] != false {
			t.Errorf("again, item %d: %v", i, it)
		}
	}
	// One invalid job: nothing accepted, the bad one named.
	body := batchBody(5, "c")
	body["jobs"].([]any)[3].(map[string]any)["prompt"] = ""
	body["jobs"].([]any)[4].(map[string]any)["timeout_seconds"] = -1
	code, m, raw = f.call("POST", "/v1/jobs/batch", body, tok)
	fields, _ := m["fields"].(map[string]any)
	if code != http.StatusBadRequest || fields["jobs[3].prompt"] == nil || fields["jobs[4].timeout_seconds"] == nil {
		t.Errorf("invalid batch: %d %s", code, raw)
	}
	if _, err := f.producer.Status(t.Context(), "c-0"); err == nil {
		t.Error("a job of a refused batch was stored")
	}
	// Auth as the other job routes: none, viewer, operator.
	if code, _, _ := f.call("POST", "/v1/jobs/batch", batchBody(1, "d"), none); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d", code)
	}
	if code, _, _ := f.call("POST", "/v1/jobs/batch", batchBody(1, "d"), basic(viewer, viewPass)); code != http.StatusForbidden {
		t.Errorf("viewer: %d", code)
	}
	if code, _, raw := f.call("POST", "/v1/jobs/batch", batchBody(1, "d"), basic(opUser, opPass)); code != http.StatusAccepted {
		t.Errorf("operator: %d %s", code, raw)
	}
	if code, _, _ := f.call("POST", "/v1/jobs/batch", map[string]any{"jobs": []any{}}, tok); code != http.StatusBadRequest {
		t.Errorf("empty batch: %d", code)
	}
}
