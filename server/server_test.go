package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

var redisSrv *redistest.Server

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "server tests need a real Redis:", err)
		os.Exit(1)
	}
	redisSrv = srv
	code := m.Run()
	stop()
	os.Exit(code)
}

const (
	apiToken = "tok_0123456789abcdef"
	viewer   = "vera"
	viewPass = "viewer-password"
	opUser   = "otto"
	opPass   = "operator-password"
)

type fixture struct {
	t        *testing.T
	srv      *httptest.Server
	producer *tasks.Client
	store    *jobs.Store
}

func setup(t *testing.T) *fixture {
	t.Helper()
	rdb := redisSrv.Client(t, redisSrv.NewDB(t))
	auth, err := server.NewAuth(apiToken, viewer+":"+viewPass+":viewer,"+opUser+":"+opPass+":operator")
	if err != nil {
		t.Fatal(err)
	}
	disk, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	producer := tasks.NewClient(rdb, tasks.ClientOptions{})
	srv := httptest.NewServer(server.New(server.Deps{Redis: rdb, Store: disk, Producer: producer, Auth: auth}))
	t.Cleanup(srv.Close)
	return &fixture{t: t, srv: srv, producer: producer, store: jobs.NewStore(rdb, "")}
}

type creds func(*http.Request)

func bearer(tok string) creds {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}
func basic(u, p string) creds { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
func none(*http.Request)      {}

// call makes a request and decodes the JSON answer into a map.
func (f *fixture) call(method, path string, body any, c creds, hdr ...string) (int, map[string]any, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m, raw
}

func job(model, prompt string) map[string]any {
	return map[string]any{"model": model, "prompt": prompt}
}

func TestJobAPIRoutes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)

	code, m, raw := f.call("POST", "/v1/jobs", job("google/veo-3.1-lite", "a red fox"), tok)
	if code != http.StatusAccepted || m["state"] != "queued" || m["id"] == "" {
		t.Fatalf("create: %d %s", code, raw)
	}
	id := m["id"].(string)

	code, m, raw = f.call("GET", "/v1/jobs/"+id, nil, tok)
	if code != http.StatusOK || m["id"] != id || len(m["history"].([]any)) == 0 {
		t.Fatalf("get: %d %s", code, raw)
	}
	if code, _, _ := f.call("GET", "/v1/jobs/nope", nil, tok); code != http.StatusNotFound {
		t.Errorf("get unknown: %d", code)
	}

	code, m, raw = f.call("POST", "/v1/jobs/"+id+"/retry", nil, tok)
	if code != http.StatusConflict || m["error"] != "not_retryable" {
		t.Errorf("retry a queued job: %d %s", code, raw)
	}
	code, m, raw = f.call("POST", "/v1/jobs/"+id+"/cancel", nil, tok)
	if code != http.StatusOK || m["state"] != "cancelled" {
		t.Fatalf("cancel: %d %s", code, raw)
	}
	if code, _, _ := f.call("POST", "/v1/jobs/"+id+"/cancel", nil, tok); code != http.StatusConflict {
		t.Errorf("cancel twice: %d, want 409", code)
	}

	// A failed job can be retried: it goes back to the queue.
	failed := "failed-job"
	if _, err := f.producer.Submit(t.Context(), tasks.Request{JobID: tasks.JobID(failed), Video: reqOf("m", "p")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Apply(t.Context(), failed, jobs.Change{To: jobs.StateFailed, Set: map[string]any{jobs.FieldErrorCode: "x", jobs.FieldFailedStep: "create"}}); err != nil {
		t.Fatal(err)
	}
	code, m, raw = f.call("POST", "/v1/jobs/"+failed+"/retry", nil, tok)
	if code != http.StatusAccepted || m["state"] != "queued" || m["retries"] != float64(1) || m["error_code"] != nil {
		t.Errorf("retry failed job: %d %s", code, raw)
	}
}

func TestJobAPIIdempotentSubmit(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)
	first, m1, raw := f.call("POST", "/v1/jobs", job("m", "p"), tok, "Idempotency-Key", "order-7")
	if first != http.StatusAccepted || m1["id"] != "order-7" {
		t.Fatalf("first: %d %s", first, raw)
	}
	again, m2, raw := f.call("POST", "/v1/jobs", job("m", "p"), tok, "Idempotency-Key", "order-7")
	if again != http.StatusOK || m2["id"] != "order-7" || m2["submitted_at"] != m1["submitted_at"] {
		t.Fatalf("retry: %d %s", again, raw)
	}
	body := job("m", "p")
	body["job_id"] = "order-7"
	if code, _, _ := f.call("POST", "/v1/jobs", body, tok); code != http.StatusOK {
		t.Errorf("same id in the body: %d", code)
	}
	if code, m, _ := f.call("POST", "/v1/jobs", job("m", "other prompt"), tok, "Idempotency-Key", "order-7"); code != http.StatusConflict || m["error"] != "job_id_conflict" {
		t.Errorf("same key, other request: %d %v", code, m)
	}
	if n, _ := f.store.Count(t.Context()); n != 1 {
		t.Errorf("%d jobs stored, want 1", n)
	}
}

