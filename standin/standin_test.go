package standin_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/standin"
)

func TestLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{QueuedFor: 10 * time.Second, ProcessingFor: 20 * time.Second, PollAfterSeconds: 20})

	v := b.create(t, nil)
	id := v["id"].(string)
	if !regexp.MustCompile(`^G-[0-9a-f]{20}$`).MatchString(id) {
		t.Errorf("id = %q", id)
	}
	want(t, "object", v["object"], "video")
	want(t, "status", v["status"], "queued")
	want(t, "lifecycle_status", v["lifecycle_status"], "pending")
	want(t, "progress", v["progress"], 0.0)
	want(t, "progress_source", v["progress_source"], "none")
	want(t, "polling_url", v["polling_url"], b.ts.URL+"/v1/videos/"+id)
	want(t, "poll_after_seconds", v["poll_after_seconds"], 20.0)
	want(t, "created_at", v["created_at"], "2026-06-10T20:00:00.123Z")
	want(t, "provider", v["provider"], "google")
	want(t, "model", v["model"], "google/veo-3.1-lite")
	want(t, "output_access", v["output_access"], "both")
	want(t, "content_url", v["content_url"], b.ts.URL+"/v1/videos/"+id+"/content")
	want(t, "billing.state", at(v, "billing", "state"), "pending")
	for _, k := range []string{"started_at", "completed_at", "asset", "download_url", "expires_at", "error"} {
		if val, ok := v[k]; !ok || val != nil {
			t.Errorf("%s = %#v (present %v), want null", k, val, ok)
		}
	}
	wantDeep(t, "outputs", v["outputs"], []any{})
	if _, ok := v["prompt"]; ok {
		t.Error("video object echoes the prompt")
	}

	b.clock.Advance(10 * time.Second)
	v = b.get(t, id)
	want(t, "status", v["status"], "processing")
	want(t, "lifecycle_status", v["lifecycle_status"], "running")
	want(t, "progress", v["progress"], 0.0)
	want(t, "started_at", v["started_at"], "2026-06-10T20:00:10.123Z")

	b.clock.Advance(10 * time.Second)
	v = b.get(t, id)
	want(t, "progress", v["progress"], 50.0)
	want(t, "progress_source", v["progress_source"], "estimated")

	b.clock.Advance(10*time.Second - time.Millisecond)
	want(t, "progress just before the end", b.get(t, id)["progress"], 99.0)

	b.clock.Advance(time.Millisecond)
	v = b.get(t, id)
	want(t, "status", v["status"], "completed")
	want(t, "progress", v["progress"], 100.0)
	want(t, "completed_at", v["completed_at"], "2026-06-10T20:00:30.123Z")
	want(t, "asset.bytes", at(v, "asset", "bytes"), float64(64<<10))
	want(t, "asset.mime_type", at(v, "asset", "mime_type"), "video/mp4")
	want(t, "asset.width", at(v, "asset", "width"), 1280.0)
	want(t, "asset.height", at(v, "asset", "height"), 720.0)
	want(t, "asset.duration_seconds", at(v, "asset", "duration_seconds"), 8.0)
	if s, _ := at(v, "asset", "id").(string); !strings.HasPrefix(s, "ast_") {
		t.Errorf("asset.id = %q", s)
	}
	sum, err := b.srv.ContentSHA256(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "asset.sha256", at(v, "asset", "sha256"), sum)
	want(t, "billing.state", at(v, "billing", "state"), "settled")
	want(t, "billing.settled_user_cost", at(v, "billing", "settled_user_cost"), "0.40")
	want(t, "usage.cost_usd", at(v, "usage", "cost_usd"), 0.4)
	want(t, "outputs[0].index", at(v, "outputs", 0, "index"), 0.0)
	want(t, "outputs[0].content_url", at(v, "outputs", 0, "content_url"), b.ts.URL+"/v1/videos/"+id+"/content")
	dl, _ := v["download_url"].(string)
	if !strings.HasPrefix(dl, b.ts.URL+"/v1/videos/"+id+"/content?download_token=") {
		t.Errorf("download_url = %q", dl)
	}
	want(t, "expires_at", v["expires_at"], float64(epoch.Add(30*time.Second+900*time.Second).Unix()))

	info, ok := b.srv.Job(id)
	if !ok || info.Status != "completed" || info.Prompt != "a red fox in snow" || info.Outputs != 1 || !info.CreatedAt.Equal(epoch) {
		t.Errorf("Job = %+v, %v", info, ok)
	}
}

