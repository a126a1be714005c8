package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/videoworker/videoworker/internal/s3test"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/storage/storagetest"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	code := m.Run()
	if s3shared.stop != nil {
		s3shared.stop()
	}
	if childBin.path != "" {
		os.RemoveAll(filepath.Dir(childBin.path))
	}
	os.Exit(code)
}

// s3shared is the package's versitygw, started by the first test that
// needs it and stopped by TestMain.
var s3shared struct {
	once sync.Once
	srv  *s3test.Server
	stop func()
	err  error
}

func s3Server(t testing.TB) *s3test.Server {
	t.Helper()
	s3shared.once.Do(func() { s3shared.srv, s3shared.stop, s3shared.err = s3test.StartMain() })
	if s3shared.err != nil {
		t.Fatal(s3shared.err)
	}
	return s3shared.srv
}

func s3Config(srv *s3test.Server, bucket string) storage.S3Config {
	return storage.S3Config{Endpoint: srv.Endpoint(), Region: s3test.Region, Bucket: bucket, AccessKey: s3test.AccessKey,
		SecretKey: s3test.SecretKey, PathStyle: true, PartSize: storage.MinS3PartSize}
}

// newS3 returns an S3 store in a fresh bucket (5 MiB parts, so that the
// conformance suite's objects take several) and checks at cleanup that no
// incomplete upload and no temporary object is left in the bucket.
func newS3(t *testing.T, modify ...func(*storage.S3Config)) (*storage.S3, string) {
	t.Helper()
	srv := s3Server(t)
	bucket := srv.NewBucket(t)
	cfg := s3Config(srv, bucket)
	cfg.Prefix = "pre/fix"
	for _, f := range modify {
		f(&cfg)
	}
	s, err := storage.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		assertS3Clean(t, srv, bucket)
		if n := storage.S3BuffersLent(s); n != 0 {
			t.Errorf("%d part buffers still lent after the test's Puts returned", n)
		}
	})
	return s, bucket
}

func assertS3Clean(t *testing.T, srv *s3test.Server, bucket string) {
	t.Helper()
	ctx := context.Background()
	ups, err := srv.IncompleteUploads(ctx, bucket)
	if err != nil {
		t.Errorf("list incomplete uploads: %v", err)
	}
	for _, u := range ups {
		t.Errorf("incomplete multipart upload left behind: %s", u)
	}
	objs, err := srv.Objects(ctx, bucket)
	if err != nil {
		t.Errorf("list objects: %v", err)
	}
	for _, o := range objs {
		if strings.Contains(o, ".tmp-") {
			t.Errorf("temporary object left behind: %s", o)
		}
	}
	// A part stored after its upload was aborted brings the upload's
	// directory back without the upload's metadata, and versitygw does not
	// list it: look at its files.
	_ = filepath.WalkDir(filepath.Join(srv.Dir(), bucket, ".sgwtmp", "multipart"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("part of an aborted upload left on the server: %s", path)
		}
		return nil
	})
}

func TestS3Conformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, _ := newS3(t)
		return s
	})
}

func TestS3ConformanceNoPrefix(t *testing.T) {
	if testing.Short() {
		t.Skip("the prefixed run covers -short")
	}
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, _ := newS3(t, func(c *storage.S3Config) { c.Prefix = "" })
		return s
	})
}

func TestS3Layout(t *testing.T) {
	t.Parallel()
	s, bucket := newS3(t)
	b := pattern(3000, 1)
	info, err := s.Put(t.Context(), "videos/a.mp4", bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), SHA256: sha(b),
		ContentType: "video/mp4", Metadata: map[string]string{"job_id": "j1"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "s3://" + bucket + "/pre/fix/videos/a.mp4"; info.Location != want || s.Location("videos/a.mp4") != want {
		t.Errorf("Location = %q / %q, want %q", info.Location, s.Location("videos/a.mp4"), want)
	}
	oi, err := s3Server(t).Client().StatObject(t.Context(), bucket, "pre/fix/videos/a.mp4", minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("the object is not at prefix/key: %v", err)
	}
	if got := oi.Metadata.Get("X-Amz-Meta-Sha256"); got != sha(b) {
		t.Errorf("x-amz-meta-sha256 = %q, want %s", got, sha(b))
	}
	if got := oi.Metadata.Get("X-Amz-Meta-Job_id"); got != "j1" {
		t.Errorf("x-amz-meta-job_id = %q, want j1", got)
	}
	if oi.ContentType != "video/mp4" {
		t.Errorf("Content-Type = %q", oi.ContentType)
	}
	for _, key := range []string{".tmp-uploads/x", ".tmp-a"} {
		if _, err := s.Put(t.Context(), key, bytes.NewReader(b), storage.NewPutOptions()); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey (reserved)", key, err)
		}
	}
	if loc := s.Location("../x"); loc != "" {
		t.Errorf("Location of an invalid key = %q, want empty", loc)
	}
}

