package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the test binary dies,
// however it dies. (Pdeathsig fires when the thread that started the child
// exits; Go only retires threads whose goroutine exits while locked to
// them, which the test helpers never do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
