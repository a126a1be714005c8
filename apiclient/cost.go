package apiclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// MicrosPerUSD is how many micro-dollars make a dollar.
const MicrosPerUSD = 1_000_000

// Cost is an amount of US dollars as the API states it (a decimal string,
// a number or null), held as integer micro-dollars: sums over many jobs
// stay exact, where float64 dollars would drift. Known is false for null
// or an absent field. Digits beyond the sixth decimal are rounded half up.
type Cost struct {
	Micros int64
	Known  bool
}

// USD is the amount in dollars, for display.
func (c Cost) USD() float64 { return float64(c.Micros) / MicrosPerUSD }

// String is the amount as a decimal dollar string, or "unknown".
func (c Cost) String() string {
	if !c.Known {
		return "unknown"
	}
	return FormatMicros(c.Micros)
}

// UnmarshalJSON accepts "0.05", 0.05 and null. Anything else (an object,
// a word) decodes as unknown rather than failing the whole video: a cost
// the worker cannot read must not stop it polling the job.
func (c *Cost) UnmarshalJSON(b []byte) error {
	*c = Cost{}
	b = bytes.TrimSpace(b)
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if json.Unmarshal(b, &s) != nil {
			return nil
		}
	}
	if m, err := ParseMicros(s); err == nil {
		*c = Cost{Micros: m, Known: true}
	}
	return nil
}

// MarshalJSON writes the amount as a decimal string, or null.
func (c Cost) MarshalJSON() ([]byte, error) {
	if !c.Known {
		return []byte("null"), nil
	}
	return json.Marshal(FormatMicros(c.Micros))
}

// ParseMicros parses a decimal dollar amount ("12", "0.05", "-1.5",
// "1e-2") into micro-dollars.
func ParseMicros(s string) (int64, error) {
	neg := false
	t := s
	if t != "" && (t[0] == '-' || t[0] == '+') {
		neg, t = t[0] == '-', t[1:]
	}
	var whole, frac int64
	digits, fd := 0, 0
	round := false
	i := 0
	for ; i < len(t) && t[i] >= '0' && t[i] <= '9'; i++ {
		if whole > (1<<62)/10/MicrosPerUSD {
			return 0, fmt.Errorf("cost %q: too large", s)
		}
		whole = whole*10 + int64(t[i]-'0')
		digits++
	}
	if i < len(t) && t[i] == '.' {
		for i++; i < len(t) && t[i] >= '0' && t[i] <= '9'; i++ {
			switch {
			case fd < 6:
				frac = frac*10 + int64(t[i]-'0')
			case fd == 6:
				round = t[i] >= '5'
			}
			fd++
			digits++
		}
	}
	if i != len(t) || digits == 0 {
		// An exponent or anything else: let strconv decide, then round.
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f > 1e12 || f < -1e12 || f != f {
			return 0, fmt.Errorf("cost %q: not a decimal amount", s)
		}
		if f < 0 {
			return -int64(-f*MicrosPerUSD + 0.5), nil
		}
		return int64(f*MicrosPerUSD + 0.5), nil
	}
	for ; fd < 6; fd++ {
		frac *= 10
	}
	m := whole*MicrosPerUSD + frac
	if round {
		m++
	}
	if neg {
		m = -m
	}
	return m, nil
}

// FormatMicros writes micro-dollars as a decimal dollar string with at
// least two decimals ("0.05", "1.234567").
func FormatMicros(m int64) string {
	sign := ""
	if m < 0 {
		sign, m = "-", -m
	}
	frac := strconv.FormatInt(m%MicrosPerUSD+MicrosPerUSD, 10)[1:]
	for len(frac) > 2 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	return sign + strconv.FormatInt(m/MicrosPerUSD, 10) + "." + frac
}

// Billing is the API's billing object of a video: what the job is
// estimated to cost the account (after the create) and what it was
// charged once terminal. State is pending, estimated, settled or void
// (failed, cancelled and expired jobs are void and settle at 0.00).
type Billing struct {
	Currency          string `json:"currency,omitempty"`
	EstimatedUserCost Cost   `json:"estimated_user_cost"`
	SettledUserCost   Cost   `json:"settled_user_cost"`
	State             string `json:"state,omitempty"`
}

// Usage is the API's usage object of a video; Cost is usage.cost.
type Usage struct {
	Cost    Cost `json:"cost"`
	CostUSD Cost `json:"cost_usd"`
}

// Settled is what the job cost once terminal: the billing's settled user
// cost, else usage.cost, else unknown.
func (v *Video) Settled() Cost {
	if v.Billing.SettledUserCost.Known {
		return v.Billing.SettledUserCost
	}
	if v.Billing.State == "void" {
		return Cost{Known: true}
	}
	return v.Usage.Cost
}
