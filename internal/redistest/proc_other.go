//go:build !linux

package redistest

import "syscall"

// sysProcAttr has no parent-death signal off Linux: there the server is
// stopped only by cleanup functions.
func sysProcAttr() *syscall.SysProcAttr { return nil }