// TestJobAPIIdempotencyKeyRace: identical requests with one
// Idempotency-Key sent at once get exactly one 202 (the one that created
// the job) and 200 for the rest, all naming the same job. Repeated, since
// a lost race shows only sometimes.
func TestJobAPIIdempotencyKeyRace(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const n = 8
	for round := range 10 {
		key := fmt.Sprintf("race-%d", round)
		codes := make([]int, n)
		ids := make([]any, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				var m map[string]any
				codes[i], m, _ = f.call("POST", "/v1/jobs", job("m", "p"), bearer(apiToken), "Idempotency-Key", key)
				ids[i] = m["id"]
			})
		}
		close(start)
		wg.Wait()
		accepted := 0
		for i, c := range codes {
			switch {
			case c == http.StatusAccepted:
				accepted++
			case c != http.StatusOK:
				t.Errorf("round %d: request %d answered %d", round, i, c)
			}
			if ids[i] != key {
				t.Errorf("round %d: request %d names job %v", round, i, ids[i])
			}
		}
		if accepted != 1 {
			t.Fatalf("round %d: %d answers 202 of %d (%v), want exactly 1", round, accepted, n, codes)
		}
	}
	if n, _ := f.store.Count(t.Context()); n != 10 {
		t.Errorf("%d jobs stored, want 10", n)
	}
}

// TestJobAPIIdempotencyKeyOtherRequest: the same key with other labels or
// another timeout is another request: 409, like another prompt.
func TestJobAPIIdempotencyKeyOtherRequest(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)
	body := func(labels map[string]string, timeout int) map[string]any {
		b := job("m", "p")
		if labels != nil {
			b["labels"] = labels
		}
		if timeout != 0 {
			b["timeout_seconds"] = timeout
		}
		return b
	}
	if code, _, raw := f.call("POST", "/v1/jobs", body(map[string]string{"team": "a"}, 600), tok, "Idempotency-Key", "k1"); code != http.StatusAccepted {
		t.Fatalf("first: %d %s", code, raw)
	}
	if code, _, raw := f.call("POST", "/v1/jobs", body(map[string]string{"team": "a"}, 600), tok, "Idempotency-Key", "k1"); code != http.StatusOK {
		t.Errorf("the same request again: %d %s", code, raw)
	}
	for name, b := range map[string]map[string]any{
		"other labels":  body(map[string]string{"team": "b"}, 600),
		"no labels":     body(nil, 600),
		"other timeout": body(map[string]string{"team": "a"}, 601),
		"no timeout":    body(map[string]string{"team": "a"}, 0),
	} {
		if code, m, raw := f.call("POST", "/v1/jobs", b, tok, "Idempotency-Key", "k1"); code != http.StatusConflict || m["error"] != "job_id_conflict" {
			t.Errorf("%s: %d %s, want 409 job_id_conflict", name, code, raw)
		}
	}
}

