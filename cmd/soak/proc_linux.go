package main

import "syscall"

// sysProcAttr makes the kernel kill a child when the harness dies, however
// it dies, so that no worker outlives a soak run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
