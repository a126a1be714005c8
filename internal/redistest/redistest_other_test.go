//go:build !linux

package redistest

const childEnv = "REDISTEST_ORPHAN_CHILD"

func runChild() {}
