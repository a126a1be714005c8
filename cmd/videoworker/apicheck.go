package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// apiCheckTimeout bounds the start-up check of the API.
const apiCheckTimeout = 10 * time.Second

// checkAPI makes one call that costs nothing, GET /videos/models (the
// models' capabilities), to learn whether the API answers and accepts the
// key. The error says which of the two failed; it never holds the key.
func checkAPI(ctx context.Context, baseURL, key string) error {
	ctx, cancel := context.WithTimeout(ctx, apiCheckTimeout)
	defer cancel()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	u := strings.TrimRight(baseURL, "/") + "/videos/models"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("AISTATS_BASE_URL: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("the API does not answer: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("the API refuses the key (HTTP %d): check AISTATS_API_KEY", resp.StatusCode)
	default:
		return fmt.Errorf("GET %s answered HTTP %d", u, resp.StatusCode)
	}
}

// logAPICheck runs checkAPI and logs the outcome: a warning when it fails,
// since jobs will fail or wait until it is fixed.
func logAPICheck(ctx context.Context, cfg Config, log *slog.Logger) {
	if err := checkAPI(ctx, cfg.APIBaseURL, cfg.APIKey); err != nil {
		if ctx.Err() == nil {
			log.Warn("API check failed: jobs will fail or wait until this is fixed (the worker keeps running)",
				"api", cfg.APIBaseURL, "err", err.Error())
		}
		return
	}
	log.Info("API check passed: the API answers and accepts the key", "api", cfg.APIBaseURL)
}
