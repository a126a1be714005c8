package storage

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// How an S3 Put sends its parts: see the S3 type's documentation, "Writes",
// for the unsigned payloads with a CRC32C and why. The buffers of one Put
// are borrowed lazily (only when all it holds are in flight), so a Put
// whose source is slower than the server keeps to one.
const (
	// s3PutBuffers is the most part buffers one Put uses: one being
	// filled while up to three are sent, or four sent.
	s3PutBuffers = 4
	// s3BufferBudget is how much part-buffer memory an S3 store lends its
	// Puts at once, on top of the one part each Put of unknown size holds.
	s3BufferBudget = 64 << 20
	// s3CancelGrace is how long part requests in flight may go on once a
	// Put's context is done, so that they end with the server's answer
	// rather than cut off (see bufferedParts).
	s3CancelGrace = 2 * time.Second
	// s3ReadChunk is the most read from the source at once, so that the
	// sha256 runs over bytes still in the CPU's cache.
	s3ReadChunk = 256 << 10
	// s3ChecksumAlgoHeader declares the part checksum algorithm when an
	// upload starts; s3ChecksumHeader carries a part's checksum.
	s3ChecksumAlgoHeader = "X-Amz-Checksum-Algorithm"
	s3ChecksumHeader     = "X-Amz-Checksum-Crc32c"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32cBase64 is the form x-amz-checksum-crc32c takes: the big-endian
// CRC32C, base64-encoded.
func crc32cBase64(crc uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc)
	return base64.StdEncoding.EncodeToString(b[:])
}

// takeBuffers lends up to n part buffers from the store's budget without
// waiting; it may return none.
func (s *S3) takeBuffers(n int) []*[]byte {
	var out []*[]byte
	for len(out) < n {
		select {
		case s.bufTokens <- struct{}{}:
			out = append(out, s.bufs.Get().(*[]byte))
		default:
			return out
		}
	}
	return out
}

// returnBuffers gives back buffers lent by takeBuffers.
func (s *S3) returnBuffers(bufs []*[]byte) {
	for _, b := range bufs {
		s.bufs.Put(b)
		<-s.bufTokens
	}
}

// readPart fills p from the upload's source, in chunks of at most
// s3ReadChunk, and returns how much it read and the CRC32C of that. Like
// io.ReadFull it returns io.EOF when nothing was read and
// io.ErrUnexpectedEOF when the source ended part of the way; it stops early
// once ctx is done.
func (u *s3Upload) readPart(ctx context.Context, p []byte) (int, uint32, error) {
	n := 0
	var crc uint32
	for n < len(p) {
		if err := ctx.Err(); err != nil {
			return n, crc, err
		}
		m, err := u.in.Read(p[n:min(n+s3ReadChunk, len(p))])
		crc = crc32.Update(crc, castagnoli, p[n:n+m])
		n += m
		if err == io.EOF {
			if n == 0 {
				return 0, crc, io.EOF
			}
			if n < len(p) {
				return n, crc, io.ErrUnexpectedEOF
			}
			return n, crc, nil
		}
		if err != nil {
			return n, crc, err
		}
	}
	return n, crc, nil
}

// bufferedPart is a part read into a buffer, ready to send.
type bufferedPart struct {
	num int
	buf *[]byte
	n   int
	crc uint32
}

// bufferLimit is how many part buffers a Put may hold once x bytes are
// known to come (its size, or for a stream of unknown size what has been
// read so far): one, and then at most half of x, up to s3PutBuffers.
func (u *s3Upload) bufferLimit(x, partSize int64) int {
	return int(max(1, min(s3PutBuffers, x/(2*partSize))))
}

