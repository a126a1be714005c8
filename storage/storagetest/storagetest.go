// Package storagetest is the conformance suite every storage.Store backend
// must pass. A backend's own test calls [Run] with a constructor for fresh,
// empty stores:
//
//	func TestDisk(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Store {
//			d, err := storage.NewDisk(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return d
//		})
//	}
//
// Backend-specific checks (such as "no temporary files remain") belong in
// the constructor, as t.Cleanup functions, or in the backend's own tests.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/storage"
)

// LargeSize is the size of the object the "Large" subtest streams.
const LargeSize = 16 << 20

// Run runs the conformance subtests. newStore is called once per subtest
// and must return an empty store that the subtest may use alone. Most
// subtests run in parallel; "Large" does not, because it measures the
// process's allocations, so Run must not be called from a parallel test.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	t.Helper()
	// Sequential first: parallel subtests start only after Run returns.
	t.Run("Large", func(t *testing.T) { testLarge(t, newStore(t)) })

	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"NestedKeys", testNestedKeys},
		{"SizeMismatch", testSizeMismatch},
		{"SHA256Mismatch", testSHA256Mismatch},
		{"BadSHA256Option", testBadSHA256Option},
		{"UnknownSize", testUnknownSize},
		{"Empty", testEmpty},
		{"ReaderError", testReaderError},
		{"CanceledMidway", testCanceledMidway},
		{"CanceledBefore", testCanceledBefore},
		{"Overwrite", testOverwrite},
		{"OverwriteAtomic", testOverwriteAtomic},
		{"FailedOverwriteKeepsOld", testFailedOverwriteKeepsOld},
		{"Missing", testMissing},
		{"PrefixIsNotObject", testPrefixIsNotObject},
		{"DeleteIdempotent", testDeleteIdempotent},
		{"InvalidKeys", testInvalidKeys},
		{"ConcurrentSameKey", testConcurrentSameKey},
		{"Metadata", testMetadata},
		{"OwnerConflict", testOwnerConflict},
		{"Location", testLocation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func opts(b []byte) storage.PutOptions {
	return storage.PutOptions{Size: int64(len(b)), SHA256: sum(b)}
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func put(t *testing.T, s storage.Store, key string, b []byte, o storage.PutOptions) storage.ObjectInfo {
	t.Helper()
	info, err := s.Put(t.Context(), key, bytes.NewReader(b), o)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return info
}

func read(t *testing.T, s storage.Store, key string) ([]byte, storage.ObjectInfo) {
	t.Helper()
	rc, info, err := s.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Open(%q) read: %v", key, err)
	}
	return b, info
}

func stat(t *testing.T, s storage.Store, key string) storage.ObjectInfo {
	t.Helper()
	info, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat(%q): %v", key, err)
	}
	return info
}

// assertAbsent checks that nothing is visible at key.
func assertAbsent(t *testing.T, s storage.Store, key string) {
	t.Helper()
	if info, err := s.Stat(t.Context(), key); !errors.Is(err, storage.ErrNotExist) || storage.KindOf(err) != storage.KindNotExist {
		t.Errorf("Stat(%q) = %+v, %v; want an error wrapping ErrNotExist, of KindNotExist", key, info, err)
	}
	rc, _, err := s.Open(t.Context(), key)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Open(%q) error = %v; want ErrNotExist", key, err)
	}
}

func assertContent(t *testing.T, s storage.Store, key string, want []byte) {
	t.Helper()
	got, _ := read(t, s, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("Open(%q) returned %d bytes (sha256 %s), want %d bytes (sha256 %s)", key, len(got), sum(got), len(want), sum(want))
	}
	if info := stat(t, s, key); info.Size != int64(len(want)) || info.SHA256 != sum(want) {
		t.Fatalf("Stat(%q) = size %d sha256 %s, want %d %s", key, info.Size, info.SHA256, len(want), sum(want))
	}
}

