package storage_test

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/storage/storagetest"
)

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"a", "videos/2025-01-02/job.mp4", "a/b/c", "..a", "a..", ".hidden/x", "ü/ß.mp4", "a b", strings.Repeat("x", storage.MaxKeyLen)} {
		if err := storage.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", key, err)
		}
	}
	for _, tc := range []struct{ key, problem string }{
		{"", "empty"},
		{"/abs", "absolute"},
		{"../x", `".."`},
		{"a/../../b", `".."`},
		{"a//b", "empty segment"},
		{"a/", "empty segment"},
		{"./a", `"."`},
		{"a\x00b", "NUL"},
		{"a\\b", "backslash"},
		{"a\tb", "control"},
		{"a\u0085b", "control"},
		{"\xff", "UTF-8"},
		{strings.Repeat("x", storage.MaxKeyLen+1), "longer than"},
	} {
		err := storage.ValidateKey(tc.key)
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tc.key, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.problem) {
			t.Errorf("ValidateKey(%q) = %q, want it to mention %q", tc.key, err, tc.problem)
		}
	}
	for _, key := range storagetest.InvalidKeys {
		if storage.ValidateKey(key) == nil {
			t.Errorf("ValidateKey(%q) = nil; storagetest.InvalidKeys expects a refusal", key)
		}
	}
}

