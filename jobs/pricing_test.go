package jobs_test

import (
	"encoding/json"
	"testing"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
)

func TestParseModelPricing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		raw  string
		want jobs.Price
		ok   bool
	}{
		// The stand-in's shape, and the others read.
		{`{"currency":"usd","unit":"second","per_second_usd":"0.05"}`, jobs.Price{PerSecond: 50_000}, true},
		{`{"per_second_usd": 0.05}`, jobs.Price{PerSecond: 50_000}, true},
		{`{"usd_per_second": "0.5"}`, jobs.Price{PerSecond: 500_000}, true},
		{`{"per_video_usd": 0.40, "currency": "USD"}`, jobs.Price{PerVideo: 400_000}, true},
		{`{"usd_per_video": "1", "unit": "video"}`, jobs.Price{PerVideo: 1_000_000}, true},
		{`{"unit": "seconds", "price": 0.1, "currency": "usd"}`, jobs.Price{PerSecond: 100_000}, true},
		{`{"unit": "video", "amount": "2.5", "description": "per clip"}`, jobs.Price{PerVideo: 2_500_000}, true},
		{`{"per_second_usd": 0}`, jobs.Price{}, true},
		// Never a guess.
		{``, jobs.Price{}, false},
		{`null`, jobs.Price{}, false},
		{`0.05`, jobs.Price{}, false},
		{`"0.05/s"`, jobs.Price{}, false},
		{`{}`, jobs.Price{}, false},
		{`{"per_second_usd": 0.05, "currency": "eur"}`, jobs.Price{}, false},
		{`{"per_second_usd": 0.05, "per_video_usd": 0.1}`, jobs.Price{}, false},
		{`{"per_second_usd": {"720p": 0.1, "1080p": 0.2}}`, jobs.Price{}, false},
		{`{"per_second_usd": 0.05, "tiers": []}`, jobs.Price{}, false},
		{`{"per_second_usd": 0.05, "resolution_multiplier": 2}`, jobs.Price{}, false},
		{`{"per_second_usd": 0.05, "unit": "video"}`, jobs.Price{}, false},
		{`{"price": 0.05}`, jobs.Price{}, false},
		{`{"unit": "token", "price": 0.05}`, jobs.Price{}, false},
		{`{"per_second_usd": -1}`, jobs.Price{}, false},
		{`{"per_second_usd": null}`, jobs.Price{}, false},
		{`{"per_second_usd": "cheap"}`, jobs.Price{}, false},
		{`{"per_second_usd": true}`, jobs.Price{}, false},
		{`{"per_second_usd": 0.05`, jobs.Price{}, false},
	} {
		got, ok := jobs.ParseModelPricing(json.RawMessage(c.raw))
		if got != c.want || ok != c.ok {
			t.Errorf("ParseModelPricing(%s) = %+v, %v; want %+v, %v", c.raw, got, ok, c.want, c.ok)
		}
	}
}

func TestAPIPrices(t *testing.T) {
	t.Parallel()
	prices, unrecognised := jobs.APIPrices([]apiclient.Model{
		{Model: "a", Pricing: json.RawMessage(`{"per_second_usd": "0.05"}`)},
		{Model: "b", Pricing: json.RawMessage(`{"tiers": []}`)},
		{Model: "c"},
		{Pricing: json.RawMessage(`{"per_second_usd": "0.05"}`)},
	})
	if len(prices) != 1 || prices["a"].PerSecond != 50_000 || len(unrecognised) != 2 {
		t.Errorf("prices %v, unrecognised %v", prices, unrecognised)
	}
}

func FuzzParseModelPricing(f *testing.F) {
	f.Add(`{"per_second_usd": "0.05"}`)
	f.Add(`{"unit": "video", "amount": 1}`)
	f.Fuzz(func(t *testing.T, raw string) {
		p, ok := jobs.ParseModelPricing(json.RawMessage(raw))
		if ok && (p.PerSecond < 0 || p.PerVideo < 0 || (p.PerSecond != 0 && p.PerVideo != 0)) {
			t.Errorf("%s: %+v", raw, p)
		}
		if !ok && p != (jobs.Price{}) {
			t.Errorf("%s: not ok but %+v", raw, p)
		}
	})
}
