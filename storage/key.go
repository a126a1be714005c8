package storage

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultKeyTemplate is the key template used when none is configured.
const DefaultKeyTemplate = "videos/{date}/{job_id}.{ext}"

// KeyVars are the values a key template may use.
type KeyVars struct {
	// JobID fills {job_id}.
	JobID string
	// VideoID fills {video_id}.
	VideoID string
	// Index fills {index}; see RenderKey for Index > 0 without {index}.
	Index int
	// Date fills {date} as YYYY-MM-DD in UTC.
	Date time.Time
	// Ext fills {ext}, without a leading dot; "" means "mp4".
	Ext string
}

// RenderKey renders tmpl, replacing {job_id}, {video_id}, {index}, {date}
// (YYYY-MM-DD of Date in UTC) and {ext} (without dot, default "mp4").
//
// Values are encoded by [EscapeKeyValue], an injective escaping that keeps
// [A-Za-z0-9._-] and writes every other byte as "%XX": distinct job ids
// always give distinct keys, a value never adds a path segment, and a value
// never makes a reserved name. When Index > 0 and the template has no
// {index}, "-<index>" is inserted before the extension of the last segment
// (or appended when it has none) so the outputs of one job stand side by
// side.
//
// RenderKey fails on an unknown or unclosed placeholder, on a placeholder
// whose value is missing (empty JobID or VideoID, zero Date, negative
// Index), and when the result is not a valid key for every backend: it must
// pass [ValidateKey], no segment may be longer than [MaxSegmentLen] bytes,
// start with ".tmp-" or end with ".meta" (names the backends reserve). The
// last error wraps [ErrInvalidKey]; it is permanent.
func RenderKey(tmpl string, v KeyVars) (string, error) {
	if v.Index > 0 && !strings.Contains(tmpl, "{index}") {
		tmpl = insertIndex(tmpl)
	}
	var b strings.Builder
	for rest := tmpl; rest != ""; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		if rest[i] == '}' {
			return "", fmt.Errorf("storage: key template %q: unmatched \"}\"", tmpl)
		}
		b.WriteString(rest[:i])
		rest = rest[i+1:]
		j := strings.IndexAny(rest, "{}")
		if j < 0 || rest[j] != '}' {
			return "", fmt.Errorf("storage: key template %q: unclosed \"{\"", tmpl)
		}
		val, err := placeholder(rest[:j], v)
		if err != nil {
			return "", fmt.Errorf("storage: key template %q: %w", tmpl, err)
		}
		b.WriteString(val)
		rest = rest[j+1:]
	}
	key := b.String()
	if err := validateRendered(key); err != nil {
		return "", fmt.Errorf("storage: key template %q: %w", tmpl, err)
	}
	return key, nil
}

// MaxSegmentLen is the longest segment (the text between slashes) in bytes
// of a key [RenderKey] produces: the file name limit of common file systems.
const MaxSegmentLen = 255

// validateRendered applies ValidateKey and the rules every backend needs of
// a key it will write: no reserved names, no segment too long for a file
// name.
func validateRendered(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if problem := segmentProblem(seg); problem != "" {
			return invalidKey(key, problem)
		}
	}
	return nil
}

// segmentProblem names what makes seg unusable as a segment of a stored
// object's key ("" when nothing does).
func segmentProblem(seg string) string {
	switch {
	case len(seg) > MaxSegmentLen:
		return fmt.Sprintf("segment of %d bytes, longer than %d", len(seg), MaxSegmentLen)
	case strings.HasPrefix(seg, tmpPrefix):
		return fmt.Sprintf("segment %q starts with %q, reserved for temporary files", seg, tmpPrefix)
	case strings.HasSuffix(seg, metaSuffix):
		return fmt.Sprintf("segment %q ends with %q, reserved for metadata sidecars", seg, metaSuffix)
	}
	return ""
}