// TestS3UnknownSHA256 exercises uploads through a temporary object: those
// without an expected sha256, including the multipart copy used beyond
// 5 GiB (here beyond 5 MiB).
func TestS3UnknownSHA256(t *testing.T) {
	t.Parallel()
	s, _ := newS3(t)
	storage.SetS3CopyMax(s, storage.MinS3PartSize)
	for _, n := range []int{1, storage.MinS3PartSize, 2*storage.MinS3PartSize + 12345} {
		for _, known := range []bool{true, false} {
			key := fmt.Sprintf("u/%d-%t", n, known)
			b := pattern(n, byte(n))
			o := storage.PutOptions{Size: -1, ContentType: "video/webm", Metadata: map[string]string{"n": fmt.Sprint(n)}}
			if known {
				o.Size = int64(n)
			}
			info, err := s.Put(t.Context(), key, bytes.NewReader(b), o)
			if err != nil {
				t.Fatalf("Put(%s): %v", key, err)
			}
			if info.SHA256 != sha(b) || info.Size != int64(n) {
				t.Errorf("Put(%s) info = %d %s, want %d %s", key, info.Size, info.SHA256, n, sha(b))
			}
			st, err := s.Stat(t.Context(), key)
			if err != nil {
				t.Fatal(err)
			}
			if st.SHA256 != sha(b) || st.Size != int64(n) || st.ContentType != "video/webm" || st.Metadata["n"] != fmt.Sprint(n) {
				t.Errorf("Stat(%s) = %+v", key, st)
			}
			rc, _, err := s.Open(t.Context(), key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("Open(%s) = %d bytes, %v; want the %d written", key, len(got), err, n)
			}
		}
	}
}

// TestS3Interrupted cancels uploads midway: nothing is visible, no upload
// is left, and a retry stores the object once.
func TestS3Interrupted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		knownSize bool
		knownSHA  bool
	}{
		{"streamed", true, true},
		{"buffered", false, true},
		{"temporary", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, bucket := newS3(t)
			srv := s3Server(t)
			const size = 23 << 20 // five parts of 5 MiB
			b := pattern(size, 7)
			o := storage.PutOptions{Size: -1, ContentType: "video/mp4"}
			if tc.knownSize {
				o.Size = size
			}
			if tc.knownSHA {
				o.SHA256 = sha(b)
			}
			ctx, cancel := context.WithCancel(t.Context())
			r := &storagetest.CancelAfter{R: bytes.NewReader(b), N: 12 << 20, Cancel: cancel}
			_, err := s.Put(ctx, "v/job.mp4", r, o)
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted Put error = %v, want context.Canceled", err)
			}
			if r.Count < 10<<20 {
				t.Fatalf("only %d bytes were read before the error; the test wants an interruption midway", r.Count)
			}
			if _, err := s.Stat(t.Context(), "v/job.mp4"); !errors.Is(err, storage.ErrNotExist) {
				t.Errorf("Stat after the interrupted Put: %v, want ErrNotExist", err)
			}
			if ups, err := srv.IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
				t.Errorf("incomplete uploads after the interrupted Put = %v, %v; want none", ups, err)
			}

			info, err := s.Put(t.Context(), "v/job.mp4", bytes.NewReader(b), o)
			if err != nil {
				t.Fatalf("retried Put: %v", err)
			}
			if info.SHA256 != sha(b) || info.Size != size {
				t.Errorf("retried Put info = %d %s", info.Size, info.SHA256)
			}
			objs, err := srv.Objects(t.Context(), bucket)
			if err != nil || !slices.Equal(objs, []string{"pre/fix/v/job.mp4"}) {
				t.Errorf("objects after the retry = %v, %v; want exactly the one", objs, err)
			}
			if st, err := s.Stat(t.Context(), "v/job.mp4"); err != nil || st.SHA256 != sha(b) || st.Size != size {
				t.Errorf("Stat after the retry = %+v, %v", st, err)
			}
		})
	}
}

// TestS3Mismatch checks that multi-part uploads whose bytes do not match
// leave neither an object nor an upload.
func TestS3Mismatch(t *testing.T) {
	t.Parallel()
	s, bucket := newS3(t)
	srv := s3Server(t)
	b := pattern(12<<20, 9)
	for _, o := range []storage.PutOptions{
		{Size: int64(len(b)), SHA256: sha(b[1:])},
		{Size: -1, SHA256: sha(b[1:])},
		{Size: int64(len(b)) + 1},
		{Size: int64(len(b)) - 1},
	} {
		_, err := s.Put(t.Context(), "k", bytes.NewReader(b), o)
		if !errors.Is(err, storage.ErrIntegrity) {
			t.Errorf("Put with %+v: %v, want an integrity error", o, err)
		}
	}
	if objs, err := srv.Objects(t.Context(), bucket); err != nil || len(objs) != 0 {
		t.Errorf("objects after mismatches = %v, %v; want none", objs, err)
	}
	if ups, err := srv.IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
		t.Errorf("incomplete uploads after mismatches = %v, %v; want none", ups, err)
	}
}

