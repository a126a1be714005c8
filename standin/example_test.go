package standin_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/videoworker/videoworker/standin"
)

// Example runs one job through the stand-in with a controllable clock.
func Example() {
	var clock atomic.Int64 // unix seconds
	clock.Store(time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC).Unix())
	srv := standin.New(standin.Config{
		APIKey:        "aistats_v1_sk_demo_secret",
		QueuedFor:     5 * time.Second,
		ProcessingFor: 30 * time.Second,
		Now:           func() time.Time { return time.Unix(clock.Load(), 0) },
	}, nil)
	ts := httptest.NewServer(srv)
	defer ts.Close()

	call := func(method, path, body string) []byte {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer aistats_v1_sk_demo_secret")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return b
	}
	var video struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Asset  *struct {
			SHA256 string `json:"sha256"`
		} `json:"asset"`
	}
	_ = json.Unmarshal(call("POST", "/v1/videos", `{"model":"google/veo-3.1-lite","prompt":"a lighthouse at dusk"}`), &video)
	fmt.Println(video.Status)

	clock.Add(20)
	_ = json.Unmarshal(call("GET", "/v1/videos/"+video.ID, ""), &video)
	fmt.Println(video.Status)

	clock.Add(15)
	_ = json.Unmarshal(call("GET", "/v1/videos/"+video.ID, ""), &video)
	content := call("GET", "/v1/videos/"+video.ID+"/content", "")
	sum := sha256.Sum256(content)
	fmt.Println(video.Status, len(content), hex.EncodeToString(sum[:]) == video.Asset.SHA256)
	// Output:
	// queued
	// processing
	// completed 65536 true
}

// ExampleServer_DeliverDue delivers signed webhooks on a fake clock: each
// DeliverDue sends what the clock has made due, synchronously.
func ExampleServer_DeliverDue() {
	const secret = "whsec_demo"
	var clock atomic.Int64 // unix seconds
	clock.Store(time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC).Unix())

	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		want := standin.Sign(secret, r.Header.Get("x-ai-stats-timestamp"), body)
		valid := hmac.Equal([]byte(r.Header.Get("x-ai-stats-signature")), []byte(want))
		fmt.Println(r.Header.Get("x-ai-stats-delivery-key"), "attempt", r.Header.Get("x-ai-stats-attempt"), "valid", valid)
	}))
	defer receiver.Close()

	srv := standin.New(standin.Config{
		APIKey:        "aistats_v1_sk_demo_secret",
		ProcessingFor: 30 * time.Second,
		Now:           func() time.Time { return time.Unix(clock.Load(), 0) },
	}, nil)
	defer srv.Close() // also closes idle webhook connections
	api := httptest.NewServer(srv)
	defer api.Close()

	body := `{"model":"google/veo-3.1-lite","prompt":"a lighthouse at dusk",
		"webhook":{"url":"` + receiver.URL + `","secret":"` + secret + `","events":["job.created","job.completed"]}}`
	req, _ := http.NewRequest("POST", api.URL+"/v1/videos", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer aistats_v1_sk_demo_secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()

	ctx := context.Background()
	srv.DeliverDue(ctx) // video.created
	clock.Add(30)
	srv.DeliverDue(ctx) // video.completed
	// Output:
	// video.created attempt 1 valid true
	// video.completed attempt 1 valid true
}
