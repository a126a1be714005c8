//go:build !race

package standin

// raceEnabled: see race_on_test.go.
const raceEnabled = false
