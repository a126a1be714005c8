// Package wake lets an idle asynq worker stay almost silent towards Redis
// and still react within milliseconds when work arrives.
//
// asynq only polls: an idle server runs its dequeue script on every queue
// every TaskCheckInterval and its forwarding script on every scheduled and
// retry set every DelayedTaskCheckInterval. A Gate sits between an asynq
// server and its Redis client (Gate.Client) and answers those calls itself
// while it knows the answer:
//
//   - a queue found empty stays "empty" until a wake-up for it arrives or
//     IdleCheck passes; meanwhile dequeues return "no task" without Redis.
//     When every queue of a server is empty the dequeue blocks until a
//     wake-up or the next idle check, so a task announced by a wake-up is
//     taken within about a millisecond.
//   - a scheduled or retry set is forwarded only when its earliest task is
//     due (learnt with one ZRANGE … LIMIT 1 after each forward, and from
//     wake-ups that carry the due time of a newly scheduled task), or when
//     IdleCheck passes.
//
// Wake-ups travel over Redis pub/sub on one channel (Channel): producers
// publish one after each enqueue (Publisher, Enqueuer), and a Gate
// publishes one when its forwarder or a requeue makes tasks pending. Each
// process holds one subscriber connection, whatever its number of servers
// and queues.
//
// The same subscription carries lock hand-overs: a Lua script that hands
// a lock to a waiter publishes ReleasedMessage naming the lock and the
// waiter, and Gate.Released hands that waiter a channel closed at the
// message, so that a job waiting for the fleet's create lock of a model
// takes it at once instead of polling (package jobs, worker).
//
// Failure behaviour: a lost wake-up (a subscriber reconnecting, a producer
// that does not publish) delays a task by at most IdleCheck, because every
// gate looks at Redis itself at that interval. While the subscriber is not
// subscribed (Redis restarting, a failover) the gate lets every call
// through, so the worker polls as plain asynq does; after it subscribes
// again it forgets what it knew, since wake-ups may have been missed.
// Pub/sub works on Sentinel (PUBLISH is replicated to replicas, so a
// subscriber left on a demoted master still hears it) and on Cluster
// (PUBLISH is broadcast to every node).
package wake

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Channel is the pub/sub channel of wake-ups. Producers and workers must
// agree on it; it does not depend on any key prefix because asynq's queue
// keys do not either.
const Channel = "videoworker:wake"

// Message formats on Channel:
//
//	p <queue>             a task became pending in queue
//	s <queue> <unix s>    a task was scheduled in queue, due at that second
//	u <lock>              a lock with waiters was released (see Gate.Released)
const (
	kindPending   = "p"
	kindScheduled = "s"
	kindReleased  = "u"
)

// ReleasedMessage is the message that tells waiters of the lock named
// name (a key, without spaces) that it was released: what a releasing
// Lua script publishes on Channel.
func ReleasedMessage(name string) string { return kindReleased + " " + name }

// Publisher announces enqueued tasks to the workers' gates. A nil
// *Publisher announces nothing. It is safe for concurrent use.
type Publisher struct {
	rdb redis.UniversalClient
}

// NewPublisher returns a Publisher on rdb, which stays the caller's.
func NewPublisher(rdb redis.UniversalClient) *Publisher { return &Publisher{rdb: rdb} }

// Announce publishes a wake-up for the task info describes (one PUBLISH):
// a pending task wakes the gates idle on its queue; a scheduled task tells
// them when it is due. Other states announce nothing. An error means only
// that the workers find the task at their next idle check.
func (p *Publisher) Announce(ctx context.Context, info *asynq.TaskInfo) error {
	if p == nil || info == nil {
		return nil
	}
	var msg string
	switch info.State {
	case asynq.TaskStatePending:
		msg = pendingMessage(info.Queue)
	case asynq.TaskStateScheduled:
		msg = kindScheduled + " " + info.Queue + " " + strconv.FormatInt(info.NextProcessAt.Unix(), 10)
	default:
		return nil
	}
	if err := p.rdb.Publish(ctx, Channel, msg).Err(); err != nil {
		return fmt.Errorf("wake: publish: %w", err)
	}
	return nil
}

func pendingMessage(queue string) string { return kindPending + " " + queue }

// parseMessage reads a wake-up (the queue is a lock's name for a release);
// ok is false for anything else.
func parseMessage(s string) (kind, queue string, due int64, ok bool) {
	kind, rest, ok := strings.Cut(s, " ")
	if !ok || rest == "" {
		return "", "", 0, false
	}
	switch kind {
	case kindPending, kindReleased:
		return kind, rest, 0, true
	case kindScheduled:
		q, sec, ok := strings.Cut(rest, " ")
		if !ok || q == "" {
			return "", "", 0, false
		}
		n, err := strconv.ParseInt(sec, 10, 64)
		if err != nil {
			return "", "", 0, false
		}
		return kind, q, n, true
	}
	return "", "", 0, false
}

// Enqueuer is an asynq client that announces each task it enqueues. It has
// asynq.Client's EnqueueContext, so it fits where one is expected (for
// example webhook.Enqueuer).
type Enqueuer struct {
	aq  *asynq.Client
	pub *Publisher
}

// NewEnqueuer returns an Enqueuer on rdb, which stays the caller's. With
// announce false it is a plain asynq client (no PUBLISH).
func NewEnqueuer(rdb redis.UniversalClient, announce bool) *Enqueuer {
	e := &Enqueuer{aq: asynq.NewClientFromRedisClient(rdb)}
	if announce {
		e.pub = NewPublisher(rdb)
	}
	return e
}

// EnqueueContext enqueues t as asynq.Client does, then announces it. A
// failed announcement is not an error: the task is durable and is found at
// the workers' next idle check.
func (e *Enqueuer) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	info, err := e.aq.EnqueueContext(ctx, t, opts...)
	if err != nil {
		return info, err
	}
	_ = e.pub.Announce(ctx, info)
	return info, nil
}
