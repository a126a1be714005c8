package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// TestCopyHashed checks the bytes and the hash at sizes around the buffer
// boundaries (one buffer in the caller; more through the pipeline), with a
// source that returns short reads, with and without a destination.
func TestCopyHashed(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, copyBufSize - 1, copyBufSize, copyBufSize + 1, 3*copyBufSize + copyBufSize/2, 9 * copyBufSize} {
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(size)}).Read(data)
		want := sha256.Sum256(data)
		for _, withDst := range []bool{true, false} {
			var dst bytes.Buffer
			var w io.Writer
			if withDst {
				w = &dst
			}
			h := sha256.New()
			n, err := copyHashed(w, h, iotest.HalfReader(bytes.NewReader(data)))
			if err != nil || n != int64(size) {
				t.Fatalf("size %d: copyHashed = %d, %v", size, n, err)
			}
			if !bytes.Equal(h.Sum(nil), want[:]) {
				t.Errorf("size %d: wrong hash", size)
			}
			if withDst && !bytes.Equal(dst.Bytes(), data) {
				t.Errorf("size %d: destination got %d bytes, not the source's", size, dst.Len())
			}
		}
	}
}

// TestCopyHashedFailures: a failing destination stops the copy within a
// few buffers of the failure and is labelled "write:"; a failing source is
// labelled "read:" after what it yielded was written.
func TestCopyHashedFailures(t *testing.T) {
	t.Parallel()
	src := &countingReader{left: 64 * copyBufSize}
	_, err := copyHashed(&failingWriter{okBytes: 2 * copyBufSize}, sha256.New(), src)
	if err == nil || !strings.HasPrefix(err.Error(), "write: ") || !errors.Is(err, errDisk) {
		t.Errorf("destination failure: err = %v, want write: %v", err, errDisk)
	}
	if read := 64*copyBufSize - src.left; read > (2+copyPipeBufs+2)*copyBufSize {
		t.Errorf("after the destination failed at 2 MiB the copy went on reading: %d MiB read", read>>20)
	}

	var dst bytes.Buffer
	bad := io.MultiReader(bytes.NewReader(make([]byte, 2*copyBufSize+5)), iotest.ErrReader(errNet))
	n, err := copyHashed(&dst, sha256.New(), bad)
	if err == nil || !strings.HasPrefix(err.Error(), "read: ") || !errors.Is(err, errNet) {
		t.Errorf("source failure: err = %v, want read: %v", err, errNet)
	}
	if n != 2*copyBufSize+5 || dst.Len() != int(n) {
		t.Errorf("source failure: copied %d, wrote %d; want all %d bytes before the failure", n, dst.Len(), 2*copyBufSize+5)
	}
}

var (
	errDisk = errors.New("disk full")
	errNet  = errors.New("connection reset")
)

type failingWriter struct{ okBytes int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.okBytes < len(p) {
		return 0, errDisk
	}
	w.okBytes -= len(p)
	return len(p), nil
}

// countingReader yields left zero bytes and counts down.
type countingReader struct{ left int }

func (r *countingReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	clear(p[:n])
	r.left -= n
	return n, nil
}

// TestCopyHashedPanickingWriter: a destination that panics mid-copy fails
// the copy with an error instead of killing the process or blocking it.
func TestCopyHashedPanickingWriter(t *testing.T) {
	t.Parallel()
	_, err := copyHashed(panicWriter{}, sha256.New(), &countingReader{left: 8 * copyBufSize})
	if err == nil || !strings.Contains(err.Error(), "panic: ") {
		t.Errorf("copy into a panicking writer: err = %v, want the panic as an error", err)
	}
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("driver bug") }
