package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/server"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/tasks"
)

const jobAPIToken = "job-api-token-for-tests-0123456789"

// jobAPI serves the env's jobs through the HTTP job API.
func (e *env) jobAPI() *httptest.Server {
	e.t.Helper()
	auth, err := server.NewAuth(jobAPIToken, "")
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Deps{Redis: e.rdb, Store: e.store, Producer: e.producer, Auth: auth, Jobs: e.jobs}))
	e.t.Cleanup(srv.Close)
	return srv
}

// apiJob calls the job API and decodes the job it answers with.
func apiJob(t *testing.T, srv *httptest.Server, method, path string) map[string]any {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+jobAPIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: HTTP %d, %v", method, path, resp.StatusCode, err)
	}
	return m
}

// waitAPIStatus waits (bounded) until the job's record holds the API
// status want, so that a test starts from a job the API is working on.
func (e *env) waitAPIStatus(id tasks.JobID, want string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := e.jobs.Get(context.Background(), string(id))
		if err != nil {
			e.t.Fatal(err)
		}
		if r.APIStatus == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s: api status %q, want %q", id, r.APIStatus, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A job that has ended never shows the API still "processing": the job API
// gives the API's own terminal status when the API ended the job, and no
// status (unknown) when the job ended while the API was still at work.
// Before, failed, cancelled, expired and timed-out jobs all kept the last
// running status they had seen.
func TestEndedJobsShowNoRunningAPIStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		standin   func(*standin.Config)
		end       func(t *testing.T, srv *httptest.Server, id tasks.JobID) // nil: the API ends it
		wantState jobs.State
		wantAPI   string // "" : no api_status at all
	}{
		{"the API fails the generation", func(c *standin.Config) { c.FailRate = 1 }, nil, jobs.StateFailed, "failed"},
		{"the API expires the generation", func(c *standin.Config) { c.ExpireRate = 1 }, nil, jobs.StateExpired, "expired"},
		{"a user cancels mid-generation", nil, func(t *testing.T, srv *httptest.Server, id tasks.JobID) {
			if m := apiJob(t, srv, http.MethodPost, "/v1/jobs/"+string(id)+"/cancel"); m["api_status"] != nil {
				t.Errorf("cancel answers api_status %v, want none", m["api_status"])
			}
		}, jobs.StateCancelled, ""},
		{"the job's deadline passes mid-generation", nil, nil, jobs.StateTimedOut, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := fastStandin()
			if tc.standin != nil {
				tc.standin(&cfg)
			}
			e := setup(t, cfg)
			srv := e.jobAPI()
			e.startWorker(fastConfig(), nil)
			req := tasks.Request{Video: apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: tc.name}}
			if tc.wantState == jobs.StateTimedOut {
				req.Timeout = 2 * time.Second
			}
			if tc.wantAPI == "" {
				e.api.Hold(true) // the API keeps the generation "processing"
			}
			id, err := e.producer.Submit(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantAPI == "" {
				e.waitAPIStatus(id, "processing")
			}
			if tc.end != nil {
				tc.end(t, srv, id)
			}
			r := e.waitTerminal([]tasks.JobID{id}, 20*time.Second)[0]
			if r.State != tc.wantState {
				t.Fatalf("job %s (%s), want %s", r.State, r.ErrorCode, tc.wantState)
			}
			if tc.wantState == jobs.StateCancelled { // the cancel step has asked the API
				deadline := time.Now().Add(10 * time.Second)
				for r.CancelOutcome == "" && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
					r, _ = e.jobs.Get(context.Background(), string(id))
				}
			}
			got := apiJob(t, srv, http.MethodGet, "/v1/jobs/"+string(id))
			if got["state"] != string(tc.wantState) {
				t.Errorf("GET state %v, want %s", got["state"], tc.wantState)
			}
			gotAPI, present := got["api_status"]
			if present != (tc.wantAPI != "") || (present && gotAPI != tc.wantAPI) {
				t.Errorf("GET api_status %v (present %t), want %q", gotAPI, present, tc.wantAPI)
			}
		})
	}
}
