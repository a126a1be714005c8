package storage

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// setXattr sets the extended attribute name of f to value.
func setXattr(f *os.File, name string, value []byte) error {
	return withFd(f, func(fd int) error { return unix.Fsetxattr(fd, name, value, 0) })
}

// getXattr returns the extended attribute name of f, or errNoXattr when f
// has none or its file system keeps none.
func getXattr(f *os.File, name string) ([]byte, error) {
	buf := make([]byte, 1024)
	for {
		var n int
		err := withFd(f, func(fd int) (err error) {
			n, err = unix.Fgetxattr(fd, name, buf)
			return err
		})
		switch {
		case err == nil:
			return buf[:n], nil
		case errors.Is(err, unix.ERANGE) && len(buf) < maxMetaBytes:
			buf = make([]byte, 2*len(buf))
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
			return nil, errNoXattr
		default:
			return nil, err
		}
	}
}

// xattrUnsupported reports that f's file system keeps no user extended
// attributes at all.
func xattrUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// withFd runs op with f's file descriptor, which stays valid while op runs.
func withFd(f *os.File, op func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var oerr error
	if err := rc.Control(func(fd uintptr) { oerr = op(int(fd)) }); err != nil {
		return err
	}
	return oerr
}
