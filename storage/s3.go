package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3 limits that shape uploads.
const (
	// DefaultS3PartSize is the part size of multipart uploads unless
	// S3Config.PartSize says otherwise.
	DefaultS3PartSize = 16 << 20
	// MinS3PartSize and MaxS3PartSize bound S3Config.PartSize (S3's limits
	// for every part but the last).
	MinS3PartSize = 5 << 20
	MaxS3PartSize = 5 << 30
	// MaxS3ObjectSize is the largest object S3 stores (5 TiB).
	MaxS3ObjectSize = 5 << 40

	// DefaultS3StaleUploadAge is S3Config.StaleUploadAge when zero.
	DefaultS3StaleUploadAge = time.Hour

	s3MaxParts = 10000
	// s3TmpDir is the directory, below the configured prefix, of the
	// temporary objects that uploads without an expected sha256 go through.
	s3TmpDir = ".tmp-uploads"
	// s3SHA256Meta is the user metadata entry (x-amz-meta-sha256) holding
	// the object's hex sha256.
	s3SHA256Meta = "sha256"
	// abortTimeout bounds the clean-up requests made after a failure, on a
	// context of their own (the caller's may be the reason for the failure).
	abortTimeout = 30 * time.Second
)

// S3Config configures an [S3] store. Only Bucket is required.
type S3Config struct {
	// Endpoint is the server as host or host:port, or as an http:// or
	// https:// URL (whose scheme then decides TLS, overriding UseSSL).
	// "" means AWS ("s3.amazonaws.com").
	Endpoint string
	// Region is the bucket's region; "" lets the client ask the server.
	Region string
	// Bucket must exist; NewS3 checks it.
	Bucket string
	// Prefix is prepended to every key, with a "/" between them; "" for
	// none. It must be a valid key itself (leading and trailing slashes are
	// trimmed).
	Prefix string
	// AccessKey and SecretKey are the static credentials, with an optional
	// SessionToken for temporary ones. With both keys empty the client uses
	// the environment's role: AWS web identity (AWS_WEB_IDENTITY_TOKEN_FILE),
	// the ECS task role or the EC2 instance role. SecretKey and SessionToken
	// are secrets: S3 never puts them in an error or a log line.
	AccessKey, SecretKey, SessionToken string
	// UseSSL selects https. [Open] defaults it to true; set it false only
	// for a server on a trusted network (a local MinIO or versitygw): on
	// plain HTTP nothing is encrypted, and buffered parts are sent with an
	// unsigned payload, which a CRC32C protects against corruption but not
	// against tampering (see [S3]).
	UseSSL bool
	// PathStyle addresses buckets as https://host/bucket/key instead of
	// https://bucket.host/key. MinIO, versitygw, Garage and most
	// self-hosted servers need it.
	PathStyle bool
	// PartSize is the size of each part of a multipart upload, between
	// MinS3PartSize and MaxS3PartSize; 0 means DefaultS3PartSize. A Put
	// holds up to four parts in memory (never more than half of an object
	// of known size, and at least one): the part it is reading and the
	// ones being sent. Beyond the first part of a Put of unknown size,
	// which it always holds, the buffers come from a budget of 64 MiB
	// shared by all Puts of the store (four parts of 16 MiB, one of 64 MiB,
	// none of larger parts); a Put of known size that finds it spent
	// streams its parts unbuffered. An upload of unknown size can store at most 10,000 parts
	// (160 GiB at 16 MiB); for a known size the part size grows as needed
	// (and parts beyond PartSize are streamed).
	PartSize uint64
	// StaleUploadAge is how old an incomplete multipart upload of the same
	// key (or a temporary upload) must be, relative to a new Put's own
	// upload, for that Put to abort it as the leftover of a killed process.
	// 0 means DefaultS3StaleUploadAge; negative turns this clean-up off.
	StaleUploadAge time.Duration
}

// String describes the configuration without its secrets.
func (c S3Config) String() string {
	return fmt.Sprintf("s3 endpoint=%s region=%s bucket=%s prefix=%s ssl=%t path_style=%t access_key=%s secret_key=%s session_token=%s",
		orNone(c.Endpoint), orNone(c.Region), c.Bucket, orNone(c.Prefix), c.UseSSL, c.PathStyle,
		redacted(c.AccessKey), redacted(c.SecretKey), redacted(c.SessionToken))
}