func TestRenderKey(t *testing.T) {
	t.Parallel()
	date := time.Date(2025, 3, 4, 23, 30, 0, 0, time.FixedZone("X", -5*3600)) // 2025-03-05 in UTC
	for _, tc := range []struct {
		tmpl string
		v    storage.KeyVars
		want string
	}{
		{storage.DefaultKeyTemplate, storage.KeyVars{JobID: "job-1", Date: date}, "videos/2025-03-05/job-1.mp4"},
		{storage.DefaultKeyTemplate, storage.KeyVars{JobID: "job-1", Date: date, Ext: ".webm"}, "videos/2025-03-05/job-1.webm"},
		{storage.DefaultKeyTemplate, storage.KeyVars{JobID: "job-1", Date: date, Index: 2}, "videos/2025-03-05/job-1-2.mp4"},
		{"v/{job_id}", storage.KeyVars{JobID: "j", Index: 3}, "v/j-3"},
		{"v/{job_id}/{index}.{ext}", storage.KeyVars{JobID: "j", Index: 3}, "v/j/3.mp4"},
		{"v/{job_id}/{index}.{ext}", storage.KeyVars{JobID: "j"}, "v/j/0.mp4"},
		{"{video_id}.{ext}", storage.KeyVars{VideoID: "a/../b c", Index: 1}, "a%2F..%2Fb%20c-1.mp4"},
		{"{job_id}/{video_id}", storage.KeyVars{JobID: "..", VideoID: "."}, "%2E%2E/%2E"},
		{"{job_id}.{ext}", storage.KeyVars{JobID: "ü", Ext: "m/p4"}, "%C3%BC.m%2Fp4"},
		// Ids of safe bytes keep the key earlier versions gave them.
		{storage.DefaultKeyTemplate, storage.KeyVars{JobID: "coll_1.v2-x", Date: date}, "videos/2025-03-05/coll_1.v2-x.mp4"},
		{storage.DefaultKeyTemplate, storage.KeyVars{JobID: "coll:1", Date: date}, "videos/2025-03-05/coll%3A1.mp4"},
		{storage.DefaultKeyTemplate, storage.KeyVars{JobID: "100%", Date: date}, "videos/2025-03-05/100%25.mp4"},
		{"v/{job_id}", storage.KeyVars{JobID: ".tmp-x"}, "v/%2Etmp-x"},
		{"v/{job_id}", storage.KeyVars{JobID: "x.meta"}, "v/x%2Emeta"},
		{"v/{job_id}", storage.KeyVars{JobID: "x."}, "v/x%2E"},
		{"v/{job_id}meta", storage.KeyVars{JobID: "x."}, "v/x%2Emeta"},
		{"static.mp4", storage.KeyVars{}, "static.mp4"},
		{"dir.v2/{job_id}", storage.KeyVars{JobID: "j", Index: 1}, "dir.v2/j-1"},
	} {
		got, err := storage.RenderKey(tc.tmpl, tc.v)
		if err != nil || got != tc.want {
			t.Errorf("RenderKey(%q, %+v) = %q, %v; want %q", tc.tmpl, tc.v, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		tmpl string
		v    storage.KeyVars
		want string
	}{
		{"v/{nope}.mp4", storage.KeyVars{}, "unknown placeholder {nope}"},
		{"v/{job_id", storage.KeyVars{JobID: "j"}, "unclosed"},
		{"v/{job_{id}}", storage.KeyVars{JobID: "j"}, "unclosed"},
		{"v/job_id}", storage.KeyVars{}, "unmatched"},
		{"{job_id}", storage.KeyVars{}, "JobID is empty"},
		{"{video_id}", storage.KeyVars{}, "VideoID is empty"},
		{"{date}/x", storage.KeyVars{}, "Date is zero"},
		{"{index}", storage.KeyVars{Index: -1}, "negative"},
		{"/abs/{job_id}", storage.KeyVars{JobID: "j"}, "absolute"},
		{"../{job_id}", storage.KeyVars{JobID: "j"}, `".."`},
		{"a/./{job_id}", storage.KeyVars{JobID: "."}, `"."`},
		{"v/.tmp-{job_id}", storage.KeyVars{JobID: "j"}, "reserved for temporary files"},
		{"v/{job_id}.meta", storage.KeyVars{JobID: "j"}, "reserved for metadata sidecars"},
		{"v/{job_id}.mp4", storage.KeyVars{JobID: strings.Repeat(":", 100)}, "longer than 255"},
		{"", storage.KeyVars{}, "empty"},
	} {
		got, err := storage.RenderKey(tc.tmpl, tc.v)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RenderKey(%q, %+v) = %q, %v; want an error mentioning %q", tc.tmpl, tc.v, got, err, tc.want)
		}
	}
}

// TestRenderKeyInjective: distinct job ids (the ones the old mapping sent
// to one key, among others) render distinct keys, and the value can be
// read back from the key by percent-decoding.
func TestRenderKeyInjective(t *testing.T) {
	t.Parallel()
	ids := []string{"coll:1", "coll_1", "coll.1", "coll%3A1", "coll%1", ".", "..", "_", "__", "%2E", "a.", "a%2E", "a.meta", "a%2Emeta", "ü", "__", "a b", "a%20b", "x/y", "x%2Fy"}
	seen := map[string]string{}
	for _, id := range ids {
		key, err := storage.RenderKey("v/{job_id}", storage.KeyVars{JobID: id})
		if err != nil {
			t.Errorf("RenderKey(%q): %v", id, err)
			continue
		}
		if other, ok := seen[key]; ok && other != id {
			t.Errorf("job ids %q and %q both render %q", other, id, key)
		}
		seen[key] = id
		if got, err := url.PathUnescape(strings.TrimPrefix(key, "v/")); err != nil || got != id {
			t.Errorf("key %q decodes to %q, %v; want %q", key, got, err, id)
		}
	}
}

func TestCheckKeyTemplate(t *testing.T) {
	t.Parallel()
	for _, tmpl := range []string{storage.DefaultKeyTemplate, "{video_id}.{ext}", "v/{job_id}", "v/{date}/{job_id}/{index}.mp4", "a.{job_id}"} {
		if err := storage.CheckKeyTemplate(tmpl); err != nil {
			t.Errorf("CheckKeyTemplate(%q) = %v, want nil", tmpl, err)
		}
	}
	for _, tc := range []struct{ tmpl, want string }{
		{"videos/{date}.mp4", "must contain {job_id} or {video_id}"},
		{"static.mp4", "must contain {job_id} or {video_id}"},
		{"v/.tmp-{job_id}", "reserved"},
		{"v/{job_id}.meta", "reserved"},
		{"v/.{video_id}", "reserved"},   // a video id "tmp-x"
		{"v/{video_id}eta", "reserved"}, // a video id "x.m"
		{"v/{nope}/{job_id}", "unknown placeholder"},
		{"../{job_id}", `".."`},
	} {
		if err := storage.CheckKeyTemplate(tc.tmpl); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckKeyTemplate(%q) = %v, want an error mentioning %q", tc.tmpl, err, tc.want)
		}
	}
}

