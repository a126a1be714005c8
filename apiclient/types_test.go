package apiclient_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/videoworker/videoworker/apiclient"
)

func TestParseStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		want     apiclient.Status
		terminal bool
	}{
		// canonical values (section 4)
		{"queued", apiclient.StatusQueued, false},
		{"processing", apiclient.StatusProcessing, false},
		{"completed", apiclient.StatusCompleted, true},
		{"failed", apiclient.StatusFailed, true},
		{"cancelled", apiclient.StatusCancelled, true},
		{"expired", apiclient.StatusExpired, true},
		// aliases the source normalises (section 4, 3.4)
		{"pending", apiclient.StatusQueued, false},
		{"in_progress", apiclient.StatusProcessing, false},
		{"running", apiclient.StatusProcessing, false},
		{"canceled", apiclient.StatusCancelled, true},
		{"succeeded", apiclient.StatusCompleted, true},
		{"error", apiclient.StatusFailed, true},
		// case and surrounding space are ignored
		{"QUEUED", apiclient.StatusQueued, false},
		{"Pending", apiclient.StatusQueued, false},
		{"In_Progress", apiclient.StatusProcessing, false},
		{" Running\t", apiclient.StatusProcessing, false},
		{"Completed", apiclient.StatusCompleted, true},
		{"SUCCEEDED", apiclient.StatusCompleted, true},
		{"Error", apiclient.StatusFailed, true},
		{"CANCELED", apiclient.StatusCancelled, true},
		{"Cancelled ", apiclient.StatusCancelled, true},
		{"eXpIrEd", apiclient.StatusExpired, true},
		// unknown values are kept (normalised) and are never terminal
		{"", "", false},
		{"paused", "paused", false},
		{"Awaiting_Upload", "awaiting_upload", false},
		{"in progress", "in progress", false},
		{"done", "done", false},
		{"complete", "complete", false},
		{"fail", "fail", false},
	}
	for _, tt := range tests {
		got := apiclient.ParseStatus(tt.in)
		if got != tt.want {
			t.Errorf("ParseStatus(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got.Terminal() != tt.terminal {
			t.Errorf("ParseStatus(%q).Terminal() = %v, want %v", tt.in, got.Terminal(), tt.terminal)
		}
		// Parsing is idempotent.
		if again := apiclient.ParseStatus(string(got)); again != got {
			t.Errorf("ParseStatus(ParseStatus(%q)) = %q, want %q", tt.in, again, got)
		}
	}
}

func TestStatusTerminalOfRawValues(t *testing.T) {
	t.Parallel()
	// Terminal looks at canonical values only: an alias that was not parsed
	// is not terminal.
	for _, s := range []apiclient.Status{"succeeded", "canceled", "error", "Completed", "unknown", ""} {
		if s.Terminal() {
			t.Errorf("Status(%q).Terminal() = true, want false", s)
		}
	}
}

func TestStatusUnmarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    apiclient.Status
		wantErr bool
	}{
		{`"in_progress"`, apiclient.StatusProcessing, false},
		{`"CANCELED"`, apiclient.StatusCancelled, false},
		{`"mystery"`, "mystery", false},
		{`null`, "", false},
		{`42`, "", true},
		{`{}`, "", true},
		{`true`, "", true},
	}
	for _, tt := range tests {
		var s apiclient.Status = "preset"
		err := json.Unmarshal([]byte(tt.in), &s)
		if (err != nil) != tt.wantErr {
			t.Errorf("Unmarshal(%s) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && s != tt.want {
			t.Errorf("Unmarshal(%s) = %q, want %q", tt.in, s, tt.want)
		}
	}
}

