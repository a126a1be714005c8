package jobs

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/videoworker/videoworker/apiclient"
)

// The encoders of this file write what encoding/json writes for a job's
// request and its history lines, byte for byte, without reflection: a
// batch of submits spent a sixth of its CPU in json.Marshal. A request
// with a field they do not cover (input references, provider objects,
// output, webhook) goes through json.Marshal. TestRequestJSONMatches
// compares them with encoding/json on generated and fuzzed values, and
// fails when CreateRequest gains a field that requestJSON does not know.

// requestJSON is json.Marshal(r) as a string.
func requestJSON(r *apiclient.CreateRequest) string {
	if len(r.InputReferences) > 0 || len(r.ProviderParams) > 0 || r.Output != nil || r.Webhook != nil || len(r.Provider) > 0 {
		b, _ := json.Marshal(r)
		return string(b)
	}
	b := make([]byte, 0, 40+len(r.Model)+len(r.Prompt)+len(r.NegativePrompt))
	b = append(b, `{"model":`...)
	b = appendJSONString(b, r.Model)
	b = append(b, `,"prompt":`...)
	b = appendJSONString(b, r.Prompt)
	if r.Duration != 0 {
		b = append(b, `,"duration":`...)
		b = strconv.AppendInt(b, int64(r.Duration), 10)
	}
	b = appendOptString(b, `,"size":`, r.Size)
	b = appendOptString(b, `,"resolution":`, r.Resolution)
	b = appendOptString(b, `,"aspect_ratio":`, r.AspectRatio)
	if r.Seed != nil {
		b = append(b, `,"seed":`...)
		b = strconv.AppendInt(b, *r.Seed, 10)
	}
	if r.SampleCount != 0 {
		b = append(b, `,"sample_count":`...)
		b = strconv.AppendInt(b, int64(r.SampleCount), 10)
	}
	b = appendOptString(b, `,"negative_prompt":`, r.NegativePrompt)
	if r.GenerateAudio != nil {
		b = append(b, `,"generate_audio":`...)
		b = strconv.AppendBool(b, *r.GenerateAudio)
	}
	if r.EnhancePrompt != nil {
		b = append(b, `,"enhance_prompt":`...)
		b = strconv.AppendBool(b, *r.EnhancePrompt)
	}
	if r.CompressionQuality != nil {
		b = append(b, `,"compression_quality":`...)
		b = strconv.AppendInt(b, int64(*r.CompressionQuality), 10)
	}
	b = appendOptString(b, `,"person_generation":`, r.PersonGeneration)
	b = appendOptString(b, `,"resize_mode":`, r.ResizeMode)
	return string(append(b, '}'))
}

// encodeEvent is e as a history line: json.Marshal of its storedEvent. A
// line written without a state gets the record's state filled in by the
// script that stores it (the scripts look for the empty "s").
func encodeEvent(e Event) string {
	b := make([]byte, 0, 48+len(e.State)+len(e.Event)+len(e.Detail))
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, e.At.UnixMilli(), 10)
	b = append(b, `,"s":`...)
	b = appendJSONString(b, string(e.State))
	b = append(b, `,"e":`...)
	b = appendJSONString(b, e.Event)
	b = appendOptString(b, `,"d":`, e.Detail)
	return string(append(b, '}'))
}

// appendOptString appends name and v unless v is empty (omitempty).
func appendOptString(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(append(b, name...), v)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json quotes a string (with
// its HTML escaping: <, > and & as \u00XX; invalid UTF-8 as \ufffd; U+2028
// and U+2029 escaped).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