func assertIntegrityError(t *testing.T, err error, key string) *storage.IntegrityError {
	t.Helper()
	var ie *storage.IntegrityError
	if !errors.As(err, &ie) {
		t.Fatalf("Put error = %v (%T), want *storage.IntegrityError", err, err)
	}
	if !errors.Is(err, storage.ErrIntegrity) {
		t.Errorf("errors.Is(%v, ErrIntegrity) = false", err)
	}
	if k := storage.KindOf(err); k != storage.KindIntegrity || !k.Retryable() {
		t.Errorf("KindOf(%v) = %v (retryable %t), want integrity (retryable)", err, k, k.Retryable())
	}
	if ie.Key != key {
		t.Errorf("IntegrityError.Key = %q, want %q", ie.Key, key)
	}
	return ie
}

func testRoundTrip(t *testing.T, s storage.Store) {
	const key = "videos/2025-01-02/job-1.mp4"
	b := payload(100_000, 1)
	info := put(t, s, key, b, opts(b))
	if info.Key != key || info.Size != int64(len(b)) || info.SHA256 != sum(b) {
		t.Errorf("Put info = key %q size %d sha256 %s; want %q %d %s", info.Key, info.Size, info.SHA256, key, len(b), sum(b))
	}
	if info.ModTime.IsZero() {
		t.Error("Put info.ModTime is zero")
	}
	got, oinfo := read(t, s, key)
	if !bytes.Equal(got, b) {
		t.Fatalf("Open returned %d bytes, want the %d written", len(got), len(b))
	}
	if oinfo.Key != key || oinfo.Size != int64(len(b)) {
		t.Errorf("Open info = key %q size %d, want %q %d", oinfo.Key, oinfo.Size, key, len(b))
	}
	if oinfo.SHA256 != "" && oinfo.SHA256 != sum(b) {
		t.Errorf("Open info.SHA256 = %s, want %s (or empty)", oinfo.SHA256, sum(b))
	}
	sinfo := stat(t, s, key)
	if sinfo.Key != key || sinfo.Size != int64(len(b)) || sinfo.SHA256 != sum(b) {
		t.Errorf("Stat = key %q size %d sha256 %s; want %q %d %s", sinfo.Key, sinfo.Size, sinfo.SHA256, key, len(b), sum(b))
	}
	if sinfo.ModTime.IsZero() {
		t.Error("Stat ModTime is zero")
	}
	// Upper-case hex is accepted too.
	upper := opts(b)
	upper.SHA256 = string(bytes.ToUpper([]byte(upper.SHA256)))
	if _, err := s.Put(t.Context(), "upper", bytes.NewReader(b), upper); err != nil {
		t.Errorf("Put with upper-case SHA256: %v", err)
	}
}

func testNestedKeys(t *testing.T, s storage.Store) {
	keys := []string{"a", "b/c", "b/d/e.mp4", "x y/ü.mp4", "-dash/_under/.hidden"}
	for i, k := range keys {
		b := payload(1000+i, byte(i))
		put(t, s, k, b, opts(b))
	}
	for i, k := range keys {
		assertContent(t, s, k, payload(1000+i, byte(i)))
	}
}

func testSizeMismatch(t *testing.T, s storage.Store) {
	b := payload(5000, 2)
	for _, want := range []int64{4999, 5001, 0} {
		key := fmt.Sprintf("size-%d", want)
		o := storage.PutOptions{Size: want}
		_, err := s.Put(t.Context(), key, bytes.NewReader(b), o)
		ie := assertIntegrityError(t, err, key)
		if ie.WantSize != want {
			t.Errorf("IntegrityError.WantSize = %d, want %d", ie.WantSize, want)
		}
		if want > int64(len(b)) && ie.GotSize != int64(len(b)) {
			t.Errorf("IntegrityError.GotSize = %d, want %d", ie.GotSize, len(b))
		}
		if want < int64(len(b)) && ie.GotSize <= want {
			t.Errorf("IntegrityError.GotSize = %d, want > %d", ie.GotSize, want)
		}
		assertAbsent(t, s, key)
	}
	// A too-long reader is not drained: Put stops soon after Size bytes.
	r := &countingReader{r: newGenerator(LargeSize, 3)}
	_, err := s.Put(t.Context(), "size-endless", r, storage.PutOptions{Size: 10})
	assertIntegrityError(t, err, "size-endless")
	if r.n > 8<<20 {
		t.Errorf("Put read %d bytes of a reader that should have stopped after 11", r.n)
	}
	assertAbsent(t, s, "size-endless")
}

