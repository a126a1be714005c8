package jobs

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is matched (errors.Is) by every *UnavailableError.
var ErrUnavailable = errors.New("redis unavailable")

// UnavailableError is a Redis call that failed because Redis could not
// serve it: no connection (refused, reset, closed mid-reply, timed out,
// pool exhausted), or a server that is loading its data, failing over or
// has lost its cluster (LOADING, MASTERDOWN, READONLY, TRYAGAIN,
// CLUSTERDOWN, max clients). Waiting and trying again is the cure, and a
// caller that retries should not count the wait against the work's own
// retry budget. The Store's methods return it (wrapped with context); a
// caller that makes its own Redis calls, such as an asynq enqueue, builds
// it with [ClassifyRedis] or directly.
type UnavailableError struct {
	// Err is the go-redis (or asynq) error.
	Err error
}

// Error describes the failed call.
func (e *UnavailableError) Error() string { return "redis unavailable: " + e.Err.Error() }

// Unwrap returns the go-redis error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrUnavailable].
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// ClassifyRedis classifies err, as returned by a go-redis call: it returns
// an *UnavailableError wrapping err when Redis could not serve the call
// (see UnavailableError), and err unchanged otherwise (nil, redis.Nil, a
// cancelled or expired ctx, a script or command error). It must be given
// only errors of a Redis call: which errors mean "unreachable" is decided
// here, where the call is made, never for errors of other origins.
func ClassifyRedis(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return err
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// A reply from the server: only the documented "not now" ones.
		if redis.IsLoadingError(err) || redis.IsMasterDownError(err) || redis.IsReadOnlyError(err) ||
			redis.IsTryAgainError(err) || redis.IsClusterDownError(err) || redis.IsMaxClientsError(err) {
			return &UnavailableError{Err: err}
		}
		return err
	}
	// go-redis gives a dial failure inside the dial timeout's
	// DeadlineExceeded: that is Redis, not the caller's ctx.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return &UnavailableError{Err: err}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// No reply at all: a connection refused, reset or closed mid-reply
	// (io.EOF), a read timeout, a pool timeout, a closed client.
	return &UnavailableError{Err: err}
}
