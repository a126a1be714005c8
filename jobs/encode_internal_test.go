package jobs

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// TestRequestJSONKnowsEveryField fails when apiclient.CreateRequest gains
// a field: requestJSON would drop it silently. Add the field to
// requestJSON (or to its json.Marshal condition) and to the list below.
func TestRequestJSONKnowsEveryField(t *testing.T) {
	t.Parallel()
	known := []string{"Model", "Prompt", "Duration", "Size", "Resolution", "AspectRatio", "Seed", "SampleCount",
		"NegativePrompt", "GenerateAudio", "EnhancePrompt", "CompressionQuality", "PersonGeneration", "ResizeMode",
		"InputReferences", "ProviderParams", "Output", "Webhook", "Provider"}
	var have []string
	rt := reflect.TypeFor[apiclient.CreateRequest]()
	for i := range rt.NumField() {
		have = append(have, rt.Field(i).Name)
	}
	if !slices.Equal(have, known) {
		t.Errorf("CreateRequest's fields changed: have %v, requestJSON knows %v", have, known)
	}
}

// strs are strings that need every kind of JSON escaping.
var strs = []string{"", "plain", `q"uote\back`, "<a href='x'>&amp;</a>", "tab\tnl\ncr\r\b\f\x00\x1f\x7f",
	"ünïcödé 日本 🎬", "bad \xff utf8 \xe2\x82", "line\u2028para\u2029", "é\xc3"}

func TestRequestJSONMatches(t *testing.T) {
	t.Parallel()
	seed, q := int64(42), 7
	yes, no := true, false
	zero := int64(0)
	reqs := []apiclient.CreateRequest{
		{},
		{Model: "google/veo-3.1", Prompt: "a cat"},
		{Model: "m", Prompt: "p", Duration: 8, Size: "1280x720", Seed: &seed, SampleCount: 2, NegativePrompt: "dogs",
			GenerateAudio: &yes, EnhancePrompt: &no, CompressionQuality: &q, PersonGeneration: "allow_adult", ResizeMode: "pad"},
		{Model: "m", Prompt: "p", Resolution: "720p", AspectRatio: "16:9", Seed: &zero, Duration: -3},
		{Model: "m", Prompt: "p", ProviderParams: map[string]any{"a": 1}},
		{Model: "m", Prompt: "p", InputReferences: []json.RawMessage{json.RawMessage(`{"x":1}`)}},
		{Model: "m", Prompt: "p", Output: &apiclient.OutputOptions{Access: "bytes"}},
		{Model: "m", Prompt: "p", Provider: map[string]any{"order": []string{"x"}}},
	}
	for _, s := range strs {
		reqs = append(reqs, apiclient.CreateRequest{Model: s, Prompt: s, NegativePrompt: s, Size: s, ResizeMode: s})
	}
	for _, r := range reqs {
		want, _ := json.Marshal(r)
		if got := requestJSON(&r); got != string(want) {
			t.Errorf("requestJSON(%+v)\n got %s\nwant %s", r, got, want)
		}
	}
	for _, s := range strs {
		// A transition's line has no state yet: its script fills it in.
		for _, st := range []State{StateQueued, ""} {
			e := Event{At: time.UnixMilli(1700000000123), State: st, Event: "submitted", Detail: s}
			want, _ := json.Marshal(storedEvent{T: e.At.UnixMilli(), S: e.State, E: e.Event, D: e.Detail})
			if got := encodeEvent(e); got != string(want) {
				t.Errorf("encodeEvent(%q, state %q) = %s, want %s", s, st, got, want)
			}
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range strs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	})
}
