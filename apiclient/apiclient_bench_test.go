package apiclient_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// benchVideo is a completed video object as GET /v1/videos/{id} returns it.
var benchVideo = []byte(`{"id":"vid_0123456789abcdef0123","object":"video","model":"google/veo-3.1-lite","provider":"google",` +
	`"status":"completed","lifecycle_status":"completed","progress":100,"created_at":1790000000,"completed_at":1790000042,` +
	`"expires_at":1790086400,"poll_after_seconds":20,"size":"720p","seconds":8,` +
	`"asset":{"id":"asset_1","mime_type":"video/mp4","bytes":65536,"sha256":"` + strings.Repeat("ab", 32) + `","width":1280,"height":720,"duration_seconds":8},` +
	`"content_url":"https://api.example/v1/videos/vid_0123456789abcdef0123/content",` +
	`"webhook":{"url":"https://hooks.example/aistats?job_id=job_1","events":["video.completed"]}}`)

// BenchmarkDecodeVideo measures decoding the answer of every status check.
func BenchmarkDecodeVideo(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchVideo)))
	for b.Loop() {
		var v apiclient.Video
		if err := json.Unmarshal(benchVideo, &v); err != nil {
			b.Fatal(err)
		}
		if v.Status != apiclient.StatusCompleted {
			b.Fatalf("status %q", v.Status)
		}
	}
}

// BenchmarkGet measures one status check over HTTP (a local server
// answering benchVideo): what the client adds per call, allocations
// included (with tracing off it adds none).
func BenchmarkGet(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(benchVideo)
	}))
	defer srv.Close()
	c, err := apiclient.New(apiclient.Config{BaseURL: srv.URL + "/v1", APIKey: "sk-bench", Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(ctx, "vid_0123456789abcdef0123"); err != nil {
			b.Fatal(err)
		}
	}
}
