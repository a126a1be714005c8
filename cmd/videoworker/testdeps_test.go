package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnsureTestDepsInstallsCompiler: on a machine with Go but no C
// compiler, scripts/ensure-test-deps.sh (the first step of `make test`)
// installs gcc, since go test -race needs cgo. The script runs with a PATH
// of stubs: apt-get records what it is asked to install.
func TestEnsureTestDepsInstallsCompiler(t *testing.T) {
	bin := t.TempDir()
	link := func(name string) {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"bash", "dirname", "sed", "id", "go", "cat"} {
		link(name)
	}
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!"+filepath.Join(bin, "bash")+"\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	installed := filepath.Join(t.TempDir(), "apt-get.log")
	stub("apt-get", `echo "$@" >>`+installed)
	stub("sudo", `exec "$@"`)
	stub("redis-server", `exit 0`)

	cmd := exec.Command(filepath.Join(bin, "bash"), "../../scripts/ensure-test-deps.sh")
	cmd.Env = []string{
		"PATH=" + bin,
		"HOME=" + os.Getenv("HOME"),
		"GOCACHE=" + t.TempDir(),
		"CC=videoworker-no-such-cc",
		"CHROMIUM_BIN=/nonexistent/chromium",
		"VERSITYGW_BIN=/nonexistent/versitygw",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ensure-test-deps.sh: %v\n%s", err, out)
	}
	log, err := os.ReadFile(installed)
	if err != nil {
		t.Fatalf("apt-get was never asked to install anything: %v\n%s", err, out)
	}
	if !strings.Contains(string(log), "install") || !strings.Contains(string(log), " gcc") {
		t.Errorf("apt-get calls: %q; want an install of gcc\n%s", log, out)
	}
	if strings.Contains(string(log), "redis-server") {
		t.Errorf("apt-get calls: %q; redis-server was there already\n%s", log, out)
	}
}
