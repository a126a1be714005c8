package main

import (
	"strings"
	"testing"
)

// WEBHOOK_ENDPOINT_ID subscribes the endpoint instead of the inline URL,
// and needs the endpoint's secret in WEBHOOK_SECRETS.
func TestWebhookEndpointConfig(t *testing.T) {
	c := ServeConfig{Addr: ":8080", EndpointID: "we_123", Secrets: []string{"whsec_0123456789abcdef"}, PublicURL: "https://hooks.example.com/webhooks/aistats"}
	sub := c.Subscription()
	if sub == nil || sub.EndpointID != "we_123" || sub.URL != "" || sub.Secret != "" || len(sub.Events) == 0 {
		t.Fatalf("subscription %v, want the endpoint id alone", sub)
	}
	c.Secrets = nil
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "WEBHOOK_ENDPOINT_ID") {
		t.Errorf("Validate without secrets: %v", err)
	}
	if c.Subscription() != nil {
		t.Error("webhooks on without a secret")
	}
}