func TestJobAPIValidationNamesFields(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)
	cases := []struct {
		name   string
		body   any
		fields []string
	}{
		{"missing model and prompt", map[string]any{}, []string{"model", "prompt"}},
		{"size with resolution, long duration", map[string]any{"model": "m", "prompt": "p", "size": "1x1", "resolution": "720p", "duration": 500}, []string{"size", "duration"}},
		{"unknown field", map[string]any{"model": "m", "prompt": "p", "colour": "red"}, []string{"colour"}},
		{"wrong type", map[string]any{"model": "m", "prompt": 5}, []string{"prompt"}},
		{"bad job id", map[string]any{"model": "m", "prompt": "p", "job_id": "a/b"}, []string{"job_id"}},
		{"webhook", map[string]any{"model": "m", "prompt": "p", "webhook": map[string]any{"url": "https://x"}}, []string{"webhook"}},
		{"negative timeout", map[string]any{"model": "m", "prompt": "p", "timeout_seconds": -1}, []string{"timeout_seconds"}},
		// 18446744074 s wrapped to a deadline 0.29 s after submission.
		{"timeout that wraps", map[string]any{"model": "m", "prompt": "p", "timeout_seconds": 18446744074}, []string{"timeout_seconds"}},
		{"timeout over 7 days", map[string]any{"model": "m", "prompt": "p", "timeout_seconds": 7*24*3600 + 1}, []string{"timeout_seconds"}},
		{"numbers out of range", map[string]any{"model": "m", "prompt": "p", "sample_count": 5, "seed": -1, "compression_quality": 101, "duration": -1},
			[]string{"sample_count", "seed", "compression_quality", "duration"}},
		{"seed beyond 32 bits", map[string]any{"model": "m", "prompt": "p", "seed": int64(1) << 32}, []string{"seed"}},
		{"number beyond int64", map[string]any{"model": "m", "prompt": "p", "seed": json.Number("99999999999999999999")}, []string{"seed"}},
		{"long negative prompt", map[string]any{"model": "m", "prompt": "p", "negative_prompt": strings.Repeat("ü", 32001)}, []string{"negative_prompt"}},
		{"long prompt in characters", map[string]any{"model": "m", "prompt": strings.Repeat("p", 32001)}, []string{"prompt"}},
		{"control character in prompt", map[string]any{"model": "m", "prompt": "a\x00b"}, []string{"prompt"}},
		{"too many labels", map[string]any{"model": "m", "prompt": "p", "labels": manyLabels(17)}, []string{"labels"}},
		{"long label value", map[string]any{"model": "m", "prompt": "p", "labels": map[string]string{"k": strings.Repeat("v", 257)}}, []string{"labels"}},
		{"long label key", map[string]any{"model": "m", "prompt": "p", "labels": map[string]string{strings.Repeat("k", 65): "v"}}, []string{"labels"}},
		{"control character in a label", map[string]any{"model": "m", "prompt": "p", "labels": map[string]string{"k": "a\nb"}}, []string{"labels"}},
		{"long model", map[string]any{"model": strings.Repeat("m", 257), "prompt": "p"}, []string{"model"}},
	}
	for _, tc := range cases {
		code, m, raw := f.call("POST", "/v1/jobs", tc.body, tok)
		fields, _ := m["fields"].(map[string]any)
		if code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", tc.name, code, raw)
			continue
		}
		for _, name := range tc.fields {
			if _, ok := fields[name]; !ok {
				t.Errorf("%s: answer does not name %q: %s", tc.name, name, raw)
			}
		}
	}
	if code, _, _ := f.call("GET", "/v1/jobs?limit=0", nil, tok); code != http.StatusBadRequest {
		t.Errorf("limit=0: %d", code)
	}
	if code, _, raw := f.call("GET", "/v1/jobs?status=bogus", nil, tok); code != http.StatusBadRequest || !strings.Contains(string(raw), "status") {
		t.Errorf("status=bogus: %d %s", code, raw)
	}
	if n, _ := f.store.Count(t.Context()); n != 0 {
		t.Errorf("invalid requests stored %d jobs", n)
	}
}

func manyLabels(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// TestJobAPILimitsAllowed: the limits' boundaries themselves are accepted.
func TestJobAPILimitsAllowed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	labels := manyLabels(15)
	labels[strings.Repeat("k", 64)] = strings.Repeat("ü", 128)
	body := map[string]any{"model": "m", "prompt": strings.Repeat("ü", 31995) + "\n\tend", "negative_prompt": strings.Repeat("n", 32000),
		"timeout_seconds": 7 * 24 * 3600, "seed": int64(1)<<32 - 1, "sample_count": 4, "compression_quality": 100, "labels": labels}
	code, m, raw := f.call("POST", "/v1/jobs", body, bearer(apiToken))
	if code != http.StatusAccepted {
		t.Fatalf("request at the limits: %d %.300s", code, raw)
	}
	sub, _ := time.Parse(time.RFC3339Nano, m["submitted_at"].(string))
	dl, _ := time.Parse(time.RFC3339Nano, m["deadline"].(string))
	if d := dl.Sub(sub); d < 7*24*time.Hour-time.Second || d > 7*24*time.Hour+time.Second {
		t.Errorf("deadline %v after submission, want 7 days", d)
	}
}