// LogValue logs the configuration without its secrets.
func (c S3Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("endpoint", c.Endpoint), slog.String("region", c.Region),
		slog.String("bucket", c.Bucket), slog.String("prefix", c.Prefix), slog.Bool("ssl", c.UseSSL),
		slog.Bool("path_style", c.PathStyle), slog.String("access_key", redacted(c.AccessKey)),
		slog.String("secret_key", redacted(c.SecretKey)), slog.String("session_token", redacted(c.SessionToken)))
}

func orNone(s string) string {
	if s == "" {
		return "(default)"
	}
	return s
}

func redacted(s string) string {
	if s == "" {
		return "(unset)"
	}
	return "[redacted]"
}

// S3 is a [Store] in a bucket of an S3-compatible object store (AWS S3,
// MinIO, versitygw, Garage, Ceph RGW, …), under an optional key prefix.
//
// # Writes
//
// Every non-empty Put is a multipart upload, so nothing is visible at the
// key until the upload is completed, and it is completed only after the
// bytes have been counted and hashed and match PutOptions. On any failure
// (a mismatch, a reader error, a server error, ctx cancelled) the upload is
// aborted on a fresh context, so no parts are left behind either.
//
// The caller's goroutine reads (and hashes) each part into a pooled
// PartSize buffer while the parts before it are sent, up to four at once
// (see [S3Config.PartSize] for the memory this takes), so that reading,
// hashing and the server's work overlap. Each buffered part is sent with
// an unsigned payload and its CRC32C (x-amz-checksum-crc32c, which the
// server checks before it accepts the part; the upload declares the
// algorithm and the completing request repeats each part's checksum), and
// is retried by the client like any other request. Unsigned, because
// minio-go would otherwise sign each part over plain HTTP with a SHA-256
// of every 64 KiB chunk (on HTTPS it sends unsigned payloads anyway): a
// second SHA-256 of every byte in the client and a third in the server,
// next to the sha256 that Put checks, where CRC32C (a CPU instruction)
// costs about a sixteenth as much. The trade-off: on plain HTTP a party able to rewrite traffic
// between the worker and the server could replace a part's bytes (with a
// matching CRC32C) where a signed chunk would be refused; corruption is
// still caught (by servers that check checksums: AWS, MinIO, versitygw),
// and such a party could read the video and answer reads anyway, which is
// why plain HTTP is for trusted networks only. When the
// store's buffer budget is spent, a Put of known size streams its parts
// straight from the reader, one at a time and signed as minio-go does by
// default; a streamed part is sent once (a failed part fails the Put).
//
// Parts already being sent when a Put fails are let finish before the
// upload is aborted (for at most two seconds once ctx is cancelled): a
// part request cut off mid-way can still be stored by the server after
// the abort, which brings the upload back (S3 documents this; versitygw
// does it). A Put that had to cut one off aborts again after 50 ms,
// 250 ms and 1 s. Should the answer to the completing request be lost, Put
// reports an error although the (verified) object may be in place; a
// retry finds it by Stat or replaces it.
//
// The object's hex sha256 is stored as user metadata (x-amz-meta-sha256)
// next to the content type and PutOptions.Metadata. S3 metadata is fixed
// when an upload starts, so:
//
//   - With PutOptions.SHA256 set, the upload goes straight to the key.
//   - Without it, the upload goes to a temporary object under
//     "<prefix>/.tmp-uploads/", which, once its bytes are checked, is copied
//     server-side to the key with the sha256 it turned out to have (one
//     CopyObject, or a multipart copy beyond 5 GiB) and then deleted.
//
// A process killed mid-upload cannot abort: its upload stays incomplete
// (never visible) until a later Put of the same key, or any later Put
// without an expected sha256 for temporary uploads, aborts the ones older
// than S3Config.StaleUploadAge. A bucket lifecycle rule
// (AbortIncompleteMultipartUpload, and expiry of the temporary prefix)
// covers keys that are never written again.
//
// Before the request that makes the object visible (completing the upload,
// the copy from the temporary object, or the PutObject of an empty
// object), a Put whose metadata names an owner ([OwnerMetadataKey]) reads
// the key's current metadata with one HEAD and refuses ([ErrKeyConflict])
// to replace an object of another owner. The check and the publishing
// request are two requests: a Put of another owner that publishes between
// them is replaced (a window of one round trip; keys rendered by
// [RenderKey] from distinct job ids never meet, so only a template without
// {job_id} makes two owners share a key).
//
// Keys whose first segment starts with ".tmp-" are refused with
// [ErrInvalidKey]: that name space holds the temporary objects.
//
// # Reads
//
// Stat is one HEAD request: Size, ContentType, ModTime and Metadata come
// from the server and SHA256 from the x-amz-meta-sha256 recorded at Put
// (empty for objects written by other tools). Open's reader checks the
// bytes against that sha256 as they stream and returns an *IntegrityError
// at the end instead of io.EOF if they differ.
//
// # Metadata
//
// S3 metadata names are case-insensitive: keys of PutOptions.Metadata must
// be lower-case ASCII letters, digits, '-' or '_' (others are refused
// before anything is read), and "sha256" is reserved. Values that are not
// printable ASCII are stored RFC 2047-encoded and decoded on read.
type S3 struct {
	core     *minio.Core
	bucket   string
	prefix   string // "" or ending in "/"
	endpoint string // for messages
	partSize int64
	staleAge time.Duration
	copyMax  int64    // largest single CopyObject; larger copies go in parts of this size
	secrets  []string // scrubbed from error text, however unlikely they are to appear

	bufs      sync.Pool     // *[]byte of partSize
	bufTokens chan struct{} // one per buffer lent from the budget (s3BufferBudget)
	// partCRC: buffered parts carry their CRC32C. Not to Google Cloud
	// Storage, which minio-go never sends checksums either (it is https
	// only, where TLS protects the bytes).
	partCRC bool
}

