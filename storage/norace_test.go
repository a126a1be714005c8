//go:build !race

package storage_test

// raceEnabled reports a test binary built with -race (see race_test.go).
const raceEnabled = false