func TestTerminalOutcomes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		cfg    standin.Config
		status string
		reason string
	}{
		{"failed", standin.Config{FailRate: 1}, "failed", "video_generation_failed"},
		{"expired", standin.Config{ExpireRate: 1}, "expired", "video_expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.QueuedFor, tc.cfg.ProcessingFor = time.Second, time.Second
			b := setup(t, tc.cfg)
			id := b.create(t, nil)["id"].(string)
			b.clock.Advance(2 * time.Second)
			v := b.get(t, id)
			want(t, "status", v["status"], tc.status)
			want(t, "billing.state", at(v, "billing", "state"), "void")
			want(t, "billing.settled_user_cost", at(v, "billing", "settled_user_cost"), "0.00")
			want(t, "billing.billable", at(v, "billing", "billable"), false)
			if v["asset"] != nil || v["download_url"] != nil {
				t.Errorf("asset/download_url set on %s: %v / %v", tc.status, v["asset"], v["download_url"])
			}
			if msg, _ := v["error"].(string); (tc.status == "failed") != (msg != "") {
				t.Errorf("error = %#v", v["error"])
			}
			wantError(t, b.do(t, http.MethodGet, "/v1/videos/"+id+"/content", nil), http.StatusConflict, "not_ready", tc.reason)
			wantError(t, b.do(t, http.MethodPost, "/v1/videos/"+id+"/download_url", nil),
				http.StatusBadRequest, "validation_error", "video_download_requires_completed_status")
			if err := b.srv.Complete(id); !errors.Is(err, standin.ErrTerminal) {
				t.Errorf("Complete on %s = %v, want ErrTerminal", tc.status, err)
			}
		})
	}
}

func TestContent(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{QueuedFor: time.Hour, ContentSize: 100_000})
	v := b.create(t, map[string]any{"sample_count": 2})
	id := v["id"].(string)
	path := "/v1/videos/" + id + "/content"

	m := wantError(t, b.do(t, http.MethodGet, path, nil), http.StatusConflict, "not_ready", "video_not_ready")
	want(t, "generation_id", m["generation_id"], id)
	want(t, "status", m["status"], "queued")

	b.complete(t, id)
	v = b.get(t, id)
	r1 := b.do(t, http.MethodGet, path, nil, "Range", "bytes=0-9")
	if r1.status != http.StatusOK || len(r1.body) != 100_000 {
		t.Fatalf("content: status %d, %d bytes", r1.status, len(r1.body))
	}
	for k, exp := range map[string]string{
		"Content-Type": "video/mp4", "Content-Length": "100000", "Cache-Control": "private, no-store",
		"X-Content-Type-Options": "nosniff", "Content-Disposition": "",
	} {
		if got := r1.header.Get(k); got != exp {
			t.Errorf("%s = %q, want %q", k, got, exp)
		}
	}
	want(t, "asset.sha256", at(v, "asset", "sha256"), sha256Hex(r1.body))
	if sum, _ := b.srv.ContentSHA256(id, 0); sum != sha256Hex(r1.body) {
		t.Errorf("ContentSHA256 = %s, body %s", sum, sha256Hex(r1.body))
	}
	if r2 := b.do(t, http.MethodGet, path+"?index=0", nil); !bytes.Equal(r1.body, r2.body) {
		t.Error("two reads differ")
	}

	want(t, "outputs[1].content_url", at(v, "outputs", 1, "content_url"), b.ts.URL+path+"?index=1")
	r3 := b.do(t, http.MethodGet, path+"?index=1", nil)
	if sum, _ := b.srv.ContentSHA256(id, 1); r3.status != http.StatusOK || sum != sha256Hex(r3.body) || bytes.Equal(r1.body, r3.body) {
		t.Errorf("index 1: status %d, sha %s vs %s", r3.status, sha256Hex(r3.body), sum)
	}
	wantError(t, b.do(t, http.MethodGet, path+"?index=2", nil), http.StatusNotFound, "not_found", "video_output_not_found")
	wantError(t, b.do(t, http.MethodGet, path+"?index=-1", nil), http.StatusBadRequest, "validation_error", "")
	wantError(t, b.do(t, http.MethodGet, path+"?index=x", nil), http.StatusBadRequest, "validation_error", "")
	if _, err := b.srv.ContentSHA256(id, 2); !errors.Is(err, standin.ErrBadIndex) {
		t.Errorf("ContentSHA256 index 2: %v", err)
	}
	if _, err := b.srv.ContentSHA256("G-nope", 0); !errors.Is(err, standin.ErrNotFound) {
		t.Errorf("ContentSHA256 unknown: %v", err)
	}
	if st := b.srv.Stats(); st.BytesServed != 300_000 {
		t.Errorf("BytesServed = %d, want 300000", st.BytesServed)
	}
}

