package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child process of the harness, its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{} // closed once the process has been waited for
	err     error         // cmd.Wait's error, valid after done
}

func startProc(name, bin string, args, env []string, logPath string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	f.Close() // the child has its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, started: time.Now(), done: make(chan struct{})}
	go func() { // ends when the process does; every proc is killed or stopped by its owner
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL, as a crash would, and waits for the exit.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits up to grace, then kills. It reports whether
// the process had to be killed.
func (p *proc) stop(grace time.Duration) bool {
	if p.exited() {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
		p.kill()
		return true
	}
}

// logTail returns the last lines of the process's log, at most n bytes.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

// Exit is a worker that ended without the harness killing it.
type Exit struct {
	Worker  string  `json:"worker"`
	PID     int     `json:"pid"`
	AtSec   float64 `json:"at_s"`
	Err     string  `json:"err"`
	LogTail string  `json:"log_tail"`
}

// Kill is one SIGKILL of a worker.
type Kill struct {
	Worker      string  `json:"worker"`
	PID         int     `json:"pid"`
	AtSec       float64 `json:"at_s"`
	UptimeSec   float64 `json:"uptime_s"`
	Replacement string  `json:"replacement"`
}

// fleet keeps Workers worker processes alive: it kills one on request and
// starts a replacement at once, and replaces any that exit on their own.
type fleet struct {
	bin    string
	env    []string
	logDir string
	t0     time.Time

	mu       sync.Mutex
	target   int // workers to keep alive
	live     []*proc
	all      []*proc
	seq      int
	stopping bool
	kills    []Kill
	exits    []Exit
}

func newFleet(bin string, env []string, logDir string, t0 time.Time) *fleet {
	return &fleet{bin: bin, env: env, logDir: logDir, t0: t0}
}

// start starts n workers and keeps that many alive from now on.
func (f *fleet) start(n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.target = n
	for range n {
		if _, err := f.spawnLocked(); err != nil {
			return err
		}
	}
	return nil
}

func (f *fleet) spawnLocked() (*proc, error) {
	f.seq++
	name := fmt.Sprintf("worker-%03d", f.seq)
	p, err := startProc(name, f.bin, []string{"worker"}, f.env, filepath.Join(f.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	f.live = append(f.live, p)
	f.all = append(f.all, p)
	return p, nil
}

// killRandom SIGKILLs a random live worker and starts its replacement.
func (f *fleet) killRandom(rng *rand.Rand) (Kill, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping || len(f.live) == 0 {
		return Kill{}, fmt.Errorf("no live worker to kill")
	}
	i := rng.IntN(len(f.live))
	victim := f.live[i]
	f.live = append(f.live[:i:i], f.live[i+1:]...)
	victim.kill()
	k := Kill{Worker: victim.name, PID: victim.pid(), AtSec: since(f.t0), UptimeSec: time.Since(victim.started).Seconds()}
	// The replacement starts at once: its asynq recoverer first runs a
	// minute after its start, just when the victim's leases have been
	// expired for 30 s, so the victim's tasks come back after ~61 s.
	f.kills = append(f.kills, k)
	p, err := f.spawnLocked()
	if err != nil {
		return k, err // supervise tries again
	}
	k.Replacement = p.name
	f.kills[len(f.kills)-1] = k
	return k, nil
}

// supervise replaces workers that exit on their own (a worker started
// while Redis restarts exits at once: it checks Redis at start) until ctx
// ends.
func (f *fleet) supervise(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		if f.stopping {
			f.mu.Unlock()
			return
		}
		kept := f.live[:0]
		var gone []*proc
		for _, p := range f.live {
			if p.exited() {
				gone = append(gone, p)
			} else {
				kept = append(kept, p)
			}
		}
		f.live = kept
		for _, p := range gone {
			msg := "exit status 0"
			if p.err != nil {
				msg = p.err.Error()
			}
			f.exits = append(f.exits, Exit{Worker: p.name, PID: p.pid(), AtSec: since(f.t0), Err: msg, LogTail: p.logTail(600)})
		}
		for len(f.live) < f.target {
			if _, err := f.spawnLocked(); err != nil {
				break // tried again next round
			}
		}
		f.mu.Unlock()
	}
}

// stopAll stops every worker with SIGTERM (killing those still running
// after grace) and reports how many had to be killed.
func (f *fleet) stopAll(grace time.Duration) int {
	f.mu.Lock()
	f.stopping = true
	live := f.live
	f.live = nil
	f.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	killed := 0
	for _, p := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.stop(grace) {
				mu.Lock()
				killed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return killed
}

func (f *fleet) liveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

func (f *fleet) snapshot() (kills []Kill, exits []Exit, started int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Kill(nil), f.kills...), append([]Exit(nil), f.exits...), len(f.all)
}

func since(t0 time.Time) float64 { return roundSec(time.Since(t0)) }

func roundSec(d time.Duration) float64 {
	return float64(d.Round(10*time.Millisecond)) / float64(time.Second)
}
