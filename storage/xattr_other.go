//go:build !linux

package storage

import (
	"errors"
	"os"
)

var errXattrUnsupported = errors.New("extended attributes not used on this system")

// setXattr always fails here: Disk keeps metadata in sidecars.
func setXattr(*os.File, string, []byte) error { return errXattrUnsupported }

// getXattr always reports no attribute.
func getXattr(*os.File, string) ([]byte, error) { return nil, errNoXattr }

func xattrUnsupported(err error) bool { return errors.Is(err, errXattrUnsupported) }