var (
	_ Store     = (*S3)(nil)
	_ Presigner = (*S3)(nil)
)

// NewS3 connects to the server and checks that the bucket exists. Errors
// name the endpoint and bucket, never a credential.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	endpoint, secure, err := s3Endpoint(cfg.Endpoint, cfg.UseSSL)
	if err != nil {
		return nil, fmt.Errorf("storage: s3 endpoint: %w", err)
	}
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("storage: s3 bucket %q: %v", cfg.Bucket, err)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := ValidateKey(prefix); err != nil {
			return nil, fmt.Errorf("storage: s3 prefix: %w", err)
		}
		prefix += "/"
	}
	partSize := int64(cfg.PartSize)
	if cfg.PartSize == 0 {
		partSize = DefaultS3PartSize
	} else if cfg.PartSize < MinS3PartSize || cfg.PartSize > MaxS3PartSize {
		return nil, fmt.Errorf("storage: s3 part size %d: want between %d (5 MiB) and %d (5 GiB)", cfg.PartSize, MinS3PartSize, int64(MaxS3PartSize))
	}
	staleAge := cfg.StaleUploadAge
	if staleAge == 0 {
		staleAge = DefaultS3StaleUploadAge
	}
	var creds *credentials.Credentials
	switch {
	case cfg.AccessKey != "" && cfg.SecretKey != "":
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		return nil, errors.New("storage: s3 credentials: access key and secret key must be set together")
	default:
		creds = credentials.NewIAM("")
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("storage: s3 transport: %w", err)
	}
	core, err := minio.NewCore(endpoint, &minio.Options{
		Creds: creds, Secure: secure, Region: cfg.Region, BucketLookup: lookup, Transport: tr,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: s3 client for %s: %v", endpoint, scrub(err, cfg.SecretKey, cfg.SessionToken))
	}
	s := &S3{
		core: core, bucket: cfg.Bucket, prefix: prefix, endpoint: endpoint,
		partSize: partSize, staleAge: staleAge, copyMax: MaxS3PartSize,
	}
	for _, v := range []string{cfg.SecretKey, cfg.SessionToken} {
		if v != "" {
			s.secrets = append(s.secrets, v)
		}
	}
	s.bufs.New = func() any { b := make([]byte, s.partSize); return &b }
	s.bufTokens = make(chan struct{}, s3BufferBudget/partSize)
	s.partCRC = !s3utils.IsGoogleEndpoint(*core.EndpointURL())
	ok, err := core.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("storage: s3 bucket %q at %s: %w", cfg.Bucket, endpoint, s.scrub(err))
	}
	if !ok {
		return nil, fmt.Errorf("storage: s3 bucket %q at %s does not exist", cfg.Bucket, endpoint)
	}
	return s, nil
}

