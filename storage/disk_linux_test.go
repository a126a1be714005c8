//go:build linux

package storage_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/videoworker/videoworker/storage"
)

// The tests here read and write the metadata attribute directly.

func TestDiskLayout(t *testing.T) {
	t.Parallel()
	d := newDisk(t)
	b := []byte("hello video")
	info, err := d.Put(t.Context(), "videos/a b.mp4", bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), ContentType: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d.Root(), "videos", "a b.mp4")
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("object file %s = %q, %v", p, got, err)
	}
	meta := make([]byte, 4096)
	if n, err := unix.Getxattr(p, storage.MetaXattr, meta); err != nil || !strings.Contains(string(meta[:n]), `"sha256":"`+sha(b)+`"`) {
		t.Errorf("metadata attribute %s = %q, %v; want a document naming the sha256", storage.MetaXattr, meta[:max(n, 0)], err)
	}
	if _, err := os.Lstat(p + ".meta"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a sidecar was written although the file system keeps attributes (err %v)", err)
	}
	wantLoc := "file://" + filepath.ToSlash(d.Root()) + "/videos/a%20b.mp4"
	if info.Location != wantLoc || d.Location("videos/a b.mp4") != wantLoc {
		t.Errorf("Location = %q, want %q", info.Location, wantLoc)
	}
	if loc := d.Location("../x"); loc != "" {
		t.Errorf("Location of an invalid key = %q, want empty", loc)
	}
	if err := d.Delete(t.Context(), "videos/a b.mp4"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p, p + ".meta"} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after Delete (err %v)", f, err)
		}
	}
}

// TestDiskStaleMetadata covers metadata that describes other bytes of the
// same size: a sidecar left by a crash between the sidecar and the data
// rename, or an attribute set by another program.
func TestDiskStaleMetadata(t *testing.T) {
	t.Parallel()
	for _, carrier := range []string{"sidecar", "attribute"} {
		t.Run(carrier, func(t *testing.T) {
			t.Parallel()
			d := newDisk(t)
			storage.UseSidecars(d)
			old := []byte("old bytes")
			if _, err := d.Put(t.Context(), "k", bytes.NewReader(old), storage.PutOptions{Size: int64(len(old)), ContentType: "video/mp4"}); err != nil {
				t.Fatal(err)
			}
			nw := []byte("new bytes")
			stale := `{"version":1,"size":9,"sha256":"` + sha(nw) + `","content_type":"text/plain"}`
			if carrier == "sidecar" {
				must(t, os.WriteFile(filepath.Join(d.Root(), "k.meta"), []byte(stale), 0o644))
			} else {
				must(t, os.Remove(filepath.Join(d.Root(), "k.meta")))
				must(t, unix.Setxattr(filepath.Join(d.Root(), "k"), storage.MetaXattr, []byte(stale), 0))
			}
			checkStale(t, d, old)
		})
	}
}

func checkStale(t *testing.T, d *storage.Disk, old []byte) {
	t.Helper()

	info, err := d.Stat(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if info.SHA256 != sha(old) || info.ContentType != "" {
		t.Errorf("Stat = sha256 %s content type %q; want the file's own sha256 %s and no content type", info.SHA256, info.ContentType, sha(old))
	}
	rc, _, err := d.Open(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if !errors.Is(err, storage.ErrIntegrity) {
		t.Errorf("reading an object whose sidecar records other bytes: err = %v, want ErrIntegrity", err)
	}
}
