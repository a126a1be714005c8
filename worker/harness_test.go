package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
	"github.com/videoworker/videoworker/webhook"
	"github.com/videoworker/videoworker/worker"
)

// redisSrv is the package's real redis-server; each test takes its own
// database from it.
var redisSrv *redistest.Server

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker tests need a real Redis:", err)
		os.Exit(1)
	}
	redisSrv = srv
	code := m.Run()
	stop()
	os.Exit(code)
}

const testKey = "sk-test-key-9f8e7d"

// env is one test's world: its own Redis database, stand-in API, storage
// root, and clients.
type env struct {
	t        *testing.T
	rdb      *redis.Client
	api      *standin.Server
	apiURL   string
	client   *apiclient.Client
	store    *storage.Disk
	jobs     *jobs.Store
	producer *tasks.Client
	log      *slog.Logger
	receiver *webhook.Handler // set by withWebhooks
}

// fastStandin is a stand-in whose jobs finish in well under a second.
func fastStandin() standin.Config {
	return standin.Config{APIKey: testKey, QueuedFor: 50 * time.Millisecond, ProcessingFor: 150 * time.Millisecond, ContentSize: 32 << 10, Seed: 7}
}

func setup(t *testing.T, scfg standin.Config) *env {
	t.Helper()
	db := redisSrv.NewDB(t)
	rdb := redisSrv.Client(t, db)
	api := standin.New(scfg, nil)
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	client, err := apiclient.New(apiclient.Config{BaseURL: hs.URL + "/v1", APIKey: scfg.APIKey, Timeout: 5 * time.Second, ContentIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	producer := tasks.NewClient(rdb, tasks.ClientOptions{})
	return &env{t: t, rdb: rdb, api: api, apiURL: hs.URL + "/v1", client: client, store: store,
		jobs: jobs.NewStore(rdb, ""), producer: producer, log: testLogger(t)}
}

// testLogger writes to the test log at warn level and above.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// fastConfig makes polls and scheduled tasks quick for tests.
func fastConfig() worker.Config {
	return worker.Config{
		Concurrency:              10,
		PollInterval:             100 * time.Millisecond,
		MaxPollInterval:          400 * time.Millisecond,
		MinPollInterval:          50 * time.Millisecond,
		ReconcileDelay:           200 * time.Millisecond,
		RetryBaseDelay:           50 * time.Millisecond,
		MaxRetryDelay:            500 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		ShutdownTimeout:          2 * time.Second,
		ClockTolerance:           500 * time.Millisecond,
	}
}

// newWorker builds a worker on the env's parts.
func (e *env) newWorker(cfg worker.Config, api worker.VideoAPI) *worker.Worker {
	e.t.Helper()
	if api == nil {
		api = e.client
	}
	w, err := worker.New(cfg, worker.Deps{Redis: e.rdb, API: api, Store: e.store, Jobs: e.jobs, Logger: e.log})
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// startWorker runs a worker until the returned stop is called (or the
// test ends). stop waits for it to shut down.
func (e *env) startWorker(cfg worker.Config, api worker.VideoAPI) (stop func()) {
	e.t.Helper()
	w := e.newWorker(cfg, api)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("worker: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// submit submits n jobs with distinct prompts and returns their ids.
func (e *env) submit(n int, model string) []tasks.JobID {
	e.t.Helper()
	ids := make([]tasks.JobID, n)
	for i := range ids {
		id, err := e.producer.Submit(context.Background(), tasks.Request{
			JobID: tasks.JobID(fmt.Sprintf("job-%04d", i)),
			Video: apiclient.CreateRequest{Model: model, Prompt: fmt.Sprintf("prompt %04d", i)},
		})
		if err != nil {
			e.t.Fatalf("submit %d: %v", i, err)
		}
		ids[i] = id
	}
	return ids
}

// waitTerminal waits (bounded) until every job is terminal and returns the
// records.
func (e *env) waitTerminal(ids []tasks.JobID, limit time.Duration) []*jobs.Record {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		recs := make([]*jobs.Record, 0, len(ids))
		pending := 0
		var example *jobs.Record
		for _, id := range ids {
			r, err := e.jobs.Get(context.Background(), string(id))
			if err != nil {
				e.t.Fatalf("job %s: %v", id, err)
			}
			recs = append(recs, r)
			if !r.State.Terminal() {
				pending++
				example = r
			}
		}
		if pending == 0 {
			return recs
		}
		if time.Now().After(deadline) {
			task := "(no task info)"
			insp := asynq.NewInspectorFromRedisClient(e.rdb)
			for _, q := range []struct{ queue, id string }{
				{tasks.QueuePoll, tasks.PollTaskID(example.ID, example.PollSeq)},
				{tasks.QueueCreate, tasks.CreateTaskID(example.ID)},
				{tasks.QueueDownload, tasks.DownloadTaskID(example.ID)},
			} {
				if ti, err := insp.GetTaskInfo(q.queue, q.id); err == nil {
					task = fmt.Sprintf("task %s %s retried %d next %s last error %q", q.id, ti.State, ti.Retried, ti.NextProcessAt.Format(time.TimeOnly), ti.LastErr)
					break
				}
			}
			hist, _ := e.jobs.Events(context.Background(), example.ID, 0)
			e.t.Fatalf("%d of %d jobs not finished after %s; e.g. %s in %s (api %s, polls %d, poll_seq %d, error %s %s); %s; history %+v",
				pending, len(ids), limit, example.ID, example.State, example.APIStatus, example.Polls, example.PollSeq, example.ErrorCode, example.Error, task, hist)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitState waits (bounded) until job id reaches state.
func (e *env) waitState(id tasks.JobID, want jobs.State, limit time.Duration) *jobs.Record {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r, err := e.jobs.Get(context.Background(), string(id))
		if err != nil {
			e.t.Fatal(err)
		}
		if r.State == want {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s is %s after %s, want %s (error %s %s)", id, r.State, limit, want, r.ErrorCode, r.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkStored asserts that every job is stored, exactly once on the API
// side, with bytes whose sha256 matches the API's.
func (e *env) checkStored(recs []*jobs.Record) {
	e.t.Helper()
	st := e.api.Stats()
	for _, r := range recs {
		if r.State != jobs.StateStored {
			e.t.Errorf("job %s: state %s (%s: %s), want stored", r.ID, r.State, r.ErrorCode, r.Error)
			continue
		}
		if n := st.JobsByPrompt[r.Request.Prompt]; n != 1 {
			e.t.Errorf("job %s: the API created %d jobs for its prompt, want exactly 1", r.ID, n)
		}
		info, ok := e.api.Job(r.VideoID)
		if !ok || info.Prompt != r.Request.Prompt {
			e.t.Errorf("job %s: video %s belongs to prompt %q, want %q", r.ID, r.VideoID, info.Prompt, r.Request.Prompt)
		}
		want, err := e.api.ContentSHA256(r.VideoID, 0)
		if err != nil {
			e.t.Errorf("job %s: %v", r.ID, err)
			continue
		}
		got, err := e.store.Stat(context.Background(), r.StorageKey)
		if err != nil {
			e.t.Errorf("job %s: stored object: %v", r.ID, err)
			continue
		}
		if got.SHA256 != want || r.SHA256 != want {
			e.t.Errorf("job %s: stored sha256 %s (record %s), API sha256 %s", r.ID, got.SHA256, r.SHA256, want)
		}
	}
	if st.JobsCreated != len(recs) {
		e.t.Errorf("the API created %d jobs for %d submitted", st.JobsCreated, len(recs))
	}
}

// contextWithCancel returns a context ended by the returned func or at the
// end of the test.
func contextWithCancel(t *testing.T) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}

// request is a generation request whose prompt is the job id.
func (e *env) request(id string) apiclient.CreateRequest {
	return apiclient.CreateRequest{Model: "google/veo-3.1-lite", Prompt: "prompt " + id}
}
