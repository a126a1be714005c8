package jobs

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/videoworker/videoworker/apiclient"
)

// ParseModelPricing reads the pricing object of one model of GET
// /videos/models. The reference lists the field but not its shape, so
// only these shapes are read (amounts in USD, a JSON number or a decimal
// string, at least 0):
//
//	{"per_second_usd": 0.05}            per second of video, per sample
//	{"usd_per_second": "0.05"}          the same
//	{"per_video_usd": 0.40}             per video, per sample
//	{"usd_per_video": 0.40}             the same
//	{"unit": "second", "price": 0.05}   unit second(s)/s/sec or video(s); "amount" for "price"
//
// Each may carry "currency" (usd, any case), "unit" agreeing with the
// price's key, and "description". Anything else gives ok false, never a
// guess: another currency, a field this reader does not know, an object
// or a list (tiers, prices by resolution), both a per-second and a
// per-video price, a negative or missing amount. A model with no
// recognised price is priced by MODEL_PRICES only.
func ParseModelPricing(raw json.RawMessage) (Price, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Price{}, false
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Price{}, false
	}
	var unit string
	var amount json.RawMessage
	setAmount := func(u string, v json.RawMessage) bool {
		if amount != nil {
			return false // two prices: which one?
		}
		unit, amount = u, v
		return true
	}
	statedUnit := ""
	for k, v := range fields {
		switch strings.ToLower(k) {
		case "per_second_usd", "usd_per_second":
			if !setAmount("second", v) {
				return Price{}, false
			}
		case "per_video_usd", "usd_per_video":
			if !setAmount("video", v) {
				return Price{}, false
			}
		case "price", "amount":
			if !setAmount("", v) {
				return Price{}, false
			}
		case "currency":
			var c string
			if json.Unmarshal(v, &c) != nil || !strings.EqualFold(strings.TrimSpace(c), "usd") {
				return Price{}, false
			}
		case "unit":
			var u string
			if json.Unmarshal(v, &u) != nil {
				return Price{}, false
			}
			switch strings.ToLower(strings.TrimSpace(u)) {
			case "second", "seconds", "s", "sec", "per_second":
				statedUnit = "second"
			case "video", "videos", "per_video":
				statedUnit = "video"
			default:
				return Price{}, false
			}
		case "description":
			var d string
			if json.Unmarshal(v, &d) != nil {
				return Price{}, false
			}
		default:
			return Price{}, false
		}
	}
	switch {
	case amount == nil:
		return Price{}, false
	case unit == "":
		unit = statedUnit // "price"/"amount" need a unit
	case statedUnit != "" && statedUnit != unit:
		return Price{}, false
	}
	if unit == "" {
		return Price{}, false
	}
	micros, ok := usdMicros(amount)
	if !ok {
		return Price{}, false
	}
	if unit == "second" {
		return Price{PerSecond: micros}, true
	}
	return Price{PerVideo: micros}, true
}

// usdMicros reads a JSON number or decimal string of dollars, at least 0.
func usdMicros(v json.RawMessage) (int64, bool) {
	v = bytes.TrimSpace(v)
	s := string(v)
	if len(v) > 0 && v[0] == '"' {
		if json.Unmarshal(v, &s) != nil {
			return 0, false
		}
		s = strings.TrimSpace(s)
	} else if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return 0, false // null, true, an object...
	}
	m, err := apiclient.ParseMicros(s)
	if err != nil || m < 0 {
		return 0, false
	}
	return m, true
}

// APIPrices reads the prices of the models of GET /videos/models with
// ParseModelPricing; unrecognised lists the models whose pricing it
// could not read (priced by MODEL_PRICES only).
func APIPrices(models []apiclient.Model) (prices map[string]Price, unrecognised []string) {
	prices = make(map[string]Price, len(models))
	for _, m := range models {
		if m.Model == "" {
			continue
		}
		if p, ok := ParseModelPricing(m.Pricing); ok {
			prices[m.Model] = p
		} else {
			unrecognised = append(unrecognised, m.Model)
		}
	}
	return prices, unrecognised
}