// s3Endpoint splits an endpoint that may carry a scheme into host[:port]
// and whether to use TLS.
func s3Endpoint(raw string, useSSL bool) (string, bool, error) {
	if raw == "" {
		return "s3.amazonaws.com", useSSL, nil
	}
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return "", false, errors.New("not a valid URL") // raw may hold a password: not shown
		}
		switch u.Scheme {
		case "http":
			useSSL = false
		case "https":
			useSSL = true
		default:
			return "", false, fmt.Errorf("%q: want http:// or https://", u.Redacted())
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", false, fmt.Errorf("%q: want only scheme, host and port", u.Redacted())
		}
		raw = u.Host
	}
	if strings.Contains(raw, "@") {
		return "", false, errors.New("credentials do not belong in the endpoint") // not shown
	}
	if raw == "" || strings.ContainsAny(raw, "/?# ") {
		return "", false, fmt.Errorf("%q: want host or host:port", raw)
	}
	return raw, useSSL, nil
}

// Bucket returns the bucket name.
func (s *S3) Bucket() string { return s.bucket }

// Prefix returns the key prefix, "" or ending in "/".
func (s *S3) Prefix() string { return s.prefix }

// Location returns "s3://bucket/prefix/key", or "" when key is not valid.
func (s *S3) Location(key string) string {
	obj, err := s.object(key)
	if err != nil {
		return ""
	}
	return "s3://" + s.bucket + "/" + obj
}

// object validates key and returns the object name in the bucket.
func (s *S3) object(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(key, "/")
	if strings.HasPrefix(first, tmpPrefix) {
		return "", invalidKey(key, fmt.Sprintf("first segment %q starts with %q, reserved for temporary uploads", first, tmpPrefix))
	}
	obj := s.prefix + key
	if len(obj) > MaxKeyLen {
		return "", invalidKey(key, fmt.Sprintf("with the prefix the object name is %d bytes, longer than %d", len(obj), MaxKeyLen))
	}
	return obj, nil
}

// Put implements [Store.Put]; see [S3] for how an object is written.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	wantSHA, err := normSHA256(opts.SHA256)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	meta, err := encodeS3Metadata(opts.Metadata)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	size := opts.Size
	if size < 0 {
		size = -1
	}
	if size > MaxS3ObjectSize {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %d bytes is more than S3's limit of 5 TiB", key, size)
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	u := &s3Upload{s: s, ctx: ctx, key: key, obj: obj, size: size, wantSHA: wantSHA, contentType: opts.ContentType, meta: meta,
		owner: opts.Metadata[OwnerMetadataKey], src: &hashingReader{ctx: ctx, r: r, h: sha256.New()}}
	info, err := u.run()
	if err != nil {
		return ObjectInfo{}, err
	}
	info.Metadata = cloneMap(opts.Metadata)
	return info, nil
}

// s3Upload is one Put.
type s3Upload struct {
	s           *S3
	ctx         context.Context
	key, obj    string
	size        int64 // -1: unknown
	wantSHA     string
	contentType string
	meta        map[string]string // encoded user metadata, without sha256
	owner       string            // PutOptions.Metadata[OwnerMetadataKey]

	src *hashingReader
	in  io.Reader // src, limited to size+1 bytes when the size is known

	target   string // object the multipart upload writes: obj, or a temporary object
	uploadID string
	parts    []minio.CompletePart
	// cut: a part request was cut off, so the server may still be storing
	// that part when the upload is aborted (see S3.abortUpload).
	cut atomic.Bool
}

