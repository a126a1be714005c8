package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// monitor records every command a redis-server runs (redis-cli MONITOR,
// commands run by scripts included) into a temporary file, for
// commandBreakdown. MONITOR slows Redis down: a section run with it gives
// command counts, not rates.
type monitor struct {
	cmd  *exec.Cmd
	file *os.File
}

func startMonitor(addr string) (*monitor, error) {
	f, err := os.CreateTemp("", "bench-monitor-*.txt")
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	c := exec.Command("redis-cli", "-h", host, "-p", port, "monitor")
	c.Stdout = f
	if err := c.Start(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("redis-cli monitor: %w", err)
	}
	m := &monitor{cmd: c, file: f}
	// MONITOR answers OK once it is on: wait for it, so nothing is missed.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if st, err := f.Stat(); err == nil && st.Size() > 0 {
			return m, nil
		}
	}
	_ = c.Process.Kill()
	_ = c.Wait()
	m.close()
	return nil, fmt.Errorf("redis-cli monitor did not start")
}

// stop ends the recording, once it shows a marker sent through rdb
// (MONITOR's output trails the commands), and returns its reader (nil
// after a failure); close removes the file.
func (m *monitor) stop(ctx context.Context, rdb *redis.Client) io.Reader {
	const marker = "bench-monitor-end"
	if rdb.Echo(ctx, marker).Err() == nil {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if b, err := os.ReadFile(m.file.Name()); err == nil && strings.Contains(string(b), marker) {
				break
			}
		}
	}
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	if _, err := m.file.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	return m.file
}

func (m *monitor) close() {
	m.file.Close()
	os.Remove(m.file.Name())
}

var (
	monitorLine = regexp.MustCompile(`^[0-9.]+ \[\d+ ([^\]]+)\] (.*)$`)
	monitorArg  = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
)

// purpose names what a command (or a script, with the commands it ran) is
// for, from its name and first key.
func purpose(cmd, key string, nkeys int) string {
	switch {
	case cmd == "evalsha" || cmd == "eval":
		switch {
		case strings.Contains(key, "videoworker:job:"):
			return "job transition script (jobs.Store.Do)"
		case strings.HasSuffix(key, ":pending") && nkeys == 4:
			return "asynq dequeue script"
		case strings.HasSuffix(key, ":active"):
			return "asynq done script (ack)"
		case strings.Contains(key, ":t:"):
			return "asynq enqueue script"
		case strings.HasSuffix(key, ":scheduled") || strings.HasSuffix(key, ":retry"):
			return "asynq forward script (scheduled/retry → pending)"
		case strings.HasSuffix(key, ":lease"):
			return "asynq lease extension / recoverer script"
		case strings.HasPrefix(key, "videoworker:create_lock:"):
			return "create lock script"
		}
		return "other script " + key
	case cmd == "hgetall" && strings.Contains(key, "videoworker:job:"):
		return "job record load (HGETALL)"
	case cmd == "get" && strings.HasSuffix(key, ":spec"):
		return "job spec load (GET)"
	case cmd == "scard" && key == "videoworker:active":
		return "the bench's own progress check (SCARD)"
	case cmd == "publish":
		return "wake-up PUBLISH"
	case strings.HasPrefix(key, "videoworker:create_lock:"):
		return "create lock " + strings.ToUpper(cmd)
	case strings.HasPrefix(key, "asynq:servers") || strings.HasPrefix(key, "asynq:workers") || strings.HasPrefix(key, "asynq:{") && strings.HasSuffix(key, ":lease"):
		return "asynq heartbeat / lease"
	}
	return "other " + strings.ToUpper(cmd)
}

// commandBreakdown reads a MONITOR recording and returns, per purpose, the
// commands per job (a script counts once plus once per command it ran),
// largest first, and the total per job.
func commandBreakdown(r io.Reader, jobs int) ([]breakdownRow, float64) {
	per := map[string]*breakdownRow{}
	var cur *breakdownRow
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	total := 0
	for sc.Scan() {
		m := monitorLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		args := monitorArg.FindAllStringSubmatch(m[2], 4)
		if len(args) == 0 {
			continue
		}
		cmd := strings.ToLower(args[0][1])
		if cmd == "echo" { // stop's marker
			continue
		}
		total++
		if m[1] == "lua" {
			if cur != nil {
				cur.cmds++
				cur.inner[cmd]++
			}
			continue
		}
		key, nkeys := "", 0
		if cmd == "evalsha" || cmd == "eval" {
			if len(args) > 3 {
				fmt.Sscan(args[2][1], &nkeys)
				if nkeys > 0 {
					key = args[3][1]
				}
			}
		} else if len(args) > 1 {
			key = args[1][1]
		}
		p := purpose(cmd, key, nkeys)
		row := per[p]
		if row == nil {
			row = &breakdownRow{Purpose: p, inner: map[string]int{}}
			per[p] = row
		}
		row.cmds++
		row.calls++
		cur = nil
		if cmd == "evalsha" || cmd == "eval" {
			cur = row
		}
	}
	var out []breakdownRow
	for _, r := range per {
		r.PerJob = float64(r.cmds) / float64(jobs)
		r.CallsPerJob = float64(r.calls) / float64(jobs)
		var in []string
		for c, n := range r.inner {
			in = append(in, fmt.Sprintf("%s %.1f", strings.ToUpper(c), float64(n)/float64(jobs)))
		}
		sort.Strings(in)
		r.Inside = strings.Join(in, ", ")
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PerJob > out[j].PerJob })
	return out, float64(total) / float64(jobs)
}

// breakdownRow is one purpose's share of the Redis commands per job.
type breakdownRow struct {
	Purpose     string  `json:"purpose"`
	PerJob      float64 `json:"cmds_per_job"`
	CallsPerJob float64 `json:"calls_per_job"`
	Inside      string  `json:"inside_scripts,omitempty"`
	cmds, calls int
	inner       map[string]int
}

// breakdownTable renders rows as a Markdown table (purposes under 0.05
// commands per job left out).
func breakdownTable(rows []breakdownRow, total float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| purpose | cmds/job | calls/job | inside the scripts, per job |\n|---|---:|---:|---|\n")
	for _, r := range rows {
		if r.PerJob < 0.05 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.2f | %s |\n", r.Purpose, r.PerJob, r.CallsPerJob, r.Inside)
	}
	fmt.Fprintf(&b, "| total | %.1f | | |\n", total)
	return b.String()
}
