package main

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

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
func interpolate(s string) string {
	return composeVar.ReplaceAllStringFunc(strings.ReplaceAll(s, "$$", "\x00"), func(m string) string {
		return composeVar.FindStringSubmatch(m)[3]
	})
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
}