func (u *s3Upload) run() (ObjectInfo, error) {
	u.in = u.src
	if u.size >= 0 {
		u.in = io.LimitReader(u.src, u.size+1)
	}
	if u.size == 0 {
		return u.putEmpty()
	}
	// Part buffers (see s3_parts.go): a Put of unknown size always holds
	// one; one of known size borrows its first from the store's budget,
	// and streams its parts unbuffered when the budget is spent (or when
	// its parts must grow beyond PartSize).
	partSize := u.s.partSize
	var buf *[]byte
	if u.size < 0 {
		buf = u.s.bufs.Get().(*[]byte)
		defer u.s.bufs.Put(buf)
	} else if need := (u.size + s3MaxParts - 1) / s3MaxParts; need > partSize {
		partSize = (need + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB
	} else if lent := u.s.takeBuffers(1); len(lent) == 1 {
		buf = lent[0]
		defer u.s.returnBuffers(lent)
	}
	buffered := buf != nil

	// Read the first part (or see the stream is empty) before starting an
	// upload, so that an empty object is a single verified PutObject.
	var first bufferedPart
	if buffered {
		want := partSize
		if u.size >= 0 {
			want = min(partSize, u.size)
		}
		n, crc, err := u.readPart(u.ctx, (*buf)[:want])
		switch {
		case err == io.EOF && u.size < 0:
			return u.putEmpty()
		case err == io.ErrUnexpectedEOF && u.size < 0:
		case err != nil:
			return ObjectInfo{}, u.failure(err)
		}
		first = bufferedPart{num: 1, buf: buf, n: n, crc: crc}
	}

	direct := u.wantSHA != ""
	u.target = u.obj
	opts := minio.PutObjectOptions{ContentType: u.contentType, UserMetadata: u.meta}
	if direct {
		opts.UserMetadata = withSHA(u.meta, u.wantSHA)
	} else {
		u.target = u.s.prefix + s3TmpDir + "/" + randomHex()
		opts = minio.PutObjectOptions{UserMetadata: map[string]string{}}
	}
	if buffered && u.s.partCRC {
		// S3 takes part checksums only for the algorithm the upload
		// declared; the key is passed through as a header.
		opts.UserMetadata[s3ChecksumAlgoHeader] = "CRC32C"
	}
	id, err := u.s.core.NewMultipartUpload(u.ctx, u.s.bucket, u.target, opts)
	if err != nil {
		return ObjectInfo{}, u.failure(err)
	}
	u.uploadID = id
	completed := false
	defer func() {
		if !completed {
			u.s.abortUpload(u.ctx, u.target, u.uploadID, u.cut.Load())
		}
	}()
	if direct {
		u.s.abortStale(u.ctx, u.obj, u.uploadID)
	} else {
		u.s.abortStale(u.ctx, u.s.prefix+s3TmpDir+"/", u.uploadID)
	}

	if buffered {
		err = u.bufferedParts(first, partSize)
	} else {
		err = u.streamParts(partSize)
	}
	if err != nil {
		if ie := (*IntegrityError)(nil); errors.As(err, &ie) {
			return ObjectInfo{}, err
		}
		return ObjectInfo{}, u.failure(err)
	}
	n, sum, err := u.verify()
	if err != nil {
		return ObjectInfo{}, err
	}
	if direct {
		if err := u.checkOwner(); err != nil {
			return ObjectInfo{}, err
		}
	}
	done, err := u.s.core.CompleteMultipartUpload(u.ctx, u.s.bucket, u.target, u.uploadID, u.parts, minio.PutObjectOptions{})
	if err != nil {
		return ObjectInfo{}, u.failure(err)
	}
	completed = true
	modTime := done.LastModified
	if !direct {
		modTime, err = u.publish(n, sum)
		if err != nil {
			return ObjectInfo{}, err
		}
	}
	if modTime.IsZero() {
		modTime = time.Now()
	}
	return ObjectInfo{Key: u.key, Size: n, SHA256: sum, ContentType: u.contentType, Location: u.s.Location(u.key), ModTime: modTime}, nil
}

// streamParts uploads a stream of known size without buffers, each part
// read straight from the source and signed by minio-go as it goes (on
// plain HTTP a SHA-256 per 64 KiB chunk).
func (u *s3Upload) streamParts(partSize int64) error {
	for off, num := int64(0), 1; off < u.size; off, num = off+partSize, num+1 {
		n := min(partSize, u.size-off)
		p, err := u.s.core.PutObjectPart(u.ctx, u.s.bucket, u.target, u.uploadID, num, io.LimitReader(u.in, n), n, minio.PutObjectPartOptions{})
		if err != nil {
			if u.ctx.Err() != nil {
				u.cut.Store(true)
			}
			return err
		}
		u.parts = append(u.parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
	}
	// One more byte means the stream is longer than promised.
	var probe [1]byte
	if _, err := io.ReadFull(u.in, probe[:]); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// verify checks what was read against the expectations and returns the
// hex sha256.
func (u *s3Upload) verify() (int64, string, error) {
	n, sum, _, _ := u.src.state()
	if (u.size >= 0 && n != u.size) || (u.wantSHA != "" && sum != u.wantSHA) {
		return 0, "", &IntegrityError{Key: u.key, WantSize: u.size, GotSize: n, WantSHA256: u.wantSHA, GotSHA256: sum}
	}
	return n, sum, nil
}

// putEmpty stores an empty object with one PutObject, after checking that
// the stream is indeed empty and matches the expected sha256.
func (u *s3Upload) putEmpty() (ObjectInfo, error) {
	var probe [1]byte
	if _, err := io.ReadFull(u.in, probe[:]); err != nil && err != io.EOF {
		return ObjectInfo{}, u.failure(err)
	}
	_, sum, err := u.verify()
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := u.checkOwner(); err != nil {
		return ObjectInfo{}, err
	}
	info, err := u.s.core.PutObject(u.ctx, u.s.bucket, u.obj, bytes.NewReader(nil), 0, "", sum,
		minio.PutObjectOptions{ContentType: u.contentType, UserMetadata: withSHA(u.meta, sum)})
	if err != nil {
		return ObjectInfo{}, u.failure(err)
	}
	mt := info.LastModified
	if mt.IsZero() {
		mt = time.Now()
	}
	return ObjectInfo{Key: u.key, Size: 0, SHA256: sum, ContentType: u.contentType, Location: u.s.Location(u.key), ModTime: mt}, nil
}

// publish copies the completed temporary object to the key with its
// metadata, then deletes the temporary object (also when the copy fails).
func (u *s3Upload) publish(size int64, sum string) (time.Time, error) {
	defer u.s.removeQuietly(u.ctx, u.target)
	if err := u.checkOwner(); err != nil {
		return time.Time{}, err
	}
	meta := withSHA(u.meta, sum)
	if size <= u.s.copyMax {
		h := map[string]string{"x-amz-metadata-directive": "REPLACE"}
		if u.contentType != "" {
			h["Content-Type"] = u.contentType
		}
		for k, v := range meta {
			h["x-amz-meta-"+k] = v
		}
		oi, err := u.s.core.CopyObject(u.ctx, u.s.bucket, u.target, u.s.bucket, u.obj, h, minio.CopySrcOptions{}, minio.PutObjectOptions{})
		if err != nil {
			return time.Time{}, u.failure(fmt.Errorf("copy from the temporary upload: %w", err))
		}
		return oi.LastModified, nil
	}
	// Beyond 5 GiB: a multipart copy, aborted unless completed.
	id, err := u.s.core.NewMultipartUpload(u.ctx, u.s.bucket, u.obj, minio.PutObjectOptions{ContentType: u.contentType, UserMetadata: meta})
	if err != nil {
		return time.Time{}, u.failure(fmt.Errorf("copy from the temporary upload: %w", err))
	}
	completed := false
	defer func() {
		if !completed {
			u.s.abort(u.ctx, u.obj, id)
		}
	}()
	var parts []minio.CompletePart
	for off, num := int64(0), 1; off < size; off, num = off+u.s.copyMax, num+1 {
		p, err := u.s.core.CopyObjectPart(u.ctx, u.s.bucket, u.target, u.s.bucket, u.obj, id, num, off, min(u.s.copyMax, size-off), nil)
		if err != nil {
			return time.Time{}, u.failure(fmt.Errorf("copy part %d from the temporary upload: %w", num, err))
		}
		parts = append(parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
	}
	done, err := u.s.core.CompleteMultipartUpload(u.ctx, u.s.bucket, u.obj, id, parts, minio.PutObjectOptions{})
	if err != nil {
		return time.Time{}, u.failure(fmt.Errorf("copy from the temporary upload: %w", err))
	}
	completed = true
	return done.LastModified, nil
}

// checkOwner is one HEAD of the key right before the request that
// publishes the object: it fails with ErrKeyConflict when an object of
// another owner is there. S3 has no portable conditional write on user
// metadata, so a Put of another owner completing between this HEAD and
// the publishing request (one round trip) can still be replaced.
func (u *s3Upload) checkOwner() error {
	if u.owner == "" {
		return nil
	}
	oi, err := u.s.core.StatObject(u.ctx, u.s.bucket, u.obj, minio.StatObjectOptions{})
	if err != nil {
		if rerr := u.s.readError("put", u.key, err); errors.Is(rerr, ErrNotExist) {
			return nil
		}
		return u.failure(fmt.Errorf("check the object in place: %w", err))
	}
	return ownerConflict(u.key, PutOptions{Metadata: map[string]string{OwnerMetadataKey: u.owner}}, u.s.info(u.key, oi).Metadata)
}

// failure turns an error of an upload into the error Put returns: the
// reader's own error, the context's, an *IntegrityError when the stream
// ended before the promised size, or the server's.
func (u *s3Upload) failure(err error) error {
	n, sum, eof, rerr := u.src.state()
	switch {
	case rerr != nil:
		return fmt.Errorf("storage: put %q: read: %w", u.key, rerr)
	case u.ctx.Err() != nil:
		return fmt.Errorf("storage: put %q: %w", u.key, u.ctx.Err())
	case eof && u.size >= 0 && n < u.size:
		return &IntegrityError{Key: u.key, WantSize: u.size, GotSize: n, WantSHA256: u.wantSHA, GotSHA256: sum}
	}
	return fmt.Errorf("storage: put %q: %w", u.key, u.s.scrub(err))
}

// abort aborts a multipart upload on a fresh context; failures are left to
// the stale-upload clean-up and lifecycle rules.
func (s *S3) abort(ctx context.Context, obj, uploadID string) {
	s.abortUpload(ctx, obj, uploadID, false)
}

// abortRechecks are the pauses after which abortUpload aborts again an
// upload whose part requests were cut off.
var abortRechecks = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, 750 * time.Millisecond}

// abortUpload aborts a multipart upload on a fresh context. With recheck
// (a part request was cut off, so the server may still be storing that
// part, and storing it can bring an aborted upload back, as S3's
// documentation warns) it aborts again after each of abortRechecks (an
// abort of an upload that is gone is a harmless NoSuchUpload). Failures
// are left to the stale-upload clean-up and lifecycle rules.
func (s *S3) abortUpload(ctx context.Context, obj, uploadID string, recheck bool) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_ = s.core.AbortMultipartUpload(actx, s.bucket, obj, uploadID)
	if !recheck {
		return
	}
	for _, d := range abortRechecks {
		select {
		case <-time.After(d):
		case <-actx.Done():
			return
		}
		_ = s.core.AbortMultipartUpload(actx, s.bucket, obj, uploadID)
	}
}

func (s *S3) removeQuietly(ctx context.Context, obj string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_ = s.core.RemoveObject(actx, s.bucket, obj, minio.RemoveObjectOptions{})
}

// abortStale aborts the incomplete uploads under prefix (an exact object
// name, or the temporary directory) that started more than staleAge before
// the upload self, and, under the temporary directory, deletes temporary
// objects as old. Errors are ignored: this is housekeeping.
func (s *S3) abortStale(ctx context.Context, prefix, self string) {
	if s.staleAge < 0 {
		return
	}
	exact := !strings.HasSuffix(prefix, "/")
	res, err := s.core.ListMultipartUploads(ctx, s.bucket, prefix, "", "", "", 1000)
	if err != nil {
		return
	}
	var ref time.Time
	for _, up := range res.Uploads {
		if up.UploadID == self {
			ref = up.Initiated // the server's clock, like the others'
		}
	}
	if ref.IsZero() {
		return
	}
	for _, up := range res.Uploads {
		if up.UploadID == self || (exact && up.Key != prefix) || ref.Sub(up.Initiated) <= s.staleAge {
			continue
		}
		s.abort(ctx, up.Key, up.UploadID)
	}
	if exact {
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for oi := range s.core.Client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, MaxKeys: 1000}) {
		if oi.Err != nil {
			return
		}
		if ref.Sub(oi.LastModified) > s.staleAge {
			s.removeQuietly(ctx, oi.Key)
		}
	}
}

// Stat implements [Store.Stat] with one HEAD request; see [S3].
func (s *S3) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: stat %q: %w", key, err)
	}
	oi, err := s.core.StatObject(ctx, s.bucket, obj, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.readError("stat", key, err)
	}
	return s.info(key, oi), nil
}