func testSHA256Mismatch(t *testing.T, s storage.Store) {
	b := payload(5000, 3)
	wrong := sum(append([]byte{1}, b...))
	_, err := s.Put(t.Context(), "k", bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), SHA256: wrong})
	ie := assertIntegrityError(t, err, "k")
	if ie.WantSHA256 != wrong || ie.GotSHA256 != sum(b) {
		t.Errorf("IntegrityError sha256 want/got = %s/%s, want %s/%s", ie.WantSHA256, ie.GotSHA256, wrong, sum(b))
	}
	assertAbsent(t, s, "k")
}

func testBadSHA256Option(t *testing.T, s storage.Store) {
	for _, bad := range []string{"abc", sum(nil) + "00", "zz" + sum(nil)[2:]} {
		_, err := s.Put(t.Context(), "k", bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1, SHA256: bad})
		if err == nil {
			t.Errorf("Put with SHA256 %q succeeded", bad)
		}
	}
	assertAbsent(t, s, "k")
}

func testUnknownSize(t *testing.T, s storage.Store) {
	b := payload(300_000, 4)
	o := storage.NewPutOptions()
	info := put(t, s, "unknown", b, o)
	if info.Size != int64(len(b)) || info.SHA256 != sum(b) {
		t.Errorf("Put info = size %d sha256 %s, want %d %s", info.Size, info.SHA256, len(b), sum(b))
	}
	assertContent(t, s, "unknown", b)

	o.SHA256 = sum(b)
	put(t, s, "unknown-with-sha", b, o)
	assertContent(t, s, "unknown-with-sha", b)

	o.SHA256 = sum(nil)
	_, err := s.Put(t.Context(), "unknown-bad-sha", bytes.NewReader(b), o)
	if ie := assertIntegrityError(t, err, "unknown-bad-sha"); ie.WantSize != -1 {
		t.Errorf("IntegrityError.WantSize = %d, want -1 for an unknown size", ie.WantSize)
	}
	assertAbsent(t, s, "unknown-bad-sha")
}

func testEmpty(t *testing.T, s storage.Store) {
	put(t, s, "empty", nil, storage.PutOptions{Size: 0, SHA256: sum(nil)})
	assertContent(t, s, "empty", nil)
}

var errBroken = errors.New("storagetest: broken reader")

func testReaderError(t *testing.T, s storage.Store) {
	b := payload(2<<20, 5)
	put(t, s, "old", b[:100], opts(b[:100]))
	for _, key := range []string{"new", "old"} {
		r := io.MultiReader(bytes.NewReader(b[:3<<19]), errReader{errBroken})
		_, err := s.Put(t.Context(), key, r, storage.PutOptions{Size: int64(len(b))})
		if !errors.Is(err, errBroken) {
			t.Errorf("Put(%q) error = %v, want one wrapping the reader's error", key, err)
		}
	}
	assertAbsent(t, s, "new")
	assertContent(t, s, "old", b[:100])
}

func testCanceledMidway(t *testing.T, s storage.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// An endless reader that cancels the context after 3 MiB.
	r := &CancelAfter{R: newGenerator(-1, 6), N: 3 << 20, Cancel: cancel}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := s.Put(ctx, "canceled", r, storage.NewPutOptions())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put error = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Put took %v to notice the cancellation", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Put did not return within 30s of its context being canceled")
	}
	assertAbsent(t, s, "canceled")
}

func testCanceledBefore(t *testing.T, s storage.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := &countingReader{r: bytes.NewReader([]byte("data"))}
	if _, err := s.Put(ctx, "k", r, storage.NewPutOptions()); !errors.Is(err, context.Canceled) {
		t.Errorf("Put error = %v, want context.Canceled", err)
	}
	assertAbsent(t, s, "k")
}

