//go:build race

package standin

// raceEnabled: the race detector makes HTTP and JSON about eight times
// slower, so TestWebhookScale takes a cheaper path under it.
const raceEnabled = true
