//go:build !linux

package storage

import (
	"errors"
	"os"
)

var errNoUnnamed = errors.New("unnamed temporary files not used on this system")

// openUnnamed always fails here: Disk uses named temporary files.
func openUnnamed(*os.File) (*os.File, error) { return nil, errNoUnnamed }

func linkFile(_, _ *os.File, _ string) error { return errNoUnnamed }

func unnamedFilesWork(string) bool { return false }

func unnamedUnsupported(err error) bool { return errors.Is(err, errNoUnnamed) }
