package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

// TestPagesShowCallbacks: the job page shows a job's callback delivery
// (its URL without the query that may carry a token) and its task; the
// dashboard counts callbacks pending, delivered and failed.
func TestPagesShowCallbacks(t *testing.T) {
	t.Parallel()
	f := setupPages(t)
	for _, id := range []string{"cb-pending", "cb-retrying", "cb-delivered", "cb-failed"} {
		if _, err := f.producer.Submit(t.Context(), tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "prompt " + id}, CallbackURL: "https://hooks.example.com/done?token=tok-SECRET"}); err != nil {
			t.Fatal(err)
		}
		f.move(id, jobs.StateStored, map[string]any{jobs.FieldLocation: "file:///v/" + id})
	}
	for id, st := range map[string]string{"cb-retrying": jobs.CallbackRetrying, "cb-delivered": jobs.CallbackDelivered, "cb-failed": jobs.CallbackFailed} {
		code := map[string]int{jobs.CallbackRetrying: 503, jobs.CallbackDelivered: 200, jobs.CallbackFailed: 410}[st]
		if _, err := f.store.Do(t.Context(), id, jobs.CallbackAttempted{Event: id + ":stored:0", Attempt: 1, Status: st, Code: code}); err != nil {
			t.Fatal(err)
		}
	}
	resp, body := f.do("GET", "/jobs/cb-retrying", basic(viewer, viewPass))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("job page: %d", resp.StatusCode)
	}
	for _, s := range []string{
		`data-field="callback_url"><th>callback_url</th><td>https://hooks.example.com/done?…</td>`,
		`data-field="callback_status"><th>callback_status</th><td>retrying</td>`,
		`data-field="callback_last_code"><th>callback_last_code</th><td>503</td>`,
		`data-task-id="callback:cb-retrying:stored:0"`, "callback_attempted",
	} {
		if !strings.Contains(body, s) {
			t.Errorf("job page lacks %q", s)
		}
	}
	if strings.Contains(body, "tok-SECRET") {
		t.Error("the job page shows the callback URL's token")
	}
	_, body = f.do("GET", "/", basic(viewer, viewPass))
	for _, s := range []string{
		`data-callbacks="pending"><th>pending</th><td class="num">2 <span class="muted">(1 retrying)</span>`,
		`data-callbacks="delivered"><th>delivered</th><td class="num">1<`,
		`data-callbacks="failed"><th>failed</th><td class="num bad">1<`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("dashboard lacks %q", s)
		}
	}
}
