package storage_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/storage/storagetest"
)

func TestDiskConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		d := newDisk(t)
		return d
	})
}

// TestDiskConformanceFallbacks runs the suite with metadata in sidecar
// files and data written to named temporary files, as on a file system
// without user extended attributes or O_TMPFILE.
func TestDiskConformanceFallbacks(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		d := newDisk(t)
		storage.UseSidecars(d)
		storage.UseNamedTemps(d)
		return d
	})
}

// TestDiskPutLeavesNoNameUntilDone: while a Put streams, its data file has
// no name in the directory (O_TMPFILE), so a worker killed mid-download
// leaves nothing behind; a Put that fails leaves nothing either.
func TestDiskPutLeavesNoNameUntilDone(t *testing.T) {
	t.Parallel()
	d := newDisk(t)
	must(t, os.MkdirAll(filepath.Join(d.Root(), "v"), 0o755))
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := d.Put(t.Context(), "v/slow.mp4", pr, storage.PutOptions{Size: 8 << 20})
		done <- err
	}()
	// Two MiB in: the Put has its data file and has written to it.
	if _, err := pw.Write(make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(d.Root(), "v"))
	must(t, err)
	for _, e := range entries {
		t.Errorf("mid-Put the directory holds %q; a killed worker would leave it behind", e.Name())
	}
	pw.CloseWithError(errors.New("download dropped"))
	if err := <-done; err == nil {
		t.Fatal("Put of a dropped download succeeded")
	}
	entries, err = os.ReadDir(filepath.Join(d.Root(), "v"))
	must(t, err)
	for _, e := range entries {
		t.Errorf("after a failed Put the directory holds %q", e.Name())
	}
}

// newDisk returns a Disk in a temporary directory and checks at cleanup that
// no temporary file and no orphan sidecar is left in it.
func newDisk(t *testing.T) *storage.Disk {
	t.Helper()
	d, err := storage.NewDisk(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertClean(t, d.Root()) })
	return d
}

