//go:build !linux

package s3test

import "syscall"

// sysProcAttr has no parent-death signal off Linux: there the server is
// stopped only by cleanup functions.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// lockFile does not lock off Linux; builds there are serialised only within
// one process.
func lockFile(string) (func(), error) { return func() {}, nil }

// xattrsWork is assumed false off Linux: metadata goes to a sidecar
// directory.
func xattrsWork(string) bool { return false }
