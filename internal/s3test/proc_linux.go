package s3test

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// sysProcAttr makes the kernel kill versitygw when the test binary dies,
// however it dies (see redistest for why Pdeathsig is reliable here).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// lockFile takes an exclusive advisory lock on path (created if missing),
// waiting for other processes that hold it. unlock releases it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// xattrsWork reports whether dir's file system takes user extended
// attributes, where versitygw's posix backend keeps object metadata.
func xattrsWork(dir string) bool {
	const name = "user.s3test.probe"
	if err := syscall.Setxattr(dir, name, []byte("1"), 0); err != nil {
		return false
	}
	_ = syscall.Removexattr(dir, name)
	return true
}