func TestTimeUnmarshalJSON(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC) // 1781121600
	if base.Unix() != 1781121600 {
		t.Fatalf("test setup: base is %d", base.Unix())
	}
	tests := []struct {
		name string
		in   string
		want time.Time
	}{
		{"unix seconds int", `1781121600`, base},
		{"unix seconds zero", `0`, time.Unix(0, 0).UTC()},
		{"unix milliseconds", `1781121600123`, base.Add(123 * time.Millisecond)},
		{"float seconds", `1781121600.5`, base.Add(500 * time.Millisecond)},
		{"float seconds quarter", `1781121600.25`, base.Add(250 * time.Millisecond)},
		{"exponent seconds", `1.7811216e9`, base},
		{"numeric string seconds", `"1781121600"`, base},
		{"numeric string millis", `"1781121600123"`, base.Add(123 * time.Millisecond)},
		{"numeric string float", `"1781121600.5"`, base.Add(500 * time.Millisecond)},
		{"ISO with ms and Z", `"2026-06-10T20:00:00.000Z"`, base},
		{"ISO with ms", `"2026-06-10T20:00:00.123Z"`, base.Add(123 * time.Millisecond)},
		{"ISO without ms", `"2026-06-10T20:00:00Z"`, base},
		{"ISO with microseconds", `"2026-06-10T20:00:00.123456Z"`, base.Add(123456 * time.Microsecond)},
		{"ISO with offset", `"2026-06-10T22:00:00+02:00"`, base},
		{"ISO with negative offset and ms", `"2026-06-10T15:30:00.250-04:30"`, base.Add(250 * time.Millisecond)},
		{"ISO without zone (UTC assumed)", `"2026-06-10T20:00:00"`, base},
		{"ISO without zone with ms", `"2026-06-10T20:00:00.750"`, base.Add(750 * time.Millisecond)},
		{"space separator with zone", `"2026-06-10 20:00:00Z"`, base},
		{"space separator with offset", `"2026-06-10 21:00:00+01:00"`, base},
		{"space separator without zone", `"2026-06-10 20:00:00"`, base},
		{"null", `null`, time.Time{}},
		{"empty string", `""`, time.Time{}},
		{"surrounding space", " 1781121600 ", base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tm := apiclient.Time{Time: time.Unix(1, 0)} // must be overwritten
			if err := tm.UnmarshalJSON([]byte(tt.in)); err != nil {
				t.Fatalf("UnmarshalJSON(%s): %v", tt.in, err)
			}
			if !tm.Equal(tt.want) || tm.IsZero() != tt.want.IsZero() {
				t.Errorf("UnmarshalJSON(%s) = %v, want %v", tt.in, tm.Time, tt.want)
			}
			if !tm.IsZero() && tm.Location() != time.UTC {
				t.Errorf("UnmarshalJSON(%s) location = %v, want UTC", tt.in, tm.Location())
			}
		})
	}
}

func TestTimeUnmarshalJSONInStruct(t *testing.T) {
	t.Parallel()
	var v struct {
		A, B, C, D apiclient.Time
	}
	in := `{"A":1781121600,"B":"2026-06-10T20:00:00.000Z","C":null}`
	if err := json.Unmarshal([]byte(in), &v); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)
	if !v.A.Equal(want) || !v.B.Equal(want) || !v.C.IsZero() || !v.D.IsZero() {
		t.Errorf("got %v %v %v %v", v.A, v.B, v.C, v.D)
	}
}

func TestTimeUnmarshalJSONErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`"yesterday"`,
		`"2026-13-01T00:00:00Z"`,
		`"2026-06-10"`,
		`"10/06/2026 20:00"`,
		`"2026-06-10T20:00:00+0200"`,
		`" "`,
		`"1781121600abc"`,
		`true`,
		`false`,
		`{}`,
		`[]`,
		`[1781121600]`,
		`{"seconds":1}`,
		`1e400`,
		`"\x"`,
		`"unterminated`,
		`--1`,
		`0x10`,
	} {
		var tm apiclient.Time
		if err := tm.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("UnmarshalJSON(%s) = %v, want an error", in, tm.Time)
		}
		// And through encoding/json.
		var v struct{ T apiclient.Time }
		if err := json.Unmarshal([]byte(`{"T":`+in+`}`), &v); err == nil {
			t.Errorf("json.Unmarshal with T=%s succeeded, want an error", in)
		}
	}
}

func TestTimeMarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   apiclient.Time
		want string
	}{
		{apiclient.Time{}, `null`},
		{apiclient.Time{Time: time.Date(2026, 6, 10, 20, 0, 0, 123456789, time.UTC)}, `"2026-06-10T20:00:00.123Z"`},
		{apiclient.Time{Time: time.Date(2026, 6, 10, 22, 0, 0, 0, time.FixedZone("x", 7200))}, `"2026-06-10T20:00:00.000Z"`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("Marshal(%v) = %s, want %s", tt.in.Time, b, tt.want)
		}
		var back apiclient.Time
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if !back.Equal(tt.in.Truncate(time.Millisecond)) {
			t.Errorf("round trip of %s = %v, want %v", b, back.Time, tt.in.Time)
		}
	}
}