func TestS3Metadata(t *testing.T) {
	t.Parallel()
	s, _ := newS3(t)
	meta := map[string]string{"prompt": "ein Boot im Regen — über Nacht", "lead": " spaced ", "word": "=?utf-8?q?x?=", "ctl": "a\tb"}
	b := []byte("video")
	if _, err := s.Put(t.Context(), "m", bytes.NewReader(b), storage.PutOptions{Size: 5, Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stat(t.Context(), "m")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range meta {
		if st.Metadata[k] != v {
			t.Errorf("Metadata[%q] = %q, want %q", k, st.Metadata[k], v)
		}
	}
	for _, bad := range []map[string]string{{"Upper": "x"}, {"sp ace": "x"}, {"sha256": "x"}, {"": "x"}} {
		if _, err := s.Put(t.Context(), "bad", bytes.NewReader(b), storage.PutOptions{Size: 5, Metadata: bad}); err == nil {
			t.Errorf("Put with metadata %v succeeded", bad)
		}
	}
}

func TestS3Presign(t *testing.T) {
	t.Parallel()
	s, _ := newS3(t)
	var p storage.Presigner = s
	b := pattern(1000, 3)
	if _, err := s.Put(t.Context(), "p/x.mp4", bytes.NewReader(b), storage.PutOptions{Size: 1000}); err != nil {
		t.Fatal(err)
	}
	u, err := p.PresignGet(t.Context(), "p/x.mp4", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(u, s3test.SecretKey) {
		t.Errorf("presigned URL contains the secret key: %s", u)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, b) {
		t.Errorf("GET presigned URL: %d, %d bytes", resp.StatusCode, len(got))
	}
	for _, ttl := range []time.Duration{0, 8 * 24 * time.Hour} {
		if _, err := p.PresignGet(t.Context(), "p/x.mp4", ttl); err == nil {
			t.Errorf("PresignGet with ttl %v succeeded", ttl)
		}
	}
	if _, err := p.PresignGet(t.Context(), "../x", time.Minute); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("PresignGet of an invalid key: %v", err)
	}
}

// TestS3Secrets checks that credentials appear in no error and no log
// line.
func TestS3Secrets(t *testing.T) {
	t.Parallel()
	srv := s3Server(t)
	bucket := srv.NewBucket(t)
	const wrong = "wrong-secret-d0c4f00d-never-print"
	cfg := s3Config(srv, bucket)
	cfg.SecretKey = wrong
	cfg.SessionToken = "session-token-never-print"
	_, err := storage.NewS3(t.Context(), cfg)
	if err == nil {
		t.Fatal("NewS3 with a wrong secret key succeeded")
	}
	for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), cfg.String(), fmt.Sprint(cfg), logLine(cfg)} {
		if strings.Contains(text, wrong) || strings.Contains(text, cfg.SessionToken) {
			t.Errorf("a secret leaks: %s", text)
		}
	}
	if !strings.Contains(err.Error(), bucket) {
		t.Errorf("NewS3 error %q does not name the bucket", err)
	}

	cfg = s3Config(srv, "no-such-bucket-here")
	if _, err := storage.NewS3(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("NewS3 of a missing bucket: %v", err)
	}
	cfg = s3Config(srv, bucket)
	cfg.SecretKey = ""
	if _, err := storage.NewS3(t.Context(), cfg); err == nil {
		t.Error("NewS3 with an access key but no secret key succeeded")
	}
	for _, ps := range []uint64{1 << 20, 6 << 30} {
		cfg = s3Config(srv, bucket)
		cfg.PartSize = ps
		if _, err := storage.NewS3(t.Context(), cfg); err == nil {
			t.Errorf("NewS3 with part size %d succeeded", ps)
		}
	}
}

func logLine(v any) string {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "cfg", v)
	return buf.String()
}

