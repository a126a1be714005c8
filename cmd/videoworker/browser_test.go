package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/videoworker/videoworker/jobs"
)

// TestBrowserDashboard runs the demo and looks at its operator pages in
// headless Chromium, as an operator would: the dashboard while jobs are in
// flight and once they are done, a failed job's page, and the asynq UI.
// It checks the rendered DOM (every job with its state; the asynq UI drew
// the queues, so its API calls went through the login) and saves
// screenshots under $ARTIFACTS_DIR (default: a temporary directory).
//
// Chromium is required: Debian's chromium package (.ci/run installs it),
// or the binary named by $CHROMIUM_BIN.
func TestBrowserDashboard(t *testing.T) {
	browser := findChromium(t)
	artifacts := os.Getenv("ARTIFACTS_DIR")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STORAGE_URL", "file://"+t.TempDir())
	for _, k := range []string{"REDIS_URL", "AISTATS_API_KEY", "DEMO_ADDR"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	const nJobs = 12
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "-jobs", fmt.Sprint(nJobs), "-fail-rate", "0.3", "-interval", "500ms", "-quiet"}, &out, &errOut)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "jobs failed") {
				t.Errorf("demo: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the demo did not stop within 30 s of its context ending")
		}
		if t.Failed() {
			t.Logf("demo stdout:\n%s\ndemo stderr:\n%s", tail(out.String(), 3000), tail(errOut.String(), 3000))
		}
	}()

	base, pass := demoLogin(t, &out, done)
	authed := func(path string) string {
		u, _ := url.Parse(base + path)
		u.User = url.UserPassword("demo", pass)
		return u.String()
	}
	// look loads path in one browser session, saves a screenshot as name
	// and returns the rendered DOM.
	look := func(name, path string, extra ...string) string {
		t.Helper()
		file := filepath.Join(artifacts, name)
		start := time.Now()
		dom := chromium(t, browser, append(extra, "--dump-dom", "--screenshot="+file, authed(path))...)
		if fi, err := os.Stat(file); err != nil || fi.Size() < 10<<10 {
			t.Fatalf("screenshot %s missing or tiny: %v", file, err)
		}
		t.Logf("screenshot %s (%s, %s)", file, path, time.Since(start).Round(time.Millisecond))
		return string(dom)
	}

	// While jobs are in flight: a few finished, most not (submissions go
	// on for 5.5 s and each job takes about 3).
	waitJobs(t, base, pass, done, "some jobs finished, most in flight", func(recs []jobs.Record) bool {
		fin := 0
		for _, r := range recs {
			if r.State.Terminal() {
				fin++
			}
		}
		return fin > 0 && fin <= nJobs/3
	})
	// This first look is also the webhook chart's first read of the
	// counters; the next look shows the deliveries in between.
	inFlight := true
	if dom := look("dashboard-in-flight.png", "/", tall); !strings.Contains(dom, `id="in-flight"`) {
		// Not an error: the last jobs may have finished while the browser
		// started (seconds on a loaded machine).
		t.Log("every job finished before the in-flight screenshot")
		inFlight = false
	} else if !regexp.MustCompile(`id="in-flight"[\s\S]*?<progress max="100" value="\d+"`).MatchString(dom) {
		t.Error("the rendered in-flight panel has no progress bar")
	}

	recs := waitJobs(t, base, pass, done, "every job finished", func(recs []jobs.Record) bool {
		for _, r := range recs {
			if !r.State.Terminal() {
				return false
			}
		}
		return len(recs) == nJobs
	})
	dom := look("dashboard.png", "/", tall)
	var failed *jobs.Record
	for i, r := range recs {
		if !strings.Contains(dom, fmt.Sprintf(`data-job-id="%s" data-state="%s"`, r.ID, r.State)) {
			t.Errorf("the rendered dashboard does not show job %s as %s", r.ID, r.State)
		}
		if r.State == jobs.StateFailed {
			failed = &recs[i]
			if !strings.Contains(dom, r.ErrorCode) {
				t.Errorf("the rendered dashboard lacks failed job %s's error code %s", r.ID, r.ErrorCode)
			}
		}
	}
	if !strings.Contains(dom, fmt.Sprintf(`data-state="stored" data-count="%d"`, count(recs, jobs.StateStored))) {
		t.Error("the rendered dashboard's count of stored jobs is wrong")
	}
	// The stand-in delivers a webhook as each job ends.
	if m := acceptedHooks.FindStringSubmatch(dom); m == nil || m[1] == "0" {
		t.Errorf("the rendered dashboard counts no accepted webhook delivery (%v)", m)
	}
	checkCharts(t, dom, recs, inFlight)

	if failed != nil {
		page := "/jobs/" + failed.ID
		jdom := look("job-failed.png", page)
		if !strings.Contains(jdom, `action="/jobs/`+failed.ID+`/retry"`) || !strings.Contains(jdom, failed.Error) {
			t.Errorf("the failed job's page lacks its Retry button or its message")
		}
	}

	// asynqmon is a single-page app: give its scripts and API calls time.
	mdom := look("monitoring.png", "/monitoring/", "--virtual-time-budget=5000")
	for _, q := range []string{"video_create", "video_poll", "video_download"} {
		if !strings.Contains(mdom, q) {
			t.Errorf("the rendered asynq UI does not list queue %s", q)
		}
	}
}