func TestOutputAccess(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{})

	v := b.create(t, map[string]any{"output": map[string]any{"access": "bytes"}})
	want(t, "output_access", v["output_access"], "bytes")
	if _, ok := v["download_url"]; ok {
		t.Error("bytes access: download_url present")
	}

	v = b.create(t, map[string]any{"output": map[string]any{"access": "signed_url"}})
	id := v["id"].(string)
	if _, ok := v["content_url"]; ok {
		t.Error("signed_url access: content_url present")
	}
	v = b.get(t, id) // QueuedFor 0, ProcessingFor 0: completed at once
	want(t, "status", v["status"], "completed")
	wantError(t, b.do(t, http.MethodGet, "/v1/videos/"+id+"/content", nil), http.StatusBadRequest, "not_supported", "video_content_unsupported")
	r := b.do(t, http.MethodGet, v["download_url"].(string), nil, "Authorization", "")
	if r.status != http.StatusOK || int64(len(r.body)) != 64<<10 {
		t.Errorf("signed link: status %d, %d bytes", r.status, len(r.body))
	}
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{})
	big := `{"model":"m/x","prompt":"` + strings.Repeat("a", 16<<20) + `"}`
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
		path   []any // first detail's path, if checked
	}{
		{"unknown field", `{"model":"google/veo-3.1-lite","prompt":"p","colour":"red"}`, 400, "validation_error", []any{"colour"}},
		{"missing prompt", `{"model":"google/veo-3.1-lite"}`, 400, "validation_error", []any{"prompt"}},
		{"missing model", `{"prompt":"p"}`, 400, "validation_error", []any{"model"}},
		{"blank prompt", `{"model":"m/x","prompt":"  "}`, 400, "validation_error", []any{"prompt"}},
		{"size with resolution", `{"model":"m/x","prompt":"p","size":"1280x720","resolution":"720p"}`, 400, "validation_error", []any{"size"}},
		{"size with aspect", `{"model":"m/x","prompt":"p","size":"1280x720","aspect_ratio":"16:9"}`, 400, "validation_error", []any{"size"}},
		{"bad size", `{"model":"m/x","prompt":"p","size":"big"}`, 400, "validation_error", []any{"size"}},
		{"duration too long", `{"model":"m/x","prompt":"p","duration":121}`, 400, "validation_error", []any{"duration"}},
		{"duration fractional", `{"model":"m/x","prompt":"p","duration":1.5}`, 400, "validation_error", []any{"duration"}},
		{"duration as string", `{"model":"m/x","prompt":"p","duration":"8"}`, 400, "validation_error", []any{"duration"}},
		{"seconds not allowed", `{"model":"m/x","prompt":"p","seconds":"7"}`, 400, "validation_error", []any{"seconds"}},
		{"sample_count 0", `{"model":"m/x","prompt":"p","sample_count":0}`, 400, "validation_error", []any{"sample_count"}},
		{"sample_count 5", `{"model":"m/x","prompt":"p","sample_count":5}`, 400, "validation_error", []any{"sample_count"}},
		{"bad resolution", `{"model":"m/x","prompt":"p","resolution":"8K"}`, 400, "validation_error", []any{"resolution"}},
		{"compression 101", `{"model":"m/x","prompt":"p","compression_quality":101}`, 400, "validation_error", []any{"compression_quality"}},
		{"output access", `{"model":"m/x","prompt":"p","output":{"access":"email"}}`, 400, "validation_error", []any{"output", "access"}},
		{"output unknown key", `{"model":"m/x","prompt":"p","output":{"format":"webm"}}`, 400, "validation_error", []any{"output", "format"}},
		{"provider_params model", `{"model":"m/x","prompt":"p","provider_params":{"model":"other"}}`, 400, "validation_error", []any{"provider_params", "model"}},
		{"http media url", `{"model":"m/x","prompt":"p","input_references":[{"type":"video_url","media_url":{"url":"http://x.test/v.mp4"}}]}`, 400, "validation_error", []any{"input_references", 0.0, "media_url", "url"}},
		{"audio without duration", `{"model":"m/x","prompt":"p","input_references":[{"type":"audio_url","media_url":{"url":"https://x.test/a.mp3"}}]}`, 400, "validation_error", []any{"input_audio_duration"}},
		{"reference type", `{"model":"m/x","prompt":"p","input_references":[{"type":"gif","image_url":{"url":"https://x"}}]}`, 400, "validation_error", []any{"input_references", 0.0, "type"}},
		{"webhook http", `{"model":"m/x","prompt":"p","webhook":{"url":"http://example.com/hook"}}`, 400, "validation_error", []any{"webhook", "url"}},
		{"webhook private ip", `{"model":"m/x","prompt":"p","webhook":{"url":"https://10.1.2.3/hook"}}`, 400, "validation_error", []any{"webhook", "url"}},
		{"webhook loopback ip", `{"model":"m/x","prompt":"p","webhook":{"url":"https://127.0.0.2/hook"}}`, 400, "validation_error", []any{"webhook", "url"}},
		{"webhook link-local", `{"model":"m/x","prompt":"p","webhook":{"url":"https://[fe80::1]/hook"}}`, 400, "validation_error", []any{"webhook", "url"}},
		{"webhook wildcard", `{"model":"m/x","prompt":"p","webhook":{"url":"https://0.0.0.0/hook"}}`, 400, "validation_error", []any{"webhook", "url"}},
		{"webhook no url", `{"model":"m/x","prompt":"p","webhook":{"secret":"s"}}`, 400, "validation_error", []any{"webhook", "url"}},
		{"webhook batch events", `{"model":"m/x","prompt":"p","webhook":{"url":"https://h.test/x","events":["batch.completed"]}}`, 400, "validation_error", []any{"webhook", "events"}},
		{"webhook unknown key", `{"model":"m/x","prompt":"p","webhook":{"url":"https://h.test/x","retries":3}}`, 400, "validation_error", []any{"webhook", "retries"}},
		{"invalid json", `{"model":`, 400, "invalid_json", nil},
		{"empty body", ``, 400, "invalid_json", nil},
		{"array body", `[1,2]`, 400, "validation_error", nil},
		{"too large", big, 413, "payload_too_large", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := wantError(t, b.do(t, http.MethodPost, "/v1/videos", tc.body), tc.status, tc.code, "")
			if tc.path != nil {
				wantDeep(t, "details[0].path", at(m, "details", 0, "path"), tc.path)
			}
		})
	}
	t.Run("every problem listed", func(t *testing.T) {
		t.Parallel()
		m := wantError(t, b.do(t, http.MethodPost, "/v1/videos", `{"a":1,"b":2,"sample_count":9}`), 400, "validation_error", "")
		if d, _ := m["details"].([]any); len(d) != 5 { // a, b, model, prompt, sample_count
			t.Errorf("details = %v", m["details"])
		}
	})
	t.Run("nothing created", func(t *testing.T) {
		t.Parallel()
		b := setup(t, standin.Config{})
		b.do(t, http.MethodPost, "/v1/videos", `{"prompt":"p"}`)
		if st := b.srv.Stats(); st.CreateCalls != 1 || st.JobsCreated != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
}

func TestCreateAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{})
	r := b.do(t, http.MethodPost, "/v1/videos", map[string]any{
		"model": "google/veo-3.1", "prompt": "waves", "duration": 6, "resolution": "1080p", "aspect_ratio": "9:16",
		"seed": 42, "sample_count": 2, "negative_prompt": "blur", "generate_audio": true, "enhance_prompt": false,
		"compression_quality": 80, "person_generation": "allow_adult", "resize_mode": "pad",
		"input_references": []any{
			map[string]any{"type": "image_url", "role": "first_frame", "image_url": map[string]any{"url": "https://x.test/a.png"}},
			map[string]any{"type": "audio_url", "media_url": map[string]any{"url": "https://x.test/a.mp3"}},
		},
		"input_audio_duration": 4.5,
		"provider_params":      map[string]any{"personGeneration": "allow_all"},
		"provider":             map[string]any{"order": []string{"google"}},
		"output":               map[string]any{"access": "both"},
		"webhook": map[string]any{"url": "https://hooks.example.com/v", "secret": "whsec_topsecret",
			"events": []string{"job.completed", "batch.completed", "canceled", "video.progress", "job.completed"}},
	})
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if bytes.Contains(r.body, []byte("whsec_topsecret")) || bytes.Contains(r.body, []byte("waves")) {
		t.Errorf("secret or prompt echoed: %s", r.body)
	}
	v := r.obj(t)
	wantDeep(t, "webhook", v["webhook"], map[string]any{
		"url": "https://hooks.example.com/v", "has_secret": true,
		"events": []any{"video.completed", "video.cancelled", "video.progress"},
	})
	want(t, "seconds", v["seconds"], 6.0)
	want(t, "size", v["size"], "1080p")
	want(t, "audio", v["audio"], true)
	want(t, "billing.estimated_user_cost", at(v, "billing", "estimated_user_cost"), "4.80") // 0.40/s * 6 s * 2
	id := v["id"].(string)
	v = b.get(t, id)
	want(t, "asset.width", at(v, "asset", "width"), 1080.0)
	want(t, "asset.height", at(v, "asset", "height"), 1920.0)
	if n := len(v["outputs"].([]any)); n != 2 {
		t.Errorf("outputs = %d, want 2", n)
	}

	for _, u := range []string{"http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/h", "https://hooks.example.com"} {
		v := b.create(t, map[string]any{"webhook": map[string]any{"url": u}})
		wantDeep(t, "default events", at(v, "webhook", "events"),
			[]any{"video.completed", "video.failed", "video.cancelled", "video.expired"})
		want(t, "has_secret", at(v, "webhook", "has_secret"), false)
	}
	v = b.create(t, map[string]any{"model": "openai/sora-2", "seconds": "12", "size": "720x1280", "webhook": nil})
	want(t, "provider", v["provider"], "openai")
	want(t, "seconds", v["seconds"], 12.0)
	want(t, "size", v["size"], "720x1280")
	if _, ok := v["webhook"]; ok {
		t.Error("webhook present without subscription")
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{QueuedFor: time.Hour, ProcessingFor: time.Hour})
	var created []string // oldest first
	for range 7 {
		created = append(created, b.create(t, nil)["id"].(string))
		b.clock.Advance(time.Second)
	}
	for _, i := range []int{1, 3, 5} {
		b.complete(t, created[i])
	}
	pick := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, created[i])
		}
		return out
	}
	list := func(query string) response {
		t.Helper()
		r := b.do(t, http.MethodGet, "/v1/videos"+query, nil)
		if r.status != http.StatusOK {
			t.Fatalf("list %s: %d %s", query, r.status, r.body)
		}
		return r
	}

	r := list("")
	m := r.obj(t)
	want(t, "object", m["object"], "list")
	wantDeep(t, "all", ids(t, r), pick(6, 5, 4, 3, 2, 1, 0))
	want(t, "has_more", m["has_more"], false)

	r = list("?limit=3")
	m = r.obj(t)
	wantDeep(t, "page 1", ids(t, r), pick(6, 5, 4))
	want(t, "first_id", m["first_id"], created[6])
	want(t, "last_id", m["last_id"], created[4])
	want(t, "has_more", m["has_more"], true)
	r = list("?limit=3&after=" + created[4])
	wantDeep(t, "page 2", ids(t, r), pick(3, 2, 1))
	want(t, "has_more", r.obj(t)["has_more"], true)
	r = list("?limit=3&after=" + created[1])
	wantDeep(t, "page 3", ids(t, r), pick(0))
	want(t, "has_more", r.obj(t)["has_more"], false)

	wantDeep(t, "asc", ids(t, list("?order=asc&limit=3")), pick(0, 1, 2))
	wantDeep(t, "asc after", ids(t, list("?order=asc&limit=3&after="+created[2])), pick(3, 4, 5))

	wantDeep(t, "pending", ids(t, list("?status=pending")), pick(6, 4, 2, 0))
	wantDeep(t, "running", ids(t, list("?status=running")), []string(nil))
	wantDeep(t, "succeeded,in_progress", ids(t, list("?status=succeeded,in_progress")), pick(5, 3, 1))
	wantDeep(t, "repeated", ids(t, list("?status=queued&status=completed&limit=2&after="+created[5])), pick(4, 3))
	r = list("?status=pending&limit=2&after=" + created[4])
	wantDeep(t, "filtered page", ids(t, r), pick(2, 0))
	want(t, "has_more", r.obj(t)["has_more"], false)

	b.clock.Advance(time.Hour - 4*time.Second) // t = 1h+3s: jobs 0..3 have started

	wantDeep(t, "processing", ids(t, list("?status=processing")), pick(2, 0))

	if r := b.do(t, http.MethodDelete, "/v1/videos/"+created[5], nil); r.status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	wantDeep(t, "deleted left out", ids(t, list("?status=completed")), pick(3, 1))

	r = list("?status=cancelled")
	m = r.obj(t)
	if m["first_id"] != nil || m["last_id"] != nil || len(m["data"].([]any)) != 0 {
		t.Errorf("empty list = %s", r.body)
	}

	for _, q := range []string{"?limit=0", "?limit=201", "?limit=x", "?order=sideways", "?status=done", "?after=G-00000000000000000000"} {
		wantError(t, b.do(t, http.MethodGet, "/v1/videos"+q, nil), http.StatusBadRequest, "validation_error", "")
	}
	if n := len(ids(t, list("?limit=200"))); n != 6 {
		t.Errorf("limit=200: %d items", n)
	}
}