func TestJobAPIPagination(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for i := 0; i < 23; i++ {
		if _, err := f.producer.Submit(t.Context(), tasks.Request{JobID: tasks.JobID(fmt.Sprintf("j%02d", i)), Video: reqOf("m", fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"j03", "j10", "j17"} {
		if _, err := f.producer.Cancel(t.Context(), tasks.JobID(id), ""); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		code, m, raw := f.call("GET", "/v1/jobs?limit=5&cursor="+cursor, nil, bearer(apiToken))
		if code != http.StatusOK {
			t.Fatalf("page: %d %s", code, raw)
		}
		pages++
		for _, j := range m["data"].([]any) {
			id := j.(map[string]any)["id"].(string)
			if seen[id] {
				t.Errorf("job %s on two pages", id)
			}
			seen[id] = true
		}
		next, _ := m["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 23 || pages != 5 {
		t.Errorf("%d jobs over %d pages, want 23 over 5", len(seen), pages)
	}
	code, m, _ := f.call("GET", "/v1/jobs?status=cancelled", nil, bearer(apiToken))
	var got []string
	for _, j := range m["data"].([]any) {
		got = append(got, j.(map[string]any)["id"].(string))
	}
	sort.Strings(got)
	if code != http.StatusOK || strings.Join(got, ",") != "j03,j10,j17" {
		t.Errorf("status filter: %d %v", code, got)
	}
}

func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if _, err := f.producer.Submit(t.Context(), tasks.Request{JobID: "j1", Video: reqOf("m", "p")}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		method, path string
		c            creds
		want         int
	}{
		{"no credentials", "GET", "/v1/jobs", none, 401},
		{"wrong token", "GET", "/v1/jobs", bearer("tok_wrong_wrong_wrong"), 401},
		{"wrong password", "GET", "/v1/jobs", basic(opUser, "nope-nope"), 401},
		{"unknown user", "GET", "/v1/jobs", basic("mallory", opPass), 401},
		{"viewer reads", "GET", "/v1/jobs/j1", basic(viewer, viewPass), 200},
		{"viewer submits", "POST", "/v1/jobs", basic(viewer, viewPass), 403},
		{"viewer cancels", "POST", "/v1/jobs/j1/cancel", basic(viewer, viewPass), 403},
		{"viewer retries", "POST", "/v1/jobs/j1/retry", basic(viewer, viewPass), 403},
		{"operator reads", "GET", "/v1/jobs", basic(opUser, opPass), 200},
		{"health needs nothing", "GET", "/healthz", none, 200},
		{"readiness needs nothing", "GET", "/readyz", none, 200},
	}
	for _, tc := range cases {
		var body any
		if tc.method == "POST" && tc.path == "/v1/jobs" {
			body = job("m", "p2")
		}
		code, _, raw := f.call(tc.method, tc.path, body, tc.c)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, raw, tc.want)
		}
		if strings.Contains(string(raw), apiToken) || strings.Contains(string(raw), opPass) {
			t.Errorf("%s: a secret appears in the answer", tc.name)
		}
	}
	rec, _ := f.producer.Status(t.Context(), "j1")
	if rec.State != jobs.StateQueued {
		t.Errorf("refused writes changed the job: %s", rec.State)
	}
}

// TestOpenAPIDocument checks the handlers against server/openapi.json:
// every documented operation is routed, answers only documented statuses,
// and its JSON bodies have the documented required properties and types.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	f := setup(t)
	tok := bearer(apiToken)
	if _, err := f.producer.Submit(t.Context(), tasks.Request{JobID: "doc-job", Video: reqOf("m", "p")}); err != nil {
		t.Fatal(err)
	}
	type op struct {
		method, path string
		body         any
	}
	ops := []op{
		{"POST", "/v1/jobs", job("m", "another")},
		{"POST", "/v1/jobs", map[string]any{"model": "m"}},
		{"POST", "/v1/jobs", nil},
		{"GET", "/v1/jobs", nil},
		{"GET", "/v1/jobs?limit=abc", nil},
		{"GET", "/v1/jobs/doc-job", nil},
		{"GET", "/v1/jobs/missing", nil},
		{"POST", "/v1/jobs/doc-job/retry", nil},
		{"POST", "/v1/jobs/doc-job/cancel", nil},
		{"POST", "/v1/jobs/doc-job/cancel", nil},
		{"POST", "/v1/jobs/missing/retry", nil},
		{"POST", "/v1/jobs/batch", map[string]any{"jobs": []any{job("m", "batch")}}},
		{"POST", "/v1/jobs/batch", map[string]any{"jobs": []any{job("m", "")}}},
	}
	paths := doc["paths"].(map[string]any)
	covered := map[string]bool{}
	for _, o := range ops {
		code, _, body := f.call(o.method, o.path, o.body, tok)
		tmpl := templatePath(paths, strings.SplitN(o.path, "?", 2)[0])
		if tmpl == "" {
			t.Errorf("%s %s: path not documented", o.method, o.path)
			continue
		}
		opDoc, ok := paths[tmpl].(map[string]any)[strings.ToLower(o.method)].(map[string]any)
		if !ok {
			t.Errorf("%s %s: operation not documented", o.method, tmpl)
			continue
		}
		covered[o.method+" "+tmpl] = true
		resp, ok := opDoc["responses"].(map[string]any)[fmt.Sprint(code)].(map[string]any)
		if !ok {
			t.Errorf("%s %s: status %d not documented (%s)", o.method, o.path, code, body)
			continue
		}
		schema := resolve(doc, resp)
		if c, ok := schema["content"].(map[string]any); ok {
			s := resolve(doc, c["application/json"].(map[string]any)["schema"].(map[string]any))
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Errorf("%s %s: body is not JSON: %s", o.method, o.path, body)
				continue
			}
			for _, p := range validate(doc, s, v, "$") {
				t.Errorf("%s %s (%d): %s", o.method, o.path, code, p)
			}
		}
	}
	for tmpl, item := range paths {
		for method := range item.(map[string]any) {
			if !covered[strings.ToUpper(method)+" "+tmpl] {
				t.Errorf("documented %s %s not exercised by this test", strings.ToUpper(method), tmpl)
			}
		}
	}
}