func TestOpenS3(t *testing.T) {
	t.Parallel()
	srv := s3Server(t)
	bucket := srv.NewBucket(t)
	base := storage.S3Config{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, UseSSL: true}
	for _, raw := range []string{
		"s3://" + bucket + "/videos?endpoint=" + srv.Endpoint() + "&ssl=false&path_style=true&region=" + s3test.Region,
		"s3://" + bucket + "/videos/?endpoint=" + srv.URL() + "&path_style=true",
	} {
		st, err := storage.OpenWith(t.Context(), raw, storage.OpenOptions{S3: base})
		if err != nil {
			t.Fatalf("OpenWith(%q): %v", raw, err)
		}
		s, ok := st.(*storage.S3)
		if !ok || s.Bucket() != bucket || s.Prefix() != "videos/" {
			t.Errorf("OpenWith(%q) = %T bucket %q prefix %q", raw, st, s.Bucket(), s.Prefix())
		}
	}
	// Defaults come from the options; the URL overrides them.
	cfg, err := storage.ParseS3URL("s3://b-1/a/b/", storage.S3Config{Endpoint: "minio:9000", Region: "eu", PathStyle: true, UseSSL: true})
	if err != nil || cfg.Bucket != "b-1" || cfg.Prefix != "a/b" || cfg.Endpoint != "minio:9000" || cfg.Region != "eu" || !cfg.PathStyle || !cfg.UseSSL {
		t.Errorf("ParseS3URL with defaults = %+v, %v", cfg, err)
	}
	cfg, err = storage.ParseS3URL("s3://b-1?ssl=false&path_style=false&endpoint=x:1&region=r", storage.S3Config{PathStyle: true, UseSSL: true})
	if err != nil || cfg.UseSSL || cfg.PathStyle || cfg.Endpoint != "x:1" || cfg.Region != "r" || cfg.Prefix != "" {
		t.Errorf("ParseS3URL with overrides = %+v, %v", cfg, err)
	}
	for _, raw := range []string{
		"s3://AKIA:hunter2@bucket/prefix", "s3://", "s3:///prefix", "s3://Bad_Bucket/x", "s3://ab/x",
		"s3://bucket/a/../b", "s3://bucket/x?nope=1", "s3://bucket/x?ssl=maybe", "s3://bucket/x?endpoint=ftp://h",
		"s3://bucket/x#frag",
	} {
		_, err := storage.OpenWith(t.Context(), raw, storage.OpenOptions{S3: base})
		if err == nil {
			t.Errorf("OpenWith(%q) succeeded", raw)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the URL's password: %v", err)
		}
	}
}

// TestS3KilledUpload kills a process in the middle of an upload: nothing is
// visible; its incomplete upload is aborted by the retry, which stores the
// object once.
func TestS3KilledUpload(t *testing.T) {
	t.Parallel()
	srv := s3Server(t)
	bucket := srv.NewBucket(t)
	const size = 1 << 30
	// Any well-formed sha256 will do: the upload never gets to its check.
	cmd := childCommand(t, "put", srv, bucket, "v/killed.mp4", size, strings.Repeat("0", 64))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait for the child's upload to have parts on the server.
	var initiated time.Time
	deadline := time.Now().Add(60 * time.Second)
	for initiated.IsZero() {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("no upload with parts within 60s; child output:\n%s", out.String())
		}
		res, err := srv.Client().ListMultipartUploads(t.Context(), bucket, "", "", "", "", 10)
		if err == nil && len(res.Uploads) == 1 {
			parts, err := srv.Client().ListObjectParts(t.Context(), bucket, res.Uploads[0].Key, res.Uploads[0].UploadID, 0, 10)
			if err == nil && len(parts.ObjectParts) >= 1 {
				initiated = res.Uploads[0].Initiated
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatalf("the child finished before it was killed:\n%s", out.String())
	}
	s, err := storage.NewS3(t.Context(), func() storage.S3Config {
		c := s3Config(srv, bucket)
		c.StaleUploadAge = time.Nanosecond
		return c
	}())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(t.Context(), "v/killed.mp4"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after the kill = %v, want ErrNotExist", err)
	}
	res, err := srv.Client().ListMultipartUploads(t.Context(), bucket, "", "", "", "", 10)
	if err != nil || len(res.Uploads) != 1 {
		t.Fatalf("incomplete uploads after the kill = %+v, %v; want the killed one", res.Uploads, err)
	}
	// Upload times have whole-second resolution (and versitygw moves them
	// as parts arrive): the retry must start in a later second to tell the
	// killed upload is older than its own.
	initiated = res.Uploads[0].Initiated
	time.Sleep(time.Until(initiated.Add(1100 * time.Millisecond)))
	const retrySize = 8 << 20
	want := genSum(retrySize)
	info, err := s.Put(t.Context(), "v/killed.mp4", newGen(retrySize), storage.PutOptions{Size: retrySize, SHA256: want})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if info.SHA256 != want {
		t.Errorf("retry stored sha256 %s, want %s", info.SHA256, want)
	}
	if ups, err := srv.IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
		t.Errorf("incomplete uploads after the retry = %v, %v; want none", ups, err)
	}
	if objs, err := srv.Objects(t.Context(), bucket); err != nil || !slices.Equal(objs, []string{"v/killed.mp4"}) {
		t.Errorf("objects after the retry = %v, %v; want exactly the one", objs, err)
	}
}

