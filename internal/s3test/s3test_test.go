package s3test

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestStart(t *testing.T) {
	s := Start(t)
	host, port, err := net.SplitHostPort(s.Endpoint())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Errorf("Endpoint() = %q, want 127.0.0.1 and a port", s.Endpoint())
	}
	if s.URL() != "http://"+s.Endpoint() {
		t.Errorf("URL() = %q", s.URL())
	}
	b1, b2 := s.NewBucket(t), s.NewBucket(t)
	if b1 == b2 {
		t.Fatalf("NewBucket returned %q twice", b1)
	}
	c := s.Client()
	if _, err := c.Client.PutObject(t.Context(), b1, "a/b", bytes.NewReader([]byte("hello")), 5, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := c.Client.GetObject(t.Context(), b1, "a/b", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || string(got) != "hello" {
		t.Errorf("GetObject = %q, %v", got, err)
	}
	if objs, err := s.Objects(t.Context(), b1); err != nil || len(objs) != 1 || objs[0] != "a/b" {
		t.Errorf("Objects = %v, %v", objs, err)
	}
	if objs, err := s.Objects(t.Context(), b2); err != nil || len(objs) != 0 {
		t.Errorf("Objects of a new bucket = %v, %v", objs, err)
	}
	id, err := c.NewMultipartUpload(t.Context(), b1, "up", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ups, err := s.IncompleteUploads(t.Context(), b1); err != nil || len(ups) != 1 || ups[0] != "up "+id {
		t.Errorf("IncompleteUploads = %v, %v", ups, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), b1, "a", "b")); err != nil {
		t.Errorf("the posix backend keeps objects as files under Dir(): %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestFindBinary(t *testing.T) {
	t.Setenv(BinEnv, filepath.Join(t.TempDir(), "nope"))
	if _, err := findOrBuild(); err == nil || !strings.Contains(err.Error(), BinEnv) {
		t.Errorf("findOrBuild with a missing %s: %v, want an error naming it", BinEnv, err)
	}
	p, err := CachePath()
	if err != nil || !strings.HasSuffix(p, filepath.Join("videoworker-tools", "versitygw-"+VersitygwVersion)) {
		t.Errorf("CachePath() = %q, %v", p, err)
	}
}
