package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// openUnnamed creates a file in the directory dir that has no name yet
// (O_TMPFILE): if the process dies before linkFile names it, the kernel
// frees it and nothing is left behind. It fails on file systems without
// O_TMPFILE support.
func openUnnamed(dir *os.File) (*os.File, error) {
	fd := -1
	err := withFd(dir, func(dfd int) (err error) {
		fd, err = unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		return err
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "O_TMPFILE", Err: err}
	}
	return os.NewFile(uintptr(fd), "(unnamed)"), nil
}

// linkFile gives f, made by openUnnamed, the name name in dir. It fails
// with an error wrapping fs.ErrExist when the name is taken.
func linkFile(f, dir *os.File, name string) error {
	err := withFd(f, func(ffd int) error {
		return withFd(dir, func(dfd int) error {
			return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(ffd), dfd, name, unix.AT_SYMLINK_FOLLOW)
		})
	})
	if err != nil {
		return &os.LinkError{Op: "link", Old: "(unnamed)", New: name, Err: err}
	}
	return nil
}

// unnamedFilesWork reports whether an unnamed file can be made in dir and
// then named (O_TMPFILE, then linkat through /proc/self/fd), by doing it
// once with a ".tmp-*" name that is removed again.
func unnamedFilesWork(dir string) bool {
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer d.Close()
	f, err := openUnnamed(d)
	if err != nil {
		return false
	}
	defer f.Close()
	name := tempName("")
	if err := linkFile(f, d, name); err != nil {
		return false
	}
	_ = os.Remove(filepath.Join(dir, name))
	return true
}

// unnamedUnsupported reports an openUnnamed failure that means the file
// system (or kernel) has no O_TMPFILE, rather than a passing condition.
func unnamedUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL)
}
