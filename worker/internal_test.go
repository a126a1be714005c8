package worker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/videoworker/videoworker/apiclient"
)

func TestRedisOutagesDoNotUseRetries(t *testing.T) {
	for _, tc := range []struct {
		err     error
		failure bool
	}{
		{errors.New("LOADING Redis is loading the dataset in memory"), false},
		{fmt.Errorf("get job j: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), false},
		{fmt.Errorf("get job j: %w", io.EOF), false},
		{&apiclient.TransportError{Op: "get video", Sent: true, Err: io.EOF}, true},
		{&apiclient.APIError{Op: "get video", StatusCode: 503}, true},
		{&retryLater{err: errors.New("x")}, false},
		{errors.New("store videos/x.mp4: size mismatch"), true},
	} {
		if got := isFailure(tc.err); got != tc.failure {
			t.Errorf("isFailure(%v) = %v, want %v", tc.err, got, tc.failure)
		}
	}
}
