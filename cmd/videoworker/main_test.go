package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
)

func TestConfigNamesEveryProblem(t *testing.T) {
	for k, v := range map[string]string{
		"REDIS_URL": "http://nope", "AISTATS_BASE_URL": "ftp://x", "WORKER_CONCURRENCY": "0",
		"WORKER_QUEUES": "video_create:1,bogus:2", "POLL_INTERVAL": "10ms", "LOG_FORMAT": "xml",
		"STORAGE_KEY_TEMPLATE": "videos/{nope}.mp4", "LOG_LEVEL": "loud",
	} {
		t.Setenv(k, v)
	}
	_, err := loadConfig()
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, name := range []string{"REDIS_URL", "AISTATS_BASE_URL", "WORKER_CONCURRENCY", "WORKER_QUEUES", "POLL_INTERVAL", "LOG_FORMAT", "STORAGE_KEY_TEMPLATE", "LOG_LEVEL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

// TestConfigRefusesUnsafeKeyTemplates: a template without {job_id} or
// {video_id} (every job would write one key) or one that makes reserved
// names is refused at start, not discovered after a paid generation.
func TestConfigRefusesUnsafeKeyTemplates(t *testing.T) {
	for _, tmpl := range []string{"videos/{date}/out.mp4", "videos/.tmp-{job_id}.mp4", "videos/{job_id}.meta", "videos/.{video_id}"} {
		t.Setenv("STORAGE_KEY_TEMPLATE", tmpl)
		if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "STORAGE_KEY_TEMPLATE") {
			t.Errorf("STORAGE_KEY_TEMPLATE=%q: %v, want it refused", tmpl, err)
		}
	}
}

// TestConfigRefusesPlainHTTPAPI: a plain-http AISTATS_BASE_URL to a host
// that is not loopback would send the bearer key in clear; it is refused
// unless AISTATS_ALLOW_INSECURE allows it (true, or that host).
func TestConfigRefusesPlainHTTPAPI(t *testing.T) {
	for _, tc := range []struct {
		url, allow string
		ok         bool
	}{
		{"http://api.example.com/v1", "", false},
		{"http://10.1.2.3:8090/v1", "false", false},
		{"http://api.example.com/v1", "standin", false},
		{"http://api.example.com/v1", "true", true},
		{"http://standin:8090/v1", "other, standin", true},
		{"http://127.0.0.1:8090/v1", "", true},
		{"http://localhost:8090/v1", "", true},
		{"https://api.example.com/v1", "", true},
	} {
		t.Setenv("AISTATS_BASE_URL", tc.url)
		t.Setenv("AISTATS_ALLOW_INSECURE", tc.allow)
		_, err := loadConfig()
		if tc.ok && err != nil {
			t.Errorf("%s with AISTATS_ALLOW_INSECURE=%q refused: %v", tc.url, tc.allow, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "AISTATS_BASE_URL") || !strings.Contains(err.Error(), "in clear")) {
			t.Errorf("%s with AISTATS_ALLOW_INSECURE=%q: %v, want it refused", tc.url, tc.allow, err)
		}
	}
}

func TestConfigDefaultsAreValid(t *testing.T) {
	c, err := loadConfig()
	if err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	if c.APIBaseURL != "https://api.phaseo.app/v1" || c.StorageURL != "file://./data" {
		t.Errorf("defaults changed: %+v", c)
	}
}

func TestWorkerRefusesToStartWithoutAPIKey(t *testing.T) {
	t.Setenv("AISTATS_API_KEY", "")
	err := run(t.Context(), []string{"worker"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "AISTATS_API_KEY") {
		t.Fatalf("worker without a key: %v", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"frobnicate"}, &out, &out)
	if _, ok := err.(usageError); !ok {
		t.Fatalf("got %v, want a usage error", err)
	}
}

// TestDemo runs the demo as a user would, with its embedded Redis and the
// stand-in API, and checks its summary line and the stored files.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STORAGE_URL", "file://"+dir)
	for _, k := range []string{"REDIS_URL", "AISTATS_API_KEY"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	summary := make(chan time.Time, 1)
	watch := &notifyWriter{w: &out, want: "6 stored, 0 failed\n", at: summary}
	if err := run(ctx, []string{"demo", "-jobs", "6", "-exit-when-done"}, watch, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	// It exits promptly and cleanly: it stalled 5 s and logged
	// "demo dashboard stopped: context deadline exceeded" in 4 of 7 runs.
	select {
	case at := <-summary:
		if d := time.Since(at); d > 2*time.Second {
			t.Errorf("the demo took %v to exit after its summary", d)
		}
	default:
		t.Errorf("summary line missing:\n%s", out.String())
	}
	if errOut.String() != "" {
		t.Errorf("stderr:\n%s", errOut.String())
	}
	// The address and login come first; then one progress line (printed
	// every 2 s here, stdout not being a terminal), not a table of jobs.
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "dashboard at http://127.0.0.1:") || !strings.Contains(lines[1], "log in as demo / ") {
		t.Errorf("the dashboard and its login are not first:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "6/6 done · queued 0 · generating 0 · downloading 0 · stored 6 · failed 0") ||
		!strings.Contains(out.String(), "random bytes") || !strings.Contains(out.String(), "wrong secret") {
		t.Errorf("progress line or notes missing:\n%s", out.String())
	}
	if len(lines) > 20 {
		t.Errorf("%d lines of output for 6 jobs:\n%s", len(lines), out.String())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "videos", "*", "*.mp4"))
	if len(files) != 6 {
		t.Errorf("%d videos stored under %s, want 6", len(files), dir)
	}
}

// TestSeparateProcesses is the multi-process check: the stand-in,
// two worker processes on one real Redis, and enqueue from a shell carry 50
// jobs to storage; status shows each one's history.
func TestSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "videoworker")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	rs := redistest.Start(t, redistest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := ln.Addr().String()
	ln.Close()
	storeDir := t.TempDir()
	env := append(os.Environ(),
		"REDIS_URL="+rs.URL(rs.NewDB(t)),
		"AISTATS_BASE_URL=http://"+apiAddr+"/v1",
		"AISTATS_API_KEY=sk-e2e-secret-key",
		"STORAGE_URL=file://"+storeDir,
		"POLL_INTERVAL=1s",
		"LOG_FORMAT=json",
		"WORKER_CONCURRENCY=8",
	)
	start := func(name string, args ...string) {
		var logs syncBuffer
		cmd := exec.Command(bin, args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("%s output:\n%s", name, tail(logs.String(), 3000))
			}
			if strings.Contains(logs.String(), "sk-e2e-secret-key") {
				t.Errorf("%s logged the API key", name)
			}
		})
	}
	start("standin", "standin", "-addr", apiAddr, "-queued-for", "200ms", "-processing-for", "800ms", "-poll-after", "1", "-content-size", "65536")
	waitListening(t, apiAddr)
	start("worker-1", "worker")
	start("worker-2", "worker")

	cmd := exec.Command(bin, "enqueue", "-prompt", "a lighthouse in a storm", "-count", "50", "-job-id", "e2e")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) != 50 {
		t.Fatalf("enqueue printed %d ids, want 50", len(ids))
	}
	deadline := time.Now().Add(2 * time.Minute)
	var recs map[string]jobs.Record
	for {
		recs = statusJSON(t, bin, env, ids)
		done := 0
		for _, r := range recs {
			if r.State.Terminal() {
				done++
			}
		}
		if done == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs finished after 2 minutes", done, len(ids))
		}
		time.Sleep(500 * time.Millisecond)
	}
	for id, r := range recs {
		if r.State != jobs.StateStored || r.CreateAttempts != 1 {
			t.Errorf("job %s: state %s, create attempts %d", id, r.State, r.CreateAttempts)
		}
		if _, err := os.Stat(strings.TrimPrefix(r.Location, "file://")); err != nil {
			t.Errorf("job %s: stored file: %v", id, err)
		}
	}
	// The human status view shows the history.
	cmd = exec.Command(bin, "status", ids[0])
	cmd.Env = env
	human, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, human)
	}
	for _, want := range []string{"state stored", "history:", "create_started", "created", "completed", "stored"} {
		if !strings.Contains(string(human), want) {
			t.Errorf("status output lacks %q:\n%s", want, human)
		}
	}
}

