package storage

import (
	"errors"
	"strconv"
)

// Kind is the class of a storage failure. It is decided where the error is
// raised (by the typed errors [Error] and [IntegrityError]) and tells a
// caller what to do about it; read it with [KindOf].
type Kind int

const (
	// KindOther is every failure not named below: the backend could not be
	// reached or failed (a refused connection, a 5xx, a disk I/O error),
	// or the reader handed to Put failed. Retrying later may succeed.
	KindOther Kind = iota
	// KindNotExist is a missing object ([ErrNotExist]).
	KindNotExist
	// KindInvalidKey is a key that [ValidateKey] or the backend refuses
	// ([ErrInvalidKey]). Permanent: the same key can never succeed.
	KindInvalidKey
	// KindIntegrity is bytes that do not match the expected size or
	// sha256 ([IntegrityError]). Retryable, a bounded number of times: a
	// source that gave mismatched bytes once may well give them again.
	KindIntegrity
	// KindKeyConflict is a key that holds another job's object
	// ([ErrKeyConflict]). Permanent: that object is never replaced.
	KindKeyConflict
)

// String names the kind, in snake case.
func (k Kind) String() string {
	switch k {
	case KindOther:
		return "other"
	case KindNotExist:
		return "not_exist"
	case KindInvalidKey:
		return "invalid_key"
	case KindIntegrity:
		return "integrity"
	case KindKeyConflict:
		return "key_conflict"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Retryable reports whether the same call may succeed later without a
// change: true for KindOther and KindIntegrity (see each kind for how
// often), false otherwise.
func (k Kind) Retryable() bool { return k == KindOther || k == KindIntegrity }

// sentinel is the error that errors.Is matches for an *Error of kind k.
func (k Kind) sentinel() error {
	switch k {
	case KindNotExist:
		return ErrNotExist
	case KindInvalidKey:
		return ErrInvalidKey
	case KindIntegrity:
		return ErrIntegrity
	case KindKeyConflict:
		return ErrKeyConflict
	}
	return nil
}

// Error is a classified storage failure. errors.Is matches it against the
// kind's sentinel ([ErrNotExist], [ErrInvalidKey], [ErrIntegrity]).
type Error struct {
	// Kind is the failure's class.
	Kind Kind
	// Key is the object key concerned (shortened when long).
	Key string
	// Err describes the problem or is the cause; may be nil.
	Err error
}

// Error reads like the kind's sentinel, then the key and the problem.
func (e *Error) Error() string {
	msg := "storage: error"
	if s := e.Kind.sentinel(); s != nil {
		msg = s.Error()
	}
	if e.Key != "" {
		msg += " " + strconv.Quote(e.Key)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel of e's kind.
func (e *Error) Is(target error) bool { return target != nil && target == e.Kind.sentinel() }

// Retryable reports whether the call may succeed later (see
// [Kind.Retryable]).
func (e *Error) Retryable() bool { return e.Kind.Retryable() }

func (e *Error) storageKind() Kind { return e.Kind }

func (e *IntegrityError) storageKind() Kind { return KindIntegrity }

// KindOf returns the class of err: that of the first *[Error] or
// *[IntegrityError] in its chain; else, for errors of other Store
// implementations, KindNotExist, KindInvalidKey or KindIntegrity when err
// wraps that sentinel; else KindOther (nil included).
func KindOf(err error) Kind {
	var k interface{ storageKind() Kind }
	switch {
	case err == nil:
		return KindOther
	case errors.As(err, &k):
		return k.storageKind()
	case errors.Is(err, ErrNotExist):
		return KindNotExist
	case errors.Is(err, ErrInvalidKey):
		return KindInvalidKey
	case errors.Is(err, ErrIntegrity):
		return KindIntegrity
	case errors.Is(err, ErrKeyConflict):
		return KindKeyConflict
	}
	return KindOther
}