func TestNotFoundAndDelete(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{QueuedFor: time.Hour})
	wantError(t, b.do(t, http.MethodGet, "/v1/videos/G-unknown", nil), http.StatusNotFound, "not_found", "video_not_found_or_not_owned")
	wantError(t, b.do(t, http.MethodDelete, "/v1/videos/G-unknown", nil), http.StatusNotFound, "not_found", "video_not_found_or_not_owned")
	wantError(t, b.do(t, http.MethodGet, "/v1/videos/G-unknown/content", nil), http.StatusNotFound, "not_found", "video_not_found_or_not_owned")

	id := b.create(t, nil)["id"].(string)
	m := wantError(t, b.do(t, http.MethodDelete, "/v1/videos/"+id, nil), http.StatusBadRequest, "validation_error", "video_delete_requires_terminal_status")
	want(t, "status", m["status"], "queued")

	b.complete(t, id)
	r := b.do(t, http.MethodDelete, "/v1/videos/"+id, nil)
	if r.status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	wantDeep(t, "delete body", r.obj(t), map[string]any{"id": id, "object": "video.deleted", "deleted": true})
	for _, req := range [][2]string{
		{http.MethodGet, ""}, {http.MethodGet, "/content"}, {http.MethodDelete, ""},
		{http.MethodPost, "/download_url"}, {http.MethodPost, "/cancel"},
	} {
		wantError(t, b.do(t, req[0], "/v1/videos/"+id+req[1], nil), http.StatusNotFound, "not_found", "video_deleted")
	}
	if info, ok := b.srv.Job(id); !ok || !info.Deleted || info.Status != "completed" {
		t.Errorf("Job = %+v, %v", info, ok)
	}
	if err := b.srv.Complete(id); !errors.Is(err, standin.ErrTerminal) {
		t.Errorf("Complete deleted = %v", err)
	}
	if err := b.srv.Complete("G-unknown"); !errors.Is(err, standin.ErrNotFound) {
		t.Errorf("Complete unknown = %v", err)
	}
	if _, ok := b.srv.Job("G-unknown"); ok {
		t.Error("Job(unknown) found")
	}
}

