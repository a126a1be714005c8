package main

import (
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerBuild builds the image's binary as the Dockerfile does, since
// Docker is not available here: its `go build` line, run on a copy of the
// build context that .dockerignore leaves. The binary must be static (the
// distroless base has no C library) and run.
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("copies the source and builds the binary; skipped with -short")
	}
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var build []string
	for _, line := range strings.Split(string(df), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "RUN" && slicesContain(f, "build") && slicesContain(f, "go") {
			build = f[1:]
		}
	}
	if build == nil {
		t.Fatal("no RUN … go build line in the Dockerfile")
	}
	ignore := readDockerignore(t)
	for _, p := range []string{".git", "bin/videoworker", "data/videos/x.mp4", "bench/results/x.tmp", "cmd/videoworker/videoworker.test"} {
		if !ignore.excludes(p) {
			t.Errorf(".dockerignore sends %s to the build", p)
		}
	}

	// The context: the repository minus what .dockerignore excludes.
	ctxDir := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if ignore.excludes(filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(ctxDir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}

	// The Dockerfile's line: leading NAME=value words are the environment;
	// the output goes to the test's directory instead of /out.
	var env []string
	for len(build) > 0 && strings.Contains(build[0], "=") {
		env, build = append(env, build[0]), build[1:]
	}
	bin := filepath.Join(t.TempDir(), "videoworker")
	for i := range build {
		if i > 0 && build[i-1] == "-o" {
			build[i] = bin
		}
	}
	cmd := exec.Command(build[0], build[1:]...)
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in the build context: %v\n%s", strings.Join(append(env, build...), " "), err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked; the distroless static image cannot run it")
		}
	}
	if out, err := exec.Command(bin, "healthcheck", "-h").CombinedOutput(); err != nil {
		t.Errorf("the built binary: healthcheck -h: %v\n%s", err, out)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// dockerignore is the patterns of .dockerignore: a path is excluded when a
// pattern matches it or one of its parent directories. "**" matches any
// number of directories; "!" exceptions are not used (the test refuses
// them rather than get them wrong).
type dockerignore []string

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: this test does not handle exceptions (%q)", line)
		}
		d = append(d, path.Clean(strings.TrimPrefix(line, "/")))
	}
	return d
}

func (d dockerignore) excludes(p string) bool {
	parts := strings.Split(p, "/")
	for _, pat := range d {
		for n := 1; n <= len(parts); n++ {
			if globSegments(strings.Split(pat, "/"), parts[:n]) {
				return true
			}
		}
	}
	return false
}

// globSegments matches path segments against pattern segments.
func globSegments(pat, segs []string) bool {
	if len(pat) == 0 {
		return len(segs) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(segs); i++ {
			if globSegments(pat[1:], segs[i:]) {
				return true
			}
		}
		return false
	}
	if len(segs) == 0 {
		return false
	}
	ok, _ := path.Match(pat[0], segs[0])
	return ok && globSegments(pat[1:], segs[1:])
}