// completedVideoJSON is a completed video object shaped after reference
// section 3.3 with the fields the gateway source emits.
const completedVideoJSON = `{
  "id": "G-abc123",
  "object": "video",
  "status": "completed",
  "lifecycle_status": "completed",
  "output_access": "both",
  "progress": 100,
  "progress_source": "provider",
  "polling_url": "https://api.phaseo.app/v1/videos/G-abc123",
  "poll_after_seconds": 20,
  "websocket_url": "wss://api.phaseo.app/v1/async/video/G-abc123/ws",
  "cancel_url": null,
  "generation_id": "G-abc123",
  "native_video_id": "operations/xyz",
  "request_id": "req_1",
  "session_id": "sess_1",
  "created_at": "2026-06-10T20:00:00.000Z",
  "started_at": 1781121605,
  "completed_at": 1781121700500,
  "provider": "google",
  "model": "google/veo-3.1-lite",
  "seconds": 8,
  "size": "1280x720",
  "audio": true,
  "asset": {"id": "ast_1", "mime_type": "video/mp4", "bytes": 1048576, "sha256": "ab12", "width": 1280, "height": 720, "duration_seconds": 8.04},
  "outputs": [
    {"index": 0, "mime_type": "video/mp4", "bytes_available": true, "content_url": "https://api.phaseo.app/v1/videos/G-abc123/content", "download_url": "https://api.phaseo.app/v1/videos/G-abc123/content?download_token=t&download_sig=s&expires_at=1781122600", "expires_at": 1781122600},
    {"index": 1, "mime_type": "video/mp4", "bytes_available": 1, "content_url": "https://api.phaseo.app/v1/videos/G-abc123/content?index=1"}
  ],
  "content_url": "https://api.phaseo.app/v1/videos/G-abc123/content",
  "download_url": "https://api.phaseo.app/v1/videos/G-abc123/content?download_token=t&download_sig=s&expires_at=1781122600",
  "expires_at": 1781122600,
  "usage": {"cost": 0.4, "cost_usd": 0.4, "is_byok": false, "extra": {"x": 1}},
  "billing": {"currency": "usd", "estimated_provider_cost": "0.40", "settled_user_cost": "0.44", "state": "settled", "billable": true, "total_nanos": 440000000},
  "error": null,
  "webhook": {"url": "https://example.com/hook", "events": ["video.completed"], "has_secret": true, "delivery": {"status": "delivered"}, "attempts": [{"attempt": 1}]},
  "next_webhook_retry_at": null,
  "last_webhook_status": 200
}`

