package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/callback"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

func ExampleClient_Submit() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, DB: submitExampleDB})
	defer rdb.Close()

	client := tasks.NewClient(rdb, tasks.ClientOptions{})

	// Choosing the JobID makes Submit idempotent: a retry after a timeout
	// or a crash returns the same job and never starts a second generation.
	req := tasks.Request{
		JobID: "newsletter-2025-03-hero",
		Video: apiclient.CreateRequest{
			Model:    "veo-3",
			Prompt:   "A paper boat drifting down a rainy street at dusk",
			Duration: 8,
		},
		Timeout: 30 * time.Minute,
		Labels:  map[string]string{"campaign": "spring"},
	}
	id, err := client.Submit(ctx, req)
	if err != nil {
		fmt.Println("submit:", err)
		return
	}
	fmt.Println("submitted", id)

	again, err := client.Submit(ctx, req)
	if err != nil {
		fmt.Println("submit:", err)
		return
	}
	fmt.Println("submitted again", again)

	// Invalid requests are refused before anything is stored.
	_, err = client.Submit(ctx, tasks.Request{Video: apiclient.CreateRequest{Model: "veo-3"}})
	fmt.Println("invalid:", errors.Is(err, tasks.ErrInvalidRequest))

	// Output:
	// submitted newsletter-2025-03-hero
	// submitted again newsletter-2025-03-hero
	// invalid: true
}

func ExampleClient_Status() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, DB: statusExampleDB})
	defer rdb.Close()

	client := tasks.NewClient(rdb, tasks.ClientOptions{})

	id, err := client.Submit(ctx, tasks.Request{
		JobID: "product-demo-42",
		Video: apiclient.CreateRequest{Model: "veo-3", Prompt: "A slow orbit around a ceramic teapot"},
	})
	if err != nil {
		fmt.Println("submit:", err)
		return
	}

	rec, err := client.Status(ctx, id)
	if err != nil {
		fmt.Println("status:", err)
		return
	}
	fmt.Println(rec.ID, rec.State, rec.Request.Model, "terminal:", rec.State.Terminal())

	history, err := client.History(ctx, id)
	if err != nil {
		fmt.Println("history:", err)
		return
	}
	for _, e := range history {
		fmt.Println(e.State, e.Event, e.Detail)
	}

	_, err = client.Status(ctx, "no-such-job")
	fmt.Println("unknown job:", errors.Is(err, jobs.ErrNotFound))

	// Output:
	// product-demo-42 queued veo-3 terminal: false
	// queued submitted model veo-3
	// unknown job: true
}

func ExampleVerifyCallback() {
	// What a receiver got (here signed by hand as a worker would sign it
	// with the first of its CALLBACK_SECRETS).
	body := []byte(`{"event_id":"order-7:stored:0","job_id":"order-7","state":"stored"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := fmt.Sprint(now.Unix())
	header := http.Header{}
	header.Set("X-Videoworker-Timestamp", ts)
	header.Set("X-Videoworker-Signature", callback.Sign("whsec_callbacks_0123456789", ts, body))
	header.Set("X-Videoworker-Event-Id", "order-7:stored:0")

	secrets := []string{"whsec_callbacks_0123456789"}
	fmt.Println(tasks.VerifyCallback(secrets, 5*time.Minute, header, body, now))
	fmt.Println(tasks.VerifyCallback(secrets, 5*time.Minute, header, []byte(`{"state":"failed"}`), now))
	fmt.Println(tasks.VerifyCallback(secrets, 5*time.Minute, header, body, now.Add(time.Hour)))
	// Output:
	// <nil>
	// callback: signature does not match
	// callback: timestamp outside the tolerance
}