// TestS3Large1GiB stores a generated 1 GiB video through S3 in a child
// process and compares its peak memory and throughput with a plain copy of
// the same bytes to a file, made by another child in the same run. Under
// -race the children come from a build without the race detector, which
// multiplies memory use and slows Go code several times over.
func TestS3Large1GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB upload: skipped with -short")
	}
	srv := s3Server(t)
	bucket := srv.NewBucket(t)
	const size = 1 << 30
	const limit = 128 << 20
	bin := childBinary(t)

	run := func(mode, key, sum string) childResult {
		t.Helper()
		cmd := childCommand(t, mode, srv, bucket, key, size, sum)
		cmd.Path, cmd.Args[0] = bin, bin
		if mode == "copy" {
			cmd.Env = append(cmd.Env, childKeyEnv+"="+t.TempDir()+"/copy.bin")
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child %s: %v\n%s", mode, err, stderr.String())
		}
		var r childResult
		if _, err := fmt.Sscanf(string(out), "bytes=%d seconds=%g vmhwm_kib=%d sha256=%s", &r.bytes, &r.seconds, &r.hwmKiB, &r.sha256); err != nil {
			t.Fatalf("child %s printed %q: %v", mode, out, err)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
			r.maxrssKiB = int64(ru.Maxrss)
		}
		if r.bytes != size {
			t.Fatalf("child %s moved %d bytes, want %d", mode, r.bytes, size)
		}
		return r
	}
	cp := run("copy", "", "")
	want := cp.sha256
	known := run("put", "large/known.mp4", want)
	unknown := run("put-unknown", "large/unknown.mp4", "")

	mibps := func(r childResult) float64 { return float64(r.bytes) / (1 << 20) / r.seconds }
	t.Logf("plain io.Copy to a file (+fsync):    %6.1f MiB/s, peak RSS %3d MiB", mibps(cp), cp.peakMiB())
	t.Logf("S3 Put, size and sha256 known:       %6.1f MiB/s, peak RSS %3d MiB (%.0f%% of the plain copy's speed)", mibps(known), known.peakMiB(), 100*mibps(known)/mibps(cp))
	t.Logf("S3 Put, size unknown, via temporary: %6.1f MiB/s, peak RSS %3d MiB (%.0f%% of the plain copy's speed)", mibps(unknown), unknown.peakMiB(), 100*mibps(unknown)/mibps(cp))
	for name, r := range map[string]childResult{"known size": known, "unknown size": unknown} {
		if r.peakMiB() >= limit>>20 {
			t.Errorf("S3 Put (%s) peaked at %d MiB RSS, want under %d MiB", name, r.peakMiB(), limit>>20)
		}
		if r.sha256 != want {
			t.Errorf("S3 Put (%s) stored sha256 %s, want %s", name, r.sha256, want)
		}
	}

	s, err := storage.NewS3(t.Context(), s3Config(srv, bucket))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"large/known.mp4", "large/unknown.mp4"} {
		st, err := s.Stat(t.Context(), key)
		if err != nil || st.Size != size || st.SHA256 != want {
			t.Errorf("Stat(%s) = size %d sha256 %s, %v; want %d %s", key, st.Size, st.SHA256, err, size, want)
		}
	}
	// Read one back in full: Open's reader verifies the recorded sha256.
	start := time.Now()
	rc, _, err := s.Open(t.Context(), "large/known.mp4")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil || n != size {
		t.Errorf("reading back: %d bytes, %v", n, err)
	}
	t.Logf("S3 Open, read back and verified:     %6.1f MiB/s (in this test process)", float64(n)/(1<<20)/time.Since(start).Seconds())
}

var childBin struct {
	once sync.Once
	path string
	err  error
}

// childBinary returns the test binary to run measured children from: this
// one, or under -race a copy built without it (once per process).
func childBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return os.Args[0]
	}
	childBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "storage-test-")
		if err != nil {
			childBin.err = err
			return
		}
		start := time.Now()
		childBin.path = dir + "/storage.test"
		// The working directory of a test is its package's directory.
		out, err := exec.Command("go", "test", "-c", "-o", childBin.path, ".").CombinedOutput()
		if err != nil {
			childBin.err = fmt.Errorf("build the test binary without -race: %v\n%s", err, out)
			return
		}
		t.Logf("built the test binary without -race for the measured children in %v", time.Since(start).Round(100*time.Millisecond))
	})
	if childBin.err != nil {
		t.Fatal(childBin.err)
	}
	return childBin.path
}

type childResult struct {
	bytes     int64
	seconds   float64
	sha256    string
	hwmKiB    int64 // VmHWM read by the child itself (Linux)
	maxrssKiB int64 // getrusage of the child, read by the parent (elsewhere)
}

// peakMiB prefers the child's own VmHWM: getrusage's figure for a child can
// include the parent's memory at the time of the fork.
func (r childResult) peakMiB() int64 {
	if r.hwmKiB > 0 {
		return r.hwmKiB >> 10
	}
	return r.maxrssKiB >> 10
}