// Open implements [Store.Open] with one GET request; see [S3].
func (s *S3) Open(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("storage: open %q: %w", key, err)
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, obj, minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, s.readError("open", key, err)
	}
	info := s.info(key, oi)
	return newVerifyingReader(ctx, body, key, info.Size, info.SHA256), info, nil
}

func (s *S3) info(key string, oi minio.ObjectInfo) ObjectInfo {
	info := ObjectInfo{Key: key, Size: oi.Size, ContentType: oi.ContentType, Location: s.Location(key), ModTime: oi.LastModified}
	for k, v := range oi.UserMetadata {
		k = strings.ToLower(k)
		if k == s3SHA256Meta {
			if sum, err := normSHA256(v); err == nil {
				info.SHA256 = sum
			}
			continue
		}
		if info.Metadata == nil {
			info.Metadata = map[string]string{}
		}
		info.Metadata[k] = v
	}
	return info
}

// readError maps a Stat or Open failure: a missing object wraps
// ErrNotExist.
func (s *S3) readError(op, key string, err error) error {
	var er minio.ErrorResponse
	if errors.As(err, &er) && (er.Code == minio.NoSuchKey || er.StatusCode == http.StatusNotFound && er.Code != minio.NoSuchBucket) {
		return fmt.Errorf("%w: %q", ErrNotExist, key)
	}
	return fmt.Errorf("storage: %s %q: %w", op, key, s.scrub(err))
}