// bufferedParts uploads the stream part by part (see S3's documentation,
// "Writes"). first, already read into the buffer first.buf (the
// Put's own for an unknown size, else one lent from the budget), is part
// 1. The caller's goroutine reads each following part into a free buffer
// while the ones before are sent by goroutines of their own; when all its
// buffers are in flight it borrows another from the store's budget, up to
// bufferLimit, or waits for one to come back.
//
// The first failure (the source's, a request's, a stream longer or shorter
// than promised or with the wrong sha256) stops the reading, and is
// returned once every request has ended, so that no buffer is in use when
// bufferedParts returns. Requests already sent are not cancelled by
// another's failure: a part request cut off mid-way can still be completed
// by the server after the upload is aborted, which brings the upload back
// (S3 documents it; versitygw does it), whereas once every request has its
// answer nothing can. When ctx is cancelled they get s3CancelGrace to end,
// then are cut off, and u.cut tells the abort to check again. On success
// u.parts lists the parts in order.
func (u *s3Upload) bufferedParts(first bufferedPart, partSize int64) error {
	reqCtx, cutRequests := context.WithCancel(context.WithoutCancel(u.ctx))
	defer cutRequests()
	stopGrace := context.AfterFunc(u.ctx, func() { time.AfterFunc(s3CancelGrace, cutRequests) })
	defer stopGrace()

	// readCtx stops the reading at the first failure.
	readCtx, stopReading := context.WithCancel(u.ctx)
	defer stopReading()

	var lent []*[]byte // borrowed here, returned once every request has ended
	defer func() { u.s.returnBuffers(lent) }()
	free := make(chan *[]byte, s3PutBuffers+1) // never blocks: it can hold every buffer
	held := 1
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		parts    []minio.CompletePart
	)
	defer wg.Wait() // also on a panic: no request may outlive the buffers
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			stopReading()
		}
	}
	send := func(p bufferedPart) {
		wg.Go(func() {
			defer func() { free <- p.buf }()
			cp, err := u.putBufferedPart(reqCtx, p.num, (*p.buf)[:p.n], p.crc)
			if err != nil {
				if reqCtx.Err() != nil {
					u.cut.Store(true)
				}
				fail(err)
				return
			}
			mu.Lock()
			parts = append(parts, cp)
			mu.Unlock()
		})
	}
	// next returns a buffer for the next part, or nil once ctx is done.
	next := func(read int64) *[]byte {
		select {
		case b := <-free:
			return b
		default:
		}
		x := read
		if u.size >= 0 {
			x = u.size
		}
		if held < u.bufferLimit(x, partSize) {
			if b := u.s.takeBuffers(1); len(b) == 1 {
				lent = append(lent, b[0])
				held++
				return b[0]
			}
		}
		select {
		case b := <-free:
			return b
		case <-readCtx.Done():
			return nil
		}
	}

	p := first
	read := int64(p.n)
	for {
		send(p)
		if u.size >= 0 && read == u.size {
			// One more byte means the stream is longer than promised.
			var probe [1]byte
			if _, err := io.ReadFull(u.in, probe[:]); err != nil && err != io.EOF {
				fail(err)
			} else if _, _, err := u.verify(); err != nil {
				fail(err)
			}
			break
		}
		if u.size < 0 && int64(p.n) < partSize { // a short part: the stream ended
			break
		}
		buf := next(read)
		if buf == nil || readCtx.Err() != nil {
			if err := u.ctx.Err(); err != nil {
				fail(err)
			}
			break
		}
		want := partSize
		if u.size >= 0 {
			want = min(partSize, u.size-read)
		}
		n, crc, err := u.readPart(readCtx, (*buf)[:want])
		if u.size < 0 && err == io.ErrUnexpectedEOF {
			err = nil // the last part of a stream of unknown size
		}
		if err == io.EOF && u.size < 0 {
			free <- buf // the stream ended with the part before
			break
		}
		if err != nil {
			free <- buf
			fail(err)
			break
		}
		if p.num == s3MaxParts {
			free <- buf
			fail(fmt.Errorf("object is larger than %d parts of %d bytes; raise the part size", s3MaxParts, partSize))
			break
		}
		read += int64(n)
		p = bufferedPart{num: p.num + 1, buf: buf, n: n, crc: crc}
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	slices.SortFunc(parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	u.parts = parts
	return nil
}

// putBufferedPart sends one part from memory with its CRC32C and an
// unsigned payload. minio-go retries it on errors worth retrying (it can
// seek back in the buffer).
func (u *s3Upload) putBufferedPart(ctx context.Context, num int, data []byte, crc uint32) (minio.CompletePart, error) {
	opts := minio.PutObjectPartOptions{DisableContentSha256: true}
	var sum string
	if u.s.partCRC {
		sum = crc32cBase64(crc)
		opts.CustomHeader = http.Header{s3ChecksumHeader: []string{sum}}
	}
	r := &partReader{data: data}
	defer r.release()
	p, err := u.s.core.PutObjectPart(ctx, u.s.bucket, u.target, u.uploadID, num, r, int64(len(data)), opts)
	if err != nil {
		return minio.CompletePart{}, err
	}
	if sum != "" && p.ChecksumCRC32C != "" && p.ChecksumCRC32C != sum {
		return minio.CompletePart{}, fmt.Errorf("part %d: the server computed CRC32C %s, the bytes sent have %s", num, p.ChecksumCRC32C, sum)
	}
	return minio.CompletePart{PartNumber: num, ETag: p.ETag, ChecksumCRC32C: sum}, nil
}

// errPartReleased is what a released partReader's Seek returns.
var errPartReleased = errors.New("storage: part buffer released")

// partReader is a seekable reader over a part's buffer that stops reading
// it once released, so that the buffer can go back to the pool while an
// HTTP transport may still hold the reader: net/http can go on reading a
// request's body after the request has returned (after an early error
// response, or for its check that the body holds no more than
// Content-Length).
type partReader struct {
	mu       sync.Mutex
	data     []byte
	off      int
	released bool
}

// Read reads from the buffer; once released it reports io.EOF, which a
// transport still writing the body takes as a short body.
func (r *partReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

// Seek sets where the next Read starts: minio-go seeks back to retry a
// part.
func (r *partReader) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return 0, errPartReleased
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = int64(r.off) + offset
	case io.SeekEnd:
		abs = int64(len(r.data)) + offset
	default:
		return 0, errors.New("storage: part reader: invalid whence")
	}
	if abs < 0 || abs > int64(len(r.data)) {
		return 0, errors.New("storage: part reader: seek out of range")
	}
	r.off = int(abs)
	return abs, nil
}

// release ends reading: once it returns, the buffer is no longer touched.
func (r *partReader) release() {
	r.mu.Lock()
	r.released, r.data = true, nil
	r.mu.Unlock()
}
