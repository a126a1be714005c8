package apiclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
)

// keyParts are pieces of testKey that must never leak: the whole key and
// fragments of its secret tail (a cut-off copy leaks too).
var keyParts = []string{testKey, "Zq9Secret", "PartOfTheKey"}

func assertNoKey(t *testing.T, what, s string) {
	t.Helper()
	for _, p := range keyParts {
		if strings.Contains(s, p) {
			t.Errorf("%s contains the API key: %s", what, s)
			return
		}
	}
}

// formatted renders err every way a caller might log it.
func formatted(err error) string {
	return fmt.Sprintf("%v|%+v|%#v|%s|%q", err, err, err, err, err)
}

func TestAPIKeyNotInErrors(t *testing.T) {
	t.Parallel()
	// A server that echoes the caller's credentials back in every field of
	// its error body, the way a misbehaving proxy or a debug build might.
	echo := func(status int, old bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			auth := r.Header.Get("Authorization")
			key := strings.TrimPrefix(auth, "Bearer ")
			var body string
			if old {
				body = fmt.Sprintf(`{"generation_id":"G-%[1]s","status_code":%[2]d,"error":"Invalid API key %[1]s","reason":"authentication_error"}`, key, status)
			} else {
				body = fmt.Sprintf(`{"error":"unauthorised_%[1]s","status_code":%[3]d,"error_type":"user %[1]s","error_origin":"user","generation_id":"G-%[1]s","reason":"invalid_key:%[1]s","description":"the key %[1]s (header %[2]s) is not valid","details":[{"message":"%[1]s"}]}`, key, auth, status)
			}
			writeJSON(w, status, body)
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"401 echoing the key", echo(401, false)},
		{"401 older shape echoing the key", echo(401, true)},
		{"403 echoing the key", echo(403, false)},
		{"502 echoing the key", echo(502, false)},
		{"non-JSON 500 echoing the header", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, "internal error; request headers: Authorization: "+r.Header.Get("Authorization"))
		}},
		{"401 with unicode-escaped key", func(w http.ResponseWriter, r *http.Request) {
			key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			esc := `\u00` + fmt.Sprintf("%x", key[0]) + key[1:]
			writeJSON(w, 401, `{"error":"unauthorised","reason":"invalid_key","description":"bad key `+esc+`"}`)
		}},
		{"400 with the key near the description cut-off", func(w http.ResponseWriter, r *http.Request) {
			key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			// 468+43 bytes: the 500-byte cut falls inside the secret.
			writeJSON(w, 400, `{"error":"validation_error","description":"`+strings.Repeat("x", 468)+key+`"}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := newServer(t, tt.handler)
			c := newClient(t, srv.URL, noRetries)
			ctx := context.Background()
			_, errGet := c.Get(ctx, "G-1")
			_, errCreate := c.Create(ctx, apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{})
			_, errContent := c.Content(ctx, "G-1", 0)
			for name, err := range map[string]error{"get": errGet, "create": errCreate, "content": errContent} {
				if err == nil {
					t.Fatalf("%s: no error", name)
				}
				assertNoKey(t, name+" error", formatted(err))
				ae := asAPIError(t, err)
				assertNoKey(t, name+" APIError fields", fmt.Sprintf("%#v %s", *ae, ae.Details))
			}
		})
	}
}

func TestAPIKeyNotInTransportErrors(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	logger := debugJSONLogger(&buf)

	// Dial failure, with retries so that the retry log lines are checked too.
	c := newClient(t, closedURL(t), func(c *apiclient.Config) { c.Logger = logger; c.MaxRetryWait = 10 * time.Millisecond })
	_, err := c.Get(context.Background(), "G-1")
	asTransportError(t, err)
	assertNoKey(t, "dial error", formatted(err))
	_, err = c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p"}, apiclient.CreateOptions{})
	assertNoKey(t, "dial error (create)", formatted(err))

	// Timeout.
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) { waitOrDone(r, 3*time.Second) })
	c = newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Logger = logger; c.Timeout = 50 * time.Millisecond })
	_, err = c.Get(context.Background(), "G-1")
	if te := asTransportError(t, err); !te.Timeout {
		t.Errorf("not a timeout: %v", err)
	}
	assertNoKey(t, "timeout error", formatted(err))
	ct, err := c.Content(context.Background(), "G-1", 0)
	if err == nil {
		ct.Body.Close()
		t.Fatal("content: no error")
	}
	assertNoKey(t, "content timeout error", formatted(err))

	// Decode failure.
	srv2, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"id":`) })
	_, err = newClient(t, srv2.URL, noRetries).Get(context.Background(), "G-1")
	assertNoKey(t, "decode error", formatted(err))

	if buf.String() == "" {
		t.Error("no retry was logged")
	}
	assertNoKey(t, "log output", buf.String())
}

