// Package s3test runs a real S3 server for tests: versitygw with its posix
// backend, as a child process of the test binary on a free loopback port,
// storing into a temporary directory. Tests share one server per package and
// isolate themselves by bucket:
//
//	var srv *s3test.Server
//
//	func TestMain(m *testing.M) {
//		s, stop, err := s3test.StartMain()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		srv = s
//		code := m.Run()
//		stop()
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		bucket := srv.NewBucket(t)
//		...
//	}
//
// # The versitygw binary
//
// [Binary] looks for it in $VERSITYGW_BIN, then on PATH, then in the cache
// ($(go env GOCACHE)/videoworker-tools/versitygw-v1.8.0). When it is
// nowhere it builds it into the cache with "go install" (about two minutes
// and 60 MB, once per machine; .ci/run does it up front). Builds are
// serialised across processes by a lock file and published by an atomic
// rename, so parallel test packages never build twice or run a half-written
// binary. If the binary can be neither found nor built the test fails (it is
// never skipped): these tests need a real S3 server.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The server's fixed credentials and region.
const (
	AccessKey = "s3test-access"
	SecretKey = "s3test-secret-key-not-for-production"
	Region    = "us-east-1"
)

const (
	// VersitygwVersion is the version Binary builds.
	VersitygwVersion = "v1.8.0"
	// VersitygwPackage is what Binary installs.
	VersitygwPackage = "github.com/versity/versitygw/cmd/versitygw"
	// BinEnv names an environment variable that, when set, is the path of
	// the versitygw binary to use.
	BinEnv = "VERSITYGW_BIN"

	readyTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
	buildTimeout = 15 * time.Minute
	bindAttempts = 5
	logName      = "versitygw.log"
)

// Server is a running versitygw. Its methods are safe for concurrent use.
type Server struct {
	bin  string
	dir  string // holds root/ (the buckets), meta/ (when needed) and the log
	port int

	mu   sync.Mutex
	proc *process // nil once stopped

	seq    atomic.Int64
	client *minio.Core
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts a server for one test; t.Cleanup stops it. It fails the
// test if the binary cannot be had or the server does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(t.TempDir())
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("s3test: %v", err)
		}
	})
	return s
}

// StartMain starts a server for a whole package from TestMain. It returns
// the server and a stop function that stops it and removes its directory
// (stop may be called more than once and reports problems on stderr).
func StartMain() (*Server, func(), error) {
	dir, err := os.MkdirTemp("", "s3test-")
	if err != nil {
		return nil, nil, fmt.Errorf("s3test: %w", err)
	}
	s, err := start(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("s3test: %w", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := s.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "s3test: %v\n", err)
			}
			if err := os.RemoveAll(dir); err != nil {
				fmt.Fprintf(os.Stderr, "s3test: %v\n", err)
			}
		})
	}
	return s, stop, nil
}

