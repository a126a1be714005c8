//go:build race

package storage_test

// raceEnabled reports a test binary built with -race, whose memory and speed
// say little about the program's: the 1 GiB test then runs its measured
// children from a build without it.
const raceEnabled = true
