package apiclient

import (
	"encoding/json"
	"testing"
)

func TestCostDecode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in    string
		want  int64
		known bool
		bad   bool
	}{
		{`"0.05"`, 50_000, true, false},
		{`"0.00"`, 0, true, false},
		{`"12"`, 12_000_000, true, false},
		{`"1.2345675"`, 1_234_568, true, false},
		{`0.4`, 400_000, true, false},
		{`"1e-2"`, 10_000, true, false},
		{`null`, 0, false, false},
		{`""`, 0, false, false},
		{`"abc"`, 0, false, false},
		{`"1.2.3"`, 0, false, false},
		{`{"usd":1}`, 0, false, false},
		{`"99999999999999999999"`, 0, false, false},
	}
	for _, c := range cases {
		var got Cost
		err := json.Unmarshal([]byte(c.in), &got)
		if (err != nil) != c.bad {
			t.Fatalf("%s: err %v", c.in, err)
		}
		if !c.bad && (got.Micros != c.want || got.Known != c.known) {
			t.Errorf("%s: got %+v, want %d known=%v", c.in, got, c.want, c.known)
		}
	}
	if s := FormatMicros(1_234_500); s != "1.2345" {
		t.Errorf("FormatMicros = %s", s)
	}
	if s := FormatMicros(50_000); s != "0.05" {
		t.Errorf("FormatMicros = %s", s)
	}
}

func TestVideoBilling(t *testing.T) {
	t.Parallel()
	var v Video
	body := `{"id":"G-1","status":"completed","usage":{"cost":0.4,"cost_usd":0.4},
	"billing":{"currency":"usd","estimated_user_cost":"0.40","settled_user_cost":"0.40","state":"settled"}}`
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if v.Billing.EstimatedUserCost.Micros != 400_000 || v.Settled().Micros != 400_000 || v.Billing.State != "settled" {
		t.Fatalf("billing %+v", v.Billing)
	}
	var f Video
	if err := json.Unmarshal([]byte(`{"id":"G-2","status":"failed","billing":{"settled_user_cost":null,"state":"void"}}`), &f); err != nil {
		t.Fatal(err)
	}
	if c := f.Settled(); !c.Known || c.Micros != 0 {
		t.Fatalf("void settled %+v", c)
	}
}
