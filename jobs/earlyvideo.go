package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// EarlyVideoTTL is how long a delivery for a video that no job has
// claimed yet waits for its job (RecordEarlyVideo): longer than a create
// call and the save of its answer, far shorter than a job.
const EarlyVideoTTL = 10 * time.Minute

func (s *Store) earlyVideoKey(videoID string) string { return s.prefix + "early:{" + videoID + "}" }

// earlyVideoScript records an early delivery under the video's key unless
// a job has claimed the video, in one step with the claim check. KEYS:
// claims, early key. ARGV: video id, value, ttl ms. It returns the owner,
// or "" when it recorded the delivery (or one was recorded already).
var earlyVideoScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner then return owner end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3], 'NX')
return ''
`)

// RecordEarlyVideo keeps a delivery about a video that no job has claimed
// yet, for EarlyVideoTTL: with webhook endpoint ids the delivery's URL
// names no job, and the API may deliver before the create's answer is
// saved. It returns the video's owner instead when a job has claimed it
// meanwhile (the caller then handles the delivery for that job). The
// create step takes the delivery with TakeEarlyVideo after it saved the
// video id (which claims the video): the check and the record are one
// atomic step, so either the delivery is recorded before the claim and
// taken after it, or the owner is returned here. (On a Redis Cluster the
// two are separate commands: a delivery racing the claim may be missed
// and the job then learns the outcome by polling.)
func (s *Store) RecordEarlyVideo(ctx context.Context, d WebhookDelivery) (string, error) {
	val := strconv.Itoa(d.Attempt) + "\n" + d.EventType + "\n" + d.Key
	ttl := EarlyVideoTTL.Milliseconds()
	if s.cluster {
		owners, err := s.Owners(ctx, []string{d.VideoID})
		if err != nil || owners[d.VideoID] != "" {
			return owners[d.VideoID], err
		}
		if err := s.rdb.SetNX(ctx, s.earlyVideoKey(d.VideoID), val, EarlyVideoTTL).Err(); err != nil {
			return "", fmt.Errorf("early webhook for video %s: %w", d.VideoID, ClassifyRedis(err))
		}
		return "", nil
	}
	owner, err := earlyVideoScript.Run(ctx, s.rdb, []string{s.claimsKey(), s.earlyVideoKey(d.VideoID)}, d.VideoID, val, ttl).Text()
	if err != nil {
		return "", fmt.Errorf("early webhook for video %s: %w", d.VideoID, ClassifyRedis(err))
	}
	return owner, nil
}

// TakeEarlyVideo returns and forgets the delivery RecordEarlyVideo kept
// for videoID, or nil (one command).
func (s *Store) TakeEarlyVideo(ctx context.Context, videoID string) (*WebhookDelivery, error) {
	v, err := s.rdb.GetDel(ctx, s.earlyVideoKey(videoID)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("early webhook for video %s: %w", videoID, ClassifyRedis(err))
	}
	parts := strings.SplitN(v, "\n", 3)
	d := &WebhookDelivery{VideoID: videoID}
	if len(parts) == 3 {
		d.Attempt, _ = strconv.Atoi(parts[0])
		d.EventType, d.Key = parts[1], parts[2]
	}
	return d, nil
}