func statusJSON(t *testing.T, bin string, env, ids []string) map[string]jobs.Record {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"status", "-json"}, ids...)...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	recs := map[string]jobs.Record{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Job jobs.Record `json:"job"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("status -json line %q: %v", sc.Text(), err)
		}
		recs[line.Job.ID] = line.Job
	}
	return recs
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// ReadFrom copies through Write, under the lock: the embedded Buffer's
// ReadFrom, which os/exec uses for a command's output, would bypass it.
func (b *syncBuffer) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{b}, r)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("…%s", s[len(s)-n:])
}

// notifyWriter passes writes to w and sends the time when a write ends
// with want.
type notifyWriter struct {
	w    io.Writer
	want string
	at   chan time.Time
}

func (n *notifyWriter) Write(p []byte) (int, error) {
	if strings.HasSuffix(string(p), n.want) {
		select {
		case n.at <- time.Now():
		default:
		}
	}
	return n.w.Write(p)
}

// TestConfigNamesEveryTenancyProblem: malformed tenancy settings stop
// the program at start with every problem named.
func TestConfigNamesEveryTenancyProblem(t *testing.T) {
	t.Setenv("TENANT_LIMITS", "default=x,Acme=3,bulk,bulk=2,bulk=3")
	t.Setenv("TENANT_WEIGHTS", "acme=0,bulk=heavy")
	t.Setenv("TENANT_FAIRNESS", "sometimes")
	t.Setenv("TENANT_ADMIT_AHEAD", "0")
	_, err := loadConfig()
	if err == nil {
		t.Fatal("invalid tenancy settings accepted")
	}
	for _, s := range []string{`"default=x"`, `"Acme=3"`, `"bulk"`, `"bulk=3": tenant given twice`, `TENANT_WEIGHTS: tenant weight "acme=0"`, `"bulk=heavy"`, "TENANT_FAIRNESS", "TENANT_ADMIT_AHEAD"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not name %s:\n%v", s, err)
		}
	}
	t.Setenv("TENANT_LIMITS", "default=5,acme=20,bulk=2")
	t.Setenv("TENANT_WEIGHTS", "acme=3")
	t.Setenv("TENANT_FAIRNESS", "auto")
	t.Setenv("TENANT_ADMIT_AHEAD", "2")
	if _, err := loadConfig(); err != nil {
		t.Fatalf("valid tenancy settings refused: %v", err)
	}
	// TENANT_WEIGHTS alone turns tenancy on, as TENANT_LIMITS does.
	t.Setenv("TENANT_LIMITS", "")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.tenancy(jobs.NewStore(nil, "")) == nil {
		t.Error("TENANT_WEIGHTS set with TENANT_FAIRNESS=auto: tenancy off")
	}
	t.Setenv("TENANT_FAIRNESS", "off")
	if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "TENANT_WEIGHTS: set while TENANT_FAIRNESS is off") {
		t.Errorf("TENANT_WEIGHTS with TENANT_FAIRNESS=off: %v; want refused", err)
	}
}

// TestConfigNamesEveryBudgetProblem: malformed budgets and prices stop the
// program at start with every problem named.
func TestConfigNamesEveryBudgetProblem(t *testing.T) {
	t.Setenv("BUDGETS", "day=200,week=5,tenant:Acme/day=20,model:openai/sora-2/day=abc")
	t.Setenv("MODEL_PRICES", "google/veo-3.1-lite=0.05/s,openai/sora-2=cheap")
	t.Setenv("BUDGET_POLICY", "maybe")
	_, err := loadConfig()
	if err == nil {
		t.Fatal("invalid budgets accepted")
	}
	for _, s := range []string{`"week=5"`, `"tenant:Acme/day=20": invalid tenant`, `"model:openai/sora-2/day=abc"`, `"openai/sora-2=cheap"`, "BUDGET_POLICY"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not name %s:\n%v", s, err)
		}
	}
	t.Setenv("BUDGETS", "day=200,model:openai/sora-2/day=50,tenant:acme/day=20")
	t.Setenv("MODEL_PRICES", "google/veo-3.1-lite=0.05/s")
	t.Setenv("BUDGET_POLICY", "reject")
	if _, err := loadConfig(); err != nil {
		t.Fatalf("valid budgets refused: %v", err)
	}
}