// Delete implements [Store.Delete]. S3 deletes are idempotent.
func (s *S3) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	if err := s.core.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{}); err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == minio.NoSuchKey {
			return nil
		}
		return fmt.Errorf("storage: delete %q: %w", key, s.scrub(err))
	}
	return nil
}

// PresignGet implements [Presigner]: a URL that downloads the object
// without credentials until ttl (1 s to 7 days) has passed. It does not
// check that the object exists. The URL is a bearer credential for that one
// object: hand it only to whoever may read the video.
func (s *S3) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	obj, err := s.object(key)
	if err != nil {
		return "", err
	}
	if ttl < time.Second || ttl > 7*24*time.Hour {
		return "", fmt.Errorf("storage: presign %q: ttl %v: want between 1s and 7 days", key, ttl)
	}
	u, err := s.core.PresignedGetObject(ctx, s.bucket, obj, ttl, nil)
	if err != nil {
		return "", fmt.Errorf("storage: presign %q: %w", key, s.scrub(err))
	}
	return u.String(), nil
}

// hashingReader hashes and counts what it reads, fails once ctx is done and
// remembers why the source stopped. Its state is guarded by a mutex (not
// held during the source's Read): after a failed request the HTTP
// transport's writer can still be reading while Put inspects the state.
type hashingReader struct {
	ctx context.Context
	r   io.Reader

	mu  sync.Mutex
	h   hash.Hash
	n   int64
	eof bool  // the source said io.EOF
	err error // the source's (or the context's) error
}

