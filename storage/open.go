package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Open returns the Store that rawURL names, with the default
// [OpenOptions] (for s3:// URLs: AWS over https, credentials from the
// machine's role). See [OpenWith] for the URL forms.
func Open(ctx context.Context, rawURL string) (Store, error) {
	return OpenWith(ctx, rawURL, OpenOptions{S3: S3Config{UseSSL: true}})
}

// OpenOptions carry the settings a storage URL does not: Open's caller
// (the program's configuration) supplies them, so this package reads no
// environment variables of its own.
type OpenOptions struct {
	// S3 is the base configuration of s3:// URLs (endpoint, region,
	// credentials, TLS, path style, part size). The URL's host and path set
	// Bucket and Prefix, and its query parameters override the rest; see
	// [ParseS3URL]. Note that the zero value has UseSSL false.
	S3 S3Config
}

// OpenWith returns the Store that rawURL names:
//
//   - "file:///abs/path" (or "file://localhost/abs/path"): a [Disk] at /abs/path;
//   - "file://./data" or "file://data": a Disk at ./data, relative to the
//     working directory;
//   - a plain path such as "./data" or "/var/lib/videos": a Disk there;
//   - "s3://bucket" or "s3://bucket/prefix": an [S3] store (see
//     [ParseS3URL] for the query parameters), connected and with the
//     bucket's existence checked.
//
// Percent-escapes in file URLs are decoded. Any other scheme fails with an
// error naming it. Errors show the URL with any password redacted.
func OpenWith(ctx context.Context, rawURL string, opts OpenOptions) (Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if strings.TrimSpace(rawURL) == "" {
		return nil, errors.New("storage: storage URL is empty")
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 {
		// No scheme (or a Windows drive letter): a plain path.
		return NewDisk(rawURL)
	}
	switch u.Scheme { // url.Parse lower-cases the scheme
	case "file":
		p, err := filePath(rawURL)
		if err != nil {
			return nil, fmt.Errorf("storage: storage URL %q: %w", u.Redacted(), err)
		}
		return NewDisk(p)
	case "s3":
		cfg, err := ParseS3URL(rawURL, opts.S3)
		if err != nil {
			return nil, err
		}
		return NewS3(ctx, cfg)
	default:
		return nil, fmt.Errorf("storage: storage URL %q: unknown scheme %q (supported: file, s3, or a plain path)", u.Redacted(), u.Scheme)
	}
}

// ParseS3URL reads "s3://bucket[/prefix][?param=value&…]" on top of base:
// the host is the bucket, the path (slashes trimmed) the key prefix, and
// these query parameters override base's fields:
//
//	endpoint=host[:port] or http(s)://host[:port]   Endpoint
//	region=NAME                                    Region
//	path_style=true|false                          PathStyle
//	ssl=true|false                                 UseSSL
//
// Credentials are never accepted in the URL (it is logged and shown in
// status output): a URL with user information is refused, and so is an
// unknown parameter. Errors show the URL redacted.
func ParseS3URL(rawURL string, base S3Config) (S3Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return S3Config{}, errors.New("storage: storage URL is not a valid URL")
	}
	fail := func(format string, a ...any) (S3Config, error) {
		return S3Config{}, fmt.Errorf("storage: storage URL %q: %s", u.Redacted(), fmt.Sprintf(format, a...))
	}
	if u.Scheme != "s3" {
		return fail("want the s3 scheme")
	}
	if u.User != nil {
		return fail("credentials do not belong in the URL: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	if u.Opaque != "" || u.Host == "" {
		return fail("want s3://bucket or s3://bucket/prefix")
	}
	if u.Fragment != "" {
		return fail("a fragment is not allowed")
	}
	cfg := base
	cfg.Bucket = u.Host
	if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
		return fail("bucket %q: %v", cfg.Bucket, err)
	}
	cfg.Prefix = strings.Trim(u.Path, "/")
	if cfg.Prefix != "" {
		if err := ValidateKey(cfg.Prefix); err != nil {
			return fail("prefix: %v", err)
		}
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	for name, vals := range q {
		v := vals[len(vals)-1]
		switch name {
		case "endpoint":
			cfg.Endpoint = v
		case "region":
			cfg.Region = v
		case "path_style", "ssl":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fail("%s=%q: want true or false", name, v)
			}
			if name == "ssl" {
				cfg.UseSSL = b
			} else {
				cfg.PathStyle = b
			}
		default:
			return fail("unknown parameter %q (known: endpoint, region, path_style, ssl)", name)
		}
	}
	if _, _, err := s3Endpoint(cfg.Endpoint, cfg.UseSSL); err != nil {
		return fail("endpoint: %v", err)
	}
	return cfg, nil
}

// filePath extracts the path from a file URL. url.Parse would read
// "file://./data" as host "." and path "/data", so the text after the
// scheme is taken as written instead.
func filePath(rawURL string) (string, error) {
	rest := rawURL[len("file:"):]
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return "", errors.New("query and fragment are not allowed")
	}
	if r, ok := strings.CutPrefix(rest, "//"); ok {
		rest = r
		if r, ok := strings.CutPrefix(rest, "localhost/"); ok {
			rest = "/" + r
		}
	}
	p, err := url.PathUnescape(rest)
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", errors.New("path is empty")
	}
	return p, nil
}