func assertClean(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		if data, ok := strings.CutSuffix(p, ".meta"); ok && !e.IsDir() {
			if _, err := os.Lstat(data); err != nil {
				t.Errorf("sidecar without data: %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", root, err)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestNewDisk(t *testing.T) {
	t.Chdir(t.TempDir())
	d, err := storage.NewDisk("rel/data")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(d.Root()) {
		t.Errorf("Root() = %q, want an absolute path", d.Root())
	}
	fi, err := os.Stat("rel/data")
	if err != nil || !fi.IsDir() {
		t.Fatalf("root not created: %v", err)
	}
	if err := os.WriteFile("file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.NewDisk("file"); err == nil {
		t.Error("NewDisk on a regular file succeeded")
	}
	if _, err := storage.NewDisk(""); err == nil {
		t.Error(`NewDisk("") succeeded`)
	}
}

func TestDiskReservedNames(t *testing.T) {
	t.Parallel()
	d := newDisk(t)
	for _, key := range []string{".tmp-x", "a/.tmp-b/c", "x.meta", "a.meta/b"} {
		if err := storage.ValidateKey(key); err != nil {
			t.Fatalf("ValidateKey(%q) = %v; the test needs a generally valid key", key, err)
		}
		_, err := d.Put(t.Context(), key, strings.NewReader("x"), storage.PutOptions{Size: 1})
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := d.Stat(t.Context(), key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
}

// TestDiskNoEscape checks keys cannot reach outside the root: by name, and
// through symbolic links planted inside it.
func TestDiskNoEscape(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := storage.NewDisk(filepath.Join(base, "root"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	for _, key := range []string{"../outside/secret", "../outside/new", "a/../../outside/new"} {
		if _, err := d.Put(ctx, key, strings.NewReader("x"), storage.PutOptions{Size: 1}); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}

	inside := filepath.Join(d.Root(), "inside")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	must(t, os.Symlink(outside, filepath.Join(d.Root(), "link")))            // directory link out of the root
	must(t, os.Symlink(secret, filepath.Join(d.Root(), "file.mp4")))         // file link out of the root
	must(t, os.Symlink("../outside", filepath.Join(d.Root(), "rel")))        // relative link out of the root
	must(t, os.Symlink(inside, filepath.Join(d.Root(), "in")))               // link that stays inside
	must(t, os.Symlink("../secret", filepath.Join(inside, "up")))            // nested link
	must(t, os.WriteFile(filepath.Join(inside, "obj"), []byte("in"), 0o644)) // target of "in/obj"

	for _, key := range []string{"link/secret", "link/new", "file.mp4", "rel/secret", "rel/new/x", "in/obj", "in/new", "inside/up"} {
		_, err := d.Put(ctx, key, strings.NewReader("pwned"), storage.PutOptions{Size: 5})
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidKey (symbolic link)", key, err)
		}
		if _, err := d.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) succeeded through a symbolic link", key)
		}
		if rc, _, err := d.Open(ctx, key); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("Open(%q) succeeded through a symbolic link and read %q", key, b)
		}
		if err := d.Delete(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "secret" {
		t.Errorf("file outside the root changed: %q, %v", b, err)
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("outside dir has %d entries, want only the secret", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(inside, "obj")); string(b) != "in" {
		t.Errorf("inside/obj changed through a link: %q", b)
	}
	assertClean(t, d.Root())
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDiskPutOverDirectory(t *testing.T) {
	t.Parallel()
	d := newDisk(t)
	b := []byte("x")
	if _, err := d.Put(t.Context(), "a/b", bytes.NewReader(b), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(t.Context(), "a", bytes.NewReader(b), storage.PutOptions{Size: 1}); err == nil {
		t.Error("Put over a directory succeeded")
	}
	if _, err := d.Put(t.Context(), "a/b/c", bytes.NewReader(b), storage.PutOptions{Size: 1}); err == nil {
		t.Error("Put below an object succeeded")
	}
	if _, err := os.Lstat(filepath.Join(d.Root(), "a.meta")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Put left a sidecar: %v", err)
	}
}

// TestDiskSidecarThenAttribute: an object written with a sidecar (by an
// earlier version, or on a file system without attributes) stays readable
// with its metadata, and a new Put of the key moves the metadata into the
// attribute and removes the sidecar.
func TestDiskSidecarThenAttribute(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	old, err := storage.NewDisk(root)
	must(t, err)
	storage.UseSidecars(old)
	v1 := []byte("version one")
	if _, err := old.Put(t.Context(), "a/k.mp4", bytes.NewReader(v1), storage.PutOptions{Size: int64(len(v1)), ContentType: "video/mp4", Metadata: map[string]string{"job_id": "j1"}}); err != nil {
		t.Fatal(err)
	}
	d, err := storage.NewDisk(root)
	must(t, err)
	rc, info, err := d.Open(t.Context(), "a/k.mp4")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, v1) || info.SHA256 != sha(v1) || info.ContentType != "video/mp4" || info.Metadata["job_id"] != "j1" {
		t.Fatalf("Open of a sidecar object = %q %+v, %v", got, info, err)
	}
	v2 := []byte("version two!")
	if _, err := d.Put(t.Context(), "a/k.mp4", bytes.NewReader(v2), storage.PutOptions{Size: int64(len(v2)), ContentType: "video/webm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "a", "k.mp4.meta")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old sidecar is still there after a Put with attributes (err %v)", err)
	}
	info, err = d.Stat(t.Context(), "a/k.mp4")
	if err != nil || info.SHA256 != sha(v2) || info.ContentType != "video/webm" || info.Metadata != nil {
		t.Errorf("Stat after the new Put = %+v, %v", info, err)
	}
}

// TestDiskNoSidecar covers files placed in the root by hand.
func TestDiskNoSidecar(t *testing.T) {
	t.Parallel()
	d := newDisk(t)
	b := []byte("by hand")
	must(t, os.WriteFile(filepath.Join(d.Root(), "hand.mp4"), b, 0o644))
	info, err := d.Stat(t.Context(), "hand.mp4")
	if err != nil || info.SHA256 != sha(b) || info.Size != int64(len(b)) {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	rc, oinfo, err := d.Open(t.Context(), "hand.mp4")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, b) || oinfo.SHA256 != "" {
		t.Errorf("Open = %q (sha256 %q), %v", got, oinfo.SHA256, err)
	}
}

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tc := range []struct{ url, root string }{
		{"file://./data", filepath.Join(dir, "data")},
		{"file://data2", filepath.Join(dir, "data2")},
		{"file://" + filepath.ToSlash(dir) + "/abs", filepath.Join(dir, "abs")},
		{"file://localhost" + filepath.ToSlash(dir) + "/lh", filepath.Join(dir, "lh")},
		{"FILE://" + filepath.ToSlash(dir) + "/with%20space", filepath.Join(dir, "with space")},
		{"./plain", filepath.Join(dir, "plain")},
		{"plain2", filepath.Join(dir, "plain2")},
		{dir + "/plain3", filepath.Join(dir, "plain3")},
	} {
		s, err := storage.Open(t.Context(), tc.url)
		if err != nil {
			t.Errorf("Open(%q): %v", tc.url, err)
			continue
		}
		d, ok := s.(*storage.Disk)
		if !ok {
			t.Errorf("Open(%q) = %T, want *storage.Disk", tc.url, s)
			continue
		}
		if d.Root() != tc.root {
			t.Errorf("Open(%q).Root() = %q, want %q", tc.url, d.Root(), tc.root)
		}
	}

	// s3 URLs are S3's (see TestOpenS3); credentials in them are refused.
	_, err := storage.Open(t.Context(), "s3://AKIA:hunter2@bucket/prefix")
	if err == nil || !strings.Contains(err.Error(), "credentials do not belong in the URL") {
		t.Errorf("Open(s3://user:password@...) error = %v, want a refusal of credentials in the URL", err)
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the URL's password: %v", err)
	}
	for _, raw := range []string{"gs://bucket/x", "http://example.com/x"} {
		_, err := storage.Open(t.Context(), raw)
		scheme, _, _ := strings.Cut(raw, ":")
		if err == nil || !strings.Contains(err.Error(), `"`+scheme+`"`) {
			t.Errorf("Open(%q) error = %v, want one naming the scheme", raw, err)
		}
	}
	for _, raw := range []string{"", "file://", "file:///x?y=1"} {
		if _, err := storage.Open(t.Context(), raw); err == nil {
			t.Errorf("Open(%q) succeeded", raw)
		}
	}
}
