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
// Values are sanitised: every byte outside [A-Za-z0-9._-] becomes "_", and a
// value of "." or ".." becomes "_" or "__", so a value can never add a path
// segment. When Index > 0 and the template has no {index}, "-<index>" is
// inserted before the extension of the last segment (or appended when it has
// none) so the outputs of one job stand side by side.
//
// RenderKey fails on an unknown or unclosed placeholder, on a placeholder
// whose value is missing (empty JobID or VideoID, zero Date, negative
// Index), and when the result does not pass [ValidateKey]; the last error
// wraps [ErrInvalidKey].
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
	if err := ValidateKey(key); err != nil {
		return "", fmt.Errorf("storage: key template %q: %w", tmpl, err)
	}
	return key, nil
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
		return sanitize(v.JobID), nil
	case "video_id":
		if v.VideoID == "" {
			return "", errors.New("{video_id} used but VideoID is empty")
		}
		return sanitize(v.VideoID), nil
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
		return sanitize(ext), nil
	default:
		return "", fmt.Errorf("unknown placeholder {%s} (known: {job_id}, {video_id}, {index}, {date}, {ext})", name)
	}
}

// sanitize maps every byte outside [A-Za-z0-9._-] to '_' and turns "." and
// ".." into underscores, so the result is always a single safe segment.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			b[i] = '_'
		}
	}
	switch s = string(b); s {
	case ".":
		return "_"
	case "..":
		return "__"
	}
	return s
}
