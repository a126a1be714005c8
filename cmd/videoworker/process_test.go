package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildBinary builds the program into the test's directory (the build
// cache makes every build after the first quick).
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "videoworker")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// cleanEnv is the environment without the program's variables, plus extra.
func cleanEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	names := envNames(t)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := names[k]; !ours && k != "DEMO_ADDR" {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// TestProcessExits checks what only the process shows: -h exits 0; an
// unreachable Redis is one line on stderr, without go-redis's own pool
// lines (four of them came first); Ctrl-C stops the demo with status 0
// (make run ended in "make: *** Error 1").
func TestProcessExits(t *testing.T) {
	bin := buildBinary(t)

	t.Run("help", func(t *testing.T) {
		cmd := exec.Command(bin, "worker", "-h")
		cmd.Env = cleanEnv(t)
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), "usage: videoworker worker") {
			t.Errorf("worker -h: %v\n%s", err, out)
		}
	})

	t.Run("unreachable redis", func(t *testing.T) {
		cmd := exec.Command(bin, "status", "some-job")
		cmd.Env = cleanEnv(t, "REDIS_URL=redis://"+freeAddr(t)+"/0")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("status with Redis down: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "videoworker: cannot reach Redis at ") {
			t.Errorf("stderr:\n%s", stderr.String())
		}
	})

	t.Run("demo interrupted", func(t *testing.T) {
		cmd := exec.Command(bin, "demo", "-jobs", "3", "-interval", "2s")
		cmd.Env = cleanEnv(t, "STORAGE_URL=file://"+t.TempDir())
		var stdout, stderr syncBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(stdout.String(), "submitting 3 jobs") {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("the demo did not start:\n%s\n%s", stdout.String(), stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo after Ctrl-C: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("the demo did not stop within 15 s of Ctrl-C")
		}
		if stderr.String() != "" {
			t.Errorf("stderr after Ctrl-C:\n%s", stderr.String())
		}
	})
}