func templatePath(paths map[string]any, p string) string {
	if _, ok := paths[p]; ok {
		return p // a fixed path before a template that matches it too
	}
	for tmpl := range paths {
		re := regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(tmpl, `[^/]+`)
		if regexp.MustCompile("^" + re + "$").MatchString(p) {
			return tmpl
		}
	}
	return ""
}

func reqOf(model, prompt string) apiclient.CreateRequest {
	return apiclient.CreateRequest{Model: model, Prompt: prompt}
}

// resolve follows a $ref inside the document.
func resolve(doc map[string]any, node map[string]any) map[string]any {
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		var cur any = doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		node = cur.(map[string]any)
	}
}

// validate checks v against the subset of JSON Schema the document uses.
func validate(doc, s map[string]any, v any, at string) []string {
	s = resolve(doc, s)
	var problems []string
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return []string{at + ": not an object"}
		}
		for _, r := range asList(s["required"]) {
			if _, ok := m[r.(string)]; !ok {
				problems = append(problems, fmt.Sprintf("%s: required property %q missing", at, r))
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, val := range m {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false || props != nil && s["additionalProperties"] == nil {
					problems = append(problems, fmt.Sprintf("%s: property %q not documented", at, k))
				}
				continue
			}
			problems = append(problems, validate(doc, ps, val, at+"."+k)...)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return []string{at + ": not an array"}
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range a {
				problems = append(problems, validate(doc, items, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return []string{at + ": not a string"}
		}
		if enum := asList(s["enum"]); len(enum) > 0 && !contains(enum, str) {
			problems = append(problems, fmt.Sprintf("%s: %q not in %v", at, str, enum))
		}
	case "integer":
		if n, ok := v.(float64); !ok || n != float64(int64(n)) {
			return []string{at + ": not an integer"}
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return []string{at + ": not a boolean"}
		}
	}
	return problems
}

func asList(v any) []any { l, _ := v.([]any); return l }

func contains(l []any, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

// TestJobAPIShowsCost: GET /v1/jobs/{id} gives the API's estimated and
// settled cost as decimal dollar strings, and leaves them out while
// unknown.
func TestJobAPIShowsCost(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := bearer(apiToken)
	if _, err := f.producer.Submit(t.Context(), tasks.Request{JobID: "paid", Video: reqOf("m", "p")}); err != nil {
		t.Fatal(err)
	}
	_, m, raw := f.call("GET", "/v1/jobs/paid", nil, tok)
	if _, ok := m["estimated_cost_usd"]; ok {
		t.Errorf("an unknown cost is shown: %s", raw)
	}
	if _, err := f.store.Apply(t.Context(), "paid", jobs.Change{To: jobs.StateDownloading, Set: map[string]any{
		jobs.FieldEstimatedCost: apiclient.Cost{Micros: 400_000, Known: true}, jobs.FieldSettledCost: apiclient.Cost{Micros: 440_000, Known: true},
		jobs.FieldBillingState: "settled"}}); err != nil {
		t.Fatal(err)
	}
	_, m, raw = f.call("GET", "/v1/jobs/paid", nil, tok)
	if m["estimated_cost_usd"] != "0.40" || m["settled_cost_usd"] != "0.44" || m["billing_state"] != "settled" {
		t.Errorf("cost fields: %s", raw)
	}
}