func (c *hashingReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	err := c.err
	if err == nil {
		err = c.ctx.Err()
		c.err = err
	}
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.h.Write(p[:n])
	c.n += int64(n)
	switch {
	case err == io.EOF:
		c.eof = true
	case err != nil:
		c.err = err
	}
	return n, err
}

// state returns what has been read so far: the byte count, the hex sha256,
// whether the source ended and its error.
func (c *hashingReader) state() (n int64, sum string, eof bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, hex.EncodeToString(c.h.Sum(nil)), c.eof, c.err
}

// encodeS3Metadata checks user metadata names and encodes values for HTTP
// headers (RFC 2047 "B" encoding for anything but plain printable ASCII).
func encodeS3Metadata(m map[string]string) (map[string]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k == "" || strings.TrimLeft(k, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return nil, fmt.Errorf("metadata key %q: want lower-case ASCII letters, digits, '-' or '_'", k)
		}
		if k == s3SHA256Meta {
			return nil, fmt.Errorf("metadata key %q is reserved", k)
		}
		out[k] = encodeHeaderValue(v)
	}
	return out, nil
}

func encodeHeaderValue(v string) string {
	plain := !strings.HasPrefix(v, "=?") && strings.TrimSpace(v) == v
	for i := 0; plain && i < len(v); i++ {
		plain = v[i] >= 0x20 && v[i] < 0x7f
	}
	if plain {
		return v
	}
	return "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte(v)) + "?="
}

func withSHA(meta map[string]string, sum string) map[string]string {
	out := make(map[string]string, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	out[s3SHA256Meta] = sum
	return out
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// scrub hides any configured secret that appears in err's text.
func (s *S3) scrub(err error) error { return scrub(err, s.secrets...) }

func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	hit := false
	for _, v := range secrets {
		if v != "" && strings.Contains(msg, v) {
			msg, hit = strings.ReplaceAll(msg, v, "[redacted]"), true
		}
	}
	if !hit {
		return err
	}
	return &scrubbedError{msg: msg, err: err}
}

// scrubbedError shows a redacted message and unwraps to the original.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
