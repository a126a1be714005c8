package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/metrics"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/worker"
)

// The bench re-executes itself for figures that need a process of their
// own: worker CPU (the scale section) and peak RSS (transfer). childEnv
// names the mode, configEnv carries the JSON configuration.
const (
	childEnv  = "VIDEOWORKER_BENCH_CHILD"
	configEnv = "VIDEOWORKER_BENCH_CONFIG"
)

func runChild(ctx context.Context, mode string, in io.Reader, out io.Writer) error {
	cfg := os.Getenv(configEnv)
	switch mode {
	case "worker":
		var c childWorkerConfig
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			return err
		}
		return childWorker(ctx, c, in, out)
	case "idle":
		var c idleConfig
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			return err
		}
		return childIdle(ctx, c, in, out)
	case "transfer":
		var c transferConfig
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			return err
		}
		res, err := childTransfer(ctx, c)
		if err != nil {
			return err
		}
		return json.NewEncoder(out).Encode(res)
	}
	return fmt.Errorf("unknown child mode %q", mode)
}

// childWorkerConfig configures a worker process.
type childWorkerConfig struct {
	RedisAddr       string        `json:"redis_addr"`
	APIURL          string        `json:"api_url"`
	StoreDir        string        `json:"store_dir"`
	Concurrency     int           `json:"concurrency"`
	PollInterval    time.Duration `json:"poll_interval"`
	MinPollInterval time.Duration `json:"min_poll_interval"`
	// CreateConcurrency is the worker's per-process cap on running
	// creates; 0 keeps the default.
	CreateConcurrency int `json:"create_concurrency,omitempty"`
	// DelayedCheck is the worker's DelayedTaskCheckInterval (0: default).
	DelayedCheck time.Duration `json:"delayed_check,omitempty"`
	CPUProfile   string        `json:"cpu_profile,omitempty"`
}

// childReport is what a worker process reports on request.
type childReport struct {
	CPUSeconds    float64  `json:"cpu_seconds"`
	Lateness      []bucket `json:"lateness"`
	LatenessCount uint64   `json:"lateness_count"`
	StatusChecks  float64  `json:"status_checks"`
	Stored        float64  `json:"stored"`
	VmHWMKiB      int64    `json:"vm_hwm_kib"`
	VmRSSKiB      int64    `json:"vm_rss_kib"`
}

// childWorker runs a worker until its input ends, answering each input
// line with a childReport line.
func childWorker(ctx context.Context, c childWorkerConfig, in io.Reader, out io.Writer) error {
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr})
	defer rdb.Close()
	client, err := newAPIClient(c.APIURL)
	if err != nil {
		return err
	}
	store, err := storage.NewDisk(c.StoreDir)
	if err != nil {
		return err
	}
	m := metrics.New()
	cfg := benchWorkerConfig(c.Concurrency)
	cfg.PollInterval, cfg.MinPollInterval = c.PollInterval, c.MinPollInterval
	cfg.CreateConcurrency = c.CreateConcurrency
	cfg.DelayedTaskCheckInterval = c.DelayedCheck
	w, err := startWorker(cfg, worker.Deps{Redis: rdb, API: client, Store: store, Jobs: jobs.NewStore(rdb, ""), Metrics: m})
	if err != nil {
		return err
	}
	report := func() error {
		var r childReport
		r.CPUSeconds = selfCPU().Seconds()
		r.Lateness, r.LatenessCount = histogramSnapshot(m.Registry(), "videoworker_poll_lateness_seconds")
		r.StatusChecks = counterValue(m.Registry(), "videoworker_status_checks_total", "", "")
		r.Stored = counterValue(m.Registry(), "videoworker_jobs_finished_total", "state", "stored")
		r.VmHWMKiB, r.VmRSSKiB = procStatus("VmHWM"), procStatus("VmRSS")
		return json.NewEncoder(out).Encode(r)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if err := report(); err != nil {
			break
		}
	}
	return w.stop()
}

// childProc is a child process of this binary (a worker for the scale
// section, an idle server for the idle section): it reads commands from
// its input, answers on its output, and shuts down when its input closes.
type childProc struct {
	name     string        // what it is, for errors
	stopWait time.Duration // how long stop waits before it kills
	cmd      *exec.Cmd
	in       io.WriteCloser
	out      *bufio.Scanner
	once     sync.Once
	err      error
}

// startChild starts this binary as a child of kind (childEnv) with config
// (configEnv, as JSON).
func startChild(kind string, config any, stopWait time.Duration) (*childProc, error) {
	b, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+kind, configEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(outp)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return &childProc{name: kind + " process", stopWait: stopWait, cmd: cmd, in: in, out: sc}, nil
}

// startWorkerProc starts a worker child process.
func startWorkerProc(c childWorkerConfig) (*childProc, error) {
	return startChild("worker", c, 60*time.Second)
}

// report asks a worker child for its report.
func (p *childProc) report() (childReport, error) {
	var r childReport
	if _, err := io.WriteString(p.in, "report\n"); err != nil {
		return r, err
	}
	if !p.out.Scan() {
		return r, fmt.Errorf("%s: no report: %v", p.name, p.out.Err())
	}
	return r, json.Unmarshal(p.out.Bytes(), &r)
}