func start(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "root"), 0o755); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = s.launch(); err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || attempt == bindAttempts {
			return nil, err
		}
	}
	s.client, err = minio.NewCore(s.Endpoint(), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: Region, BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

var errAddrInUse = errors.New("address already in use")

func (s *Server) launch() error {
	root := filepath.Join(s.dir, "root")
	args := []string{"--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", s.Endpoint(), "--quiet", "posix"}
	if !xattrsWork(root) {
		meta := filepath.Join(s.dir, "meta")
		if err := os.MkdirAll(meta, 0o755); err != nil {
			return err
		}
		args = append(args, "--sidecar", meta)
	}
	args = append(args, root)
	logPath := filepath.Join(s.dir, logName)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	logf.Close()
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := waitReady(s.Endpoint(), p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		tail := logTail(logPath)
		if strings.Contains(tail, "address already in use") {
			err = errAddrInUse
		}
		return fmt.Errorf("versitygw on %s did not come up: %w\n--- log tail (%s) ---\n%s", s.Endpoint(), err, logPath, tail)
	}
	s.proc = p
	return nil
}

// waitReady waits until an authenticated ListBuckets succeeds.
func waitReady(endpoint string, p *process) error {
	c, err := minio.NewCore(endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: Region, BucketLookup: minio.BucketLookupPath, MaxRetries: 1,
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("process exited: %v", p.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %v: %w", readyTimeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func logTail(path string) string {
	const max = 4 << 10
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "(empty)"
	}
	return strings.TrimRight(string(b), "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Endpoint returns "127.0.0.1:PORT" (plain http, path-style buckets).
func (s *Server) Endpoint() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns "http://127.0.0.1:PORT".
func (s *Server) URL() string { return "http://" + s.Endpoint() }

// Dir returns the directory holding the buckets (one subdirectory each).
func (s *Server) Dir() string { return filepath.Join(s.dir, "root") }

// Client returns a client with the server's credentials. Do not close it.
func (s *Server) Client() *minio.Core { return s.client }

// NewBucket creates a bucket with a fresh name and returns the name. The
// bucket is left in place (the server's directory goes at the end).
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("t%05d-%s", s.seq.Add(1), hex.EncodeToString(rnd[:]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		t.Fatalf("s3test: make bucket %s: %v", name, err)
	}
	return name
}

// IncompleteUploads lists the multipart uploads of bucket that were
// neither completed nor aborted, as "key uploadID" strings.
func (s *Server) IncompleteUploads(ctx context.Context, bucket string) ([]string, error) {
	var out []string
	for u := range s.client.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			return nil, u.Err
		}
		out = append(out, u.Key+" "+u.UploadID)
	}
	return out, nil
}

// Objects lists every object key in bucket.
func (s *Server) Objects(ctx context.Context, bucket string) ([]string, error) {
	var out []string
	for o := range s.client.Client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		out = append(out, o.Key)
	}
	return out, nil
}

// Stop stops the server with SIGTERM, killing it after 10 s. Stopping a
// stopped server does nothing. It reports an error if the server had died.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	select {
	case <-p.done:
		return fmt.Errorf("versitygw on %s had exited: %v\n--- log tail ---\n%s", s.Endpoint(), p.err, logTail(filepath.Join(s.dir, logName)))
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of a versitygw binary, building it into the cache
// when it is not found (see the package documentation). The result is
// computed once per process.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = findOrBuild() })
	return binPath, binErr
}

// CachePath returns where Binary caches the versitygw it builds:
// $(go env GOCACHE)/videoworker-tools/versitygw-v1.8.0.
func CachePath() (string, error) {
	dir, err := goEnv("GOCACHE")
	if err != nil || dir == "" || dir == "off" {
		if dir, err = os.UserCacheDir(); err != nil {
			return "", fmt.Errorf("no cache directory: %w", err)
		}
	}
	return filepath.Join(dir, "videoworker-tools", "versitygw-"+VersitygwVersion), nil
}

func findOrBuild() (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinEnv, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	path, err := CachePath()
	if err != nil {
		return "", err
	}
	if executable(path) == nil {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if executable(path) == nil { // another process built it while we waited
		return path, nil
	}
	if err := build(path); err != nil {
		return "", fmt.Errorf("versitygw is not installed and building it failed: %w\n"+
			"install it with: GOBIN=%s go install %s@%s (and rename the result to %s), or set %s",
			err, filepath.Dir(path), VersitygwPackage, VersitygwVersion, filepath.Base(path), BinEnv)
	}
	return path, nil
}

// build installs versitygw into a temporary directory next to path and
// renames it into place.
func build(path string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return errors.New("the go command is not on PATH")
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(os.Stderr, "s3test: building versitygw %s into %s (about 2 minutes, once per machine)\n", VersitygwVersion, path)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", VersitygwPackage+"@"+VersitygwVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go install %s@%s: %v\n%s", VersitygwPackage, VersitygwVersion, err, bytes.TrimSpace(out))
	}
	if err := os.Rename(filepath.Join(tmp, "versitygw"), path); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "s3test: built versitygw in %v\n", time.Since(start).Round(time.Second))
	return nil
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

func goEnv(name string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(goBin, "env", name).Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}
