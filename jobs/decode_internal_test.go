package jobs

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// TestDecodeCoversEveryField guards against a Record field that is written
// but never read back: each field's stored name is its JSON name.
func TestDecodeCoversEveryField(t *testing.T) {
	rt := reflect.TypeOf(Record{})
	m := map[string]string{}
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			// Stored but kept out of the job API's JSON.
			var ok bool
			if name, ok = map[string]string{"RequestSum": FieldRequestSum}[f.Name]; !ok {
				t.Fatalf("field %s: not in JSON; name its stored field here", f.Name)
			}
		}
		switch {
		case f.Type == reflect.TypeOf(time.Time{}):
			m[name] = "1700000000123"
		case f.Type == reflect.TypeOf(State("")):
			m[name] = "stored"
		case f.Type.Kind() == reflect.String:
			m[name] = "x"
		case f.Type.Kind() == reflect.Int, f.Type.Kind() == reflect.Int64:
			m[name] = "7"
		case f.Type.Kind() == reflect.Bool:
			m[name] = "1"
		case f.Type.Kind() == reflect.Map:
			m[name] = `{"k":"v"}`
		case f.Type == reflect.TypeOf(apiclient.Cost{}):
			m[name] = "0.05"
		case f.Type.Kind() == reflect.Struct:
			m[name] = `{"model":"m","prompt":"p"}`
		default:
			t.Fatalf("field %s: no sample for %s", f.Name, f.Type)
		}
	}
	rec, err := decodeRecord(m)
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(rec).Elem()
	for i := 0; i < rt.NumField(); i++ {
		if v.Field(i).IsZero() {
			t.Errorf("Record.%s is stored but never decoded", rt.Field(i).Name)
		}
	}
	// The early-webhook fields read back exactly (the create step acts on
	// them).
	at := time.UnixMilli(1700000000123).UTC()
	if !rec.EarlyWebhookAt.Equal(at) || rec.EarlyWebhookAt.Location() != time.UTC || rec.EarlyWebhookEvent != "x" || rec.EarlyWebhookKey != "x" || rec.EarlyWebhookVideo != "x" {
		t.Errorf("early webhook fields decoded as %v %q %q %q", rec.EarlyWebhookAt, rec.EarlyWebhookEvent, rec.EarlyWebhookKey, rec.EarlyWebhookVideo)
	}
	// Their Field constants are the fields' JSON names (the stored format).
	for _, f := range []string{FieldEarlyWebhookAt, FieldEarlyWebhookEvent, FieldEarlyWebhookKey, FieldEarlyWebhookVideo} {
		if _, ok := m[f]; !ok {
			t.Errorf("%s is not a Record field's JSON name", f)
		}
	}
}
