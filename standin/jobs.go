package standin

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"sync"
	"time"
)

// status is a job status of reference section 4.
type status uint8

const (
	statusQueued status = iota
	statusProcessing
	statusCompleted
	statusFailed
	statusCancelled // never produced: cancel is disabled, kept for filters
	statusExpired
)

var statusNames = [...]string{"queued", "processing", "completed", "failed", "cancelled", "expired"}
var lifecycleNames = [...]string{"pending", "running", "completed", "failed", "cancelled", "expired"}

func (st status) String() string    { return statusNames[st] }
func (st status) lifecycle() string { return lifecycleNames[st] }
func (st status) terminal() bool    { return st >= statusCompleted }

// statusAliases maps every accepted spelling (section 3.4 and 4) to a status.
var statusAliases = map[string]status{
	"queued": statusQueued, "pending": statusQueued,
	"processing": statusProcessing, "in_progress": statusProcessing, "running": statusProcessing,
	"completed": statusCompleted, "succeeded": statusCompleted,
	"failed": statusFailed, "error": statusFailed,
	"cancelled": statusCancelled, "canceled": statusCancelled,
	"expired": statusExpired,
}

// accessMode is the output.access choice of a create request.
type accessMode uint8

const (
	accessBoth accessMode = iota
	accessBytes
	accessSignedURL
)

var accessNames = [...]string{"both", "bytes", "signed_url"}

func (a accessMode) String() string  { return accessNames[a] }
func (a accessMode) bytes() bool     { return a != accessSignedURL }
func (a accessMode) signedURL() bool { return a != accessBytes }

// job is one video job. It holds no output bytes; its schedule is three
// instants and its status is derived from the clock (see Server.statusLocked).
// Fields set at creation never change except where noted; the rest are
// guarded by Server.mu.
type job struct {
	id        string
	seq       int // position in Server.jobs
	model     string
	provider  string
	prompt    string
	idemKey   string
	size      string // as shown in the video object: "1280x720" or "720p"
	width     int32
	height    int32
	seconds   int32
	outputs   uint8
	access    accessMode
	audio     int8 // -1 not given, 0 false, 1 true
	costNanos int64

	createdAt time.Time
	startAt   time.Time // processing begins; moved earlier by Complete
	endAt     time.Time // terminal; moved by Complete and by releasing a hold
	outcome   status    // terminal status: completed, failed or expired
	forced    bool      // Complete was called: ignores holds
	deleted   bool
	hasSHA    bool
	sha       [32]byte // sha256 of output 0, cached once computed

	// webhook is the subscription from the create request, nil when none.
	// Immutable; delivery state is in hook.
	webhook *webhook
	// hook is the webhook delivery state, nil without a webhook secret.
	// Set at creation; its fields are guarded by Server.mu.
	hook *hookState
}

// webhook is a validated webhook subscription (reference section 7). The
// secret is kept for signing deliveries and is never rendered.
type webhook struct {
	url    string
	events []string
	secret string
	// endpointID is the workspace endpoint subscribed (endpoint revision).
	endpointID string
}

// newID returns prefix followed by 20 random hex digits.
func newID(prefix string) string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], rand.Uint64())
	binary.BigEndian.PutUint16(b[8:], uint16(rand.Uint32()))
	return prefix + hex.EncodeToString(b[:])
}

// seededKey derives a 32-byte key from the seed, a purpose label, the video
// id and an output index.
func seededKey(seed int64, purpose, id string, index int) [32]byte {
	h := sha256.New()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(seed))
	binary.LittleEndian.PutUint64(b[8:], uint64(index))
	h.Write(b[:])
	io.WriteString(h, purpose)
	h.Write([]byte{0})
	io.WriteString(h, id)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// drawOutcome picks a job's terminal status from the seed and its id: failed
// with probability failRate, expired with probability expireRate, else
// completed.
func drawOutcome(seed int64, id string, failRate, expireRate float64) status {
	k := seededKey(seed, "outcome", id, 0)
	u := float64(binary.LittleEndian.Uint64(k[:8])>>11) / (1 << 53)
	switch {
	case u < failRate:
		return statusFailed
	case u < failRate+expireRate:
		return statusExpired
	default:
		return statusCompleted
	}
}

const contentChunk = 32 << 10

var chunkPool = sync.Pool{New: func() any { return new([contentChunk]byte) }}

// writeContent writes n bytes of output index of video id to w, chunk by
// chunk from a ChaCha8 stream keyed by the seed, the id and the index. It
// returns the bytes written and stops at the first write error.
func writeContent(w io.Writer, seed int64, id string, index int, n int64) (int64, error) {
	rng := rand.NewChaCha8(seededKey(seed, "content", id, index))
	buf := chunkPool.Get().(*[contentChunk]byte)
	defer chunkPool.Put(buf)
	var written int64
	for written < n {
		p := buf[:min(int64(len(buf)), n-written)]
		_, _ = rng.Read(p) // never fails
		m, err := w.Write(p)
		written += int64(m)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// contentSHA256 hashes the n bytes of output index of video id.
func contentSHA256(seed int64, id string, index int, n int64) [32]byte {
	h := sha256.New()
	_, _ = writeContent(h, seed, id, index, n) // hash writes never fail
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}