func testOverwrite(t *testing.T, s storage.Store) {
	a, b := payload(70_000, 7), payload(3_000, 8)
	put(t, s, "k", a, storage.PutOptions{Size: int64(len(a)), ContentType: "video/mp4", Metadata: map[string]string{"v": "1"}})
	put(t, s, "k", b, storage.PutOptions{Size: int64(len(b)), ContentType: "video/webm", Metadata: map[string]string{"v": "2"}})
	assertContent(t, s, "k", b)
	info := stat(t, s, "k")
	if info.ContentType != "video/webm" {
		t.Errorf("ContentType after overwrite = %q, want video/webm", info.ContentType)
	}
	if info.Metadata != nil && info.Metadata["v"] != "2" {
		t.Errorf("Metadata after overwrite = %v, want v=2", info.Metadata)
	}
}

// testOverwriteAtomic overwrites a key repeatedly while readers check that
// every read sees one whole version.
func testOverwriteAtomic(t *testing.T, s storage.Store) {
	versions := [][]byte{payload(256<<10, 9), payload(200<<10, 10)}
	put(t, s, "k", versions[0], opts(versions[0]))
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				rc, _, err := s.Open(ctx, "k")
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("open during overwrite: %w", err)
					}
					return
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("read during overwrite: %w", err)
					}
					return
				}
				if !bytes.Equal(b, versions[0]) && !bytes.Equal(b, versions[1]) {
					errs <- fmt.Errorf("read %d bytes that are neither version", len(b))
					return
				}
			}
		})
	}
	for i := range 20 {
		v := versions[(i+1)%2]
		if _, err := s.Put(t.Context(), "k", bytes.NewReader(v), opts(v)); err != nil {
			t.Errorf("Put #%d: %v", i, err)
			break
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assertContent(t, s, "k", versions[0]) // 20 writes end on version 0
}

func testFailedOverwriteKeepsOld(t *testing.T, s storage.Store) {
	old := payload(10_000, 11)
	put(t, s, "k", old, storage.PutOptions{Size: int64(len(old)), ContentType: "video/mp4"})
	nw := payload(10_000, 12)
	_, err := s.Put(t.Context(), "k", bytes.NewReader(nw), storage.PutOptions{Size: int64(len(nw)), SHA256: sum(old), ContentType: "text/plain"})
	assertIntegrityError(t, err, "k")
	assertContent(t, s, "k", old)
	if ct := stat(t, s, "k").ContentType; ct != "video/mp4" {
		t.Errorf("ContentType after a failed overwrite = %q, want video/mp4", ct)
	}
}

func testMissing(t *testing.T, s storage.Store) {
	assertAbsent(t, s, "nope")
	assertAbsent(t, s, "no/such/dir/key.mp4")
	b := payload(10, 13)
	put(t, s, "file", b, opts(b))
	assertAbsent(t, s, "file/below") // a prefix that is an object
}

func testPrefixIsNotObject(t *testing.T, s storage.Store) {
	b := payload(10, 14)
	put(t, s, "dir/sub/obj", b, opts(b))
	assertAbsent(t, s, "dir")
	assertAbsent(t, s, "dir/sub")
	if err := s.Delete(t.Context(), "dir"); err != nil {
		t.Errorf("Delete of a prefix: %v", err)
	}
	assertContent(t, s, "dir/sub/obj", b)
}

func testDeleteIdempotent(t *testing.T, s storage.Store) {
	if err := s.Delete(t.Context(), "k"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	b := payload(10, 15)
	put(t, s, "d/k", b, opts(b))
	put(t, s, "d/other", b, opts(b))
	for i := range 2 {
		if err := s.Delete(t.Context(), "d/k"); err != nil {
			t.Errorf("Delete #%d: %v", i+1, err)
		}
		assertAbsent(t, s, "d/k")
	}
	assertContent(t, s, "d/other", b)
	// The key can be written again.
	put(t, s, "d/k", b, opts(b))
	assertContent(t, s, "d/k", b)
}

// InvalidKeys are keys every backend must refuse with ErrInvalidKey.
var InvalidKeys = []string{
	"../x", "/abs", "a/../../b", "", "a\x00b", "a//b",
	"..", ".", "./a", "a/.", "a/", "a\\b", "a\nb", "a\x7fb", "\xff",
	string(make([]byte, storage.MaxKeyLen+1)),
}

func testInvalidKeys(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, key := range InvalidKeys {
		_, err := s.Put(ctx, key, bytes.NewReader([]byte("x")), storage.PutOptions{Size: 1})
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if k := storage.KindOf(err); k != storage.KindInvalidKey || k.Retryable() {
			t.Errorf("KindOf(Put(%q) error) = %v (retryable %t), want invalid_key (permanent)", key, k, k.Retryable())
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q) error = %v, want ErrInvalidKey", key, err)
		}
		rc, _, err := s.Open(ctx, key)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Open(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
}

func testConcurrentSameKey(t *testing.T, s storage.Store) {
	b := payload(1<<20+123, 16)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Put(t.Context(), "same/key.mp4", bytes.NewReader(b), opts(b))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Put #%d: %v", i, err)
		}
	}
	assertContent(t, s, "same/key.mp4", b)
}

func testMetadata(t *testing.T, s storage.Store) {
	b := payload(1000, 17)
	meta := map[string]string{"job_id": "job-1", "video-id": "v_2", "model": "gen-3"}
	o := opts(b)
	o.ContentType = "video/mp4"
	o.Metadata = maps.Clone(meta)
	info := put(t, s, "m.mp4", b, o)
	o.Metadata["job_id"] = "mutated after Put"
	check := func(op string, info storage.ObjectInfo) {
		t.Helper()
		if info.ContentType != "video/mp4" {
			t.Errorf("%s ContentType = %q, want video/mp4", op, info.ContentType)
		}
		// User metadata is optional for a backend, but if it is kept it
		// must be kept exactly.
		if info.Metadata != nil && !maps.Equal(info.Metadata, meta) {
			t.Errorf("%s Metadata = %v, want %v", op, info.Metadata, meta)
		}
	}
	check("Put", info)
	check("Stat", stat(t, s, "m.mp4"))
	_, oinfo := read(t, s, "m.mp4")
	check("Open", oinfo)

	put(t, s, "plain", b, opts(b))
	if info := stat(t, s, "plain"); len(info.Metadata) != 0 {
		t.Errorf("Stat Metadata of an object stored without any = %v", info.Metadata)
	}
}

// testOwnerConflict: a Put never replaces an object whose metadata names
// another owner, whichever way the object is written (known sha256,
// unknown size and sha256, empty); the same owner, or a Put naming none,
// replaces it.
func testOwnerConflict(t *testing.T, s storage.Store) {
	owned := func(b []byte, owner string) storage.PutOptions {
		o := opts(b)
		o.Metadata = map[string]string{storage.OwnerMetadataKey: owner, "video_id": "v-" + owner}
		return o
	}
	a, b := payload(3000, 20), payload(2000, 21)
	put(t, s, "owned/x.mp4", a, owned(a, "job-a"))
	for name, o := range map[string]storage.PutOptions{
		"known sha256": owned(b, "job-b"),
		"unknown size": {Size: -1, Metadata: map[string]string{storage.OwnerMetadataKey: "job-b"}},
		"empty":        owned(nil, "job-b"),
	} {
		body := b
		if o.Size == 0 {
			body = nil
		}
		_, err := s.Put(t.Context(), "owned/x.mp4", bytes.NewReader(body), o)
		if !errors.Is(err, storage.ErrKeyConflict) {
			t.Errorf("%s: Put over job-a's object by job-b: error = %v, want ErrKeyConflict", name, err)
		}
		assertContent(t, s, "owned/x.mp4", a)
		if got := stat(t, s, "owned/x.mp4").Metadata[storage.OwnerMetadataKey]; got != "job-a" {
			t.Errorf("%s: after the refused Put the owner is %q, want job-a", name, got)
		}
	}
	// The same owner replaces its own object (a retried download).
	put(t, s, "owned/x.mp4", b, owned(b, "job-a"))
	assertContent(t, s, "owned/x.mp4", b)
	// An object naming no owner is replaced, and a Put naming none
	// replaces any: the check is between two named owners.
	put(t, s, "plain/y.mp4", a, opts(a))
	put(t, s, "plain/y.mp4", b, owned(b, "job-b"))
	assertContent(t, s, "plain/y.mp4", b)
	put(t, s, "plain/y.mp4", a, opts(a))
	assertContent(t, s, "plain/y.mp4", a)
}

func testLocation(t *testing.T, s storage.Store) {
	b := payload(10, 18)
	info := put(t, s, "loc/x.mp4", b, opts(b))
	loc := s.Location("loc/x.mp4")
	if loc == "" {
		t.Fatal(`Location("loc/x.mp4") is empty`)
	}
	if info.Location != loc {
		t.Errorf("Put info.Location = %q, want Location() = %q", info.Location, loc)
	}
	if got := stat(t, s, "loc/x.mp4").Location; got != loc {
		t.Errorf("Stat Location = %q, want %q", got, loc)
	}
	if other := s.Location("loc/y.mp4"); other == loc {
		t.Errorf("two keys share Location %q", loc)
	}
}

// testLarge streams LargeSize bytes from a generator and checks the store
// did not buffer the object: the process may allocate at most half of it.
func testLarge(t *testing.T, s storage.Store) {
	want := generatorSum(LargeSize, 19)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	info, err := s.Put(t.Context(), "large.bin", newGenerator(LargeSize, 19), storage.PutOptions{Size: LargeSize, SHA256: want})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if info.Size != LargeSize || info.SHA256 != want {
		t.Errorf("Put info = size %d sha256 %s, want %d %s", info.Size, info.SHA256, LargeSize, want)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("Put of a %d MiB stream allocated %d KiB", LargeSize>>20, alloc>>10)
	if alloc > LargeSize/2 {
		t.Errorf("Put of a %d MiB stream allocated %d KiB; it must not buffer the object", LargeSize>>20, alloc>>10)
	}
	if got := stat(t, s, "large.bin"); got.Size != LargeSize || got.SHA256 != want {
		t.Errorf("Stat = size %d sha256 %s, want %d %s", got.Size, got.SHA256, LargeSize, want)
	}
	rc, _, err := s.Open(t.Context(), "large.bin")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil || n != LargeSize || hex.EncodeToString(h.Sum(nil)) != want {
		t.Errorf("Open streamed %d bytes (err %v) with sha256 %x, want %d bytes %s", n, err, h.Sum(nil), LargeSize, want)
	}
}

// generator yields a deterministic pseudo-random stream of n bytes (n < 0:
// endless) without holding it in memory.
type generator struct {
	state uint64
	left  int64 // < 0: endless
	buf   [8]byte
	off   int
}

func newGenerator(n int64, seed uint64) *generator {
	return &generator{state: seed*0x9E3779B97F4A7C15 + 1, left: n, off: 8}
}

func (g *generator) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if g.left > 0 && int64(len(p)) > g.left {
		p = p[:g.left]
	}
	for i := range p {
		if g.off == 8 {
			g.state ^= g.state << 13
			g.state ^= g.state >> 7
			g.state ^= g.state << 17
			binary.LittleEndian.PutUint64(g.buf[:], g.state)
			g.off = 0
		}
		p[i] = g.buf[g.off]
		g.off++
	}
	if g.left > 0 {
		g.left -= int64(len(p))
	}
	return len(p), nil
}

func generatorSum(n int64, seed uint64) string {
	h := sha256.New()
	if _, err := io.Copy(h, newGenerator(n, seed)); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// CancelAfter reads R and calls Cancel once N bytes have been read, and
// keeps yielding data afterwards, so only a store's own context check can
// stop the copy. Count is the number of bytes read so far.
type CancelAfter struct {
	R      io.Reader
	N      int64
	Cancel context.CancelFunc
	Count  int64
}

// Read implements io.Reader.
func (c *CancelAfter) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.Count += int64(n)
	if c.Count >= c.N {
		c.Cancel()
	}
	return n, err
}