func TestConfigLogValue(t *testing.T) {
	t.Parallel()
	cfg := apiclient.Config{BaseURL: "https://api.phaseo.app/v1", APIKey: testKey, Timeout: 5 * time.Second}
	var jsonBuf, textBuf syncBuffer
	slog.New(slog.NewJSONHandler(&jsonBuf, nil)).Info("config", "cfg", cfg, "ptr", &cfg)
	slog.New(slog.NewTextHandler(&textBuf, nil)).Info("config", "cfg", cfg, slog.Any("ptr", &cfg))
	for name, out := range map[string]string{"json": jsonBuf.String(), "text": textBuf.String()} {
		assertNoKey(t, name+" log", out)
		if !strings.Contains(out, "api_key_set") || !strings.Contains(out, "https://api.phaseo.app/v1") {
			t.Errorf("%s log lacks the config: %s", name, out)
		}
	}
	if !strings.Contains(jsonBuf.String(), `"api_key_set":true`) {
		t.Errorf("json log: %s", jsonBuf.String())
	}
	v := cfg.LogValue()
	assertNoKey(t, "LogValue", v.String())
	if v.Kind() != slog.KindGroup {
		t.Errorf("LogValue kind %v", v.Kind())
	}
	if got := (apiclient.Config{}).LogValue().String(); !strings.Contains(got, "api_key_set=false") {
		t.Errorf("empty config LogValue = %s", got)
	}
}

func TestWebhookSecretNotPrinted(t *testing.T) {
	t.Parallel()
	const secret = "whsec_TopSecretSigningKey"
	w := apiclient.WebhookSubscription{URL: "https://example.com/hook", Events: []string{"video.completed"}, Secret: secret}
	req := apiclient.CreateRequest{Model: "m", Prompt: "p", Webhook: &w}
	outs := map[string]string{
		"%v":             fmt.Sprintf("%v", w),
		"%+v":            fmt.Sprintf("%+v", w),
		"%#v":            fmt.Sprintf("%#v", w),
		"%s":             fmt.Sprintf("%s", []any{w}...), // through fmt, not String
		"%q":             fmt.Sprintf("%q", w),
		"pointer %v":     fmt.Sprintf("%v", &w),
		"pointer %+v":    fmt.Sprintf("%+v", &w),
		"pointer %#v":    fmt.Sprintf("%#v", &w),
		"in slice %+v":   fmt.Sprintf("%+v", []apiclient.WebhookSubscription{w}),
		"in struct %+v":  fmt.Sprintf("%+v", struct{ W apiclient.WebhookSubscription }{w}),
		"in request %+v": fmt.Sprintf("%+v", req),
		"in request %#v": fmt.Sprintf("%#v", req),
		"Println":        fmt.Sprintln(w, &w),
	}
	for _, h := range []struct {
		name string
		new  func(io.Writer) slog.Handler
	}{
		{"json", func(o io.Writer) slog.Handler { return slog.NewJSONHandler(o, nil) }},
		{"text", func(o io.Writer) slog.Handler { return slog.NewTextHandler(o, nil) }},
	} {
		var buf syncBuffer
		slog.New(h.new(&buf)).Info("subscribe", "webhook", w, "ptr", &w, slog.Group("g", "w", w))
		outs["slog "+h.name] = buf.String()
	}
	for name, out := range outs {
		if strings.Contains(out, secret) || strings.Contains(out, "TopSecret") {
			t.Errorf("%s output contains the webhook secret: %s", name, out)
		}
	}
	for _, name := range []string{"%v", "%#v", "slog json", "slog text"} {
		if !strings.Contains(outs[name], "https://example.com/hook") || !strings.Contains(outs[name], "has_secret") {
			t.Errorf("%s output lost the useful fields: %s", name, outs[name])
		}
	}
	if !strings.Contains(outs["%v"], "has_secret:true") {
		t.Errorf("%%v = %s", outs["%v"])
	}
	if s := fmt.Sprint(apiclient.WebhookSubscription{URL: "u"}); !strings.Contains(s, "has_secret:false") {
		t.Errorf("no-secret subscription prints %s", s)
	}
}

