//go:build !linux

package main

import "syscall"

// sysProcAttr has no parent-death signal off Linux: children are stopped
// by the harness's own shutdown only.
func sysProcAttr() *syscall.SysProcAttr { return nil }
