package standin_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: the
// webhook loop and workers must stop on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
