package apiclient

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// Fields returns the request fields a 400 validation_error names: the
// first element of each validation detail's path (the gateway sends zod
// issues, {"path":["webhook","url"],…}; a "field" or "param" member is
// read too), in order, without repeats. The description is never read:
// human text may quote the request (a 400 echoing the body names every
// field in it). Other errors name no field.
func (e *APIError) Fields() []string {
	if e.StatusCode != http.StatusBadRequest || e.Code != "validation_error" {
		return nil
	}
	var out []string
	add := func(f string) {
		if f = strings.TrimSpace(f); f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	var items []struct {
		Path  []any  `json:"path"`
		Field string `json:"field"`
		Param string `json:"param"`
	}
	if len(e.Details) > 0 && json.Unmarshal(e.Details, &items) == nil {
		for _, it := range items {
			if len(it.Path) > 0 {
				if s, ok := it.Path[0].(string); ok {
					add(s)
				}
				continue
			}
			f, _, _ := strings.Cut(firstNonEmpty(it.Field, it.Param), ".")
			add(f)
		}
	}
	return out
}

// IsWebhookRejected reports whether err is the API refusing a create's
// webhook member (400 validation_error naming the field webhook): the
// newest API revision takes only workspace-managed endpoints
// ({endpoint_id, events}) and refuses an inline url and secret. Such a
// 400 means nothing was created; the same create without the webhook is
// expected to pass.
func IsWebhookRejected(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && slices.Contains(ae.Fields(), "webhook")
}