func TestSignedURLNotInErrors(t *testing.T) {
	t.Parallel()
	const sig = "0f4507e68d77d129cbf162d0010710a299ebd516411190610cc1e62fb5953df2"
	signed := "https://api.phaseo.app/v1/videos/G-1/content?download_token=eyJ3b3Jrc3BhY2VfaWQiOiJ3In0&download_sig=" + sig + "&expires_at=1781712900"
	check := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		s := formatted(err)
		if strings.Contains(s, sig) || strings.Contains(s, "download_sig") || strings.Contains(s, "download_token") {
			t.Errorf("%s error contains the signed link: %s", what, s)
		}
	}
	// The query of a request URL reaches a *url.Error on every transport
	// failure; here it carries a signed link as the list cursor.
	p := apiclient.ListParams{After: signed}
	dead := newClient(t, closedURL(t), noRetries)
	_, err := dead.List(context.Background(), p)
	check(t, "dial failure", err)

	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) { waitOrDone(r, 3*time.Second) })
	slow := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Timeout = 50 * time.Millisecond })
	_, err = slow.List(context.Background(), p)
	check(t, "timeout", err)

	// A base URL that itself carries a signed query.
	viaBase, err := apiclient.New(apiclient.Config{BaseURL: closedURL(t) + "/v1?download_sig=" + sig, APIKey: testKey, ReadRetries: -1})
	if err == nil {
		_, err = viaBase.Get(context.Background(), "G-1")
		check(t, "base URL query", err)
		_, err = viaBase.Content(context.Background(), "G-1", 2)
		check(t, "base URL query (content)", err)
	}

	// A dropped content stream.
	srv2, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	ct, err := newClient(t, srv2.URL).Content(context.Background(), "G-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, ct.Body)
	ct.Body.Close()
	if err == nil {
		t.Fatal("truncated stream read without error")
	}
	if strings.Contains(err.Error(), srv2.URL) || strings.Contains(err.Error(), "index=3") {
		t.Errorf("stream error repeats the URL: %v", err)
	}
}

// TestWebhookSecretNotEchoed: an API whose answers quote the request (the
// create body, with the webhook secret) puts no configured secret into an
// error or a video's error: not in the text, not in Details, not escaped.
func TestWebhookSecretNotEchoed(t *testing.T) {
	t.Parallel()
	const hookSecret = "whsec-Hook/Secret+9f8e7d6c"
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		quoted, _ := json.Marshal(string(body)) // escapes the "/" nowhere, the quotes everywhere
		escaped := strings.ReplaceAll(hookSecret, "/", `\/`)
		if r.Method == http.MethodGet {
			writeJSON(w, 200, `{"id":"G-1","object":"video","status":"failed","error":{"code":"bad_request `+escaped+`","message":"provider rejected `+escaped+`"}}`)
			return
		}
		writeJSON(w, 400, `{"error":"validation_error","status_code":400,"reason":"invalid_field","description":"request was `+strings.Trim(string(quoted), `"`)+`","details":[{"field":"webhook.secret","value":"`+escaped+`","echo":`+string(quoted)+`}]}`)
	})
	c := newClient(t, srv.URL, noRetries, func(c *apiclient.Config) { c.Secrets = []string{hookSecret, ""} })
	_, err := c.Create(context.Background(), apiclient.CreateRequest{Model: "m", Prompt: "p",
		Webhook: &apiclient.WebhookSubscription{URL: "https://example.com/hook", Secret: hookSecret}}, apiclient.CreateOptions{})
	if err == nil {
		t.Fatal("no error")
	}
	ae := asAPIError(t, err)
	all := formatted(err) + fmt.Sprintf("%#v %s", *ae, ae.Details)
	if strings.Contains(all, "Hook/Secret") || strings.Contains(all, `Hook\/Secret`) || strings.Contains(all, `Hook\\/Secret`) {
		t.Errorf("the create error quotes the webhook secret: %s", all)
	}
	if !strings.Contains(ae.Description, "[redacted]") || !strings.Contains(string(ae.Details), "[redacted]") {
		t.Errorf("the error lost what surrounds the secret: %s / %s", ae.Description, ae.Details)
	}
	v, err := c.Get(context.Background(), "G-1")
	if err != nil {
		t.Fatal(err)
	}
	if s := v.Error.String(); strings.Contains(s, "Hook/Secret") || !strings.Contains(s, "[redacted]") {
		t.Errorf("the video's error is %q, want the secret masked", s)
	}
}