// tall is a browser window that shows the whole dashboard.
const tall = "--window-size=1400,2300"

// checkCharts checks the charts of the rendered dashboard once every job
// has finished: each is an SVG image with a title; the finished-jobs
// chart has every job under its final state and the histograms every
// stored job; the webhook chart shows the deliveries since the first look
// if jobs were still running then.
func checkCharts(t *testing.T, dom string, recs []jobs.Record, sawInFlight bool) {
	t.Helper()
	charts := map[string]string{}
	for _, m := range chartFig.FindAllStringSubmatch(dom, -1) {
		charts[m[1]] = m[2]
	}
	sum := func(fig, series string) int {
		n := 0
		for _, m := range chartBar.FindAllStringSubmatch(fig, -1) {
			if series == "" || m[1] == series {
				k, _ := strconv.Atoi(m[2])
				n += k
			}
		}
		return n
	}
	stored := count(recs, jobs.StateStored)
	for id, want := range map[string]map[string]int{
		"chart-finished":   {"stored": stored, "failed": count(recs, jobs.StateFailed), "": len(recs)},
		"chart-completion": {"": stored},
		"chart-submit":     {"": stored},
	} {
		fig, ok := charts[id]
		if !ok || !strings.Contains(fig, `<svg viewBox=`) || !strings.Contains(fig, `<title id="`+id+`-t">`) {
			t.Errorf("the rendered dashboard has no chart %s (an SVG with a title)", id)
			continue
		}
		for series, n := range want {
			if got := sum(fig, series); got != n {
				t.Errorf("chart %s shows %d %q, want %d", id, got, series, n)
			}
		}
	}
	hooks, ok := charts["chart-webhooks"]
	switch {
	case !ok:
		t.Error("the rendered dashboard has no webhook chart")
	case sawInFlight && sum(hooks, "") == 0:
		t.Errorf("the webhook chart shows no delivery although jobs ended between two looks:\n%s", hooks)
	default:
		t.Logf("webhook chart: %d deliveries placed", sum(hooks, ""))
	}
}

var (
	chartFig = regexp.MustCompile(`(?s)<figure class="chart" id="([^"]+)">(.*?)</figure>`)
	chartBar = regexp.MustCompile(`<rect class="[^"]+" data-series="([^"]*)" data-n="(\d+)"`)
)

// findChromium returns the browser to run, or fails the test.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium is required for this test and was not found: install it " +
		"(Debian: apt-get install -y chromium; .ci/run does) or set CHROMIUM_BIN")
	return ""
}

// chromium runs one headless browser session and returns its stdout. Host
// names other than 127.0.0.1 do not resolve, so asynqmon's web fonts fail
// fast and the page uses local ones, as it would offline. A --window-size
// in args overrides the default (the last one counts).
func chromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
		"--user-data-dir=" + t.TempDir(), "--window-size=1400,1000"}
	cmd := exec.CommandContext(ctx, bin, append(flags, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes()
}

var (
	acceptedHooks = regexp.MustCompile(`data-outcome="accepted"><th>accepted</th><td class="num">(\d+)<`)
	dashLine      = regexp.MustCompile(`(?m)^dashboard at (http://\S+)/ `)
	loginLine     = regexp.MustCompile(`(?m)^  log in as demo / (\S+) `)
)

// demoLogin waits for the demo to print its dashboard address and login.
func demoLogin(t *testing.T, out *syncBuffer, done <-chan error) (string, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := out.String()
		if d, l := dashLine.FindStringSubmatch(s), loginLine.FindStringSubmatch(s); d != nil && l != nil {
			return d[1], l[1]
		}
		select {
		case err := <-done:
			t.Fatalf("the demo ended before serving its dashboard: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no dashboard address and login within 30 s:\n%s", s)
		}
	}
}

// waitJobs reads the demo's jobs through its job API (with the demo
// login) until cond holds.
func waitJobs(t *testing.T, base, pass string, done <-chan error, what string, cond func([]jobs.Record) bool) []jobs.Record {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/v1/jobs?limit=200", nil)
		req.SetBasicAuth("demo", pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Data []jobs.Record `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("job list: %d %v", resp.StatusCode, err)
		}
		if cond(page.Data) {
			return page.Data
		}
		select {
		case err := <-done:
			t.Fatalf("the demo ended while waiting until %s: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not the case after 45 s: %s", what)
		}
	}
}

func count(recs []jobs.Record, st jobs.State) int {
	n := 0
	for _, r := range recs {
		if r.State == st {
			n++
		}
	}
	return n
}
