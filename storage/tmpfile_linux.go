package storage

import (
	"crypto/rand"
	"encoding/hex"
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
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	name := tmpPrefix + "probe-" + hex.EncodeToString(rnd[:])
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