// The child process protocol: TestMain runs runChild when childEnv is set.
const (
	childEnv       = "VIDEOWORKER_STORAGE_TEST_CHILD" // put, put-unknown or copy
	childEndpoint  = "VIDEOWORKER_STORAGE_TEST_ENDPOINT"
	childBucketEnv = "VIDEOWORKER_STORAGE_TEST_BUCKET"
	childKeyEnv    = "VIDEOWORKER_STORAGE_TEST_KEY" // object key, or file path for copy
	childSizeEnv   = "VIDEOWORKER_STORAGE_TEST_SIZE"
	childSHAEnv    = "VIDEOWORKER_STORAGE_TEST_SHA256"
)

func childCommand(t *testing.T, mode string, srv *s3test.Server, bucket, key string, size int64, sum string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childEndpoint+"="+srv.Endpoint(), childBucketEnv+"="+bucket,
		childKeyEnv+"="+key, fmt.Sprintf("%s=%d", childSizeEnv, size), childSHAEnv+"="+sum)
	return cmd
}

// runChild stores (or copies) a generated stream and prints
// "bytes=N seconds=S vmhwm_kib=K sha256=HEX".
func runChild(mode string) int {
	var size int64
	fmt.Sscan(os.Getenv(childSizeEnv), &size)
	ctx := context.Background()
	start := time.Now()
	var n int64
	var sum string
	switch mode {
	case "copy":
		f, err := os.Create(os.Getenv(childKeyEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n, err = io.Copy(f, newGen(size))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		secs := time.Since(start).Seconds()
		fmt.Printf("bytes=%d seconds=%g vmhwm_kib=%d sha256=%s\n", n, secs, vmHWM(), genSum(size)) // hashed after the clock stops
		return 0
	case "put", "put-unknown":
		cfg := storage.S3Config{Endpoint: os.Getenv(childEndpoint), Region: s3test.Region, Bucket: os.Getenv(childBucketEnv),
			AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, PathStyle: true}
		s, err := storage.NewS3(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		o := storage.PutOptions{Size: size, SHA256: os.Getenv(childSHAEnv), ContentType: "video/mp4",
			Metadata: map[string]string{"job_id": "large"}}
		if mode == "put-unknown" {
			o.Size = -1
		}
		info, err := s.Put(ctx, os.Getenv(childKeyEnv), newGen(size), o)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n, sum = info.Size, info.SHA256
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode", mode)
		return 2
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("bytes=%d seconds=%g vmhwm_kib=%d sha256=%s\n", n, secs, vmHWM(), sum)
	return 0
}

// vmHWM returns the process's peak resident set size in KiB from
// /proc/self/status (0 where there is none).
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kib)
			return kib
		}
	}
	return 0
}

// gen yields a deterministic pseudo-random stream (xorshift64, eight bytes
// at a time) without holding it in memory.
type gen struct {
	state uint64
	left  int64
	buf   [8]byte
	off   int
}

func newGen(n int64) *gen { return &gen{state: 0x9E3779B97F4A7C15, left: n, off: 8} }

func (g *gen) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	i := 0
	for ; g.off < 8 && i < len(p); i++ {
		p[i] = g.buf[g.off]
		g.off++
	}
	for ; i+8 <= len(p); i += 8 {
		g.state ^= g.state << 13
		g.state ^= g.state >> 7
		g.state ^= g.state << 17
		binary.LittleEndian.PutUint64(p[i:], g.state)
	}
	if i < len(p) {
		g.state ^= g.state << 13
		g.state ^= g.state >> 7
		g.state ^= g.state << 17
		binary.LittleEndian.PutUint64(g.buf[:], g.state)
		g.off = copy(p[i:], g.buf[:])
	}
	g.left -= int64(len(p))
	return len(p), nil
}

func genSum(n int64) string {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, newGen(n), make([]byte, 1<<20)); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131+i>>11) ^ seed
	}
	return b
}

// s3Proxy stands between a store and versitygw, and lets a test watch and
// tamper with part uploads (PUT requests with partNumber and uploadId).
type s3Proxy struct {
	url string // endpoint for S3Config.Endpoint

	mu   sync.Mutex
	part func(w http.ResponseWriter, r *http.Request, num int, forward http.HandlerFunc) // nil: forward as is
	// What the part uploads looked like.
	parts, inFlight, maxInFlight int
	payloadHash                  map[string]int // X-Amz-Content-Sha256 values
	withCRC32C                   int            // requests carrying x-amz-checksum-crc32c
}

func newS3Proxy(t *testing.T, srv *s3test.Server) *s3Proxy {
	t.Helper()
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target) // keeps the Host header the request was signed for
	p := &s3Proxy{payloadHash: map[string]int{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		num, _ := strconv.Atoi(q.Get("partNumber"))
		if r.Method != http.MethodPut || num == 0 || q.Get("uploadId") == "" {
			rp.ServeHTTP(w, r)
			return
		}
		p.mu.Lock()
		p.parts++
		p.inFlight++
		p.maxInFlight = max(p.maxInFlight, p.inFlight)
		p.payloadHash[r.Header.Get("X-Amz-Content-Sha256")]++
		if r.Header.Get("X-Amz-Checksum-Crc32c") != "" {
			p.withCRC32C++
		}
		h := p.part
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			p.inFlight--
			p.mu.Unlock()
		}()
		if h == nil {
			rp.ServeHTTP(w, r)
			return
		}
		h(w, r, num, rp.ServeHTTP)
	}))
	t.Cleanup(hs.Close)
	p.url = hs.URL
	return p
}

