package storage

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// openUnnamed creates a file in the directory dir that has no name yet
// (O_TMPFILE): if the process dies before linkFile names it, the kernel
// frees it and nothing is left behind. It fails on file systems without
// O_TMPFILE support.
func openUnnamed(dir *os.File) (*os.File, error) {
	rc, err := dir.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var oerr error
	if err := rc.Control(func(dfd uintptr) {
		fd, oerr = unix.Openat(int(dfd), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	}); err != nil {
		return nil, err
	}
	if oerr != nil {
		return nil, &os.PathError{Op: "open", Path: "O_TMPFILE", Err: oerr}
	}
	return os.NewFile(uintptr(fd), "(unnamed)"), nil
}

// linkFile gives f, made by openUnnamed, the name name in dir. It fails
// with an error wrapping fs.ErrExist when the name is taken.
func linkFile(f, dir *os.File, name string) error {
	frc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	drc, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	cerr := frc.Control(func(ffd uintptr) {
		cerr := drc.Control(func(dfd uintptr) {
			lerr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(ffd)), int(dfd), name, unix.AT_SYMLINK_FOLLOW)
		})
		if lerr == nil {
			lerr = cerr
		}
	})
	if cerr != nil {
		return cerr
	}
	if lerr != nil {
		return &os.LinkError{Op: "link", Old: "(unnamed)", New: name, Err: lerr}
	}
	return nil
}

// unnamedFilesWork reports whether linkFile can work here: it names files
// through /proc/self/fd.
func unnamedFilesWork() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
}

// unnamedUnsupported reports an openUnnamed failure that means the file
// system (or kernel) has no O_TMPFILE, rather than a passing condition.
func unnamedUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL)
}