func TestSignedLinks(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{ContentSize: 1000})
	id := b.create(t, map[string]any{"sample_count": 2})["id"].(string)
	v := b.get(t, id)
	noBearer := []string{"Authorization", ""}

	link := v["download_url"].(string)
	r := b.do(t, http.MethodGet, link, nil, noBearer...)
	if r.status != http.StatusOK {
		t.Fatalf("signed link: %d %s", r.status, r.body)
	}
	want(t, "Content-Disposition", r.header.Get("Content-Disposition"), `attachment; filename="`+id+`.mp4"`)
	want(t, "sha", sha256Hex(r.body), at(v, "asset", "sha256").(string))

	link1 := at(v, "outputs", 1, "download_url").(string)
	if !strings.Contains(link1, "/content?index=1&download_token=") {
		t.Errorf("output 1 link = %s", link1)
	}
	sum1, _ := b.srv.ContentSHA256(id, 1)
	want(t, "output 1 sha", sha256Hex(b.do(t, http.MethodGet, link1, nil, noBearer...).body), sum1)

	r = b.do(t, http.MethodPost, "/v1/videos/"+id+"/download_url", map[string]any{"ttl_seconds": 5, "disposition": "inline", "index": 1})
	if r.status != http.StatusOK {
		t.Fatalf("download_url: %d %s", r.status, r.body)
	}
	m := r.obj(t)
	want(t, "expires_at (ttl clamped to 60)", m["expires_at"], float64(epoch.Unix()+60))
	link = m["download_url"].(string)
	r = b.do(t, http.MethodGet, link, nil, noBearer...)
	want(t, "status", r.status, http.StatusOK)
	want(t, "Content-Disposition", r.header.Get("Content-Disposition"), `inline; filename="`+id+`.mp4"`)
	want(t, "sha", sha256Hex(r.body), sum1)

	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	sig := []byte(q.Get("download_sig"))
	if sig[len(sig)-1] == '0' { // still a hex digit, now wrong
		sig[len(sig)-1] = '1'
	} else {
		sig[len(sig)-1] = '0'
	}
	q.Set("download_sig", string(sig))
	u.RawQuery = q.Encode()
	tampered := u.String()
	wantError(t, b.do(t, http.MethodGet, tampered, nil, noBearer...), http.StatusUnauthorized, "unauthorised", "")
	r = b.do(t, http.MethodGet, tampered, nil)
	if r.status != http.StatusOK || r.header.Get("Content-Disposition") != "" {
		t.Errorf("tampered link with bearer: %d, disposition %q", r.status, r.header.Get("Content-Disposition"))
	}
	other := b.create(t, nil)["id"].(string)
	wantError(t, b.do(t, http.MethodGet, strings.Replace(link, id, other, 1), nil, noBearer...), http.StatusUnauthorized, "unauthorised", "")
	wantError(t, b.do(t, http.MethodGet, strings.Replace(link, "index=1", "index=0", 1), nil, noBearer...), http.StatusUnauthorized, "unauthorised", "")

	r = b.do(t, http.MethodPost, "/v1/videos/"+id+"/download_url", "")
	want(t, "default ttl", r.obj(t)["expires_at"], float64(epoch.Unix()+900))
	r = b.do(t, http.MethodPost, "/v1/videos/"+id+"/download_url", map[string]any{"ttl_seconds": 100000})
	want(t, "ttl clamped to 3600", r.obj(t)["expires_at"], float64(epoch.Unix()+3600))

	b.clock.Advance(60 * time.Second)
	wantError(t, b.do(t, http.MethodGet, link, nil, noBearer...), http.StatusUnauthorized, "unauthorised", "")

	for _, body := range []string{`{"index":2}`, `{"ttl_seconds":0}`, `{"disposition":"download"}`, `{"ttl":5}`} {
		wantError(t, b.do(t, http.MethodPost, "/v1/videos/"+id+"/download_url", body), http.StatusBadRequest, "validation_error", "")
	}
	wantError(t, b.do(t, http.MethodPost, "/v1/videos/"+id+"/download_url", "{"), http.StatusBadRequest, "invalid_json", "")
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{})
	for _, tc := range []struct{ header, reason string }{
		{"", "missing_api_key"},
		{"Basic " + testKey, "malformed_authorization_header"},
		{"Bearer", "malformed_authorization_header"},
		{"Bearer   ", "malformed_authorization_header"},
		{"Bearer aistats_v1_sk_wrong_key", "invalid_api_key"},
	} {
		for _, path := range []string{"/v1/videos", "/v1/videos/models", "/v1/videos/G-x/content"} {
			r := b.do(t, http.MethodGet, path, nil, "Authorization", tc.header)
			wantError(t, r, http.StatusUnauthorized, "unauthorised", tc.reason)
			if bytes.Contains(r.body, []byte("sk_")) {
				t.Errorf("401 echoes a key: %s", r.body)
			}
		}
	}
	if r := b.do(t, http.MethodGet, "/v1/videos", nil, "Authorization", "bearer "+testKey); r.status != http.StatusOK {
		t.Errorf("lower-case scheme: %d", r.status)
	}

	anyKey := standin.New(standin.Config{}, nil) // APIKey "": any non-empty bearer
	open := &bundle{srv: anyKey, ts: newServer(t, anyKey)}
	if r := open.do(t, http.MethodGet, "/v1/videos", nil, "Authorization", "Bearer whatever"); r.status != http.StatusOK {
		t.Errorf("any bearer: %d %s", r.status, r.body)
	}
	wantError(t, open.do(t, http.MethodGet, "/v1/videos", nil, "Authorization", ""), http.StatusUnauthorized, "unauthorised", "missing_api_key")
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{})
	id := b.create(t, nil)["id"].(string)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPut, "/v1/videos", "GET, POST"},
		{http.MethodPost, "/v1/videos/models", "GET"},
		{http.MethodPatch, "/v1/videos/" + id, "DELETE, GET"},
		{http.MethodPost, "/v1/videos/" + id + "/content", "GET"},
		{http.MethodGet, "/v1/videos/" + id + "/download_url", "POST"},
		{http.MethodGet, "/v1/videos/" + id + "/cancel", "POST"},
	} {
		r := b.do(t, tc.method, tc.path, nil)
		wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed", "")
		want(t, tc.method+" "+tc.path+" Allow", r.header.Get("Allow"), tc.allow)
	}
	for _, p := range []string{"/v1/video", "/v1/videos/", "/v1/videos/" + id + "/remix", "/v1/videos/" + id + "/content/x", "/v1/videos/" + id + "/models", "/v1/videos/" + id + "/{id}", "/"} {
		wantError(t, b.do(t, http.MethodGet, p, nil), http.StatusNotFound, "not_found", "route_not_found")
	}
	m := wantError(t, b.do(t, http.MethodPost, "/v1/videos/"+id+"/cancel", nil), http.StatusNotImplemented, "not_implemented_yet", "video_cancellation_disabled")
	want(t, "error_type", m["error_type"], "system")
	if st := b.srv.Stats(); st.Calls["cancel"] != 1 || st.Calls["create"] != 1 {
		t.Errorf("Calls = %v (405 and 404 are not counted)", st.Calls)
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{})
	models := func(q string) []string {
		r := b.do(t, http.MethodGet, "/v1/videos/models"+q, nil)
		m := r.obj(t)
		want(t, "object", m["object"], "list")
		var out []string
		for _, it := range m["data"].([]any) {
			out = append(out, it.(map[string]any)["model"].(string))
		}
		return out
	}
	all := models("")
	wantDeep(t, "models", all, []string{"google/veo-3.1-lite", "google/veo-3.1", "openai/sora-2"})
	r := b.do(t, http.MethodGet, "/v1/videos/models", nil)
	item := at(r.obj(t), "data", 0).(map[string]any)
	for _, k := range []string{"name", "status", "input_types", "output_types", "supported_params", "supported_parameters",
		"supported_params_detail", "supported_parameters_detail", "providers", "pricing"} {
		if _, ok := item[k]; !ok {
			t.Errorf("model item lacks %s", k)
		}
	}
	want(t, "resolution supported", at(item, "supported_params_detail", "resolution", "supported"), true)
	wantDeep(t, "params=seconds", models("?params=seconds"), []string{"openai/sora-2"})
	wantDeep(t, "params=duration_seconds", models("?params=duration_seconds"), all)
	wantDeep(t, "params=size,negative_prompt", models("?params=size,negative_prompt"), all[:2])
	wantDeep(t, "params repeated", models("?params=size&params=seconds"), all[2:])
	wantDeep(t, "params=telepathy", models("?params=telepathy"), []string(nil))
}

