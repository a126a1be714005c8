package webhook_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/webhook"
)

// benchDelivery is a typical video.completed delivery body.
var benchDelivery = []byte(`{"id":"evt_video_vid_0123456789abcdef0123_completed","type":"video.completed","created_at":1790000000,` +
	`"delivery":{"key":"completed","attempt":1,"max_attempts":4},"data":{"id":"vid_0123456789abcdef0123","object":"video",` +
	`"kind":"video","model":"google/veo-3.1-lite","status":"completed","progress":100,"created_at":1790000000,"completed_at":1790000042,` +
	`"size":"720p","seconds":"8","asset":{"id":"asset_1","mime_type":"video/mp4","bytes":65536,` +
	`"sha256":"` + strings.Repeat("ab", 32) + `"}}}`)

func benchHeaders(b *testing.B, secret string, now time.Time) webhook.Headers {
	b.Helper()
	ts := strconv.FormatInt(now.Unix(), 10)
	h := http.Header{}
	h.Set("x-ai-stats-timestamp", ts)
	h.Set("x-ai-stats-signature", webhook.Sign([]byte(secret), ts, benchDelivery))
	h.Set("x-ai-stats-event-id", "evt_1")
	h.Set("x-ai-stats-event-type", "video.completed")
	h.Set("x-ai-stats-delivery-key", "completed")
	h.Set("x-ai-stats-attempt", "1")
	return webhook.ReadHeaders(h)
}

// BenchmarkVerify measures checking a delivery's signature under the
// current secret.
func BenchmarkVerify(b *testing.B) {
	now := time.Now()
	v, err := webhook.NewVerifier([]string{"whsec_current"}, 0, func() time.Time { return now })
	if err != nil {
		b.Fatal(err)
	}
	hd := benchHeaders(b, "whsec_current", now)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchDelivery)))
	for b.Loop() {
		if err := v.Verify(hd, benchDelivery); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyRotated measures a delivery signed with the older of two
// secrets during a rotation (two HMACs).
func BenchmarkVerifyRotated(b *testing.B) {
	now := time.Now()
	v, err := webhook.NewVerifier([]string{"whsec_new", "whsec_old"}, 0, func() time.Time { return now })
	if err != nil {
		b.Fatal(err)
	}
	hd := benchHeaders(b, "whsec_old", now)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchDelivery)))
	for b.Loop() {
		if err := v.Verify(hd, benchDelivery); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadHeaders measures picking the webhook headers out of a
// request.
func BenchmarkReadHeaders(b *testing.B) {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := http.Header{}
	h.Set("x-ai-stats-timestamp", ts)
	h.Set("x-ai-stats-signature", strings.Repeat("ab", 32))
	h.Set("x-ai-stats-delivery-key", "completed")
	h.Set("x-ai-stats-attempt", "1")
	b.ReportAllocs()
	for b.Loop() {
		if hd := webhook.ReadHeaders(h); hd.Signature == "" {
			b.Fatal("no signature read")
		}
	}
}