// stop closes the child's input (it then shuts down gracefully) and waits
// for it, killing it after stopWait.
func (p *childProc) stop() error {
	p.once.Do(func() {
		p.in.Close()
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case p.err = <-done:
		case <-time.After(p.stopWait):
			_ = p.cmd.Process.Kill()
			<-done
			p.err = fmt.Errorf("%s did not stop within %s; killed", p.name, p.stopWait)
		}
	})
	return p.err
}

// procStatus reads a "Vm…" line of /proc/self/status, in KiB.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// transferConfig configures one transfer in a child process.
type transferConfig struct {
	// Mode: "plain" (io.Copy of generated bytes to a file, fsync),
	// "plain-api" (io.Copy of the API's content response to a file,
	// fsync), "disk" / "s3" (Store.Put of generated bytes), "disk-api" /
	// "s3-api" (Store.Put of the API's content response, as the worker's
	// download step does).
	Mode       string `json:"mode"`
	Size       int64  `json:"size"`
	Seed       uint64 `json:"seed"`
	SHA256     string `json:"sha256"`
	Dir        string `json:"dir"`
	APIURL     string `json:"api_url,omitempty"`
	VideoID    string `json:"video_id,omitempty"`
	S3Endpoint string `json:"s3_endpoint,omitempty"`
	S3Bucket   string `json:"s3_bucket,omitempty"`
	S3Access   string `json:"s3_access,omitempty"`
	S3Secret   string `json:"s3_secret,omitempty"`
	CPUProfile string `json:"cpu_profile,omitempty"`
}

type transferResult struct {
	Seconds  float64 `json:"seconds"`
	Bytes    int64   `json:"bytes"`
	VmHWMKiB int64   `json:"vm_hwm_kib"`
}

func childTransfer(ctx context.Context, c transferConfig) (transferResult, error) {
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return transferResult{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return transferResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	var src io.Reader
	var closeSrc func()
	size := c.Size
	t0 := time.Now()
	if strings.HasSuffix(c.Mode, "-api") {
		client, err := newAPIClient(c.APIURL)
		if err != nil {
			return transferResult{}, err
		}
		content, err := client.Content(ctx, c.VideoID, 0)
		if err != nil {
			return transferResult{}, err
		}
		src, closeSrc = content.Body, func() { content.Body.Close() }
		if content.Length >= 0 {
			size = content.Length
		}
	} else {
		src, closeSrc = newGenerator(c.Seed, c.Size), func() {}
	}
	defer closeSrc()
	var n int64
	var err error
	switch strings.TrimSuffix(c.Mode, "-api") {
	case "plain":
		n, err = plainCopy(filepath.Join(c.Dir, "plain.bin"), src)
	case "disk", "s3":
		var store storage.Store
		if strings.HasPrefix(c.Mode, "s3") {
			store, err = storage.NewS3(ctx, storage.S3Config{Endpoint: c.S3Endpoint, Region: "us-east-1", Bucket: c.S3Bucket,
				AccessKey: c.S3Access, SecretKey: c.S3Secret, PathStyle: true})
		} else {
			store, err = storage.NewDisk(c.Dir)
		}
		if err != nil {
			return transferResult{}, err
		}
		var info storage.ObjectInfo
		info, err = store.Put(ctx, "videos/transfer.mp4", src, storage.PutOptions{Size: size, SHA256: c.SHA256, ContentType: "video/mp4",
			Metadata: map[string]string{"job_id": "bench", "video_id": "bench", "output_index": "0"}})
		n = info.Size
		if err == nil {
			dur := time.Since(t0)
			_ = store.Delete(ctx, "videos/transfer.mp4")
			return transferResult{Seconds: dur.Seconds(), Bytes: n, VmHWMKiB: procStatus("VmHWM")}, nil
		}
	default:
		return transferResult{}, fmt.Errorf("unknown transfer mode %q", c.Mode)
	}
	if err != nil {
		return transferResult{}, err
	}
	return transferResult{Seconds: time.Since(t0).Seconds(), Bytes: n, VmHWMKiB: procStatus("VmHWM")}, nil
}

// plainCopy is the baseline: io.Copy to a new file, then fsync, as the
// disk store does before it renames.
func plainCopy(path string, src io.Reader) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	n, err := io.Copy(f, src)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// generator yields n pseudo-random bytes (ChaCha8 keyed by seed): the same
// kind of bytes the stand-in serves, generated at the same cost.
type generator struct {
	rng  *rand.ChaCha8
	left int64
}

func newGenerator(seed uint64, n int64) *generator {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return &generator{rng: rand.NewChaCha8(key), left: n}
}

func (g *generator) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	_, _ = g.rng.Read(p)
	g.left -= int64(len(p))
	return len(p), nil
}

// generatedSHA256 is the hex sha256 of newGenerator(seed, n)'s bytes.
func generatedSHA256(seed uint64, n int64) string {
	h := sha256.New()
	_, _ = io.CopyBuffer(h, newGenerator(seed, n), make([]byte, 256<<10))
	return hex.EncodeToString(h.Sum(nil))
}

// runTransferChild runs one transfer in a child process.
func runTransferChild(ctx context.Context, c transferConfig) (transferResult, error) {
	var res transferResult
	// Start each transfer with no dirty pages left by the one before, so
	// that none pays for another's writeback.
	syscall.Sync()
	b, err := json.Marshal(c)
	if err != nil {
		return res, err
	}
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"=transfer", configEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("transfer %s: %w", c.Mode, err)
	}
	return res, json.Unmarshal(out, &res)
}