func TestHold(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{QueuedFor: 10 * time.Second, ProcessingFor: 20 * time.Second})
	status := func(id string) (string, float64) {
		v := b.get(t, id)
		return v["status"].(string), v["progress"].(float64)
	}
	done := b.create(t, nil)["id"].(string)
	b.clock.Advance(30 * time.Second) // t=30: done completed
	a := b.create(t, nil)["id"].(string)
	b.clock.Advance(15 * time.Second) // t=45: a processing, 5 s in

	b.srv.Hold(true)
	b.srv.Hold(true) // no-op: the hold keeps its start
	during := b.create(t, nil)["id"].(string)
	forced := b.create(t, nil)["id"].(string)
	b.clock.Advance(time.Hour)
	for _, id := range []string{a, during} {
		if st, _ := status(id); st != "processing" {
			t.Errorf("%s during hold: %s", id, st)
		}
	}
	if _, p := status(a); p != 25 {
		t.Errorf("held progress = %v, want 25 (frozen)", p)
	}
	if st, _ := status(done); st != "completed" {
		t.Errorf("job finished before the hold: %s", st)
	}
	b.complete(t, forced)
	if st, _ := status(forced); st != "completed" {
		t.Errorf("Complete during hold: %s", st)
	}

	late := b.create(t, nil)["id"].(string) // created during the hold but still queued at release
	b.srv.Hold(false)                       // release R = 45 s + 1 h
	b.srv.Hold(false)                       // no-op

	if st, p := status(a); st != "processing" || p != 25 {
		t.Errorf("a at release: %s %v", st, p)
	}
	b.clock.Advance(15*time.Second - time.Millisecond)
	if st, _ := status(a); st != "processing" {
		t.Errorf("a before its remaining 15 s: %s", st)
	}
	b.clock.Advance(time.Millisecond)
	if st, _ := status(a); st != "completed" {
		t.Errorf("a after its remaining 15 s: %s", st)
	}
	if st, _ := status(during); st != "processing" {
		t.Errorf("job created during hold, 15 s after release: %s", st)
	}
	b.clock.Advance(5 * time.Second) // R+20
	if st, _ := status(during); st != "completed" {
		t.Errorf("job created during hold, 20 s after release: %s", st)
	}
	if st, p := status(late); st != "processing" || p != 50 {
		t.Errorf("late job at R+20 (its own schedule): %s %v", st, p)
	}
	b.clock.Advance(10 * time.Second)
	if st, _ := status(late); st != "completed" {
		t.Errorf("late job at R+30: %s", st)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{ContentSize: 10})
	b.create(t, nil, "Idempotency-Key", "k1")
	b.create(t, nil, "Idempotency-Key", "k1") // recorded, not honoured
	id := b.create(t, map[string]any{"prompt": "other"})["id"].(string)
	b.do(t, http.MethodGet, "/v1/videos/"+id+"/content", nil)
	b.do(t, http.MethodGet, "/v1/videos/"+id+"/content", nil)
	b.do(t, http.MethodGet, "/v1/videos", nil)
	b.do(t, http.MethodGet, "/v1/videos/"+id, nil)
	b.do(t, http.MethodPost, "/v1/videos", `{}`)

	st := b.srv.Stats()
	want(t, "CreateCalls", st.CreateCalls, 4)
	want(t, "JobsCreated", st.JobsCreated, 3)
	wantDeep(t, "JobsByIdempotencyKey", st.JobsByIdempotencyKey, map[string]int{"k1": 2, "": 1})
	wantDeep(t, "JobsByPrompt", st.JobsByPrompt, map[string]int{"a red fox in snow": 2, "other": 1})
	wantDeep(t, "Calls", st.Calls, map[string]int{"create": 4, "content": 2, "list": 1, "get": 1})
	wantDeep(t, "Faults", st.Faults, map[string]int{})
	want(t, "BytesServed", st.BytesServed, int64(20))
	if info, _ := b.srv.Job(id); info.IdempotencyKey != "" {
		t.Errorf("IdempotencyKey = %q", info.IdempotencyKey)
	}

	st.Calls["create"] = 99
	st.JobsByPrompt["x"] = 1
	if again := b.srv.Stats(); again.Calls["create"] != 4 || len(again.JobsByPrompt) != 2 {
		t.Error("Stats is not a deep copy")
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{ContentSize: 1 << 10})
	const workers, each = 8, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				req := func(method, path, body string) *http.Response {
					r, err := http.NewRequestWithContext(t.Context(), method, b.ts.URL+path, strings.NewReader(body))
					if err != nil {
						panic(err)
					}
					r.Header.Set("Authorization", "Bearer "+testKey)
					res, err := b.ts.Client().Do(r)
					if err != nil {
						t.Error(err)
						return nil
					}
					res.Body.Close()
					return res
				}
				req(http.MethodPost, "/v1/videos", `{"model":"m/x","prompt":"p"}`)
				req(http.MethodGet, "/v1/videos?limit=5", "")
				if w == 0 && i%5 == 0 {
					b.srv.Hold(i%10 == 0)
					b.srv.SetFaults(standin.Faults{Latency: time.Duration(i % 2)})
				}
				_ = b.srv.Stats()
			}
		})
	}
	wg.Wait()
	if st := b.srv.Stats(); st.JobsCreated != workers*each || st.Calls["list"] != workers*each {
		t.Errorf("stats = %+v", st)
	}
}

// With no queue or processing time the create answer is already terminal
// and must carry the real asset hash.
func TestCreateCompletedAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{ContentSize: 5000})
	v := b.create(t, nil)
	want(t, "status", v["status"], "completed")
	sum, err := b.srv.ContentSHA256(v["id"].(string), 0)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "asset.sha256", at(v, "asset", "sha256"), sum)
}

// TestPriceTable: a configured price sets the estimate at create and the
// settled cost at completion.
func TestPriceTable(t *testing.T) {
	t.Parallel()
	b := setup(t, standin.Config{QueuedFor: time.Second, ProcessingFor: time.Second,
		PricePerSecond: map[string]float64{"google/veo-3.1-lite": 0.25}})
	v := b.create(t, map[string]any{"duration": 4})
	want(t, "billing.estimated_user_cost", at(v, "billing", "estimated_user_cost"), "1.00")
	b.clock.Advance(2 * time.Second)
	v = b.get(t, v["id"].(string))
	want(t, "billing.state", at(v, "billing", "state"), "settled")
	want(t, "billing.settled_user_cost", at(v, "billing", "settled_user_cost"), "1.00")
}
