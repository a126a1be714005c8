package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Store is object storage for finished videos. Implementations must be safe
// for concurrent use.
type Store interface {
	// Put streams r to key with constant memory. When opts.Size >= 0 the byte
	// count must match, and when opts.SHA256 != "" the hex sha256 must match;
	// otherwise Put returns an *IntegrityError and no object is visible at
	// key. On any error (including ctx cancellation or a reader error) nothing
	// is visible at key and no temporary data is left behind. If an object
	// already exists at key it is replaced atomically, unless it belongs to
	// someone else: when opts.Metadata names an owner ([OwnerMetadataKey])
	// and the existing object's metadata names a different one, Put fails
	// with an error wrapping [ErrKeyConflict] and leaves that object as it
	// is (see each backend for how exact the check is).
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (ObjectInfo, error)

	// Stat describes the object at key; a missing object gives an error
	// wrapping ErrNotExist. SHA256 is filled (disk: computed by streaming
	// the file; S3: from the metadata recorded at Put, "" for objects other
	// tools wrote).
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// Open streams the object's bytes (caller closes). Missing → ErrNotExist.
	Open(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)

	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// Location is a human/operator-facing address of key, e.g.
	// "file:///abs/data/videos/x.mp4".
	Location(key string) string
}

// PutOptions describe the object handed to [Store.Put].
//
// The zero value is not "no checks": Size 0 demands an empty object. Use
// [NewPutOptions] or set Size to -1 when the size is unknown.
type PutOptions struct {
	// Size is the exact number of bytes the reader yields, or -1 (any
	// negative value) when unknown. A reader that yields more stops being
	// read at Size+1 bytes.
	Size int64
	// SHA256 is the expected lower- or upper-case hex sha256 of the bytes, or
	// "" to skip the check. A value that is not 64 hex digits is refused
	// before anything is read.
	SHA256 string
	// ContentType is stored with the object and returned by Stat and Open;
	// "" stores none.
	ContentType string
	// Metadata is user metadata stored with the object. Keep keys to
	// lower-case ASCII letters, digits and '-' or '_' so that every backend
	// can store them unchanged.
	Metadata map[string]string
}

// NewPutOptions returns options for an object of unknown size with no
// integrity checks (Size -1).
func NewPutOptions() PutOptions { return PutOptions{Size: -1} }

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	// Key is the object's key.
	Key string
	// Size is the object's length in bytes.
	Size int64
	// SHA256 is the lower-case hex sha256 of the object's bytes. See each
	// method for where it comes from.
	SHA256 string
	// ContentType is the content type given to Put, or "".
	ContentType string
	// Location is the same as Store.Location(Key).
	Location string
	// ModTime is when the object was last written.
	ModTime time.Time
	// Metadata is the user metadata given to Put (nil when none).
	Metadata map[string]string
}

// ErrNotExist is wrapped by the errors Store methods return for a missing
// object. Test with errors.Is.
var ErrNotExist = errors.New("storage: object does not exist")

// ErrInvalidKey is matched (errors.Is) by the errors returned for a key
// that [ValidateKey] (or a backend's own rule) refuses: an *[Error] of
// [KindInvalidKey]. Such errors are permanent: retrying with the same key
// cannot succeed.
var ErrInvalidKey = errors.New("storage: invalid key")

// OwnerMetadataKey is the user metadata key that names an object's owner
// (the worker stores the job id under it). [Store.Put] never replaces an
// object whose owner differs from the one in its own PutOptions.Metadata.
const OwnerMetadataKey = "job_id"

// ErrKeyConflict is wrapped by the error [Store.Put] returns when the key
// holds an object of another owner (see [OwnerMetadataKey]). It is
// permanent: retrying the same Put cannot succeed, and the other object is
// left untouched.
var ErrKeyConflict = errors.New("storage: key holds another owner's object")

// ownerConflict returns an error wrapping ErrKeyConflict when the existing
// object's metadata names an owner other than the one opts names.
func ownerConflict(key string, opts PutOptions, existing map[string]string) error {
	want := opts.Metadata[OwnerMetadataKey]
	have := existing[OwnerMetadataKey]
	if want == "" || have == "" || have == want {
		return nil
	}
	return fmt.Errorf("%w: put %q: the object there belongs to %s %q", ErrKeyConflict, key, OwnerMetadataKey, have)
}

// ErrIntegrity is matched (errors.Is) by every *[IntegrityError].
var ErrIntegrity = errors.New("storage: integrity check failed")