func TestVideoUnmarshalCompleted(t *testing.T) {
	t.Parallel()
	var v apiclient.Video
	if err := json.Unmarshal([]byte(completedVideoJSON), &v); err != nil {
		t.Fatal(err)
	}
	want := apiclient.Video{
		ID:               "G-abc123",
		Object:           "video",
		Status:           apiclient.StatusCompleted,
		LifecycleStatus:  "completed",
		OutputAccess:     "both",
		Progress:         ptr(100),
		PollingURL:       "https://api.phaseo.app/v1/videos/G-abc123",
		PollAfterSeconds: ptr(20),
		GenerationID:     "G-abc123",
		NativeVideoID:    "operations/xyz",
		Provider:         "google",
		Model:            "google/veo-3.1-lite",
		CreatedAt:        apiclient.Time{Time: time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)},
		StartedAt:        apiclient.Time{Time: time.Date(2026, 6, 10, 20, 0, 5, 0, time.UTC)},
		CompletedAt:      apiclient.Time{Time: time.Date(2026, 6, 10, 20, 1, 40, 500e6, time.UTC)},
		Seconds:          ptr(8.0),
		Size:             "1280x720",
		Asset: &apiclient.Asset{
			ID: "ast_1", MimeType: "video/mp4", Bytes: ptr(int64(1048576)), SHA256: "ab12",
			Width: ptr(1280), Height: ptr(720), DurationSeconds: ptr(8.04),
		},
		Outputs: []apiclient.Output{
			{Index: 0, MimeType: "video/mp4", BytesAvailable: true,
				ContentURL:  "https://api.phaseo.app/v1/videos/G-abc123/content",
				DownloadURL: "https://api.phaseo.app/v1/videos/G-abc123/content?download_token=t&download_sig=s&expires_at=1781122600",
				ExpiresAt:   ptr(int64(1781122600))},
			{Index: 1, MimeType: "video/mp4", BytesAvailable: true,
				ContentURL: "https://api.phaseo.app/v1/videos/G-abc123/content?index=1"},
		},
		ContentURL:  "https://api.phaseo.app/v1/videos/G-abc123/content",
		DownloadURL: "https://api.phaseo.app/v1/videos/G-abc123/content?download_token=t&download_sig=s&expires_at=1781122600",
		ExpiresAt:   ptr(int64(1781122600)),
		Error:       nil,
		Webhook:     &apiclient.WebhookInfo{URL: "https://example.com/hook", Events: []string{"video.completed"}, HasSecret: true},
		Usage:       apiclient.Usage{Cost: apiclient.Cost{Micros: 400_000, Known: true}, CostUSD: apiclient.Cost{Micros: 400_000, Known: true}},
		Billing:     apiclient.Billing{Currency: "usd", SettledUserCost: apiclient.Cost{Micros: 440_000, Known: true}, State: "settled"},
	}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("decoded video mismatch (-want +got):\n%s", diff)
	}
	if got := v.PollAfter(); got != 20*time.Second {
		t.Errorf("PollAfter = %v, want 20s", got)
	}
	if got := v.OutputCount(); got != 2 {
		t.Errorf("OutputCount = %d, want 2", got)
	}
	if !v.Status.Terminal() {
		t.Error("completed video is not terminal")
	}
}

func TestVideoUnmarshalFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    string
		check func(t *testing.T, v apiclient.Video)
	}{
		{"id", `{"id":"G-1","status":"queued"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "G-1" || v.Status != apiclient.StatusQueued {
				t.Errorf("got id %q status %q", v.ID, v.Status)
			}
		}},
		{"video_id fallback", `{"video_id":"G-2","status":"pending"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "G-2" || v.Status != apiclient.StatusQueued {
				t.Errorf("got id %q status %q", v.ID, v.Status)
			}
		}},
		{"id wins over video_id", `{"video_id":"G-old","id":"G-new"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "G-new" {
				t.Errorf("got id %q", v.ID)
			}
		}},
		{"empty id falls back", `{"id":"","video_id":"G-3"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "G-3" {
				t.Errorf("got id %q", v.ID)
			}
		}},
		{"null id falls back", `{"id":null,"video_id":"G-4"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "G-4" {
				t.Errorf("got id %q", v.ID)
			}
		}},
		{"no id at all", `{"status":"queued"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "" {
				t.Errorf("got id %q", v.ID)
			}
		}},
		{"error string", `{"id":"G","status":"failed","error":"provider rejected the prompt"}`, func(t *testing.T, v apiclient.Video) {
			want := &apiclient.VideoError{Message: "provider rejected the prompt"}
			if diff := cmp.Diff(want, v.Error); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if v.Error.String() != "provider rejected the prompt" {
				t.Errorf("String() = %q", v.Error.String())
			}
		}},
		{"error object code/message", `{"id":"G","status":"error","error":{"code":"content_policy","message":"blocked","param":"prompt"}}`, func(t *testing.T, v apiclient.Video) {
			want := &apiclient.VideoError{Code: "content_policy", Message: "blocked"}
			if diff := cmp.Diff(want, v.Error); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if v.Status != apiclient.StatusFailed {
				t.Errorf("status %q", v.Status)
			}
			if v.Error.String() != "content_policy: blocked" {
				t.Errorf("String() = %q", v.Error.String())
			}
		}},
		{"error object error/description", `{"id":"G","error":{"error":"upstream_error","description":"provider 500"}}`, func(t *testing.T, v apiclient.Video) {
			want := &apiclient.VideoError{Code: "upstream_error", Message: "provider 500"}
			if diff := cmp.Diff(want, v.Error); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		}},
		{"error object code only", `{"id":"G","error":{"code":"timeout"}}`, func(t *testing.T, v apiclient.Video) {
			if v.Error == nil || v.Error.String() != "timeout" {
				t.Errorf("error %+v", v.Error)
			}
		}},
		{"error null", `{"id":"G","error":null}`, func(t *testing.T, v apiclient.Video) {
			if v.Error != nil {
				t.Errorf("error = %+v, want nil", v.Error)
			}
			if v.Error.String() != "" {
				t.Errorf("nil VideoError String() = %q", v.Error.String())
			}
		}},
		{"error absent", `{"id":"G"}`, func(t *testing.T, v apiclient.Video) {
			if v.Error != nil {
				t.Errorf("error = %+v, want nil", v.Error)
			}
		}},
		{"bytes_available forms", `{"id":"G","outputs":[{"index":0,"bytes_available":true},{"index":1,"bytes_available":false},{"index":2,"bytes_available":1},{"index":3,"bytes_available":0},{"index":4,"bytes_available":null},{"index":5,"bytes_available":2.5},{"index":6}]}`, func(t *testing.T, v apiclient.Video) {
			var got []bool
			for _, o := range v.Outputs {
				got = append(got, bool(o.BytesAvailable))
			}
			if diff := cmp.Diff([]bool{true, false, true, false, false, true, false}, got); diff != "" {
				t.Errorf("bytes_available (-want +got):\n%s", diff)
			}
			if v.OutputCount() != 7 {
				t.Errorf("OutputCount = %d", v.OutputCount())
			}
		}},
		{"poll_after_seconds", `{"id":"G","poll_after_seconds":5}`, func(t *testing.T, v apiclient.Video) {
			if v.PollAfter() != 5*time.Second {
				t.Errorf("PollAfter = %v", v.PollAfter())
			}
		}},
		{"poll_after_seconds zero", `{"id":"G","poll_after_seconds":0}`, func(t *testing.T, v apiclient.Video) {
			if v.PollAfter() != 0 {
				t.Errorf("PollAfter = %v", v.PollAfter())
			}
		}},
		{"poll_after_seconds negative", `{"id":"G","poll_after_seconds":-3}`, func(t *testing.T, v apiclient.Video) {
			if v.PollAfter() != 0 {
				t.Errorf("PollAfter = %v", v.PollAfter())
			}
		}},
		{"poll_after_seconds null", `{"id":"G","poll_after_seconds":null}`, func(t *testing.T, v apiclient.Video) {
			if v.PollAfterSeconds != nil || v.PollAfter() != 0 {
				t.Errorf("PollAfter = %v", v.PollAfter())
			}
		}},
		{"asset with nulls", `{"id":"G","asset":{"id":"ast_9","mime_type":"video/mp4","bytes":null,"sha256":null,"width":null,"height":null,"duration_seconds":null}}`, func(t *testing.T, v apiclient.Video) {
			want := &apiclient.Asset{ID: "ast_9", MimeType: "video/mp4"}
			if diff := cmp.Diff(want, v.Asset); diff != "" {
				t.Errorf("asset (-want +got):\n%s", diff)
			}
		}},
		{"asset null", `{"id":"G","asset":null}`, func(t *testing.T, v apiclient.Video) {
			if v.Asset != nil {
				t.Errorf("asset = %+v", v.Asset)
			}
		}},
		{"nullable scalars", `{"id":"G","progress":null,"seconds":null,"size":null,"generation_id":null,"native_video_id":null,"download_url":null,"expires_at":null,"created_at":null,"started_at":null,"completed_at":null}`, func(t *testing.T, v apiclient.Video) {
			want := apiclient.Video{ID: "G"}
			if diff := cmp.Diff(want, v); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		}},
		{"single output counts one", `{"id":"G"}`, func(t *testing.T, v apiclient.Video) {
			if v.OutputCount() != 1 {
				t.Errorf("OutputCount = %d", v.OutputCount())
			}
		}},
		{"webhook payload data (section 7)", `{"id":"G-abc123","object":"video","kind":"video","status":"processing","lifecycle_status":"running","progress":50,"provider":"google","model":"google/veo-3.1-lite","polling_url":"https://api.phaseo.app/v1/videos/G-abc123","content_url":"https://api.phaseo.app/v1/videos/G-abc123/content","download_url":null,"expires_at":null,"webhook":{"has_secret":true},"billing":{},"created_at":"2026-06-10T20:00:00.000Z","updated_at":"2026-06-10T20:01:00.000Z"}`, func(t *testing.T, v apiclient.Video) {
			if v.ID != "G-abc123" || v.Status != apiclient.StatusProcessing || v.LifecycleStatus != "running" || *v.Progress != 50 || v.Webhook == nil || !v.Webhook.HasSecret {
				t.Errorf("got %+v", v)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var v apiclient.Video
			if err := json.Unmarshal([]byte(tt.in), &v); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			tt.check(t, v)
		})
	}
}

func TestVideoUnmarshalErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`[]`,
		`"G-1"`,
		`{"id":5}`,
		`{"status":5}`,
		`{"created_at":"soon"}`,
		`{"error":42}`,
		`{"error":[1]}`,
		`{"outputs":[{"bytes_available":"yes"}]}`,
		`{"outputs":{}}`,
		`{"progress":"50%"}`,
		`{"id":"G"`,
	} {
		var v apiclient.Video
		if err := json.Unmarshal([]byte(in), &v); err == nil {
			t.Errorf("Unmarshal(%s) succeeded with %+v, want an error", in, v)
		}
	}
}

func TestVideoListUnmarshal(t *testing.T) {
	t.Parallel()
	in := `{"object":"list","data":[{"id":"G-2","status":"running"},{"video_id":"G-1","status":"succeeded","completed_at":1781121600}],"first_id":"G-2","last_id":"G-1","has_more":true}`
	var l apiclient.VideoList
	if err := json.Unmarshal([]byte(in), &l); err != nil {
		t.Fatal(err)
	}
	want := apiclient.VideoList{
		Object: "list",
		Data: []apiclient.Video{
			{ID: "G-2", Status: apiclient.StatusProcessing},
			{ID: "G-1", Status: apiclient.StatusCompleted, CompletedAt: apiclient.Time{Time: time.Unix(1781121600, 0).UTC()}},
		},
		FirstID: "G-2",
		LastID:  "G-1",
		HasMore: true,
	}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFlagUnmarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{"true", true, false},
		{"false", false, false},
		{"null", false, false},
		{"0", false, false},
		{"0.0", false, false},
		{"1", true, false},
		{"-1", true, false},
		{"1e3", true, false},
		{" true ", true, false},
		{`"true"`, false, true},
		{`"1"`, false, true},
		{"{}", false, true},
		{"yes", false, true},
	}
	for _, tt := range tests {
		f := apiclient.Flag(!tt.want)
		err := f.UnmarshalJSON([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("Flag.UnmarshalJSON(%s) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && bool(f) != tt.want {
			t.Errorf("Flag.UnmarshalJSON(%s) = %v, want %v", tt.in, f, tt.want)
		}
	}
}

func TestVideoErrorString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		e    *apiclient.VideoError
		want string
	}{
		{nil, ""},
		{&apiclient.VideoError{}, ""},
		{&apiclient.VideoError{Code: "c"}, "c"},
		{&apiclient.VideoError{Message: "m"}, "m"},
		{&apiclient.VideoError{Code: "c", Message: "m"}, "c: m"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestCreateRequestMarshalOmitsEmpty(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(apiclient.CreateRequest{Model: "m", Prompt: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"model":"m","prompt":"p"}` {
		t.Errorf("minimal request = %s", b)
	}
	b, err = json.Marshal(apiclient.DownloadURLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{}` {
		t.Errorf("empty download_url request = %s", b)
	}
	// The webhook secret is sent to the API: it must be in the JSON body.
	b, err = json.Marshal(apiclient.CreateRequest{Model: "m", Prompt: "p", Webhook: &apiclient.WebhookSubscription{URL: "https://x", Secret: "whsec_1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"webhook":{"url":"https://x","secret":"whsec_1"}`) {
		t.Errorf("request with webhook = %s", b)
	}
}

// TestPollAfterSaturates: a poll_after_seconds too large for a Duration
// (18446744074 s × 1e9 ns wraps to 0.29 s) saturates instead of wrapping.
func TestPollAfterSaturates(t *testing.T) {
	t.Parallel()
	for _, s := range []int{18446744074, math.MaxInt64} {
		v := apiclient.Video{PollAfterSeconds: ptr(s)}
		if got := v.PollAfter(); got < 1000*time.Hour {
			t.Errorf("PollAfter(%d s) = %v, want a saturated long wait", s, got)
		}
	}
}
