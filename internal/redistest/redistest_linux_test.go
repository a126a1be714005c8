package redistest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const childEnv = "REDISTEST_ORPHAN_CHILD"

// runChild is the test binary re-run by TestNoOrphanServer: it starts a
// server, reports its pid and address, and waits to be killed.
func runChild() {
	s, _, err := StartMain(Options{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	s.mu.Lock()
	pid := s.proc.cmd.Process.Pid
	s.mu.Unlock()
	fmt.Printf("SERVER %d %s\n", pid, s.Addr())
	time.Sleep(time.Minute) // the parent SIGKILLs us long before this
	os.Exit(2)
}

// TestNoOrphanServer kills a test binary with SIGKILL, so no cleanup runs,
// and checks that its redis-server goes too.
func TestNoOrphanServer(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatal("child test binary did not start a server within 30s")
	}
	var pid int
	var addr string
	if _, err := fmt.Sscanf(line, "SERVER %d %s", &pid, &addr); err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}
	if err := ping(addr); err != nil {
		t.Fatalf("child's server at %s not answering: %v", addr, err)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) || ping(addr) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server %d (%s) outlived its killed test binary", pid, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a live redis-server (a zombie awaiting its
// reaper counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if !strings.Contains(s, "(redis-server)") {
		return false // the pid now belongs to another program
	}
	i := strings.LastIndexByte(s, ')')
	return i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