// setPart sets the handler of part uploads (nil: forward them as they are)
// and resets the counts.
func (p *s3Proxy) setPart(h func(w http.ResponseWriter, r *http.Request, num int, forward http.HandlerFunc)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.part = h
	p.parts, p.maxInFlight = 0, 0
	p.payloadHash, p.withCRC32C = map[string]int{}, 0
}

// delayed forwards a part upload after a pause, so that a store that sends
// parts concurrently has several in flight.
func delayed(d time.Duration) func(http.ResponseWriter, *http.Request, int, http.HandlerFunc) {
	return func(w http.ResponseWriter, r *http.Request, _ int, forward http.HandlerFunc) {
		time.Sleep(d)
		forward(w, r)
	}
}

// newS3Proxied returns an S3 store (5 MiB parts) in a fresh bucket that
// talks to versitygw through a proxy.
func newS3Proxied(t *testing.T) (*storage.S3, *s3Proxy, string) {
	t.Helper()
	srv := s3Server(t)
	p := newS3Proxy(t, srv)
	s, bucket := newS3(t, func(c *storage.S3Config) { c.Endpoint = p.url })
	return s, p, bucket
}

// TestS3ConcurrentParts checks how a large object's parts travel: several
// at once (within the per-Put limit), each with an unsigned payload and its
// CRC32C; and that a part the server refuses while others are in flight
// fails the Put and leaves neither an object nor an upload.
func TestS3ConcurrentParts(t *testing.T) {
	t.Parallel()
	for _, known := range []bool{true, false} {
		t.Run(fmt.Sprintf("known_size=%t", known), func(t *testing.T) {
			t.Parallel()
			s, p, bucket := newS3Proxied(t)
			const size = 8*storage.MinS3PartSize + 12345 // nine parts
			b := pattern(size, 21)
			o := storage.PutOptions{Size: -1, SHA256: sha(b), ContentType: "video/mp4"}
			if known {
				o.Size = size
			}

			p.setPart(func(w http.ResponseWriter, r *http.Request, num int, forward http.HandlerFunc) {
				time.Sleep(100 * time.Millisecond)
				if num != 4 {
					forward(w, r)
					return
				}
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>part 4 refused by the test</Message></Error>`)
			})
			_, err := s.Put(t.Context(), "v/refused.mp4", bytes.NewReader(b), o)
			if err == nil || errors.Is(err, storage.ErrIntegrity) || !strings.Contains(err.Error(), "part 4 refused") {
				t.Fatalf("Put with part 4 refused: %v; want the server's refusal", err)
			}
			if _, err := s.Stat(t.Context(), "v/refused.mp4"); !errors.Is(err, storage.ErrNotExist) {
				t.Errorf("Stat after the refused part: %v, want ErrNotExist", err)
			}
			if ups, err := s3Server(t).IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
				t.Errorf("incomplete uploads after the refused part = %v, %v; want none", ups, err)
			}

			p.setPart(delayed(100 * time.Millisecond))
			info, err := s.Put(t.Context(), "v/refused.mp4", bytes.NewReader(b), o)
			if err != nil || info.SHA256 != sha(b) || info.Size != size {
				t.Fatalf("Put = %+v, %v", info, err)
			}
			assertS3Content(t, s, "v/refused.mp4", b)
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Logf("%d part requests, at most %d at once, payload hashes %v, %d with a CRC32C", p.parts, p.maxInFlight, p.payloadHash, p.withCRC32C)
			if p.parts != 9 {
				t.Errorf("%d part requests, want 9", p.parts)
			}
			if p.maxInFlight < 2 || p.maxInFlight > storage.S3PutBuffers {
				t.Errorf("at most %d part requests at once, want 2 to %d", p.maxInFlight, storage.S3PutBuffers)
			}
			if p.payloadHash["UNSIGNED-PAYLOAD"] != p.parts || p.withCRC32C != p.parts {
				t.Errorf("payload hashes %v and %d CRC32Cs in %d part requests; want each unsigned with a CRC32C", p.payloadHash, p.withCRC32C, p.parts)
			}
		})
	}
}

// TestS3CorruptedPart flips a byte of a part on its way to the server: the
// server refuses the part by its CRC32C, and nothing is left.
func TestS3CorruptedPart(t *testing.T) {
	t.Parallel()
	s, p, bucket := newS3Proxied(t)
	b := pattern(3*storage.MinS3PartSize, 22)
	p.setPart(func(w http.ResponseWriter, r *http.Request, num int, forward http.HandlerFunc) {
		if num == 2 {
			r.Body = io.NopCloser(&flipByte{r: r.Body, at: 1000})
		}
		forward(w, r)
	})
	_, err := s.Put(t.Context(), "v/corrupted.mp4", bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), SHA256: sha(b)})
	if err == nil || errors.Is(err, storage.ErrIntegrity) {
		t.Fatalf("Put with a corrupted part: %v; want the server's refusal", err)
	}
	t.Logf("Put with a corrupted part: %v", err)
	if _, err := s.Stat(t.Context(), "v/corrupted.mp4"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after the corrupted part: %v, want ErrNotExist", err)
	}
	if ups, err := s3Server(t).IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
		t.Errorf("incomplete uploads after the corrupted part = %v, %v; want none", ups, err)
	}
}

// TestS3CanceledPartLandsLate cancels a Put while the server is still
// receiving a part and lets that part arrive after the Put has aborted the
// upload (the proxy holds its last byte until the client has gone): storing
// it brings the upload back on the server, and the Put's repeated abort
// must remove it again.
func TestS3CanceledPartLandsLate(t *testing.T) {
	t.Parallel()
	s, p, bucket := newS3Proxied(t)
	b := pattern(4*storage.MinS3PartSize, 23)
	holding := make(chan struct{})
	landed := make(chan int, 1) // the held part's status from the server
	p.setPart(func(w http.ResponseWriter, r *http.Request, num int, forward http.HandlerFunc) {
		if num != 2 {
			forward(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Forward on a context of its own, all but the last byte at once.
		out := r.Clone(context.WithoutCancel(r.Context()))
		out.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body[:len(body)-1]), &afterDone{ctx: r.Context(), delay: 100 * time.Millisecond, last: body[len(body)-1:], started: holding}))
		rec := httptest.NewRecorder()
		forward(rec, out)
		landed <- rec.Code
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		<-holding
		cancel()
	}()
	start := time.Now()
	_, err := s.Put(ctx, "v/late.mp4", bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), SHA256: sha(b)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Put: %v, want context.Canceled", err)
	}
	t.Logf("the canceled Put returned after %v", time.Since(start).Round(time.Millisecond))
	select {
	case code := <-landed:
		if code != http.StatusOK {
			t.Fatalf("the held part got %d from the server, want 200: the test did not bring the upload back", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held part never reached the server")
	}
	if ups, err := s3Server(t).IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
		t.Errorf("incomplete uploads after the canceled Put = %v, %v; want none", ups, err)
	}
	if _, err := s.Stat(t.Context(), "v/late.mp4"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after the canceled Put: %v, want ErrNotExist", err)
	}
}

// TestS3BufferBudget runs more Puts at once than the store has part
// buffers: they all succeed, the ones that find the budget spent stream
// their parts (signed chunk by chunk, as minio-go does), and every buffer
// comes back.
func TestS3BufferBudget(t *testing.T) {
	t.Parallel()
	s, p, _ := newS3Proxied(t)
	p.setPart(delayed(100 * time.Millisecond))
	const size = 2*storage.MinS3PartSize + 1
	want := genSum(size)
	var wg sync.WaitGroup
	for i := range storage.S3BufferBudget(s) + 2 {
		wg.Go(func() {
			key := fmt.Sprintf("budget/%d", i)
			if _, err := s.Put(t.Context(), key, newGen(size), storage.PutOptions{Size: size, SHA256: want}); err != nil {
				t.Errorf("Put(%s): %v", key, err)
			}
		})
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.payloadHash["UNSIGNED-PAYLOAD"] == 0 || p.payloadHash["STREAMING-AWS4-HMAC-SHA256-PAYLOAD"] == 0 {
		t.Errorf("payload hashes of the part requests %v; want both buffered and streamed parts", p.payloadHash)
	}
}

func assertS3Content(t *testing.T, s *storage.S3, key string, want []byte) {
	t.Helper()
	rc, _, err := s.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("Open(%s) = %d bytes, %v; want the %d written", key, len(got), err, len(want))
	}
}

// flipByte inverts the byte at offset at of the stream it reads.
type flipByte struct {
	r   io.Reader
	at  int64
	off int64
}

func (f *flipByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

// afterDone yields last once ctx is done and delay has passed; started is
// closed when it begins to wait.
type afterDone struct {
	ctx     context.Context
	delay   time.Duration
	last    []byte
	started chan struct{}
	once    sync.Once
}

func (a *afterDone) Read(p []byte) (int, error) {
	a.once.Do(func() {
		close(a.started)
		<-a.ctx.Done()
		time.Sleep(a.delay)
	})
	if len(a.last) == 0 {
		return 0, io.EOF
	}
	n := copy(p, a.last)
	a.last = a.last[n:]
	return n, nil
}
