package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Open returns the Store that rawURL names:
//
//   - "file:///abs/path" (or "file://localhost/abs/path"): a [Disk] at /abs/path;
//   - "file://./data" or "file://data": a Disk at ./data, relative to the
//     working directory;
//   - a plain path such as "./data" or "/var/lib/videos": a Disk there.
//
// Percent-escapes in file URLs are decoded. An "s3://" URL fails with an
// error saying it is not supported in this build yet (it wraps
// [errors.ErrUnsupported]); any other scheme fails with an error naming it.
// Errors show the URL with any password redacted.
func Open(ctx context.Context, rawURL string) (Store, error) {
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
		return nil, fmt.Errorf("storage: storage URL %q: the s3 backend is not supported in this build yet: %w", u.Redacted(), errors.ErrUnsupported)
	default:
		return nil, fmt.Errorf("storage: storage URL %q: unknown scheme %q (supported: file, or a plain path)", u.Redacted(), u.Scheme)
	}
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
