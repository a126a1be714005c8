package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/videoworker/videoworker/internal/redistest"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/tasks"
)

var (
	// redisSrv is the package's real redis-server; each test takes its own
	// database from it with NewDB.
	redisSrv *redistest.Server
	// redisAddr is its address, for the examples.
	redisAddr string
)

// The examples cannot call NewDB (they have no testing.T), so each uses a
// fixed database at the top of the range, far above what NewDB hands out
// to this package's tests (it hands out the lowest free numbers). Examples
// also run only after every test has finished.
const (
	submitExampleDB = redistest.DefaultDatabases - 1
	statusExampleDB = redistest.DefaultDatabases - 2
)

func TestMain(m *testing.M) {
	srv, stop, err := redistest.StartMain(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tasks tests need a real redis-server:", err)
		os.Exit(1)
	}
	redisSrv, redisAddr = srv, srv.Addr()
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// bundle is one test's world: its own database and the clients on it.
type bundle struct {
	ctx    context.Context
	rdb    *redis.Client
	client *tasks.Client
	aq     *asynq.Client
	insp   *asynq.Inspector
	store  *jobs.Store
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	rdb := redisSrv.Client(tb, redisSrv.NewDB(tb))
	client := tasks.NewClient(rdb, tasks.ClientOptions{})
	// Clients built on a shared redis client own no connection: the
	// Redis client is closed by redistest.
	return &bundle{
		ctx: tb.Context(), rdb: rdb, client: client,
		aq: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb),
		store: jobs.NewStore(rdb, ""),
	}
}

// task returns the task id of queue, or nil when there is none.
func (b *bundle) task(tb testing.TB, queue, id string) *asynq.TaskInfo {
	tb.Helper()
	info, err := b.insp.GetTaskInfo(queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if err != nil {
		tb.Fatalf("GetTaskInfo(%s, %s): %v", queue, id, err)
	}
	return info
}

// queueSize is the number of tasks of every state in queue.
func (b *bundle) queueSize(tb testing.TB, queue string) int {
	tb.Helper()
	qi, err := b.insp.GetQueueInfo(queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return 0
	}
	if err != nil {
		tb.Fatalf("GetQueueInfo(%s): %v", queue, err)
	}
	return qi.Size
}

// jobCount is the number of indexed job records.
func (b *bundle) jobCount(tb testing.TB) int {
	tb.Helper()
	n, err := b.store.Count(b.ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return int(n)
}
