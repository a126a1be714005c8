package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/storage"
)

// composeFile is the part of docker-compose.yml this test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image           string         `yaml:"image"`
	Build           any            `yaml:"build"`
	Command         []string       `yaml:"command"`
	Entrypoint      []string       `yaml:"entrypoint"`
	Healthcheck     map[string]any `yaml:"healthcheck"`
	Environment     composeEnv     `yaml:"environment"`
	StopGracePeriod string         `yaml:"stop_grace_period"`
	Profiles        []string       `yaml:"profiles"`
	DependsOn       composeDeps    `yaml:"depends_on"`
	Ports           []string       `yaml:"ports"`
}

// composeEnv accepts both forms of "environment": a mapping or a list of
// NAME=value strings.
type composeEnv map[string]string

func (e *composeEnv) UnmarshalYAML(n *yaml.Node) error {
	out := composeEnv{}
	switch n.Kind {
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = v
		}
	default:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			out[k] = v
		}
	}
	*e = out
	return nil
}

// composeDeps accepts both forms of "depends_on": a list of service names
// or a mapping from name to conditions.
type composeDeps map[string]bool

func (d *composeDeps) UnmarshalYAML(n *yaml.Node) error {
	out := composeDeps{}
	if n.Kind == yaml.SequenceNode {
		var list []string
		if err := n.Decode(&list); err != nil {
			return err
		}
		for _, name := range list {
			out[name] = true
		}
	} else {
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			return err
		}
		for name := range m {
			out[name] = true
		}
	}
	*d = out
	return nil
}