// IntegrityError reports bytes that do not match the expected size or sha256.
// Put returns it when the reader's bytes do not match PutOptions; a Disk's
// Open reader returns it at the end of a stream whose bytes do not match the
// sha256 recorded at Put time.
type IntegrityError struct {
	// Key is the object's key.
	Key string
	// WantSize is the expected size, or -1 when the size was not checked.
	WantSize int64
	// GotSize is the number of bytes read. Put stops reading at WantSize+1,
	// so a larger GotSize means "more than WantSize".
	GotSize int64
	// WantSHA256 is the expected hex sha256, or "" when it was not checked.
	WantSHA256 string
	// GotSHA256 is the hex sha256 of the bytes read.
	GotSHA256 string
}

// Error names the key and each mismatch.
func (e *IntegrityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "storage: integrity check failed for %q", e.Key)
	sep := ": "
	if e.WantSize >= 0 && e.GotSize != e.WantSize {
		if e.GotSize > e.WantSize {
			fmt.Fprintf(&b, "%ssize: want %d bytes, got more", sep, e.WantSize)
		} else {
			fmt.Fprintf(&b, "%ssize: want %d bytes, got %d", sep, e.WantSize, e.GotSize)
		}
		sep = "; "
	}
	if e.WantSHA256 != "" && !strings.EqualFold(e.WantSHA256, e.GotSHA256) {
		fmt.Fprintf(&b, "%ssha256: want %s, got %s", sep, e.WantSHA256, e.GotSHA256)
	}
	return b.String()
}

// Is reports whether target is [ErrIntegrity].
func (e *IntegrityError) Is(target error) bool { return target == ErrIntegrity }

// MaxKeyLen is the longest key in bytes that [ValidateKey] accepts (S3's
// limit).
const MaxKeyLen = 1024

// ValidateKey reports whether key is a valid object key: non-empty, at most
// [MaxKeyLen] bytes of valid UTF-8, relative (no leading "/"), slash-separated
// with no empty, "." or ".." segment (so no trailing or doubled "/"), and
// without NUL, backslash or other control characters. The error wraps
// [ErrInvalidKey] and names the problem.
//
// Backends may refuse more keys (see [Disk] for its reserved names); the
// same error class is used.
func ValidateKey(key string) error {
	if problem := keyProblem(key); problem != "" {
		return invalidKey(key, problem)
	}
	return nil
}

func keyProblem(key string) string {
	switch {
	case key == "":
		return "key is empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("key is %d bytes, longer than %d", len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return "key is not valid UTF-8"
	case key[0] == '/':
		return `key is absolute (starts with "/")`
	}
	for _, c := range key {
		switch {
		case c == 0:
			return "key contains a NUL byte"
		case c == '\\':
			return "key contains a backslash"
		case unicode.IsControl(c):
			return fmt.Sprintf("key contains control character %U", c)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return `key has an empty segment (leading, trailing or doubled "/")`
		case ".":
			return `key has a "." segment`
		case "..":
			return `key has a ".." segment`
		}
	}
	return ""
}

func invalidKey(key, problem string) error {
	const show = 80
	if len(key) > show {
		key = key[:show] + "…"
	}
	return &Error{Kind: KindInvalidKey, Key: key, Err: errors.New(problem)}
}

// Presigner is implemented by stores that can hand out a time-limited
// download link for an object ([S3] does; [Disk] does not). Check for it
// with a type assertion.
type Presigner interface {
	// PresignGet returns a URL that downloads key without credentials
	// until ttl has passed. It does not check that the object exists.
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
}

// verifyingReader is what Open returns: it streams an object and, when a
// sha256 was recorded for it, checks the bytes as they pass; at end of
// file it returns an *IntegrityError instead of io.EOF on a mismatch.
// With ctx set, every Read fails once ctx is done.
type verifyingReader struct {
	ctx  context.Context
	rc   io.ReadCloser
	key  string
	size int64
	want string    // recorded sha256, "" for no verification
	h    hash.Hash // nil when want == ""
	n    int64
}

func newVerifyingReader(ctx context.Context, rc io.ReadCloser, key string, size int64, want string) *verifyingReader {
	r := &verifyingReader{ctx: ctx, rc: rc, key: key, size: size, want: want}
	if want != "" {
		r.h = sha256.New()
	}
	return r
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.ctx != nil {
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
	}
	n, err := r.rc.Read(p)
	if r.h != nil {
		r.h.Write(p[:n])
		r.n += int64(n)
		if err == io.EOF {
			if got := hex.EncodeToString(r.h.Sum(nil)); got != r.want || r.n != r.size {
				return n, &IntegrityError{Key: r.key, WantSize: r.size, GotSize: r.n, WantSHA256: r.want, GotSHA256: got}
			}
		}
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.rc.Close() }