func ExampleRenderKey() {
	vars := storage.KeyVars{JobID: "job 42", Date: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	for i := range 3 {
		vars.Index = i
		key, err := storage.RenderKey(storage.DefaultKeyTemplate, vars)
		if err != nil {
			panic(err)
		}
		fmt.Println(key)
	}
	// Output:
	// videos/2025-06-01/job%2042.mp4
	// videos/2025-06-01/job%2042-1.mp4
	// videos/2025-06-01/job%2042-2.mp4
}

func ExampleValidateKey() {
	fmt.Println(storage.ValidateKey("videos/2025-06-01/job.mp4"))
	fmt.Println(storage.ValidateKey("videos/../../etc/passwd"))
	// Output:
	// <nil>
	// storage: invalid key "videos/../../etc/passwd": key has a ".." segment
}

// FuzzValidateKey checks that a key ValidateKey accepts always names a path
// strictly below the root, and that Disk agrees.
func FuzzValidateKey(f *testing.F) {
	for _, seed := range append([]string{
		"a", "videos/2025-01-02/job.mp4", "a/b/../c", "..a/b..", "a/./b", "...", "a/...", ".x/..y",
		"%2e%2e/x", "a/\u2215b", "a:b", "C:/x", "a/b/", " / ", "\u202e..",
	}, storagetest.InvalidKeys...) {
		f.Add(seed)
	}
	root := filepath.Join(string(filepath.Separator), "srv", "root")
	f.Fuzz(func(t *testing.T, key string) {
		if storage.ValidateKey(key) != nil {
			return
		}
		p := filepath.Join(root, filepath.FromSlash(key))
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			t.Fatalf("valid key %q resolves to %q, outside %q", key, p, root)
		}
		if filepath.ToSlash(rel) != key {
			t.Fatalf("valid key %q is not already clean: resolves to %q", key, rel)
		}
	})
}

// FuzzRenderKey checks that whatever values a job carries, a rendered key is
// valid and keeps the template's segment count.
func FuzzRenderKey(f *testing.F) {
	f.Add(storage.DefaultKeyTemplate, "job-1", "vid", 0, "mp4")
	f.Add(storage.DefaultKeyTemplate, "../../etc/passwd", "", 3, "/x")
	f.Add("{video_id}/{index}.{ext}", "", "..", 1, "..")
	f.Add("{job_id}{video_id}", ".", ".", 2, "")
	f.Add("a/{job_id}/b", "x/y", "", -1, "")
	f.Add("{job_id}.{ext}", "\x00\\/", "", 7, "\u00e9")
	date := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, tmpl, jobID, videoID string, index int, ext string) {
		key, err := storage.RenderKey(tmpl, storage.KeyVars{JobID: jobID, VideoID: videoID, Index: index, Date: date, Ext: ext})
		if err != nil {
			return
		}
		if err := storage.ValidateKey(key); err != nil {
			t.Fatalf("RenderKey(%q) = %q, which ValidateKey refuses: %v", tmpl, key, err)
		}
		if got, want := strings.Count(key, "/"), strings.Count(tmpl, "/"); got != want {
			t.Fatalf("RenderKey(%q) = %q: %d slashes, template has %d (a value added a segment)", tmpl, key, got, want)
		}
	})
}
