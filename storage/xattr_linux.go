package storage

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// setXattr sets the extended attribute name of f to value.
func setXattr(f *os.File, name string, value []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fsetxattr(int(fd), name, value, 0) }); err != nil {
		return err
	}
	return serr
}

// getXattr returns the extended attribute name of f, or errNoXattr when f
// has none or its file system keeps none.
func getXattr(f *os.File, name string) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1024)
	for {
		var n int
		var gerr error
		if err := rc.Control(func(fd uintptr) { n, gerr = unix.Fgetxattr(int(fd), name, buf) }); err != nil {
			return nil, err
		}
		switch {
		case gerr == nil:
			return buf[:n], nil
		case errors.Is(gerr, unix.ERANGE) && len(buf) < maxMetaBytes:
			buf = make([]byte, 2*len(buf))
		case errors.Is(gerr, unix.ENODATA), errors.Is(gerr, unix.ENOTSUP), errors.Is(gerr, unix.EOPNOTSUPP):
			return nil, errNoXattr
		default:
			return nil, gerr
		}
	}
}

// xattrUnsupported reports that f's file system keeps no user extended
// attributes at all.
func xattrUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}