// envNames returns the variables the program reads through envconfig:
// the tags of Config and ServeConfig.
func envNames(t *testing.T) map[string]reflect.StructField {
	t.Helper()
	names := map[string]reflect.StructField{}
	for _, typ := range []reflect.Type{reflect.TypeFor[Config](), reflect.TypeFor[ServeConfig]()} {
		for f := range typ.Fields() {
			name := f.Tag.Get("envconfig")
			if name == "" {
				t.Fatalf("%s.%s has no envconfig tag; this test (and the README table) expect one", typ.Name(), f.Name)
			}
			names[name] = f
		}
	}
	return names
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}`)

// interpolate applies docker compose's ${VAR}, ${VAR-default} and
// ${VAR:-default} with every variable unset, as on a machine with no .env.
func interpolate(s string) string { return interpolateEnv(s, nil) }

// interpolateEnv is interpolate with the variables of env set.
func interpolateEnv(s string, env map[string]string) string {
	return composeVar.ReplaceAllStringFunc(strings.ReplaceAll(s, "$$", "\x00"), func(m string) string {
		sub := composeVar.FindStringSubmatch(m)
		v, set := env[sub[1]]
		switch {
		case sub[2] == ":-" && v == "", sub[2] == "-" && !set:
			return sub[3]
		}
		return v
	})
}

// setComposeEnv sets a service's environment as compose would with the
// variables of host set, and clears the program's other variables.
func setComposeEnv(t *testing.T, svc composeService, host map[string]string) {
	t.Helper()
	for name := range envNames(t) {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
	for k, v := range svc.Environment {
		t.Setenv(k, interpolateEnv(v, host))
	}
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return c
}

// TestComposeFile checks docker-compose.yml against the program, since it
// cannot be run here: it parses; the services running the videoworker
// image set only variables the program reads, and values it accepts; the
// worker's stop_grace_period outlasts SHUTDOWN_TIMEOUT; Redis persists and
// never evicts; the workers store into the bundled S3 server's bucket.
func TestComposeFile(t *testing.T) {
	c := readCompose(t)
	names := envNames(t)
	var ours []string
	for name, svc := range c.Services {
		if svc.Image == "videoworker:latest" || svc.Build != nil {
			ours = append(ours, name)
		}
	}
	slices.Sort(ours)
	for _, want := range []string{"server", "standin", "worker"} {
		if !slices.Contains(ours, want) {
			t.Errorf("services running the videoworker image = %v, want %q among them", ours, want)
		}
	}
	for _, name := range ours {
		svc := c.Services[name]
		for k := range svc.Environment {
			if _, ok := names[k]; !ok {
				t.Errorf("service %s sets %s, which the program does not read", name, k)
			}
		}
	}

	worker, ok := c.Services["worker"]
	if !ok {
		t.Fatal("no worker service")
	}
	if !slices.Equal(worker.Command, []string{"worker"}) {
		t.Errorf("worker command = %v", worker.Command)
	}
	for _, k := range []string{"REDIS_URL", "STORAGE_URL", "S3_ENDPOINT", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "SHUTDOWN_TIMEOUT"} {
		if _, ok := worker.Environment[k]; !ok {
			t.Errorf("worker does not set %s", k)
		}
	}
	if !worker.DependsOn["s3"] || !worker.DependsOn["redis"] {
		t.Errorf("worker depends on %v, want redis and s3", worker.DependsOn)
	}
	shutdown := interpolate(worker.Environment["SHUTDOWN_TIMEOUT"])
	if shutdown == "" {
		shutdown = names["SHUTDOWN_TIMEOUT"].Tag.Get("default")
	}
	sd, err := time.ParseDuration(shutdown)
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT %q: %v", shutdown, err)
	}
	grace, err := time.ParseDuration(worker.StopGracePeriod)
	if err != nil || grace <= sd {
		t.Errorf("worker stop_grace_period = %q, want a duration longer than SHUTDOWN_TIMEOUT (%v)", worker.StopGracePeriod, sd)
	}

	// The workers' settings, with compose's defaults, pass the program's
	// validation and point at the bundled server and its bucket.
	for k, v := range worker.Environment {
		t.Setenv(k, interpolate(v))
	}
	cfg, err := loadConfig()
	if err != nil {
		t.Fatalf("the worker's environment is refused: %v", err)
	}
	if _, err := loadServeConfig(); err != nil {
		t.Fatalf("the worker's environment is refused: %v", err)
	}
	opts := cfg.storageOptions()
	if !strings.HasPrefix(cfg.StorageURL, "s3://videos/") || opts.S3.Endpoint != "http://s3:7070" || !opts.S3.PathStyle || opts.S3.AccessKey == "" || opts.S3.SecretKey == "" {
		t.Errorf("worker storage = %s with %v; want s3://videos/… on http://s3:7070, path-style, with credentials", cfg.StorageURL, opts.S3)
	}

	s3, ok := c.Services["s3"]
	if !ok {
		t.Fatal("no s3 service")
	}
	if interpolate(s3.Environment["ROOT_ACCESS_KEY"]) != opts.S3.AccessKey || interpolate(s3.Environment["ROOT_SECRET_KEY"]) != opts.S3.SecretKey {
		t.Error("the s3 service's credentials differ from the workers'")
	}
	s3cfg, err := storage.ParseS3URL(cfg.StorageURL, opts.S3)
	if err != nil {
		t.Fatal(err)
	}
	if start := strings.Join(s3.Entrypoint, " "); !strings.Contains(start, "mkdir -p /data/"+s3cfg.Bucket+" ") || !strings.Contains(start, "posix /data") {
		t.Errorf("the s3 service does not create the workers' bucket %q at start: %q", s3cfg.Bucket, start)
	}
	if s3.Healthcheck == nil {
		t.Error("the s3 service has no healthcheck (the workers wait for it)")
	}

	redis := c.Services["redis"]
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
}

func TestComposeInterpolation(t *testing.T) {
	for in, want := range map[string]string{
		"${A:-x}": "x", "${A-y}": "y", "${A}": "", "a${B:-http://s3:7070}b": "ahttp://s3:7070b", "plain": "plain",
	} {
		if got := interpolate(in); got != want {
			t.Errorf("interpolate(%q) = %q, want %q", in, got, want)
		}
	}
	env := map[string]string{"SET": "v", "EMPTY": ""}
	for in, want := range map[string]string{
		"${SET:-x}": "v", "${SET-x}": "v", "${EMPTY:-x}": "x", "${EMPTY-x}": "", "${UNSET-x}": "x", "${SET}": "v",
	} {
		if got := interpolateEnv(in, env); got != want {
			t.Errorf("interpolateEnv(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestComposeRunsAsDocumented: `docker compose up` with nothing set runs
// the demo path (the workers reach the stand-in, which is started, and the
// server makes up and prints a login); setting AISTATS_API_KEY alone
// switches the workers to the real API. The stand-in used to sit behind a
// profile that was not started, the key alone still pointed at it, and the
// server got neither OPERATORS nor API_TOKENS, so it answered 401 to all.
func TestComposeRunsAsDocumented(t *testing.T) {
	c := readCompose(t)
	worker, standinSvc, srv := c.Services["worker"], c.Services["standin"], c.Services["server"]
	if len(standinSvc.Profiles) > 0 {
		t.Errorf("the stand-in is behind profiles %v: docker compose up does not start it", standinSvc.Profiles)
	}
	if !worker.DependsOn["standin"] {
		t.Error("the worker does not wait for the stand-in")
	}

	// Nothing set: the stand-in, on the address its command listens on.
	setComposeEnv(t, worker, nil)
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.requireAPIKey(); err != nil {
		t.Fatalf("the worker would not start: %v", err)
	}
	if !cfg.useStandin() {
		t.Fatal("with AISTATS_API_KEY unset the worker does not use the stand-in")
	}
	u, err := url.Parse(cfg.APIBaseURL)
	if err != nil {
		t.Fatal(err)
	}
	listen := flagValue(standinSvc.Command, "-addr")
	_, port, _ := net.SplitHostPort(listen)
	if u.Hostname() != "standin" || u.Port() != port || !strings.HasPrefix(listen, "0.0.0.0:") {
		t.Errorf("the workers call %s; the stand-in service listens on %q", cfg.APIBaseURL, listen)
	}
	if k := flagValue(standinSvc.Command, "-api-key"); k != "" && k != cfg.APIKey {
		t.Errorf("the stand-in wants key %q, the workers send %q", k, cfg.APIKey)
	}
	if _, ok := standinSvc.Environment["AISTATS_API_KEY"]; ok {
		t.Error("the stand-in reads AISTATS_API_KEY as its required key: the workers' would then differ")
	}

	// The key alone: the real API.
	setComposeEnv(t, worker, map[string]string{"AISTATS_API_KEY": "aistats_v1_sk_x_y"})
	cfg, err = loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.useStandin() || cfg.APIBaseURL != "https://api.phaseo.app/v1" || cfg.APIKey != "aistats_v1_sk_x_y" {
		t.Errorf("with AISTATS_API_KEY set the workers call %s", cfg.APIBaseURL)
	}

	// The server: logins passed through, and made up when none are set.
	for _, k := range []string{"OPERATORS", "API_TOKENS"} {
		if v, ok := srv.Environment[k]; !ok || interpolateEnv(v, map[string]string{k: "x"}) != "x" {
			t.Errorf("the server does not pass %s through", k)
		}
	}
	if !slices.Contains(srv.Command, "-generate-login") {
		t.Errorf("server command %v: without OPERATORS every page answers 401", srv.Command)
	}
	setComposeEnv(t, srv, nil)
	if _, err := loadServeConfig(); err != nil {
		t.Fatalf("the server's environment is refused: %v", err)
	}
	if len(srv.Ports) == 0 || !strings.HasSuffix(srv.Ports[0], ":"+strings.TrimPrefix(interpolate(srv.Environment["SERVE_ADDR"]), ":")) {
		t.Errorf("server publishes %v, listens on %s", srv.Ports, srv.Environment["SERVE_ADDR"])
	}
}

// TestServeGeneratesLogin: serve -generate-login prints a login that the
// server then accepts (compose's demo path).
func TestServeGeneratesLogin(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	t.Setenv("REDIS_URL", rs.URL(rs.NewDB(t)))
	t.Setenv("STORAGE_URL", "file://"+t.TempDir())
	t.Setenv("OPERATORS", "")
	t.Setenv("API_TOKENS", "")
	addr := freeAddr(t)
	var out syncBuffer
	runInBackground(t, []string{"serve", "-generate-login", "-addr", addr}, &out, io.Discard)
	waitListening(t, addr)
	m := regexp.MustCompile(`log in as (\S+) / (\S+) `).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no login printed:\n%s", out.String())
	}
	for _, tc := range []struct {
		user, pass string
		want       int
	}{{m[1], m[2], http.StatusOK}, {m[1], "wrong-password", http.StatusUnauthorized}} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/v1/jobs", nil)
		req.SetBasicAuth(tc.user, tc.pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /v1/jobs as %s: %s, want %d", tc.user, resp.Status, tc.want)
		}
	}
}

// TestComposeHealthChecks: every long-running service has a health check;
// those of the videoworker image run the binary (the image has no shell)
// against the port the service listens on.
func TestComposeHealthChecks(t *testing.T) {
	c := readCompose(t)
	ports := map[string]string{
		"server":  strings.TrimPrefix(interpolate(c.Services["server"].Environment["SERVE_ADDR"]), ":"),
		"worker":  strings.TrimPrefix(interpolate(c.Services["worker"].Environment["METRICS_ADDR"]), ":"),
		"standin": strings.TrimPrefix(flagValue(c.Services["standin"].Command, "-addr"), "0.0.0.0:"),
	}
	for name, svc := range c.Services {
		test, _ := svc.Healthcheck["test"].([]any)
		if len(test) < 2 {
			t.Errorf("service %s has no health check", name)
			continue
		}
		port, ours := ports[name]
		if !ours {
			continue
		}
		var args []string
		for _, a := range test[1:] {
			args = append(args, fmt.Sprint(a))
		}
		if test[0] != "CMD" || args[0] != "/usr/local/bin/videoworker" || args[1] != "healthcheck" {
			t.Errorf("service %s health check %v does not run videoworker healthcheck", name, test)
			continue
		}
		if last := args[len(args)-1]; !strings.HasPrefix(last, "http://127.0.0.1:"+port+"/") {
			t.Errorf("service %s checks %s; it listens on port %s", name, last, port)
		}
		// The same command line parses here.
		if err := run(t.Context(), append(args[1:2], "-h"), io.Discard, io.Discard); err != nil {
			t.Errorf("healthcheck -h: %v", err)
		}
	}
}

// TestImageTagsPinned: the Dockerfile's and compose's images name exact
// versions (distroless has none finer than its Debian release).
func TestImageTagsPinned(t *testing.T) {
	exact := regexp.MustCompile(`:v?\d+\.\d+\.\d+(-[a-z0-9]+)?$`)
	c := readCompose(t)
	for name, svc := range c.Services {
		if svc.Image != "" && svc.Image != "videoworker:latest" && !exact.MatchString(svc.Image) {
			t.Errorf("service %s: image %q is not an exact version", name, svc.Image)
		}
	}
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "FROM" {
			continue
		}
		img := f[1]
		if strings.HasPrefix(img, "gcr.io/distroless/") {
			if !regexp.MustCompile(`-debian\d+:nonroot$`).MatchString(img) {
				t.Errorf("Dockerfile: %q: want a Debian-versioned distroless image", img)
			}
			continue
		}
		if !exact.MatchString(img) {
			t.Errorf("Dockerfile: image %q is not an exact version", img)
		}
	}
}

// flagValue returns the value after name in args, or "".
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
