package apiclient

import (
	"context"
	"encoding/json"
	"net/http"
)

// Model is one item of GET /videos/models (reference 3.5): the fields
// this client reads. Pricing is kept as the API sent it: the reference
// lists it but does not document its shape (jobs.ParseModelPricing reads
// the shapes it recognises).
type Model struct {
	Model   string          `json:"model"`
	Name    string          `json:"name,omitempty"`
	Status  string          `json:"status,omitempty"`
	Pricing json.RawMessage `json:"pricing,omitempty"`
}

// Models returns the API's model catalogue (GET /videos/models). It is
// an idempotent read, retried as Get is.
func (c *Client) Models(ctx context.Context) ([]Model, error) {
	var l struct {
		Data []Model `json:"data"`
	}
	if err := c.call(ctx, "list models", http.MethodGet, "/videos/models", nil, nil, nil, true, &l); err != nil {
		return nil, err
	}
	return l.Data, nil
}
