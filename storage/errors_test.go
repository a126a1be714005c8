package storage_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/videoworker/videoworker/storage"
)

// Each error's class is decided where storage raises it and survives
// wrapping; errors of other origins are KindOther.
func TestKindOf(t *testing.T) {
	t.Parallel()
	d := newDisk(t)
	_, invalid := d.Stat(t.Context(), "a/.tmp-x") // Disk's own rule
	_, missing := d.Stat(t.Context(), "a/missing")
	for _, tc := range []struct {
		name      string
		err       error
		kind      storage.Kind
		retryable bool
	}{
		{"ValidateKey", storage.ValidateKey("../x"), storage.KindInvalidKey, false},
		{"Disk's reserved name, wrapped", fmt.Errorf("stat: %w", invalid), storage.KindInvalidKey, false},
		{"missing object", missing, storage.KindNotExist, false},
		{"mismatch", fmt.Errorf("store: %w", &storage.IntegrityError{Key: "k", WantSize: 2, GotSize: 1}), storage.KindIntegrity, true},
		{"another Store's sentinel", fmt.Errorf("mystore: %w", storage.ErrInvalidKey), storage.KindInvalidKey, false},
		{"anything else", errors.New("connection refused"), storage.KindOther, true},
		{"nil", nil, storage.KindOther, true},
	} {
		if k := storage.KindOf(tc.err); k != tc.kind || k.Retryable() != tc.retryable {
			t.Errorf("%s: KindOf(%v) = %v (retryable %t), want %v (%t)", tc.name, tc.err, k, k.Retryable(), tc.kind, tc.retryable)
		}
	}
	var se *storage.Error
	if !errors.As(invalid, &se) || se.Kind != storage.KindInvalidKey || se.Retryable() || !errors.Is(invalid, storage.ErrInvalidKey) || errors.Is(invalid, storage.ErrNotExist) {
		t.Errorf("Disk's invalid key error %v (%T): want a *storage.Error of KindInvalidKey matching ErrInvalidKey only", invalid, invalid)
	}
	if got, want := invalid.Error(), `storage: invalid key "a/.tmp-x": segment ".tmp-x" starts with ".tmp-", reserved for temporary files`; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}
