package storage

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// copyBufSize is the buffer Put, Stat and Open use to stream bytes.
const copyBufSize = 1 << 20

// copyPipeBufs is how many buffers one large copy holds: one being read
// while up to two are hashed and written. A copy therefore costs at most
// copyPipeBufs × copyBufSize of memory, whatever the object's size.
const copyPipeBufs = 3

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyHashed copies src to dst (nil for none) and into h, and returns the
// byte count. Errors are labelled "read:" or "write:" by the failing side;
// ctx cancellation arrives as a read error through [ctxReader].
//
// An object that fits in one buffer is hashed and written in the calling
// goroutine. A larger one runs as a pipeline: the caller reads the next
// buffer while one goroutine hashes and another writes the previous ones,
// in order, so reading (often generating or receiving bytes), hashing and
// the kernel's copy into the page cache use separate cores instead of
// taking turns. On a write failure the pipeline stops reading at once.
func copyHashed(dst io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	first := copyBufs.Get().(*[]byte)
	n, err := readFull(src, *first)
	if err != nil { // io.EOF or a failure: everything there is, is in first
		defer copyBufs.Put(first)
		if n > 0 {
			h.Write((*first)[:n])
			if dst != nil {
				if _, werr := dst.Write((*first)[:n]); werr != nil {
					return 0, fmt.Errorf("write: %w", werr)
				}
			}
		}
		if err != io.EOF {
			return int64(n), readFailure(err)
		}
		return int64(n), nil
	}
	return copyPipelined(dst, h, src, first)
}

// chunk is one buffer travelling through the pipeline; the last of its
// consumers to finish returns the buffer.
type chunk struct {
	buf  *[]byte
	n    int
	refs atomic.Int32
}

func copyPipelined(dst io.Writer, h hash.Hash, src io.Reader, first *[]byte) (int64, error) {
	free := make(chan *[]byte, copyPipeBufs) // never blocks a release: it holds every buffer
	for range copyPipeBufs - 1 {
		free <- copyBufs.Get().(*[]byte)
	}
	consumers := int32(1)
	if dst != nil {
		consumers = 2
	}
	release := func(c *chunk) {
		if c.refs.Add(-1) == 0 {
			free <- c.buf
		}
	}
	hashCh := make(chan *chunk, copyPipeBufs)
	writeCh := make(chan *chunk, copyPipeBufs)
	var wg sync.WaitGroup
	// The goroutines stop on their channels' close, which happens on every
	// way out of this function, a panic of src.Read included; a panic in
	// h.Write or dst.Write becomes the copy's error (and the goroutine
	// keeps releasing buffers so the reader never blocks).
	var herr, werr error // written by their goroutines, read after wg.Wait
	var wfailed atomic.Bool
	wg.Go(func() {
		for c := range hashCh {
			if herr == nil {
				herr = guard(func() error { h.Write((*c.buf)[:c.n]); return nil })
				if herr != nil {
					wfailed.Store(true)
				}
			}
			release(c)
		}
	})
	if dst != nil {
		wg.Go(func() {
			for c := range writeCh {
				if werr == nil {
					werr = guard(func() error { _, err := dst.Write((*c.buf)[:c.n]); return err })
					if werr != nil {
						wfailed.Store(true)
					}
				}
				release(c)
			}
		})
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(hashCh)
			close(writeCh)
			wg.Wait()
		}
	}
	defer stop()
	send := func(b *[]byte, n int) {
		c := &chunk{buf: b, n: n}
		c.refs.Store(consumers)
		hashCh <- c
		if dst != nil {
			writeCh <- c
		}
	}

	total := int64(len(*first))
	send(first, len(*first))
	var rerr error
	for !wfailed.Load() {
		b := <-free
		n, err := readFull(src, *b)
		if n > 0 {
			total += int64(n)
			send(b, n)
		} else {
			free <- b
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	stop()
	for range copyPipeBufs {
		copyBufs.Put(<-free)
	}
	if werr != nil {
		return total, fmt.Errorf("write: %w", werr)
	}
	if herr != nil {
		return total, herr
	}
	if rerr != nil {
		return total, readFailure(rerr)
	}
	return total, nil
}

// readFull reads into p until it is full (nil error), or src ends (io.EOF,
// with what was read) or fails.
func readFull(src io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := src.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readFailure labels an error from the source side of a copy.
func readFailure(err error) error {
	var re readError
	if errors.As(err, &re) {
		err = re.err
	}
	return fmt.Errorf("read: %w", err)
}

// guard runs f, turning a panic into an error.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}
