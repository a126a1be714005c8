package main

import (
	"strings"
	"testing"
)

// TestConfigChecksCallbacks: CALLBACK_URL is held to the callback policy
// of CALLBACK_ALLOW_PRIVATE and CALLBACK_ALLOW_LOOPBACK, and a short
// CALLBACK_SECRETS entry is refused without being repeated.
func TestConfigChecksCallbacks(t *testing.T) {
	for _, tc := range []struct {
		url, private, loopback, secrets string
		bad                             string
	}{
		{"https://hooks.example.com/done", "", "", "0123456789abcdef", ""},
		{"http://hooks.example.com/done", "", "", "", "CALLBACK_URL"},
		{"https://10.0.0.8/done", "", "", "", "CALLBACK_URL"},
		{"https://10.0.0.8/done", "true", "", "", ""},
		{"http://127.0.0.1:9000/done", "", "", "", "CALLBACK_URL"},
		{"http://127.0.0.1:9000/done", "", "true", "", ""},
		{"", "", "", "0123456789abcdef,short-one", "CALLBACK_SECRETS"},
	} {
		t.Setenv("CALLBACK_URL", tc.url)
		t.Setenv("CALLBACK_ALLOW_PRIVATE", tc.private)
		t.Setenv("CALLBACK_ALLOW_LOOPBACK", tc.loopback)
		t.Setenv("CALLBACK_SECRETS", tc.secrets)
		_, err := loadConfig()
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%+v refused: %v", tc, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%+v: %v, want %s refused", tc, err, tc.bad)
		case err != nil && strings.Contains(err.Error(), "short-one"):
			t.Errorf("the error repeats a secret: %v", err)
		}
	}
}
