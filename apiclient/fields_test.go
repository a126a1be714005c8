package apiclient_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/videoworker/videoworker/apiclient"
)

func TestWebhookRejectedClassified(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"zod path", &apiclient.APIError{StatusCode: 400, Code: "validation_error", Details: json.RawMessage(`[{"path":["webhook","url"],"code":"unrecognized_keys","message":"x"}]`)}, true},
		{"field member", &apiclient.APIError{StatusCode: 400, Code: "validation_error", Details: json.RawMessage(`[{"field":"webhook.secret"}]`)}, true},
		// Human text is never read: it may quote the whole request.
		{"description only", &apiclient.APIError{StatusCode: 400, Code: "validation_error", Description: "webhook.url is not supported: use webhook.endpoint_id"}, false},
		{"details quoting the request", &apiclient.APIError{StatusCode: 400, Code: "validation_error", Details: json.RawMessage(`[{"request":{"webhook":{"url":"u"}}}]`)}, false},
		{"wrapped", fmt.Errorf("create: %w", &apiclient.APIError{StatusCode: 400, Code: "validation_error", Details: json.RawMessage(`[{"path":["webhook"]}]`)}), true},
		{"another field", &apiclient.APIError{StatusCode: 400, Code: "validation_error", Details: json.RawMessage(`[{"path":["prompt"]}]`), Description: "prompt too long (webhook fine)"}, false},
		{"not a validation error", &apiclient.APIError{StatusCode: 400, Code: "invalid_json", Description: "webhook"}, false},
		{"a 500", &apiclient.APIError{StatusCode: 500, Code: "validation_error", Details: json.RawMessage(`[{"path":["webhook"]}]`)}, false},
		{"not an API error", fmt.Errorf("webhook"), false},
	}
	for _, tc := range cases {
		if got := apiclient.IsWebhookRejected(tc.err); got != tc.want {
			t.Errorf("%s: IsWebhookRejected = %v, want %v", tc.name, got, tc.want)
		}
	}
	e := &apiclient.APIError{StatusCode: 400, Code: "validation_error", Details: json.RawMessage(`[{"path":["webhook","url"]},{"path":["duration"]},{"path":["webhook","secret"]}]`)}
	if got := e.Fields(); !slices.Equal(got, []string{"webhook", "duration"}) {
		t.Errorf("Fields = %v", got)
	}
}
