package standin_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/videoworker/videoworker/standin"
)

// The endpoint revision (the newest API source) takes {endpoint_id,
// events} only: an inline url or secret is a 400 validation_error on the
// webhook field, and deliveries go to the endpoint's URL signed with its
// secret.
func TestWebhookEndpointRevision(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, standin.Config{QueuedFor: time.Second, ProcessingFor: 10 * time.Second,
		WebhookRevision:  standin.WebhookRevisionEndpoint,
		WebhookEndpoints: map[string]standin.WebhookEndpoint{"we_1": {URL: rc.ts.URL + "/hook", Secret: hookSecret}}})
	t.Cleanup(b.srv.Close)
	body := map[string]any{"model": "google/veo-3.1-lite", "prompt": "p",
		"webhook": map[string]any{"url": rc.ts.URL + "/hook", "secret": hookSecret}}
	m := wantError(t, b.do(t, http.MethodPost, "/v1/videos", body), http.StatusBadRequest, "validation_error", "")
	details, _ := m["details"].([]any)
	if len(details) == 0 || at(details[0], "path", 0) != "webhook" {
		t.Errorf("details %v do not name the webhook field", m["details"])
	}
	if n := b.srv.Stats().JobsCreated; n != 0 {
		t.Errorf("%d jobs created by a refused create", n)
	}
	body["webhook"] = map[string]any{"endpoint_id": "we_nope"}
	wantError(t, b.do(t, http.MethodPost, "/v1/videos", body), http.StatusBadRequest, "validation_error", "")

	v := b.create(t, map[string]any{"webhook": map[string]any{"endpoint_id": "we_1", "events": []string{"job.completed"}}})
	if got := at(v, "webhook", "endpoint_id"); got != "we_1" {
		t.Errorf("video webhook %v, want endpoint_id we_1 and no url", v["webhook"])
	}
	if u := at(v, "webhook", "url"); u != nil {
		t.Errorf("video webhook echoes url %v", u)
	}
	b.clock.Advance(11 * time.Second)
	if n := b.srv.DeliverDue(t.Context()); n != 1 {
		t.Fatalf("DeliverDue at completion = %d, want 1", n)
	}
	reqs := rc.all()
	if got := keys(reqs); !slices.Equal(got, []string{"video.completed"}) || !reqs[0].sigOK {
		t.Fatalf("deliveries %v, signature ok %v", got, len(reqs) > 0 && reqs[0].sigOK)
	}
	if reqs[0].payload.Data["id"] != v["id"] {
		t.Errorf("delivery about %v, want %v", reqs[0].payload.Data["id"], v["id"])
	}

	// The inline revision refuses endpoint_id.
	b2 := setup(t, standin.Config{})
	t.Cleanup(b2.srv.Close)
	body["webhook"] = map[string]any{"endpoint_id": "we_1"}
	wantError(t, b2.do(t, http.MethodPost, "/v1/videos", body), http.StatusBadRequest, "validation_error", "")
}