// templateSamples are values CheckKeyTemplate renders a template with: a
// plain one, and values that a template's literal text could complete into
// a reserved name (".tmp-…" or "….meta") once escaped.
var templateSamples = []string{"j", "tmp-x", "mp-x", "p-x", "-x", "x.m", "x.me", "x.met"}

// CheckKeyTemplate reports whether tmpl is usable as the storage key
// template: it must contain {job_id} or {video_id} (otherwise every job
// would write one key), and no job id or video id may turn it into an
// invalid key or a reserved name. Job ids are also checked one by one at
// submission (see tasks.Client); video ids come from the API later, so the
// template must be safe for all of them. Call it at start-up.
func CheckKeyTemplate(tmpl string) error {
	if !strings.Contains(tmpl, "{job_id}") && !strings.Contains(tmpl, "{video_id}") {
		return fmt.Errorf("storage: key template %q: must contain {job_id} or {video_id}, or every job would write the same key", tmpl)
	}
	date := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, v := range templateSamples {
		for _, index := range []int{0, 1} {
			if _, err := RenderKey(tmpl, KeyVars{JobID: v, VideoID: v, Index: index, Date: date}); err != nil {
				return err
			}
		}
	}
	return nil
}

// insertIndex adds a literal "-{index}" before the extension of the
// template's last segment, or at its end when it has no extension.
func insertIndex(tmpl string) string {
	seg := strings.LastIndexByte(tmpl, '/') + 1
	if dot := strings.LastIndexByte(tmpl[seg:], '.'); dot > 0 {
		at := seg + dot
		return tmpl[:at] + "-{index}" + tmpl[at:]
	}
	return tmpl + "-{index}"
}

func placeholder(name string, v KeyVars) (string, error) {
	switch name {
	case "job_id":
		if v.JobID == "" {
			return "", errors.New("{job_id} used but JobID is empty")
		}
		return EscapeKeyValue(v.JobID), nil
	case "video_id":
		if v.VideoID == "" {
			return "", errors.New("{video_id} used but VideoID is empty")
		}
		return EscapeKeyValue(v.VideoID), nil
	case "index":
		if v.Index < 0 {
			return "", fmt.Errorf("{index} used but Index is negative (%d)", v.Index)
		}
		return strconv.Itoa(v.Index), nil
	case "date":
		if v.Date.IsZero() {
			return "", errors.New("{date} used but Date is zero")
		}
		return v.Date.UTC().Format(time.DateOnly), nil
	case "ext":
		ext := strings.TrimPrefix(v.Ext, ".")
		if ext == "" {
			ext = "mp4"
		}
		return EscapeKeyValue(ext), nil
	default:
		return "", fmt.Errorf("unknown placeholder {%s} (known: {job_id}, {video_id}, {index}, {date}, {ext})", name)
	}
}

// EscapeKeyValue is the encoding of a value in a key: bytes of
// [A-Za-z0-9._-] stay as they are and every other byte is written "%XX"
// (upper-case hex), "%" included, so the encoding is reversible (percent
// decoding) and thus injective: "coll:1" is "coll%3A1", "coll_1" stays
// "coll_1". A "." is also escaped where it would start or end the value or
// start a final ".meta", so that no value is "." or "..", starts a hidden
// or temporary name, or ends in a sidecar name. Values made only of
// [A-Za-z0-9_-] with inner dots keep the key earlier versions gave them.
func EscapeKeyValue(s string) string {
	i := 0
	for i < len(s) && keepByte(s, i) {
		i++
	}
	if i == len(s) {
		return s
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		if keepByte(s, i) {
			b = append(b, s[i])
			continue
		}
		b = append(b, '%', hexDigits[s[i]>>4], hexDigits[s[i]&15])
	}
	return string(b)
}

// keepByte reports whether EscapeKeyValue keeps s[i] as it is.
func keepByte(s string, i int) bool {
	switch c := s[i]; {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		return true
	case c == '.':
		return i > 0 && i < len(s)-1 && s[i:] != metaSuffix
	}
	return false
}
